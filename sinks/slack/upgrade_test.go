package slack_test

import (
	"fmt"
	"testing"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/sinks/slack/slacktest"
)

// TestRecordsFromBeforeTheUpgrade: a running installation keeps its
// threads and its half-posted turns across the upgrade to the relay's
// books. The records are written as the Slack sink wrote them before
// (thread:<conversation> with its channel and ts, part:<channel>:<event>
// with posted and the turn's root), and the upgraded sink goes on from
// them; the thread is then found from its ts too (two-way replies).
func TestRecordsFromBeforeTheUpgrade(t *testing.T) {
	t.Parallel()
	srv := slacktest.NewServer(t)
	ev := event(t, "chat-long.json", relay.TopicChat)
	if ev.ConversationID == "" {
		t.Fatal("the sample has no conversation")
	}
	// The first part was posted by the sink before the upgrade, which then
	// stopped (its second part failed).
	srv.Script(slacktest.Response{}, slacktest.Response{Status: 503, Body: "unavailable"})
	if err := newBot(t, srv, relay.NewMemKV(), relay.SinkDeps{}).Send(t.Context(), ev); err == nil {
		t.Fatal("the second part did not fail")
	}
	root := srv.Messages()[0].TS
	kv := relay.NewMemKV()
	for key, value := range map[string]string{
		"thread:" + ev.ConversationID:   fmt.Sprintf(`{"channel":%q,"ts":%q}`, channel, root),
		"part:" + channel + ":" + ev.ID: fmt.Sprintf(`{"posted":1,"root":%q}`, root),
		"thread:conv-elsewhere":         `{"channel":"C0OTHER00","ts":"1700000000.000001"}`,
	} {
		if err := kv.Put(t.Context(), key, value); err != nil {
			t.Fatal(err)
		}
	}

	sink := newBot(t, srv, kv, relay.SinkDeps{})
	if err := sink.Send(t.Context(), ev); err != nil {
		t.Fatalf("resuming the turn: %v", err)
	}
	next := turn(t, "next", ev.ConversationID, "the next turn")
	if err := sink.Send(t.Context(), next); err != nil {
		t.Fatal(err)
	}
	msgs := srv.Messages()
	if len(msgs) != 4 {
		t.Fatalf("%d messages, want the 3 parts once each and the next turn", len(msgs))
	}
	for i, m := range msgs[1:] {
		if m.ThreadTS != root {
			t.Errorf("message %d in thread %q, want the thread from before the upgrade %q", i+2, m.ThreadTS, root)
		}
	}
	books := relay.NewBooks(kv, sinkName, nil)
	ref, ok, err := books.Lookup(t.Context(), root)
	if want := relay.ConversationOf(ev); err != nil || !ok || ref != want {
		t.Errorf("Lookup(thread from before) = %+v, %v, %v; want %+v", ref, ok, err, want)
	}
	// A thread another channel recorded is not this channel's.
	if th, err := books.Thread(t.Context(), channel, relay.ThreadConversation{ConversationID: "conv-elsewhere"}); err != nil || th != "" {
		t.Errorf("another channel's thread: %q, %v", th, err)
	}
}
