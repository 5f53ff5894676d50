package relay_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
)

// plainKV is a KV that cannot compare and set.
type plainKV struct{ relay.KV }

func escalation(conv, id string) *relay.Event {
	return &relay.Event{ID: id, Topic: relay.TopicEscalation, ConversationID: conv, ChatbotID: "bot"}
}

func TestConversationsNeedSwap(t *testing.T) {
	t.Parallel()
	if _, err := relay.NewConversations(plainKV{relay.NewMemKV()}, nil); !errors.Is(err, relay.ErrNoSwap) {
		t.Fatalf("NewConversations on a KV without Swap: %v, want ErrNoSwap", err)
	}
}

// TestConversationStates: what each step leaves in a conversation's state
// and its sink's re-page schedule.
func TestConversationStates(t *testing.T) {
	t.Parallel()
	dana, sam := relay.Agent{ID: "U1", Name: " Dana  "}, relay.Agent{ID: "U2"}
	type step func(ctx context.Context, c *relay.Conversations) error
	escalate := func(id string, after time.Duration) step {
		return func(ctx context.Context, c *relay.Conversations) error {
			return c.Escalated(ctx, "s", escalation("c", id), after)
		}
	}
	claim := func(a relay.Agent, want bool) step {
		return func(ctx context.Context, c *relay.Conversations) error {
			if _, won, err := c.Claim(ctx, "c", a); err != nil || won != want {
				return errors.Join(err, errors.New("claim: unexpected outcome"))
			}
			return nil
		}
	}
	resolve := func(a relay.Agent, want bool) step {
		return func(ctx context.Context, c *relay.Conversations) error {
			if _, won, err := c.Resolve(ctx, "c", a); err != nil || won != want {
				return errors.Join(err, errors.New("resolve: unexpected outcome"))
			}
			return nil
		}
	}
	repaged := func(id string) step {
		return func(ctx context.Context, c *relay.Conversations) error { return c.Repaged(ctx, "c", id) }
	}
	tests := []struct {
		name      string
		steps     []step
		want      relay.ConversationState // times: only whether set
		scheduled []string                // escalations on s's schedule
	}{
		{"escalated, no re-page", []step{escalate("e1", 0)}, relay.ConversationState{Escalation: "e1"}, nil},
		{"escalated with re-page", []step{escalate("e1", time.Minute)}, relay.ConversationState{Escalation: "e1"}, []string{"e1"}},
		{"same escalation twice (two sinks)", []step{escalate("e1", time.Minute), escalate("e1", time.Minute)},
			relay.ConversationState{Escalation: "e1"}, []string{"e1"}},
		{"claimed, then escalated again: still theirs, no re-page",
			[]step{escalate("e1", 0), claim(dana, true), escalate("e2", time.Minute)},
			relay.ConversationState{Escalation: "e2", ClaimedBy: "Dana", ClaimedByID: "U1"}, nil},
		{"a second agent loses", []step{claim(dana, true), claim(sam, false), claim(dana, true)},
			relay.ConversationState{ClaimedBy: "Dana", ClaimedByID: "U1"}, nil},
		{"resolved without a claim; the name is the id", []step{resolve(sam, true), resolve(dana, false), claim(dana, false)},
			relay.ConversationState{ResolvedBy: "U2", ResolvedByID: "U2"}, nil},
		{"resolved, then escalated: open again", []step{claim(dana, true), resolve(dana, true), escalate("e3", time.Minute)},
			relay.ConversationState{Escalation: "e3"}, []string{"e3"}},
		{"re-paged: only the escalation it was for", []step{escalate("e1", 0), repaged("e0"), repaged("e1")},
			relay.ConversationState{Escalation: "e1", RepagedAt: time.Unix(1, 0)}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := relay.NewConversations(relay.NewMemKV(), clockwork.NewFakeClock())
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tc.steps {
				if err := s(t.Context(), c); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
			}
			st, ok, err := c.State(t.Context(), "c")
			if err != nil || !ok {
				t.Fatalf("State = %v, %v", ok, err)
			}
			set := func(t time.Time) bool { return !t.IsZero() }
			if st.Escalation != tc.want.Escalation || st.ClaimedBy != tc.want.ClaimedBy || st.ClaimedByID != tc.want.ClaimedByID ||
				st.ResolvedBy != tc.want.ResolvedBy || st.ResolvedByID != tc.want.ResolvedByID ||
				set(st.EscalatedAt) != (tc.want.Escalation != "") || set(st.ClaimedAt) != (tc.want.ClaimedByID != "") ||
				set(st.ResolvedAt) != (tc.want.ResolvedByID != "") || set(st.RepagedAt) != set(tc.want.RepagedAt) {
				t.Fatalf("state %+v, want %+v", st, tc.want)
			}
			sched, err := c.Scheduled(t.Context(), "s")
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range sched {
				got = append(got, r.Escalation)
			}
			if len(got) != len(tc.scheduled) || (len(got) > 0 && got[0] != tc.scheduled[0]) {
				t.Fatalf("scheduled %v, want %v", got, tc.scheduled)
			}
		})
	}
}
