package discord_test

import (
	"slices"
	"testing"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/sinks/discord/discordtest"
)

// TestThreadsFromBeforeTheUpgrade: a running installation keeps its
// conversations' threads across the upgrade to the relay's books. The
// record is written as the Discord sink wrote it before
// (thread:<channel>:<conversation> holding the thread's id); the upgraded
// sink posts the conversation's next turn into that thread, and the thread
// is then found from its id too (two-way replies).
func TestThreadsFromBeforeTheUpgrade(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true, discordgo.ChannelTypeGuildText, discordtest.WithRateLimit(0, 0))
	if err := f.sink(t, relay.SinkDeps{KV: relay.NewMemKV()}).Send(t.Context(), chatEvent(t, 1, "conv-a", "Hello?")); err != nil {
		t.Fatal(err)
	}
	threads := f.srv.Threads(f.channel)
	if len(threads) != 1 {
		t.Fatalf("%d threads, want 1", len(threads))
	}
	kv := relay.NewMemKV()
	if err := kv.Put(t.Context(), "thread:"+f.channel+":conv-a", threads[0]); err != nil {
		t.Fatal(err)
	}
	if err := f.sink(t, relay.SinkDeps{KV: kv}).Send(t.Context(), chatEvent(t, 2, "conv-a", "Still there?")); err != nil {
		t.Fatal(err)
	}
	if n := len(f.srv.Threads(f.channel)); n != 1 {
		t.Fatalf("%d threads, want the one from before the upgrade", n)
	}
	if got := eventIDs(f.srv.Messages(threads[0])); !slices.Contains(got, eventID(2)) {
		t.Errorf("thread holds %v, want the next turn in it", got)
	}
	ref, ok, err := relay.StoreThreads{KV: func(string) relay.KV { return kv }}.ThreadConversation(t.Context(), f.cfg.Name, threads[0])
	if err != nil || !ok || ref.ConversationID != "conv-a" {
		t.Errorf("the conversation of the thread from before = %+v, %v, %v; want conv-a", ref, ok, err)
	}
}
