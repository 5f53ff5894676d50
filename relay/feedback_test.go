package relay_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

// settledFirst is an Outcomes that checks, for every outcome, that the
// store has not recorded the delivery yet (what the outcome queues is
// durable before the delivery is settled), then hands it on.
type settledFirst struct {
	t     *testing.T
	store relay.Store
	next  relay.Outcomes
	mu    sync.Mutex
	seen  []relay.Outcome
}

func (s *settledFirst) Outcome(ctx context.Context, o relay.Outcome) {
	rec, err := s.store.Lookup(ctx, o.Event.ID)
	if err != nil {
		s.t.Errorf("Lookup(%s): %v", o.Event.ID, err)
	} else {
		for _, d := range rec.Deliveries {
			if d.Sink == o.Sink && d.State != relay.StatePending {
				s.t.Errorf("outcome of %s on %s told after it was recorded (%s)", o.Event.ID, o.Sink, d.State)
			}
		}
	}
	s.mu.Lock()
	s.seen = append(s.seen, o)
	s.mu.Unlock()
	s.next.Outcome(ctx, o)
}

// TestFeedbackReachesTheReplysSink: how each agent reply's delivery to
// Chat Data ended is queued, as a follow-up event, for the sink the reply
// was written in (and for no other): a reaction once delivered, a note
// with the scrubbed reason and the replay command once dead-lettered; a
// replay that then succeeds is told too, and an outcome told twice (a
// delivery sent again after a crash) queues one follow-up. An escalation
// posted to a two-way sink is recorded in the conversation's state and
// scheduled for a re-page.
func TestFeedbackReachesTheReplysSink(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	refuse := true
	sink := newFakeSink(func(_ int, ev *relay.Event) error {
		mu.Lock()
		defer mu.Unlock()
		if refuse && ev.AgentReply() != nil && strings.Contains(ev.AgentReply().Text, "second") {
			return relay.Permanent(errors.New("chatdata: HTTP 404: conversation not found"), relay.ReasonClientError)
		}
		return nil
	})
	sink.name = "chatdata"
	clock := clockwork.NewRealClock()
	var outcomes *settledFirst
	var conversations *relay.Conversations
	f := start(t, t.TempDir(), sink, policy, 2, func(cfg *relay.DispatcherConfig) {
		store := cfg.Stats.(relay.Store)
		var err error
		conversations, err = relay.NewConversations(store.KV(relay.ConversationsNamespace), clock)
		if err != nil {
			t.Fatal(err)
		}
		fu, err := relay.NewFollowups(relay.FollowupsConfig{
			Store: store, Conversations: conversations, Destinations: []string{"chatdata"}, Clock: clock,
			TwoWay:        map[string]relay.ReplyConfig{"support-slack": {RepageAfter: 10 * time.Minute}},
			ReplayCommand: "chatrelay --config /etc/chatrelay.yaml dlq replay",
		})
		if err != nil {
			t.Fatal(err)
		}
		outcomes = &settledFirst{t: t, store: store, next: fu}
		cfg.Outcomes = outcomes
	})
	defer f.stop(t)

	first := storetest.NewReply(t, "conv-1", "1765000000.000200", "first")
	second := storetest.NewReply(t, "conv-1", "1765000000.000300", "second")
	for _, ev := range []*relay.Event{first, second} {
		if _, err := f.store.Append(t.Context(), ev, []string{"chatdata"}); err != nil {
			t.Fatal(err)
		}
	}
	q := f.store.Queue("support-slack")
	next := func() *relay.Delivery {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		d, err := q.Next(ctx)
		if err != nil {
			t.Fatalf("no follow-up for support-slack: %v", err)
		}
		if err := d.Ack(t.Context()); err != nil {
			t.Fatal(err)
		}
		rec, err := f.store.Lookup(t.Context(), d.Event.ID)
		if err != nil || len(rec.Deliveries) != 1 || rec.Deliveries[0].Sink != "support-slack" {
			t.Fatalf("follow-up %s queued for %+v (%v); want support-slack alone", d.Event.ID, rec, err)
		}
		return d
	}
	got := map[string]*relay.Followup{}
	for range 2 {
		d := next()
		fu := d.Event.Followup
		if d.Event.Topic != relay.TopicFollowup || fu == nil || fu.Sink != "support-slack" || d.Event.ConversationID != "conv-1" {
			t.Fatalf("queued %q %+v in %q, want a follow-up for support-slack in conv-1", d.Event.Topic, fu, d.Event.ConversationID)
		}
		got[fu.Reply.MessageID] = fu
	}
	if fu := got["1765000000.000200"]; fu == nil || fu.Kind != relay.FollowupDelivered || fu.Reply.Channel != "C0123456789" {
		t.Fatalf("first reply: %+v, want reply-delivered on its message", fu)
	}
	dead := got["1765000000.000300"]
	wantReplay := "chatrelay --config /etc/chatrelay.yaml dlq replay " + relay.DeadLetterID(second.ID, "chatdata")
	if dead == nil || dead.Kind != relay.FollowupDead || !strings.Contains(dead.Reason, "conversation not found") || dead.Replay != wantReplay {
		t.Fatalf("second reply: %+v, want reply-dead with its reason and %q", dead, wantReplay)
	}
	if note := dead.Note(); !strings.HasPrefix(note, relay.NotDelivered+": chatdata: HTTP 404") || !strings.HasSuffix(note, "To send it again: "+wantReplay) {
		t.Fatalf("note %q", note)
	}

	// The same outcome told again (sent again after a crash): nothing new.
	outcomes.mu.Lock()
	again := outcomes.seen[0]
	outcomes.mu.Unlock()
	outcomes.next.Outcome(t.Context(), again)

	// Replayed, and delivered this time: the thread is told that too.
	mu.Lock()
	refuse = false
	mu.Unlock()
	// The note is queued before the delivery is parked: wait for the dead
	// letter.
	relaytest.Eventually(t, 10*time.Second, "the dead letter", func() bool {
		dl, err := f.store.ListDead(t.Context(), "chatdata", 0)
		return err == nil && len(dl) == 1
	})
	if n, err := f.store.Requeue(t.Context(), []string{relay.DeadLetterID(second.ID, "chatdata")}); err != nil || n != 1 {
		t.Fatalf("Requeue = %d, %v", n, err)
	}
	if d := next(); d.Event.Followup.Kind != relay.FollowupDelivered || d.Event.Followup.Reply.MessageID != "1765000000.000300" {
		t.Fatalf("after the replay: %+v", d.Event.Followup)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if d, err := q.Next(ctx); err == nil {
		t.Fatalf("another follow-up queued: %+v (a repeated outcome must queue once)", d.Event.Followup)
	}
	// An escalation posted to the two-way sink: recorded, and scheduled.
	esc := storetest.NewEvent(t, "conv-2", 9)
	esc.Topic = relay.TopicEscalation
	outcomes.next.Outcome(t.Context(), relay.Outcome{Sink: "support-slack", Event: esc})
	st, ok, err := conversations.State(t.Context(), "conv-2")
	if err != nil || !ok || st.Escalation != esc.ID || st.EscalatedAt.IsZero() {
		t.Fatalf("after the escalation: %+v, %v, %v", st, ok, err)
	}
	if sched, err := conversations.Scheduled(t.Context(), "support-slack"); err != nil || len(sched) != 1 || sched[0].Conversation != "conv-2" {
		t.Fatalf("re-page schedule %+v, %v", sched, err)
	}
	// Not on a sink that takes no replies, nor when it was dead-lettered.
	outcomes.next.Outcome(t.Context(), relay.Outcome{Sink: "crm", Event: storetest.NewEvent(t, "conv-3", 1)})
	dead3 := storetest.NewEvent(t, "conv-4", 1)
	dead3.Topic = relay.TopicEscalation
	outcomes.next.Outcome(t.Context(), relay.Outcome{Sink: "support-slack", Event: dead3, Dead: true})
	for _, conv := range []string{"conv-3", "conv-4"} {
		if _, ok, _ := conversations.State(t.Context(), conv); ok {
			t.Fatalf("%s: state recorded", conv)
		}
	}
}
