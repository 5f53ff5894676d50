package discord_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/sinks/discord"
	"github.com/chatrelay/chatrelay/sinks/discord/discordtest"
)

// TestGoldenTwoWay: every request a two-way sink makes to Discord over a
// conversation's life, in order, is testdata/two-way.golden: the
// escalation with Claim and Resolve opening the thread; ✅ on an agent's
// reply that reached the visitor; the note in reply to one held (Chat
// Data refuses the key), then the note in reply to it dead-lettered; the escalation showing it claimed (Claim disabled), then
// resolved (both disabled); an unclaimed escalation posted again with the
// mention. GETs are listed by path (what the sink read before an edit).
func TestGoldenTwoWay(t *testing.T) {
	t.Parallel()
	srv := discordtest.NewServer(t, discordtest.WithRateLimit(0, 0))
	channel := srv.AddChannel(discordgo.ChannelTypeGuildText)
	sink, err := discord.New(discord.Config{Name: "chat-monitor", Token: relay.Secret(srv.Token()), ChannelID: channel,
		APIURL: srv.APIURL(), Mention: "<@&987654321098765432>", Reply: &relay.ReplyConfig{}}, relay.SinkDeps{})
	if err != nil {
		t.Fatal(err)
	}
	esc := eventFile(t, "live-chat-escalation.json", relay.TopicEscalation)
	if err := sink.Send(t.Context(), esc); err != nil {
		t.Fatalf("escalation: %v", err)
	}
	threads := srv.Threads(channel)
	if len(threads) != 1 {
		t.Fatalf("threads %v", threads)
	}
	thread := threads[0]
	agent := srv.Write(thread, dana, "reply: Hi, I'm Dana. A replacement ships today.")
	lost := srv.Write(thread, dana, "reply: Are you still there?")
	at := receivedAt.Add(3 * time.Minute)
	claimed := relay.ConversationState{Escalation: esc.ID, EscalatedAt: receivedAt, ClaimedBy: "Dana K", ClaimedByID: dana.ID, ClaimedAt: at}
	resolved := claimed
	resolved.ResolvedBy, resolved.ResolvedByID, resolved.ResolvedAt = "sam", sam.ID, at.Add(time.Minute)
	reply := func(m discordtest.Message) *relay.Reply {
		return &relay.Reply{Sink: "chat-monitor", Platform: "discord", Channel: thread, Thread: thread, MessageID: m.ID,
			AgentID: dana.ID, AgentName: "Dana K"}
	}
	steps := []relay.Followup{
		{Kind: relay.FollowupDelivered, Reply: reply(agent)},
		{Kind: relay.FollowupHeld, Reply: reply(lost), Reason: "Chat Data refuses chatrelay's API key (HTTP 401)",
			Until: "once the key is fixed", Status: "chatrelay --config /etc/chatrelay.yaml status"},
		{Kind: relay.FollowupDead, Reply: reply(lost), Reason: "chatdata: HTTP 401: Unauthorized: invalid API key",
			Replay: "chatrelay dlq replay 01936f3a-0000-7000-8000-000000000009.chatdata"},
		{Kind: relay.FollowupStatus, State: &claimed, Channel: channel, MessageID: thread},
		{Kind: relay.FollowupStatus, State: &resolved, Channel: channel, MessageID: thread},
		{Kind: relay.FollowupRepage, State: &relay.ConversationState{Escalation: esc.ID, EscalatedAt: receivedAt},
			Escalation: esc.ID, Waited: 10 * time.Minute},
	}
	for i, f := range steps {
		f.Sink, f.Key = "chat-monitor", f.Kind+"-"+string(rune('a'+i))
		ev, err := relay.NewFollowupEvent(esc.ConversationID, esc.ChatbotID, f)
		if err != nil {
			t.Fatal(err)
		}
		ev = withID(ev, 10+i)
		ev.ReceivedAt = receivedAt
		if err := sink.Send(t.Context(), ev); err != nil {
			t.Fatalf("%s: %v", f.Kind, err)
		}
	}

	var out []any
	for _, r := range srv.Requests() {
		if r.Status >= 300 {
			t.Fatalf("%s %s answered %d: %s", r.Method, r.Path, r.Status, r.Body)
		}
		step := map[string]any{"request": r.Method + " " + r.Path}
		if r.Method != http.MethodGet && len(r.Body) > 0 {
			step["body"] = json.RawMessage(r.Body)
		}
		out = append(out, step)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "two-way.golden")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./sinks/discord -run TestGoldenTwoWay -update to create it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("%s differs from what the sink sends; review the change and run with -update:\n%s", golden, lineDiff(string(want), buf.String()))
	}
}
