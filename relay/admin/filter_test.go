package admin_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/admin"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

// parkAs appends an event for sink and parks its delivery with reason.
func (f *fixture) parkAs(t *testing.T, sink, conv string, n int, reason string) string {
	t.Helper()
	ev := storetest.NewEvent(t, conv, n)
	if _, err := f.store.Append(t.Context(), ev, []string{sink}); err != nil {
		t.Fatal(err)
	}
	d, err := f.store.Queue(sink).Next(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Term(t.Context(), reason); err != nil {
		t.Fatal(err)
	}
	return relay.DeadLetterID(ev.ID, sink)
}

func TestDeadLettersByFilter(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for i := range 7 {
		f.parkAs(t, "a", fmt.Sprint("c", i), i, "webhook: HTTP 404 Not Found")
	}
	f.parkAs(t, "a", "x", 100, "HTTP 400: bad payload")
	f.parkAs(t, "b", "y", 101, "HTTP 404")

	list := []struct {
		query     string
		code      int
		wantTotal float64
		wantShown int
	}{
		{"", 200, 9, 9},
		{"?sink=a&reason=404", 200, 7, 7},
		{"?sink=a&reason=404&limit=3&offset=5", 200, 7, 2},
		{"?reason=HTTP%20404&since=1h", 200, 8, 8},
		{"?until=1h", 200, 0, 0},
		{"?since=yesterday", 400, 0, 0},
		{"?since=1h&until=2h", 400, 0, 0},
	}
	for _, tt := range list {
		code, out := f.call(t, "GET", "/api/v1/dlq"+tt.query, token, nil)
		if code != tt.code {
			t.Errorf("GET /api/v1/dlq%s: %d, want %d (%v)", tt.query, code, tt.code, out)
			continue
		}
		if code != 200 {
			continue
		}
		if out["total"] != tt.wantTotal || len(out["dead_letters"].([]any)) != tt.wantShown {
			t.Errorf("GET /api/v1/dlq%s: total %v, %d shown; want %v, %d", tt.query, out["total"], len(out["dead_letters"].([]any)), tt.wantTotal, tt.wantShown)
		}
	}

	bad := []struct {
		name string
		sel  admin.Selection
		code int
	}{
		{"filter with ids", admin.Selection{IDs: []string{"x.a"}, Reason: "404"}, 400},
		{"bad time", admin.Selection{All: true, Since: "an hour"}, 400},
		{"unknown sink", admin.Selection{All: true, Sink: "zzz", Reason: "404"}, 404},
	}
	for _, tt := range bad {
		if code, out := f.call(t, "POST", "/api/v1/dlq/replay", token, tt.sel); code != tt.code {
			t.Errorf("%s: %d, want %d (%v)", tt.name, code, tt.code, out)
		}
	}

	// Replay by filter takes every match, across pages.
	code, out := f.call(t, "POST", "/api/v1/dlq/replay", token, admin.Selection{All: true, Sink: "a", Reason: "404", Since: "2h"})
	if code != 200 || out["requeued"] != 7.0 {
		t.Fatalf("replay by filter: %d %v, want 7 requeued", code, out)
	}
	if got := testutil.ToFloat64(f.metrics.Deliveries.WithLabelValues("a", relay.ResultReplayed)); got != 7 {
		t.Fatalf("replayed counter %v, want 7", got)
	}
	code, out = f.call(t, "POST", "/api/v1/dlq/purge", token, admin.Selection{All: true, Reason: "404", Until: time.Now().Add(time.Hour).Format(time.RFC3339)})
	if code != 200 || out["purged"] != 1.0 {
		t.Fatalf("purge by filter: %d %v, want the b one purged", code, out)
	}
	if _, out := f.call(t, "GET", "/api/v1/dlq", token, nil); out["total"] != 1.0 {
		t.Fatalf("left: %v, want the 400 one", out)
	}
}

func TestConversationAPI(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.parkAs(t, "a", "conv-1", 1, "HTTP 400")
	ev := storetest.NewEvent(t, "conv-1", 2)
	if _, err := f.store.Append(t.Context(), ev, []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	code, out := f.call(t, "GET", "/api/v1/conversations/conv-1", token, nil)
	if code != 200 || out["total"] != 2.0 || len(out["events"].([]any)) != 2 {
		t.Fatalf("conversation: %d %v", code, out)
	}
	last := out["events"].([]any)[1].(map[string]any)
	if last["id"] != ev.ID || len(last["deliveries"].([]any)) != 2 {
		t.Fatalf("last event %v", last)
	}
	if code, _ := f.call(t, "GET", "/api/v1/conversations/nobody", token, nil); code != 404 {
		t.Fatalf("unknown conversation: %d", code)
	}
	if code, _ := f.call(t, "GET", "/api/v1/conversations/conv-1", "", nil); code != 401 {
		t.Fatalf("without the token: %d", code)
	}
}

func TestFilterParams(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in        admin.FilterParams
		wantSince time.Time
		wantUntil time.Time
		wantErr   bool
	}{
		{admin.FilterParams{}, time.Time{}, time.Time{}, false},
		{admin.FilterParams{Since: "2h"}, now.Add(-2 * time.Hour), time.Time{}, false},
		{admin.FilterParams{Since: "7d", Until: "90m"}, now.Add(-7 * 24 * time.Hour), now.Add(-90 * time.Minute), false},
		{admin.FilterParams{Since: "2026-04-30T00:00:00Z"}, time.Date(2026, 4, 30, 0, 0, 0, 0, time.UTC), time.Time{}, false},
		{admin.FilterParams{Since: "-2h"}, time.Time{}, time.Time{}, true},
		{admin.FilterParams{Since: "2x"}, time.Time{}, time.Time{}, true},
		{admin.FilterParams{Since: "1.5d"}, time.Time{}, time.Time{}, true},
		{admin.FilterParams{Since: "1h", Until: "2h"}, time.Time{}, time.Time{}, true},
		{admin.FilterParams{Reason: "\xff"}, time.Time{}, time.Time{}, true},
	}
	for _, tt := range tests {
		f, err := tt.in.Filter(now)
		if (err != nil) != tt.wantErr {
			t.Errorf("%+v: err %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && (!f.Since.Equal(tt.wantSince) || !f.Until.Equal(tt.wantUntil)) {
			t.Errorf("%+v: since %v until %v, want %v %v", tt.in, f.Since, f.Until, tt.wantSince, tt.wantUntil)
		}
		// Written back and read again, a filter selects the same.
		if err == nil {
			again, err := admin.Params(f).Filter(now.Add(time.Hour))
			if err != nil || again != f {
				t.Errorf("%+v: round trip %+v, %v", tt.in, again, err)
			}
		}
	}
}
