package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
)

// swapper is the store's KV namespace ns as a relay.Swapper: every store
// must compare and set (two agents clicking Claim at once).
func swapper(t *testing.T, s relay.Store, ns string) relay.Swapper {
	t.Helper()
	kv, ok := s.KV(ns).(relay.Swapper)
	if !ok {
		t.Fatalf("the store's KV (%T) cannot compare and set: it must implement relay.Swapper", s.KV(ns))
	}
	return kv
}

func get(t *testing.T, kv relay.KV, key string) string {
	t.Helper()
	v, _, err := kv.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%s): %v", key, err)
	}
	return v
}

// testSwap: a compare-and-set sets a key only when it holds what the
// caller read (nothing, for a key never written), after a Put too, per
// namespace, and what it wrote survives a restart.
func testSwap(t *testing.T, open Factory) {
	h := open(t, clockwork.NewFakeClock())
	kv := swapper(t, h.Store, "ns")
	other := swapper(t, h.Store, "other")
	steps := []struct {
		name       string
		old, value string
		want       bool
		holds      string
	}{
		{"absent, expected absent", "", "v1", true, "v1"},
		{"stale expectation", "", "v2", false, "v1"},
		{"wrong expectation", "v0", "v2", false, "v1"},
		{"right expectation", "v1", "v2", true, "v2"},
		{"to empty", "v2", "", true, ""},
		{"from empty", "", "v3", true, "v3"},
	}
	for _, st := range steps {
		ok, err := kv.Swap(t.Context(), "k", st.old, st.value)
		if err != nil || ok != st.want {
			t.Fatalf("%s: Swap(%q → %q) = %v, %v; want %v", st.name, st.old, st.value, ok, err, st.want)
		}
		if got := get(t, kv, "k"); got != st.holds {
			t.Fatalf("%s: k holds %q, want %q", st.name, got, st.holds)
		}
	}
	if got := get(t, other, "k"); got != "" {
		t.Fatalf("another namespace sees %q", got)
	}
	// A Swap that expects what a Put just wrote (on the embedded store,
	// durable but perhaps not yet in the database).
	if err := kv.Put(t.Context(), "p", "put"); err != nil {
		t.Fatal(err)
	}
	if ok, err := kv.Swap(t.Context(), "p", "put", "swapped"); !ok || err != nil {
		t.Fatalf("Swap after Put = %v, %v", ok, err)
	}
	s := h.Reopen(t)
	kv = swapper(t, s, "ns")
	if got := get(t, kv, "k"); got != "v3" {
		t.Fatalf("after a restart k holds %q, want v3", got)
	}
	if got := get(t, kv, "p"); got != "swapped" {
		t.Fatalf("after a restart p holds %q, want swapped", got)
	}
	if ok, err := kv.Swap(t.Context(), "k", "v2", "v4"); ok || err != nil {
		t.Fatalf("stale Swap after a restart = %v, %v", ok, err)
	}
}

// testSwapRace: writers that read the same value and swap at once: exactly
// one wins each round, and the key holds the winner's value.
func testSwapRace(t *testing.T, open Factory) {
	h := open(t, clockwork.NewFakeClock())
	kv := swapper(t, h.Store, "ns")
	const writers, rounds = 8, 5
	cur := ""
	for round := range rounds {
		var wg sync.WaitGroup
		won := make(chan string, writers)
		start := make(chan struct{})
		for w := range writers {
			wg.Go(func() {
				<-start
				value := fmt.Sprintf("round %d writer %d", round, w)
				ok, err := kv.Swap(t.Context(), "race", cur, value)
				if err != nil {
					t.Errorf("Swap: %v", err)
				}
				if ok {
					won <- value
				}
			})
		}
		close(start)
		wg.Wait()
		close(won)
		var winners []string
		for v := range won {
			winners = append(winners, v)
		}
		if len(winners) != 1 {
			t.Fatalf("round %d: %d writers won (%v), want exactly one", round, len(winners), winners)
		}
		if got := get(t, kv, "race"); got != winners[0] {
			t.Fatalf("round %d: key holds %q, the winner wrote %q", round, got, winners[0])
		}
		cur = winners[0]
	}
}

// testRacingClaims: two agents click Claim on the same conversation at
// once, through two Conversations on one store (as two replicas would):
// one has it, the other is told who does; then both click Resolve: one
// resolves it. A new escalation of a resolved conversation opens it again.
func testRacingClaims(t *testing.T, open Factory) {
	clock := clockwork.NewFakeClock()
	h := open(t, clock)
	replica := func() *relay.Conversations {
		c, err := relay.NewConversations(h.Store.KV(relay.ConversationsNamespace), clock)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := replica(), replica()
	dana := relay.Agent{ID: "U0DANA", Name: "Dana"}
	sam := relay.Agent{ID: "U0SAM", Name: "Sam  Lee"}
	esc := NewEvent(t, "conv-race", 1)
	esc.Topic = relay.TopicEscalation
	if err := a.Escalated(t.Context(), "support-slack", esc, 10*time.Minute); err != nil {
		t.Fatal(err)
	}

	type result struct {
		agent relay.Agent
		st    relay.ConversationState
		won   bool
	}
	race := func(do func(*relay.Conversations, relay.Agent) (relay.ConversationState, bool, error)) []result {
		var wg sync.WaitGroup
		out := make([]result, 2)
		start := make(chan struct{})
		for i, c := range []*relay.Conversations{a, b} {
			agent := []relay.Agent{dana, sam}[i]
			wg.Go(func() {
				<-start
				st, won, err := do(c, agent)
				if err != nil {
					t.Errorf("%s: %v", agent.Name, err)
				}
				out[i] = result{agent, st, won}
			})
		}
		close(start)
		wg.Wait()
		return out
	}
	claims := race(func(c *relay.Conversations, ag relay.Agent) (relay.ConversationState, bool, error) {
		return c.Claim(t.Context(), "conv-race", ag)
	})
	if claims[0].won == claims[1].won {
		t.Fatalf("claims: won %v and %v; want exactly one", claims[0].won, claims[1].won)
	}
	winner, loser := claims[0], claims[1]
	if loser.won {
		winner, loser = loser, winner
	}
	if loser.st.ClaimedByID != winner.agent.ID || winner.st.ClaimedByID != winner.agent.ID {
		t.Fatalf("the loser sees %+v, the winner %+v; both must name %s", loser.st, winner.st, winner.agent.ID)
	}
	if st, ok, err := b.State(t.Context(), "conv-race"); err != nil || !ok || st.ClaimedByID != winner.agent.ID ||
		st.Escalation != esc.ID || st.EscalatedAt.IsZero() {
		t.Fatalf("State = %+v, %v, %v", st, ok, err)
	}
	if st, won, err := a.Claim(t.Context(), "conv-race", winner.agent); err != nil || !won || st.ClaimedByID != winner.agent.ID {
		t.Fatalf("the winner's second click: %+v, %v, %v; want it still theirs", st, won, err)
	}
	if winner.agent.ID == sam.ID && winner.st.ClaimedBy != "Sam Lee" {
		t.Fatalf("claimed by %q, want the name as shown (Sam Lee)", winner.st.ClaimedBy)
	}

	resolves := race(func(c *relay.Conversations, ag relay.Agent) (relay.ConversationState, bool, error) {
		return c.Resolve(t.Context(), "conv-race", ag)
	})
	if resolves[0].won == resolves[1].won {
		t.Fatalf("resolves: won %v and %v; want exactly one", resolves[0].won, resolves[1].won)
	}
	st, _, err := a.State(t.Context(), "conv-race")
	if err != nil || !st.Resolved() || !st.Claimed() {
		t.Fatalf("after Resolve: %+v, %v", st, err)
	}
	if _, won, err := b.Claim(t.Context(), "conv-race", dana); won || err != nil {
		t.Fatalf("a claim of a resolved conversation won (%v, %v)", won, err)
	}

	// The visitor asks for a person again: the conversation is open.
	again := NewEvent(t, "conv-race", 2)
	again.Topic = relay.TopicEscalation
	clock.Advance(time.Hour)
	if err := b.Escalated(t.Context(), "support-slack", again, 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	st, _, err = a.State(t.Context(), "conv-race")
	if err != nil || st.Claimed() || st.Resolved() || st.Escalation != again.ID {
		t.Fatalf("after a new escalation: %+v, %v; want open, escalated by %s", st, err, again.ID)
	}
	sched, err := a.Scheduled(t.Context(), "support-slack")
	if err != nil || len(sched) != 2 || sched[1].Escalation != again.ID || !sched[1].Due.Equal(clock.Now().Add(10*time.Minute)) {
		t.Fatalf("re-page schedule %+v, %v; want both escalations, the second due in 10m", sched, err)
	}
	if err := b.Unschedule(t.Context(), "support-slack", esc.ID); err != nil {
		t.Fatal(err)
	}
	if sched, err := a.Scheduled(t.Context(), "support-slack"); err != nil || len(sched) != 1 || sched[0].Escalation != again.ID {
		t.Fatalf("after Unschedule: %+v, %v", sched, err)
	}
}
