package console_test

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/sinks/console"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func load(t *testing.T, file, topic string) *relay.Event {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := relay.DecodeEvent(body)
	if err != nil {
		t.Fatal(err)
	}
	ev.ID, ev.Topic, ev.ReceivedAt = "01900000-0000-7000-8000-000000000001", topic, time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC)
	return ev
}

func TestRenderGolden(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, file, topic string }{
		{"chat", "chat.json", relay.TopicChat},
		{"chat-string-fields", "chat-string-fields.json", relay.TopicChat},
		{"lead-submission", "lead-submission.json", relay.TopicLead},
		{"live-chat-escalation", "live-chat-escalation.json", relay.TopicEscalation},
		{"escalation-history", "live-chat-escalation-history.json", relay.TopicEscalation},
		{"escalation-complaint", "live-chat-escalation-complaint.json", relay.TopicEscalation},
		{"lead-custom-fields", "lead-custom-fields.json", relay.TopicLead},
		{"no-answer", "chat-no-answer.json", relay.TopicChat},
		{"low-score", "chat-low-score.json", relay.TopicChat},
		{"unknown-topic", "lead-submission.json", "survey-completed"},
		{"agent-reply", "agent-reply.json", relay.TopicAgentReply},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			s := console.New("console", &out)
			if err := s.Send(t.Context(), load(t, tc.file, tc.topic)); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("console output differs from %s:\n--- got\n%s--- want\n%s", golden, out.Bytes(), want)
			}
		})
	}
}

func TestTerminalEscapesRemoved(t *testing.T) {
	t.Parallel()
	ev, err := relay.DecodeEvent([]byte(`{"messages":[{"role":"user","content":"hi\u001b[2J\u001b]0;pwned\u0007 there"}],"answer":{"content":"ok\u009b31m"}}`))
	if err != nil {
		t.Fatal(err)
	}
	ev.ID, ev.Topic = "e", relay.TopicChat
	var out bytes.Buffer
	if err := console.New("c", &out).Send(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	if bytes.ContainsAny(out.Bytes(), "\x1b\x07\u009b") {
		t.Fatalf("control characters reached the terminal: %q", out.String())
	}
	if !bytes.Contains(out.Bytes(), []byte("hi[2J]0;pwned there")) {
		t.Fatalf("text around the controls lost: %q", out.String())
	}
}

func TestCanceledContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var out bytes.Buffer
	if err := console.New("c", &out).Send(ctx, load(t, "chat.json", relay.TopicChat)); err == nil || out.Len() != 0 {
		t.Fatalf("Send on a canceled context: err %v, wrote %d bytes", err, out.Len())
	}
}

// TestSameWordsAsTheChannels: the terminal tells the story in the words
// Slack and Discord use: the same titles, speakers and labels, the same
// sentence for an empty answer, no developer keys (custom_fields, uuid).
func TestSameWordsAsTheChannels(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file, topic string
		want        []string
	}{
		{"chat.json", relay.TopicChat, []string{"New chat message", relay.Speaker("user") + " │", relay.Speaker("assistant") + "     │"}},
		{"chat-no-answer.json", relay.TopicChat, []string{relay.NoAnswer}},
		{"live-chat-escalation-complaint.json", relay.TopicEscalation, []string{relay.EscalationLine, "Name ", relay.EarlierMessages(2)}},
		{"lead-custom-fields.json", relay.TopicLead, []string{"New lead", "Custom fields", "  Company: Northwind Ltd", "· lead 0e3f7a52-8c1d-4b6e-9f20-7a5d3c1b9e84 ·"}},
	} {
		var out bytes.Buffer
		if err := console.New("console", &out).Send(t.Context(), load(t, tc.file, tc.topic)); err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !bytes.Contains(out.Bytes(), []byte(w)) {
				t.Errorf("%s: no %q in\n%s", tc.file, w, out.Bytes())
			}
		}
		for _, never := range []string{"custom_fields", "│ uuid", "│ user ", "(the bot gave no answer)"} {
			if bytes.Contains(out.Bytes(), []byte(never)) {
				t.Errorf("%s: %q in\n%s", tc.file, never, out.Bytes())
			}
		}
	}
}
