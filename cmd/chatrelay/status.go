package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/chatrelay/chatrelay/relay/admin"
)

func (a *app) statusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Each sink's state (up/down, pending, oldest, rate-limit hold, last error), the store and the version",
		Long: `status asks the admin API of the running chatrelay (admin.listen from the config,
token admin.token or CHATRELAY_ADMIN_TOKEN) how each sink is doing.

Exit status: 0 when every sink is up, 1 when a sink is down (or the admin API
refused), 2 when the relay cannot be reached (or the config is invalid).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st admin.Status
			if err := a.adminCall(cmd, http.MethodGet, "/api/v1/status", nil, &st); err != nil {
				var ue *unreachableError
				if errors.As(err, &ue) {
					return &exitError{code: exitUsage, err: err}
				}
				return opFailed(err)
			}
			now := time.Now()
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(st); err != nil {
					return err
				}
			} else if err := printStatus(a.stdout, st, now); err != nil {
				return err
			}
			var down []string
			for _, s := range st.Sinks {
				if !s.Up {
					down = append(down, s.Name)
				}
			}
			if len(down) > 0 {
				return failed(fmt.Errorf("%d sink%s down: %s", len(down), plural(len(down), "", "s"), strings.Join(down, ", ")))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "the admin API's answer as JSON")
	return cmd
}

// printStatus writes one line for the relay (version, store) and one per
// sink.
func printStatus(w io.Writer, st admin.Status, now time.Time) error {
	store := "store unknown"
	if st.Store != nil {
		store = "store " + st.Store.Driver + " " + st.Store.Path
		if st.Store.SizeBytes != nil {
			store += " (" + humanBytes(*st.Store.SizeBytes) + ")"
		}
	}
	fmt.Fprintf(w, "chatrelay %s, %s\n", st.Version, store)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SINK\tSTATE\tPENDING\tOLDEST\tRATE LIMIT\tDEAD\tLAST ERROR")
	for _, s := range st.Sinks {
		state := "up"
		if !s.Up {
			state = "DOWN"
			if s.DownSince != nil {
				state += " " + age(now, *s.DownSince)
			}
			if s.DownCause != "" {
				state += " (" + s.DownCause + ")"
			}
		}
		oldest := "-"
		if s.Depth > 0 && s.OldestPendingSeconds > 0 {
			oldest = (time.Duration(s.OldestPendingSeconds) * time.Second).String()
		}
		hold := "-"
		if s.RateLimitedUntil != nil && s.RateLimitedUntil.After(now) {
			hold = "held " + s.RateLimitedUntil.Sub(now).Round(time.Second).String()
		}
		lastErr := "-"
		if s.LastError != "" {
			lastErr = cell(s.LastError)
			if s.LastErrorAt != nil {
				lastErr = age(now, *s.LastErrorAt) + " ago: " + lastErr
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%s\n", cell(s.Name), state, s.Depth, oldest, hold, s.DeadLetters, lastErr)
	}
	return tw.Flush()
}

// age is how long ago t was, in whole seconds.
func age(now, t time.Time) string {
	return max(now.Sub(t), 0).Round(time.Second).String()
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
