package relay_test

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

// replica is one process's Conversations and Repager on a shared store.
type replica struct {
	conv *relay.Conversations
	done chan error
}

func startRepager(t *testing.T, store relay.Store, clock *clockwork.FakeClock, ctx context.Context, poll time.Duration) *replica {
	t.Helper()
	c, err := relay.NewConversations(store.KV(relay.ConversationsNamespace), clock)
	if err != nil {
		t.Fatal(err)
	}
	r, err := relay.NewRepager(relay.RepagerConfig{Conversations: c, Store: store, Clock: clock,
		After: map[string]time.Duration{"support-slack": 10 * time.Minute, "crm": 0}, Poll: poll})
	if err != nil {
		t.Fatal(err)
	}
	rep := &replica{conv: c, done: make(chan error, 1)}
	go func() { rep.done <- r.Run(ctx) }()
	return rep
}

// TestRepage: an escalation nobody claims within repage_after is queued
// again for its sink, once, although two replicas' repagers find it due
// (a third replica, which has none, recorded it); one that was claimed
// meanwhile is not. All on a fake clock.
func TestRepage(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClock() // the repagers' alone: waiting counts their timers
	store, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx, cancel := context.WithCancel(t.Context())
	a, b := startRepager(t, store, clock, ctx, 5*time.Minute), startRepager(t, store, clock, ctx, 5*time.Minute)
	defer func() {
		cancel()
		for _, r := range []*replica{a, b} {
			if err := <-r.done; err != nil {
				t.Error(err)
			}
		}
	}()
	c, err := relay.NewConversations(store.KV(relay.ConversationsNamespace), clock)
	if err != nil {
		t.Fatal(err)
	}
	// waiting waits until both repagers wait on their timers: they have
	// looked at the schedules as they stood at their last wake.
	waiting := func() {
		t.Helper()
		wctx, wcancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer wcancel()
		if err := clock.BlockUntilContext(wctx, 2); err != nil {
			t.Fatalf("the repagers do not wait: %v", err)
		}
	}
	waiting()

	unclaimed := storetest.NewEvent(t, "conv-unclaimed", 1)
	claimed := storetest.NewEvent(t, "conv-claimed", 2)
	for _, ev := range []*relay.Event{unclaimed, claimed} {
		ev.Topic = relay.TopicEscalation
		if err := c.Escalated(t.Context(), "support-slack", ev, 10*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if _, won, err := c.Claim(t.Context(), "conv-claimed", relay.Agent{ID: "U0DANA", Name: "Dana"}); !won || err != nil {
		t.Fatalf("Claim = %v, %v", won, err)
	}
	q := store.Queue("support-slack")
	for _, step := range []time.Duration{5 * time.Minute, 5*time.Minute - time.Second} {
		clock.Advance(step) // the poll finds the schedule: nothing due yet
		waiting()
		if d, err := q.TryNext(t.Context()); err != nil || d != nil {
			t.Fatalf("re-paged before repage_after: %+v, %v", d, err)
		}
	}
	clock.Advance(time.Second)
	waiting()

	d, err := q.TryNext(t.Context())
	if err != nil || d == nil {
		t.Fatalf("no re-page: %+v, %v", d, err)
	}
	fu := d.Event.Followup
	if fu == nil || fu.Kind != relay.FollowupRepage || d.Event.ConversationID != "conv-unclaimed" || fu.Escalation != unclaimed.ID ||
		fu.Waited != 10*time.Minute || d.Event.ChatbotID != "bot" {
		t.Fatalf("queued %+v in %s, want the re-page of %s", fu, d.Event.ConversationID, unclaimed.ID)
	}
	if err := d.Ack(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d, err := q.TryNext(t.Context()); err != nil || d != nil {
		t.Fatalf("a second re-page (two replicas, or the claimed one): %+v, %v", d, err)
	}
	st, _, err := b.conv.State(t.Context(), "conv-unclaimed")
	if err != nil || !st.RepagedAt.Equal(clock.Now()) {
		t.Fatalf("state %+v, %v; want re-paged now", st, err)
	}
	if sched, err := a.conv.Scheduled(t.Context(), "support-slack"); err != nil || len(sched) != 0 {
		t.Fatalf("still scheduled: %+v, %v", sched, err)
	}
	// Re-paged once: an hour later nothing more.
	for range 12 {
		clock.Advance(5 * time.Minute)
		waiting()
	}
	if d, err := q.TryNext(t.Context()); err != nil || d != nil {
		t.Fatalf("re-paged again: %+v, %v", d, err)
	}
}

// TestRepageOfItsOwnEscalation: a repager sees at once what its own
// process scheduled: the re-page comes at repage_after, not at the next
// poll.
func TestRepageOfItsOwnEscalation(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClock()
	store, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx, cancel := context.WithCancel(t.Context())
	r := startRepager(t, store, clock, ctx, 24*time.Hour)
	defer func() {
		cancel()
		if err := <-r.done; err != nil {
			t.Error(err)
		}
	}()
	ev := storetest.NewEvent(t, "conv-1", 1)
	ev.Topic = relay.TopicEscalation
	if err := r.conv.Escalated(t.Context(), "support-slack", ev, 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	// Whether the repager woke to the news before or after this advance,
	// the escalation is due when it looks.
	clock.Advance(10 * time.Minute)
	nctx, ncancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer ncancel()
	d, err := store.Queue("support-slack").Next(nctx)
	if err != nil || d.Event.Followup == nil || d.Event.Followup.Escalation != ev.ID {
		t.Fatalf("re-page: %+v, %v", d, err)
	}
}
