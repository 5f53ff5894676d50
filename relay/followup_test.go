package relay_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

// TestFollowupEvents: a follow-up event reads back as it was made, is
// keyed by its sink and key (not its body), and a body that merely claims
// the topic carries none.
func TestFollowupEvents(t *testing.T) {
	t.Parallel()
	r := sampleReply()
	st := relay.ConversationState{ClaimedBy: "Dana", ClaimedByID: "U1", ClaimedAt: time.Unix(1765000000, 0).UTC()}
	for _, fu := range []relay.Followup{
		{Kind: relay.FollowupDelivered, Sink: "support-slack", Key: "delivered:e1", Reply: &r},
		{Kind: relay.FollowupDead, Sink: "support-slack", Key: "dead:e1:1", Reply: &r, Reason: "HTTP 404", Replay: "chatrelay dlq replay e1.chatdata"},
		{Kind: relay.FollowupStatus, Sink: "support-slack", Key: "status:x", State: &st, Channel: "C1", MessageID: "1.2",
			Message: json.RawMessage(`[{"type":"section"}]`)},
		{Kind: relay.FollowupRepage, Sink: "support-slack", Key: "repage:e2", State: &relay.ConversationState{}, Escalation: "e2", Waited: 10 * time.Minute},
	} {
		ev, err := relay.NewFollowupEvent("conv", "bot", fu)
		if err != nil {
			t.Fatal(err)
		}
		back, err := relay.DecodeEvent(ev.Body)
		if err != nil || back.Topic != relay.TopicFollowup || back.ConversationID != "conv" || back.Followup == nil {
			t.Fatalf("%s: read back %+v, %v", fu.Kind, back, err)
		}
		a, _ := json.Marshal(fu)
		b, _ := json.Marshal(back.Followup)
		if string(a) != string(b) {
			t.Fatalf("%s: read back as %s, want %s", fu.Kind, b, a)
		}
		other := fu
		other.Reason = "another text"
		again, _ := relay.NewFollowupEvent("conv", "bot", other)
		if again.DedupeKey() != ev.DedupeKey() {
			t.Fatalf("%s: same sink and key, another dedupe key", fu.Kind)
		}
		other.Sink = "discord"
		elsewhere, _ := relay.NewFollowupEvent("conv", "bot", other)
		if elsewhere.DedupeKey() == ev.DedupeKey() {
			t.Fatalf("%s: another sink, same dedupe key", fu.Kind)
		}
	}
	for _, body := range []string{`{"event":"followup"}`, `{"event":"followup","followup":{"kind":"status"}}`, `{"event":"chat","followup":{"kind":"status","sink":"s","key":"k"}}`} {
		ev, err := relay.DecodeEvent([]byte(body))
		if err != nil || ev.Followup != nil {
			t.Fatalf("%s: follow-up %+v, %v; want none", body, ev.Followup, err)
		}
	}
	if _, err := relay.NewFollowupEvent("conv", "", relay.Followup{Kind: relay.FollowupRepage, Sink: "s"}); err == nil {
		t.Fatal("a follow-up without a key was made")
	}
}

// TestFollowupWords: what every platform says, in the same words.
func TestFollowupWords(t *testing.T) {
	t.Parallel()
	at := time.Unix(1, 0)
	for _, tc := range []struct{ got, want string }{
		{relay.ConversationState{}.Status(), ""},
		{relay.ConversationState{ClaimedBy: "Dana", ClaimedAt: at}.Status(), "🙋 Claimed by Dana"},
		{relay.ConversationState{ClaimedBy: "Dana", ClaimedAt: at, ResolvedBy: "Sam", ResolvedAt: at}.Status(), "✅ Resolved by Sam"},
		{(&relay.Followup{Reason: "HTTP 404: conversation not found", Replay: "chatrelay dlq replay e.chatdata"}).Note(),
			"This reply did not reach the visitor: HTTP 404: conversation not found. To send it again: chatrelay dlq replay e.chatdata"},
		{(&relay.Followup{}).Note(), "This reply did not reach the visitor."},
		{(&relay.Followup{Waited: 10 * time.Minute}).RepageLine(), "Still unclaimed after 10m: a visitor is waiting for a person."},
		{(&relay.Followup{Waited: 90 * time.Minute}).RepageLine(), "Still unclaimed after 1h30m: a visitor is waiting for a person."},
		{(&relay.Followup{Waited: 2 * time.Hour}).RepageLine(), "Still unclaimed after 2h: a visitor is waiting for a person."},
		{(&relay.Followup{Waited: 45 * time.Second}).RepageLine(), "Still unclaimed after 45s: a visitor is waiting for a person."},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// TestReceiverRefusesFollowups: followup is the relay's own topic too.
func TestReceiverRefusesFollowups(t *testing.T) {
	t.Parallel()
	f := newReceiver(t, nil, nil)
	chat := readPayload(t, "chat.json")
	resp, a := post(t, f.srv.URL+"/webhook", "POST", chat, relay.Sign(chat, secret), relay.TopicFollowup)
	if resp.StatusCode != 400 || !strings.Contains(a.Error, relay.TopicFollowup) {
		t.Fatalf("%d %+v, want 400 naming the topic", resp.StatusCode, a)
	}
}
