package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/chatdata/chatdatatest"
	"github.com/chatrelay/chatrelay/sinks/discord/discordtest"
)

// TestDiscordCatchUpAfterRestart drives the binary (serve, the embedded
// store) against fakes of Discord (REST and gateway) and Chat Data: a
// reply and a note written in the escalation's thread while chatrelay is
// stopped (Discord keeps no messages for the bot) are read when it
// starts again: the reply reaches the visitor once, with ✅; the note
// does not; a further restart takes nothing again.
func TestDiscordCatchUpAfterRestart(t *testing.T) {
	t.Parallel()
	rest := discordtest.NewServer(t, discordtest.WithRateLimit(0, 0))
	channel := rest.AddChannel(discordgo.ChannelTypeGuildText)
	gw := discordtest.NewGateway(t, discordtest.WithREST(rest))
	api := chatdatatest.NewServer(t)
	const conv = "5b0c7c1e-2d2f-4a36-9d8e-0f7d2c1a9b11"
	dir := t.TempDir()
	config := discordTwoWayYAML(twoWaySetup{secret: "catchup-secret", level: "info", maxAge: "1h", dir: dir,
		apiKey: api.Key, apiURL: api.URL, gw: gw, channel: channel})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	runs := newDiscordRuns(t, ctx, gw)
	start := func(name string, sessions int) *replicaProc {
		t.Helper()
		return runs.start(name, config, sessions)
	}
	caughtUp := func(r *replicaProc) string {
		t.Helper()
		line := ""
		relaytest.Eventually(t, 30*time.Second, r.name+"'s catch-up", func() bool {
			for l := range strings.Lines(r.logs.String()) {
				if strings.Contains(l, `"msg":"discord catch-up`) {
					line = l
				}
			}
			return line != ""
		})
		return line
	}

	first := start("first", 1)
	body, err := os.ReadFile(filepath.Join("..", "..", "sinks", "discord", "testdata", "live-chat-escalation.json"))
	if err != nil {
		t.Fatal(err)
	}
	postSignedTopic(t, first.listen, "catchup-secret", "live-chat-escalation", body)
	relaytest.Eventually(t, 30*time.Second, "the escalation delivered", func() bool { return first.delivered("live-chat-escalation") })
	threads := rest.Threads(channel)
	if len(threads) != 1 {
		t.Fatalf("threads %v", threads)
	}
	thread := threads[0]
	first.stop()

	// Written while chatrelay is stopped: the gateway does not see them.
	dana := discordgo.User{ID: "1310000000000000777", Username: "dana", GlobalName: "Dana K"}
	note := rest.Write(thread, dana, "checking with the warehouse first")
	reply := rest.Write(thread, dana, "reply: Your replacement ships today.")
	checked := func(id string) bool {
		return slices.Contains(rest.Reactions(), discordtest.Reaction{ChannelID: thread, MessageID: id, Emoji: "✅"})
	}

	second := start("second", 2)
	relaytest.Eventually(t, 30*time.Second, "✅ on the reply written while stopped", func() bool { return checked(reply.ID) })
	if line := caughtUp(second); !strings.Contains(line, `"threads":1,"messages":2,"replies":1`) {
		t.Fatalf("catch-up line %s", line)
	}
	msgs := api.Messages(conv)
	if len(msgs) != 1 || msgs[0].Text != "Your replacement ships today." || msgs[0].Name != "Dana K" {
		t.Fatalf("Chat Data got %+v; want the reply once, as Dana K", msgs)
	}
	if checked(note.ID) {
		t.Fatal("the note got ✅")
	}
	second.stop()

	// Started again: nothing new, nothing sent twice.
	third := start("third", 3)
	if line := caughtUp(third); !strings.Contains(line, `"threads":1,"messages":0,"replies":0`) {
		t.Fatalf("catch-up line %s", line)
	}
	third.stop()
	if n := len(api.Messages(conv)); n != 1 {
		t.Fatalf("Chat Data got the reply %d times", n)
	}
	for _, r := range runs.all {
		relaytest.AssertNoSecret(t, r.name+"'s logs", r.logs.String(), gw.Token(), api.Key)
	}
}
