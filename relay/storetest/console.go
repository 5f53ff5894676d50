package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
)

// RunHistory runs the cases of relay.History, the queries the web console
// and the admin API browse with.
func RunHistory(t *testing.T, open Factory) {
	t.Run("Conversation", func(t *testing.T) { t.Parallel(); testConversation(t, open) })
	t.Run("FindDead", func(t *testing.T) { t.Parallel(); testFindDead(t, open) })
	t.Run("Received", func(t *testing.T) { t.Parallel(); testReceived(t, open) })
}

func ids(recs []relay.EventRecord) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.Event.ID
	}
	return out
}

func testConversation(t *testing.T, open Factory) {
	h := open(t, clockwork.NewFakeClock())
	ctx := t.Context()
	// A conversation id that needs escaping in JSON and one that is a
	// prefix of another: neither may match the wrong events.
	const conv, quoted, prefix = "conv-1", `conv "1"\`, "conv-"
	a1, a2, a3 := NewEvent(t, conv, 1), NewEvent(t, conv, 2), NewEvent(t, conv, 3)
	q, p := NewEvent(t, quoted, 4), NewEvent(t, prefix, 5)
	mustAppend(t, h.Store, a1, "s", "t")
	mustAppend(t, h.Store, q, "s")
	mustAppend(t, h.Store, a2, "s")
	mustAppend(t, h.Store, p, "s")
	mustAppend(t, h.Store, a3, "s")

	// The first turn is delivered to s: its record says so.
	d := next(t, h.Store, "s")
	if d.Event.ID != a1.ID {
		t.Fatalf("first delivery %s, want %s", d.Event.ID, a1.ID)
	}
	ack(t, d)

	tests := []struct {
		name      string
		id        string
		limit     int
		want      []string
		wantTotal int
	}{
		{"all", conv, 0, []string{a1.ID, a2.ID, a3.ID}, 3},
		{"last two", conv, 2, []string{a2.ID, a3.ID}, 3},
		{"escaped id", quoted, 0, []string{q.ID}, 1},
		{"prefix is no match", prefix, 10, []string{p.ID}, 1},
		{"unknown", "nobody", 0, nil, 0},
		{"empty id", "", 0, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs, total, err := h.Store.Conversation(ctx, tt.id, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(recs); !slices.Equal(got, tt.want) || total != tt.wantTotal {
				t.Fatalf("Conversation(%q, %d) = %v (total %d), want %v (total %d)", tt.id, tt.limit, got, total, tt.want, tt.wantTotal)
			}
		})
	}

	// An ack may be recorded after Ack returns (the store says so once
	// it is): wait for it, as the Stats tests do.
	var first relay.EventRecord
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs, _, err := h.Store.Conversation(ctx, conv, 0)
		if err != nil {
			t.Fatal(err)
		}
		first = recs[0]
		states := map[string]string{}
		for _, ds := range first.Deliveries {
			states[ds.Sink] = ds.State
		}
		if states["s"] == relay.StateDelivered && states["t"] == relay.StatePending && len(states) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("first turn's deliveries = %+v, want s delivered, t pending", first.Deliveries)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if first.Event.Question() != "q1" || first.Event.AnswerText() != "a1" || first.Event.ConversationID != conv {
		t.Fatalf("first turn decoded as %+v", first.Event)
	}
}

func testFindDead(t *testing.T, open Factory) {
	h := open(t, clockwork.NewFakeClock())
	ctx := t.Context()
	// Five dead letters on two sinks, parked one after the other (a
	// second apart on a fake clock).
	parks := []struct{ sink, conv, reason string }{
		{"s", "A", "HTTP 404: Not Found"},
		{"t", "B", "retry.max_age (24h0m0s) exceeded after 9 attempts; last error: HTTP 503"},
		{"s", "C", "http 404: no such channel"},
		{"s", "D", "sink removed"},
		{"t", "E", "HTTP 400: bad payload"},
	}
	for i, pk := range parks {
		ev := NewEvent(t, pk.conv, 100+i)
		mustAppend(t, h.Store, ev, pk.sink)
		d := next(t, h.Store, pk.sink)
		if err := d.Term(ctx, pk.reason); err != nil {
			t.Fatal(err)
		}
		if h.Clock != nil {
			h.Clock.Advance(time.Second)
		}
	}
	all, err := h.Store.FindDead(ctx, relay.DeadFilter{}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if all.Total != 5 || len(all.DeadLetters) != 5 {
		t.Fatalf("FindDead(all) = %d letters, total %d; want 5", len(all.DeadLetters), all.Total)
	}
	convs := func(p relay.DeadPage) []string {
		var out []string
		for _, dl := range p.DeadLetters {
			out = append(out, dl.ConversationID)
		}
		return out
	}
	if got := convs(all); !slices.Equal(got, []string{"A", "B", "C", "D", "E"}) {
		t.Fatalf("FindDead(all) order %v, want parked order A..E", got)
	}
	at := func(i int) time.Time { return all.DeadLetters[i].ParkedAt }

	tests := []struct {
		name          string
		f             relay.DeadFilter
		offset, limit int
		want          []string
		wantTotal     int
	}{
		{"sink", relay.DeadFilter{Sink: "t"}, 0, 0, []string{"B", "E"}, 2},
		{"reason ignores case", relay.DeadFilter{Reason: "http 404"}, 0, 0, []string{"A", "C"}, 2},
		{"sink and reason", relay.DeadFilter{Sink: "t", Reason: "max_age"}, 0, 0, []string{"B"}, 1},
		{"since", relay.DeadFilter{Since: at(2)}, 0, 0, []string{"C", "D", "E"}, 3},
		{"until excludes its instant", relay.DeadFilter{Until: at(2)}, 0, 0, []string{"A", "B"}, 2},
		{"between, one sink", relay.DeadFilter{Sink: "s", Since: at(1), Until: at(4)}, 0, 0, []string{"C", "D"}, 2},
		{"page", relay.DeadFilter{}, 1, 2, []string{"B", "C"}, 5},
		{"page past the end", relay.DeadFilter{Sink: "s"}, 5, 2, nil, 3},
		{"no match", relay.DeadFilter{Reason: "nothing like it"}, 0, 0, nil, 0},
		{"unknown sink", relay.DeadFilter{Sink: "nope"}, 0, 0, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			page, err := h.Store.FindDead(ctx, tt.f, tt.offset, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if got := convs(page); !slices.Equal(got, tt.want) || page.Total != tt.wantTotal {
				t.Fatalf("FindDead(%+v, %d, %d) = %v (total %d), want %v (total %d)",
					tt.f, tt.offset, tt.limit, got, page.Total, tt.want, tt.wantTotal)
			}
			for _, dl := range page.DeadLetters {
				if !tt.f.Match(dl) {
					t.Errorf("%s does not match the filter", dl.ID)
				}
			}
		})
	}

	// What a filter found can be requeued by id: replay by filter.
	page, err := h.Store.FindDead(ctx, relay.DeadFilter{Reason: "404"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, dl := range page.DeadLetters {
		found = append(found, dl.ID)
	}
	if n, err := h.Store.Requeue(ctx, found); err != nil || n != 2 {
		t.Fatalf("Requeue(%v) = %d, %v; want 2", found, n, err)
	}
	if left, err := h.Store.FindDead(ctx, relay.DeadFilter{}, 0, 0); err != nil || left.Total != 3 {
		t.Fatalf("after replaying two: total %d, %v; want 3", left.Total, err)
	}
}

func testReceived(t *testing.T, open Factory) {
	h := open(t, clockwork.NewFakeClock())
	ctx := t.Context()
	now := time.Now()
	old := NewEvent(t, "A", 1)
	old.ReceivedAt = now.Add(-3 * time.Hour)
	mid := NewEvent(t, "B", 2)
	mid.ReceivedAt = now.Add(-30 * time.Minute)
	last := NewEvent(t, "C", 3)
	last.ReceivedAt = now
	for _, ev := range []*relay.Event{old, mid, last} {
		mustAppend(t, h.Store, ev, "s")
	}
	collect := func(since time.Time, stopAfter int) []string {
		t.Helper()
		var got []string
		err := h.Store.Received(ctx, since, func(ev *relay.Event) (bool, error) {
			got = append(got, ev.ID)
			if ev.ConversationID == "" || ev.ReceivedAt.Before(since) {
				t.Errorf("event %s: conversation %q, received %v (since %v)", ev.ID, ev.ConversationID, ev.ReceivedAt, since)
			}
			return stopAfter <= 0 || len(got) < stopAfter, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	tests := []struct {
		name      string
		since     time.Time
		stopAfter int
		want      []string
	}{
		{"everything", time.Time{}, 0, []string{old.ID, mid.ID, last.ID}},
		{"last hour", now.Add(-time.Hour), 0, []string{mid.ID, last.ID}},
		{"from an instant on", last.ReceivedAt, 0, []string{last.ID}},
		{"in the future", now.Add(time.Hour), 0, nil},
		{"stopped by fn", time.Time{}, 2, []string{old.ID, mid.ID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := collect(tt.since, tt.stopAfter); !slices.Equal(got, tt.want) {
				t.Fatalf("Received(%v) = %v, want %v", tt.since, got, tt.want)
			}
		})
	}
}
