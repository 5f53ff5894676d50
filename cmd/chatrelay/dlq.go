package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/admin"
)

func (a *app) dlqCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List, show, replay or purge dead letters (through the admin API of a running chatrelay)",
		Long: `dlq talks to the admin API of a running chatrelay: the address is admin.listen from
the config, the token admin.token (or CHATRELAY_ADMIN_TOKEN).`,
	}
	var listFilter admin.FilterParams
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "One line per dead letter: id, sink, conversation, topic, attempts, parked at, reason",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out relay.DeadPage
			q := url.Values{"limit": {"100000"}}
			for k, v := range map[string]string{"sink": listFilter.Sink, "reason": listFilter.Reason, "since": listFilter.Since, "until": listFilter.Until} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if err := a.adminCall(cmd, http.MethodGet, "/api/v1/dlq?"+q.Encode(), nil, &out); err != nil {
				return opFailed(err)
			}
			if out.Total > len(out.DeadLetters) {
				fmt.Fprintf(a.stderr, "showing the first %d of %d dead letters\n", len(out.DeadLetters), out.Total)
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				for _, d := range out.DeadLetters {
					if err := enc.Encode(d); err != nil {
						return err
					}
				}
				return nil
			}
			// Exactly one line per dead letter on stdout, for scripts
			// (wc -l, grep); the header and "none" are for a person.
			if len(out.DeadLetters) == 0 {
				fmt.Fprintln(a.stderr, "no dead letters")
				return nil
			}
			tw := tabwriter.NewWriter(a.stdout, 2, 4, 2, ' ', 0)
			if isTerminal(a.stdout) {
				fmt.Fprintln(tw, "ID\tSINK\tCONVERSATION\tTOPIC\tATTEMPTS\tPARKED AT\tREASON")
			}
			for _, d := range out.DeadLetters {
				// The reason is the last column and is never cut: its
				// end says why (the last error after "retry.max_age
				// exceeded after N attempts").
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", cell(d.ID), cell(d.Sink), cell(d.ConversationID), cell(d.Topic),
					d.Attempts, d.ParkedAt.UTC().Format(time.RFC3339), cell(d.Reason))
			}
			return tw.Flush()
		},
	}
	filterFlags(list, &listFilter)
	list.Flags().BoolVar(&asJSON, "json", false, "JSON lines instead of a table")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one dead letter and its event",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out json.RawMessage
			if err := a.adminCall(cmd, http.MethodGet, "/api/v1/dlq/"+url.PathEscape(args[0]), nil, &out); err != nil {
				if isNotFound(err) {
					return failed(fmt.Errorf("no dead letter with id %q; chatrelay dlq list shows them", args[0]))
				}
				return opFailed(err)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, out, "", "  "); err != nil {
				pretty.Reset()
				pretty.Write(out) // shown as the API sent it
			}
			fmt.Fprintln(a.stdout, pretty.String())
			return nil
		},
	}

	selection := func(use, short, path, verb, key string) *cobra.Command {
		var all bool
		var f admin.FilterParams
		c := &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.ArbitraryArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				// A filter selects every dead letter it matches, as --all does.
				byFilter := all || !f.IsZero()
				if byFilter && len(args) > 0 {
					return usageError(cmd, errors.New("give dead-letter ids, or a selection (--all, --sink, --reason, --since, --until), not both: "+
						"--sink and the other filters select every dead letter they match"))
				}
				if !byFilter && len(args) == 0 {
					return usageError(cmd, errors.New("give dead-letter ids, or --all, or a filter (--sink, --reason, --since, --until)"))
				}
				var out admin.SelectionResult
				sel := admin.Selection{IDs: args, All: byFilter, Sink: f.Sink, Reason: f.Reason, Since: f.Since, Until: f.Until}
				if err := a.adminCall(cmd, http.MethodPost, path, sel, &out); err != nil {
					if f.Sink != "" && isNotFound(err) {
						return failed(fmt.Errorf("--sink %s: no sink of that name is configured", f.Sink))
					}
					return opFailed(err)
				}
				n := out.Requeued
				if key == "purged" {
					n = out.Purged
				}
				count := 0
				if n != nil {
					count = *n
				}
				fmt.Fprintf(a.stdout, "%s %d deliver%s\n", verb, count, plural(count, "y", "ies"))
				var problems []error
				if len(out.NotFound) > 0 {
					problems = append(problems, fmt.Errorf("not a dead letter: %s (chatrelay dlq list shows them)", strings.Join(out.NotFound, ", ")))
				}
				if len(out.SinkRemoved) > 0 {
					problems = append(problems, fmt.Errorf("the sink of %s is no longer configured, so nothing can send it; "+
						"add the sink back to the config and restart, or purge it", strings.Join(out.SinkRemoved, ", ")))
				}
				if len(problems) == 0 && len(args) > 0 && count < len(args) {
					problems = append(problems, fmt.Errorf("%d of %d dead letters could not be %s (their event is no longer stored)",
						len(args)-count, len(args), verb))
				}
				if len(problems) > 0 {
					return failed(errors.Join(problems...))
				}
				return nil
			},
		}
		c.Flags().BoolVar(&all, "all", false, "every dead letter (or every one the filter flags match)")
		filterFlags(c, &f)
		return c
	}
	cmd.AddCommand(list, show,
		selection("replay ID... | --all | [--sink S] [--reason R] [--since 2h] [--until T]",
			"Requeue dead letters (by id, or all a filter matches) with a fresh retry.max_age", "/api/v1/dlq/replay", "requeued", "requeued"),
		selection("purge ID... | --all | [--sink S] [--reason R] [--since 2h] [--until T]",
			"Delete dead letters (by id, or all a filter matches) for good", "/api/v1/dlq/purge", "purged", "purged"),
	)
	return cmd
}

// filterFlags are the dead-letter filter's flags, as the API and the
// console's filter take them.
func filterFlags(c *cobra.Command, f *admin.FilterParams) {
	c.Flags().StringVar(&f.Sink, "sink", "", "only this sink's dead letters")
	c.Flags().StringVar(&f.Reason, "reason", "", "only those whose reason contains this text (any case): 404, max_age, \"sink removed\"")
	c.Flags().StringVar(&f.Since, "since", "", "only those parked since: a duration before now (2h, 30m, 7d) or a time (RFC 3339)")
	c.Flags().StringVar(&f.Until, "until", "", "only those parked before: a duration before now or a time (RFC 3339)")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// adminCall calls the admin API of the running chatrelay named by the
// config.
func (a *app) adminCall(cmd *cobra.Command, method, path string, in, out any) error {
	cfg, err := a.loadConfigLenient()
	if err != nil {
		return err
	}
	base := "http://" + clientAddr(cfg.Admin.Listen)
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(cmd.Context(), method, base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if !cfg.Admin.Token.IsZero() {
		req.Header.Set("Authorization", "Bearer "+cfg.Admin.Token.Reveal())
	}
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		return &unreachableError{base: base, err: err}
	}
	defer relay.Drain(resp)
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(data, &e); err != nil || e.Error == "" {
			e.Error = resp.Status // not the API's own answer (a proxy's, say)
		}
		return &apiError{status: resp.StatusCode, msg: e.Error}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("admin API at %s: unexpected answer: %w", base, err)
	}
	return nil
}

// unreachableError is an admin API that did not answer.
type unreachableError struct {
	base string
	err  error
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("cannot reach the admin API at %s (is chatrelay serve running? admin.listen says where): %v", e.base, e.err)
}
func (e *unreachableError) Unwrap() error { return e.err }

// apiError is an admin API that refused.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return "admin API: " + e.msg }

func isNotFound(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.status == http.StatusNotFound
}

// opFailed is a failed admin call as a command's error: exit 1, unless it
// already carries an exit code (a config error).
func opFailed(err error) error {
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	return failed(err)
}

// cell is a value as one table cell: its whitespace (a newline or tab from
// an event's body) flattened, "-" when empty, and any other control
// character written as \xNN. The text comes from outside (a destination's
// answer in a reason, fields of an event's body), and an escape sequence
// in it would otherwise reach the operator's terminal: recolour, hide or
// rewrite what it shows.
func cell(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "-"
	}
	if strings.IndexFunc(s, unicode.IsControl) < 0 {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) {
			fmt.Fprintf(&b, "\\x%02x", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
