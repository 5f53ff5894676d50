package storetest

import (
	"reflect"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
)

// NewReply builds the agent-reply event of a message written in a relay
// thread: msgID is the platform's id of the message, text what the
// visitor is to read.
func NewReply(t testing.TB, conv, msgID, text string) *relay.Event {
	t.Helper()
	ev, err := relay.NewReplyEvent(conv, "bot", relay.Reply{
		Text: text, AgentID: "U0123AGENT", AgentName: "Dana", AgentAvatar: "https://avatars.example.com/dana_72.png",
		Sink: "support-slack", Platform: "slack", Channel: "C0123456789", Thread: "1765000000.000100", MessageID: msgID,
	})
	if err != nil {
		t.Fatal(err)
	}
	ev.ID = newID(t)
	ev.ReceivedAt = time.Now()
	return ev
}

// testAgentReplies: an agent reply is deduplicated by the platform's id of
// its message, not by its body (a platform's retry of one message is one
// reply, even when the adapter made a different body of it: a display name
// looked up again), across a restart too; and it comes back from the store
// with every field of its reply.
func testAgentReplies(t *testing.T, open Factory) {
	h := open(t, clockwork.NewFakeClock())
	first := NewReply(t, "c1", "1765000000.000200", "Hi Sam, I've refunded the renewal.")
	acc := mustAppend(t, h.Store, first, "chatdata")
	if acc.Duplicate || acc.ID != first.ID {
		t.Fatalf("Append = %+v, want new event %s", acc, first.ID)
	}

	retry := NewReply(t, "c1", "1765000000.000200", "Hi Sam, I've refunded the renewal!")
	if string(retry.Body) == string(first.Body) {
		t.Fatal("test setup: the retry's body must differ")
	}
	if acc := mustAppend(t, h.Store, retry, "chatdata"); !acc.Duplicate || acc.ID != first.ID {
		t.Fatalf("same message id, other body: %+v, want duplicate of %s", acc, first.ID)
	}
	second := NewReply(t, "c1", "1765000000.000300", "Anything else?")
	if acc := mustAppend(t, h.Store, second, "chatdata"); acc.Duplicate {
		t.Fatalf("another message id answered duplicate of %s", acc.ID)
	}

	s := h.Reopen(t)
	if _, err := s.Reconcile(t.Context(), []string{"chatdata"}); err != nil {
		t.Fatal(err)
	}
	again := NewReply(t, "c1", "1765000000.000200", "Hi Sam, I've refunded the renewal.")
	if acc := mustAppend(t, s, again, "chatdata"); !acc.Duplicate || acc.ID != first.ID {
		t.Fatalf("after a restart: %+v, want duplicate of %s", acc, first.ID)
	}
	for _, want := range []*relay.Event{first, second} {
		d := next(t, s, "chatdata")
		got := d.Event
		if got.ID != want.ID || got.Topic != relay.TopicAgentReply || got.ConversationID != "c1" || got.ChatbotID != "bot" {
			t.Fatalf("delivered %s topic %q conversation %q chatbot %q, want %s agent-reply in c1 of bot",
				got.ID, got.Topic, got.ConversationID, got.ChatbotID, want.ID)
		}
		if got.Reply == nil || !reflect.DeepEqual(*got.Reply, *want.Reply) {
			t.Fatalf("reply read back as %+v, want %+v", got.Reply, want.Reply)
		}
		ack(t, d)
	}
	none(t, s, "chatdata")
}
