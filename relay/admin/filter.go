package admin

import (
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/chatrelay/chatrelay/relay"
)

// FilterParams is a dead-letter filter as the API, the console and the CLI
// write it: sink and reason as they are, since and until either a duration
// before now ("2h", "30m", "7d") or a time (RFC 3339).
type FilterParams struct {
	Sink   string `json:"sink,omitempty"`
	Reason string `json:"reason,omitempty"`
	Since  string `json:"since,omitempty"`
	Until  string `json:"until,omitempty"`
}

// maxReasonFilter bounds the reason text of a filter.
const maxReasonFilter = 500

// Filter turns the parameters into a relay.DeadFilter, durations counted
// back from now. The error names the parameter and what to write.
func (p FilterParams) Filter(now time.Time) (relay.DeadFilter, error) {
	f := relay.DeadFilter{Sink: strings.TrimSpace(p.Sink), Reason: strings.TrimSpace(p.Reason)}
	if len(f.Reason) > maxReasonFilter || !utf8.ValidString(f.Reason) {
		return f, fmt.Errorf("reason: at most %d characters of text", maxReasonFilter)
	}
	var err error
	if f.Since, err = parseWhen(p.Since, now); err != nil {
		return f, fmt.Errorf("since: %w", err)
	}
	if f.Until, err = parseWhen(p.Until, now); err != nil {
		return f, fmt.Errorf("until: %w", err)
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return f, fmt.Errorf("since (%s) is not before until (%s)", f.Since.Format(time.RFC3339), f.Until.Format(time.RFC3339))
	}
	return f, nil
}

// Params writes a filter back as parameters, times in RFC 3339 (so that a
// filter confirmed now selects the same dead letters later).
func Params(f relay.DeadFilter) FilterParams {
	p := FilterParams{Sink: f.Sink, Reason: f.Reason}
	if !f.Since.IsZero() {
		p.Since = f.Since.UTC().Format(time.RFC3339Nano)
	}
	if !f.Until.IsZero() {
		p.Until = f.Until.UTC().Format(time.RFC3339Nano)
	}
	return p
}

// IsZero reports whether no parameter is set.
func (p FilterParams) IsZero() bool { return p == FilterParams{} }

// parseWhen reads "" (no bound), a duration before now (Go syntax, plus
// "d" for days: "90m", "2h", "7d") or an RFC 3339 time.
func parseWhen(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := parseAgo(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (2h, 30m, 7d) nor a time (2026-01-02T15:04:05Z)", s)
	}
	return now.Add(-d), nil
}

func parseAgo(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		if _, err := fmt.Sscanf(days, "%d", &n); err != nil || n < 0 || n > 3650 || fmt.Sprint(n) != days {
			return 0, fmt.Errorf("bad days %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("bad duration %q", s)
	}
	return d, nil
}

// filtered reports whether a selection names dead letters by reason or
// time (replay or purge by filter).
func (sel Selection) filtered() bool { return sel.Reason != "" || sel.Since != "" || sel.Until != "" }

// byFilter replays (or purges) every dead letter a selection's filter
// matches, not only one page of them, through the same operations as the
// console, and answers how many.
func (a *api) byFilter(w http.ResponseWriter, r *http.Request, sel Selection, replay bool) {
	if !sel.All {
		writeError(w, http.StatusBadRequest, `"reason", "since" and "until" go with "all":true, not with "ids"`)
		return
	}
	f, err := FilterParams{Sink: sel.Sink, Reason: sel.Reason, Since: sel.Since, Until: sel.Until}.Filter(a.cfg.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ops := &Ops{a: a}
	if replay {
		n, err := ops.ReplayMatching(r.Context(), f)
		if err != nil {
			a.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, SelectionResult{Requeued: &n})
		return
	}
	n, err := ops.PurgeMatching(r.Context(), f)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, SelectionResult{Purged: &n})
}
