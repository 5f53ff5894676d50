package storetest

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
)

// RunHistory runs the cases of relay.History, the queries the web console
// and the admin API browse with.
func RunHistory(t *testing.T, open Factory) {
	t.Run("Conversation", func(t *testing.T) { t.Parallel(); testConversation(t, open) })
	t.Run("FindDead", func(t *testing.T) { t.Parallel(); testFindDead(t, open) })
	t.Run("Usage", func(t *testing.T) { t.Parallel(); testUsage(t, open) })
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
	relaytest.Eventually(t, 10*time.Second, "the first turn delivered to s, pending for t", func() bool {
		recs, _, err := h.Store.Conversation(ctx, conv, 0)
		if err != nil {
			t.Fatal(err)
		}
		first = recs[0]
		states := map[string]string{}
		for _, ds := range first.Deliveries {
			states[ds.Sink] = ds.State
		}
		return states["s"] == relay.StateDelivered && states["t"] == relay.StatePending && len(states) == 2
	})
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

// usageEvent builds an event of topic from chatbot bot (none when ""),
// received at at: a conversation's first turn when first, else its second;
// with cost_credits when credits > 0 and the answer's score when score >= 0.
func usageEvent(t *testing.T, topic, bot string, n int, first bool, credits, score float64, at time.Time) *relay.Event {
	t.Helper()
	msgs := `{"role":"user","content":"q"}`
	if !first {
		msgs += `,{"role":"assistant","content":"a"},{"role":"user","content":"r"}`
	}
	extra := ""
	if bot != "" {
		extra += fmt.Sprintf(`,"chatbot_id":%q`, bot)
	}
	if credits > 0 {
		extra += fmt.Sprintf(`,"cost_credits":%v`, credits)
	}
	answer := `{"role":"assistant","content":"x"}`
	if score >= 0 {
		answer = fmt.Sprintf(`{"role":"assistant","content":"x","score":%v}`, score)
	}
	ev, err := relay.DecodeEvent(fmt.Appendf(nil, `{"conversation_id":"u%d"%s,"messages":[%s],"answer":%s}`, n, extra, msgs, answer))
	if err != nil {
		t.Fatal(err)
	}
	ev.ID, ev.Topic, ev.ReceivedAt = newID(t), topic, at
	return ev
}

// usageText lays figures out one minute a line, for comparing and reading.
func usageText(ms []relay.UsageMinute) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "%s:", m.Start.UTC().Format(time.RFC3339))
		for _, t := range slices.Sorted(maps.Keys(m.Topics)) {
			fmt.Fprintf(&b, " %s=%d", t, m.Topics[t])
		}
		for _, bot := range slices.Sorted(maps.Keys(m.Bots)) {
			c := m.Bots[bot]
			fmt.Fprintf(&b, " [%s conv=%d credits=%g answers=%d low=%d]", bot, c.Conversations, c.Credits, c.Answers, c.Low)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func testUsage(t *testing.T, open Factory) {
	h := open(t, clockwork.NewFakeClock())
	ctx := t.Context()
	// Halfway through a minute, so that a few seconds either way stay in it.
	now := time.Now().UTC().Truncate(time.Minute).Add(-time.Minute + 30*time.Second)
	early, mid := now.Add(-3*time.Hour), now.Add(-30*time.Minute)
	repeated := usageEvent(t, relay.TopicChat, "a", 2, false, 1.5, 0.2, mid)
	for _, ev := range []*relay.Event{
		usageEvent(t, relay.TopicChat, "a", 1, true, 2, 0.9, early),
		repeated,
		usageEvent(t, relay.TopicChat, "b", 3, true, 0, -1, mid.Add(10*time.Second)),
		// Not a chat event: counts as an event of its topic, not as use.
		usageEvent(t, relay.TopicEscalation, "b", 4, true, 5, 0.1, mid.Add(-10*time.Second)),
		usageEvent(t, relay.TopicChat, "", 5, true, 3, 0.4, now),
	} {
		mustAppend(t, h.Store, ev, "s")
	}
	// The same body again: a duplicate, not counted.
	again := *repeated
	again.ID = newID(t)
	if acc := mustAppend(t, h.Store, &again, "s"); !acc.Duplicate {
		t.Fatalf("the repeated body was not a duplicate: %+v", acc)
	}
	minute := func(at time.Time) string { return at.UTC().Truncate(time.Minute).Format(time.RFC3339) }
	all := minute(early) + ": chat=1 [a conv=1 credits=2 answers=1 low=0]\n" +
		minute(mid) + ": chat=2 " + relay.TopicEscalation + "=1 [a conv=0 credits=1.5 answers=1 low=1] [b conv=1 credits=0 answers=0 low=0]\n" +
		minute(now) + ": chat=1 [unknown conv=1 credits=3 answers=1 low=1]\n"
	lines := strings.SplitAfter(all, "\n")
	tests := []struct {
		name  string
		since time.Time
		want  string
	}{
		{"the last day", now.Add(-24 * time.Hour), all},
		{"the last hour", now.Add(-time.Hour), lines[1] + lines[2]},
		{"from within a minute: the whole minute", mid.Add(20 * time.Second), lines[1] + lines[2]},
		{"in the future", now.Add(time.Hour), ""},
	}
	check := func(t *testing.T, s relay.Store, since time.Time, want string) {
		t.Helper()
		got, err := s.Usage(ctx, since)
		if err != nil {
			t.Fatal(err)
		}
		if g := usageText(got); g != want {
			t.Fatalf("Usage(%v):\n%s\nwant:\n%s", since, g, want)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { check(t, h.Store, tt.since, tt.want) })
	}

	// An event received before the last read but stored only now (a slow
	// write) counts once, in the minute it was received; reading again
	// counts nothing twice.
	late := usageEvent(t, relay.TopicChat, "b", 6, true, 1, 0.3, mid.Add(5*time.Second))
	mustAppend(t, h.Store, late, "s")
	grown := lines[0] + minute(mid) + ": chat=3 " + relay.TopicEscalation + "=1 [a conv=0 credits=1.5 answers=1 low=1] [b conv=2 credits=1 answers=1 low=1]\n" + lines[2]
	check(t, h.Store, now.Add(-24*time.Hour), grown)
	check(t, h.Store, now.Add(-24*time.Hour), grown)

	// The figures are the store's: a restart keeps them.
	if h.Reopen != nil {
		check(t, h.Reopen(t), now.Add(-24*time.Hour), grown)
	}
}
