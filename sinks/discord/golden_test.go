package discord_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/sinks/discord"
	"github.com/chatrelay/chatrelay/sinks/discord/discordtest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with what the sink sends")

// longAnswer is an answer of about 15,000 characters: paragraphs, a list
// and a code block that a message boundary falls into.
func longAnswer() string {
	var b strings.Builder
	b.WriteString("## Shipping to Canada, in detail\n\n")
	for i := 1; i <= 20; i++ {
		fmt.Fprintf(&b, "Paragraph %d. Standard delivery takes 5-7 business days and express takes 2-3; "+
			"customs duties are collected at the door, and tracking starts once the parcel leaves our warehouse. "+
			"Orders placed before noon ship the same day, except on public holidays in Ontario or Quebec.\n\n", i)
	}
	b.WriteString("Here is how to call the tracking API:\n\n```python\n")
	for i := 1; i <= 60; i++ {
		fmt.Fprintf(&b, "status_%d = client.track(order_id=%d, carrier=\"canada-post\", verbose=True)\n", i, 1000+i)
	}
	b.WriteString("```\n\n")
	for i := 21; i <= 45; i++ {
		fmt.Fprintf(&b, "- Item %d: remote areas (Yukon, Nunavut, Northwest Territories) can add up to 4 days; "+
			"we email you when the carrier hands the parcel over.\n", i)
	}
	b.WriteString("\nThat is everything you need to know about shipping to Canada.")
	return b.String()
}

const markdownAnswer = "# Returns\n\n" +
	"You can return **any item** within *30 days*. Here's how:\n\n" +
	"1. Open [your orders](https://example.com/orders).\n" +
	"2. Click __Return__ next to the item.\n" +
	"3. Print the label.\n\n" +
	"> Refunds take 5-10 business days after we receive the parcel.\n\n" +
	"| Item | Window |\n|---|---|\n| Shoes | 30 days |\n| Sale items | 14 days |\n\n" +
	"```json\n{\"order_id\": 1234, \"reason\": \"size\"}\n```\n\n" +
	"~~Free return shipping~~ is no longer offered; ||the fee is $5||. Use `RETURN5` at checkout."

// chatBody builds a chat event body.
func chatBody(question, answer string, score float64, conversation string) []byte {
	b, _ := json.Marshal(map[string]any{
		"messages":        []map[string]string{{"role": "user", "content": question}},
		"answer":          map[string]any{"role": "assistant", "content": answer, "score": score},
		"chatbot_id":      "654aee418bc9a33b0e50d0ad",
		"source":          "widget",
		"conversation_id": conversation,
	})
	return b
}

// userMarkup is a visitor's message full of Discord markup.
const userMarkup = "# URGENT\n> [Reset your password](https://evil.example/login) **now** ||secret|| `code` ~~gone~~ _x_ -# small\n- item \\<@&123456789012345678>"

func TestGolden(t *testing.T) {
	t.Parallel()
	hostile := "@everyone @here look: <@&123456789012345678> <@123456789012345678> <@!223456789012345678> <#323456789012345678>"
	tmpl, err := relay.ParseTemplate("discord", "**{{.Question}}**\n{{with .Answer}}{{.Content}}{{end}}\n-# score {{score .}} · {{.Source}}")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		event   *relay.Event
		cfg     func(*discord.Config)
		packed  []*relay.Event // SendPacked instead of Send
		minMsgs int            // at least this many messages
		// bot: post as a bot to a text channel; the golden file then
		// holds each request's path and body. before is sent first and
		// left out of the golden file.
		bot    bool
		before *relay.Event
	}{
		{name: "chat", event: eventFile(t, "chat.json", relay.TopicChat)},
		{name: "markdown", event: eventBody(t, chatBody("How do returns work?", markdownAnswer, 0.62, "conv-md"), relay.TopicChat)},
		{name: "long", event: eventBody(t, chatBody("Tell me everything about shipping to Canada.", longAnswer(), 0.9, "conv-long"), relay.TopicChat), minMsgs: 3},
		{name: "too-long", event: eventBody(t, chatBody("Print the whole manual.", strings.Repeat(longAnswer()+"\n\n", 3), 0.3, "conv-huge"), relay.TopicChat), minMsgs: 4},
		{name: "mentions", event: eventBody(t, chatBody(hostile, "Sure: "+hostile, 0.4, "conv-ping"), relay.TopicChat)},
		{name: "minimal", event: eventBody(t, []byte(`{"messages":[{"role":"user","content":"Hi"}],"answer":{"content":"Hello! How can I help?"}}`), relay.TopicChat)},
		{name: "string-fields", event: eventFile(t, "chat-string-fields.json", relay.TopicChat)},
		{name: "no-answer", event: eventFile(t, "chat-no-answer.json", relay.TopicChat)},
		{name: "low-score", event: eventFile(t, "chat-low-score.json", relay.TopicChat)},
		// What the visitor typed is shown as typed: no masked link, no
		// pill, no heading; the bot's answer keeps its Markdown.
		{name: "user-markup", event: eventBody(t, chatBody(userMarkup, "Use **Settings → Security**, or [reset it here](https://example.com/reset).", 0.7, "conv-markup"), relay.TopicChat)},
		{name: "lead", event: eventFile(t, "lead-submission.json", relay.TopicLead)},
		{name: "lead-custom-fields", event: eventFile(t, "lead-custom-fields.json", relay.TopicLead)},
		{name: "escalation-history", event: eventFile(t, "live-chat-escalation-history.json", relay.TopicEscalation)},
		{name: "escalation-complaint", event: eventFile(t, "live-chat-escalation-complaint.json", relay.TopicEscalation),
			cfg: func(c *discord.Config) { c.Mention = "<@&987654321098765432>" }},
		// Bot mode: the thread a conversation opens is named after the
		// visitor's words, else their name, never with mention syntax.
		{name: "lead-opens-thread", bot: true, event: eventFile(t, "lead-custom-fields.json", relay.TopicLead)},
		{name: "hostile-thread-name", bot: true, event: eventBody(t, chatBody(hostile+" <!channel> need help", "Happy to help.", 0.9, "conv-hostile"), relay.TopicChat)},
		{name: "escalation", event: eventFile(t, "live-chat-escalation.json", relay.TopicEscalation)},
		{name: "escalation-mention", event: eventFile(t, "live-chat-escalation.json", relay.TopicEscalation),
			cfg: func(c *discord.Config) { c.Mention = "<@&987654321098765432>" }},
		{name: "chat-with-mention-configured", event: eventBody(t, chatBody(hostile, "No ping here.", 0.9, "conv-quiet"), relay.TopicChat),
			cfg: func(c *discord.Config) { c.Mention = "<@987654321098765432>" }},
		{name: "agent-reply", event: eventFile(t, "agent-reply.json", relay.TopicAgentReply)},
		{name: "unknown-topic", event: eventBody(t, []byte(`{"event":"order-created","order":{"id":1234,"total":"49.90 CAD"},"chatbot_id":"654aee418bc9a33b0e50d0ad","client_ip":"203.0.113.7","note":"first order"}`), "order-created")},
		{name: "template", event: eventFile(t, "chat.json", relay.TopicChat), cfg: func(c *discord.Config) { c.Template = tmpl }},
		// An escalation in a conversation that has a thread: posted in the
		// channel, linking the thread, pinging only the configured role.
		{name: "escalation-in-thread", bot: true,
			before: withID(eventBody(t, chatBody("My order arrived broken.", "I'm sorry to hear that.", 0.5, "conv-esc"), relay.TopicChat), 7),
			event: func() *relay.Event {
				ev := eventFile(t, "live-chat-escalation.json", relay.TopicEscalation)
				ev.ConversationID = "conv-esc"
				return ev
			}(),
			cfg: func(c *discord.Config) { c.Mention = "<@&987654321098765432>" }},
		// A lead in a conversation that has a thread: posted in the
		// channel, linking the thread, so that sales sees it.
		{name: "lead-in-thread", bot: true,
			before: withID(eventBody(t, chatBody("Can I get a quote for 40 seats?", "Sure, leave your details.", 0.8, "conv-lead"), relay.TopicChat), 7),
			event: func() *relay.Event {
				ev := eventFile(t, "lead-submission.json", relay.TopicLead)
				ev.ConversationID = "conv-lead"
				return ev
			}()},
		// The same turns from a bot, opening their conversation's thread.
		{name: "bot-escalation-complaint", bot: true, event: eventFile(t, "live-chat-escalation-complaint.json", relay.TopicEscalation),
			cfg: func(c *discord.Config) { c.Mention = "<@&987654321098765432>" }},
		{name: "bot-no-answer", bot: true, event: eventFile(t, "chat-no-answer.json", relay.TopicChat)},
		{name: "bot-low-score", bot: true, event: eventFile(t, "chat-low-score.json", relay.TopicChat)},
		{name: "bot-user-markup", bot: true, event: eventBody(t, chatBody(userMarkup, "Use **Settings → Security**.", 0.7, "conv-markup"), relay.TopicChat)},
		{name: "bot-long", bot: true, event: eventBody(t, chatBody("Tell me everything about shipping to Canada.", longAnswer(), 0.9, "conv-long"), relay.TopicChat), minMsgs: 3},
		{name: "packed", packed: []*relay.Event{
			withID(eventFile(t, "chat.json", relay.TopicChat), 1),
			withID(eventBody(t, chatBody("Where is my order?", "It left the warehouse yesterday; track it at [tracking](https://example.com/track).", 0.55, "conv-2"), relay.TopicChat), 2),
			withID(eventFile(t, "live-chat-escalation.json", relay.TopicEscalation), 3),
			withID(eventFile(t, "lead-submission.json", relay.TopicLead), 5),
		}, cfg: func(c *discord.Config) { c.Mention = "<@&987654321098765432>" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := discordtest.NewServer(t, discordtest.WithRateLimit(0, 0))
			cfg := discord.Config{Name: "chat-monitor"}
			if tc.bot {
				cfg.Token, cfg.ChannelID, cfg.APIURL = relay.Secret(srv.Token()), srv.AddChannel(discordgo.ChannelTypeGuildText), srv.APIURL()
			} else {
				cfg.WebhookURL = relay.Secret(srv.AddWebhook(srv.AddChannel(discordgo.ChannelTypeGuildText)))
			}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			sink, err := discord.New(cfg, relay.SinkDeps{})
			if err != nil {
				t.Fatal(err)
			}
			skip := 0
			if tc.before != nil {
				if err := sink.Send(t.Context(), tc.before); err != nil {
					t.Fatalf("send before: %v", err)
				}
				skip = len(srv.Requests())
			}
			if tc.packed != nil {
				var n int
				n, _, err = sink.SendPacked(t.Context(), tc.packed)
				if err == nil && n != len(tc.packed) {
					t.Fatalf("packed %d of %d", n, len(tc.packed))
				}
			} else {
				err = sink.Send(t.Context(), tc.event)
			}
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			var bodies []any
			for _, r := range srv.Requests()[skip:] {
				if tc.bot && r.Method == http.MethodGet {
					continue // the channel's type
				}
				if r.Method != http.MethodPost || r.Status != http.StatusOK && r.Status != http.StatusCreated {
					t.Fatalf("%s %s answered %d: %s", r.Method, r.Path, r.Status, r.Body)
				}
				if tc.bot {
					bodies = append(bodies, map[string]any{"path": r.Path, "body": json.RawMessage(r.Body)})
				} else {
					bodies = append(bodies, json.RawMessage(r.Body))
				}
			}
			if len(bodies) < max(tc.minMsgs, 1) {
				t.Fatalf("%d messages, want at least %d", len(bodies), tc.minMsgs)
			}
			// Canonical: indented, and < > & as sent (not \u003c).
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			if err := enc.Encode(bodies); err != nil {
				t.Fatal(err)
			}
			got := buf.Bytes()
			golden := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./sinks/discord -run TestGolden -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from what the sink sends; review the change and run with -update:\n%s", golden, lineDiff(string(want), string(got)))
			}
		})
	}
}

// lineDiff shows the first lines where want and got differ.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range max(len(w), len(g)) {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\nwant %s\n got %s", i+1, wl, gl)
		}
	}
	return ""
}
