package discord

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay"
)

// TestClassifyInside: a 404 (or a thread's own error) about a message or
// thread inside the destination does not mark the destination broken; the
// same codes about the configured channel or webhook, and 401/403, still do.
func TestClassifyInside(t *testing.T) {
	t.Parallel()
	bot, err := New(Config{Name: "s", Token: "tok", ChannelID: "123"}, relay.SinkDeps{})
	if err != nil {
		t.Fatal(err)
	}
	hook, err := New(Config{Name: "s", WebhookURL: "https://discord.com/api/webhooks/1/tok"}, relay.SinkDeps{})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		sink   *Sink
		in     string
		status int
		code   int
		class  relay.Class
	}{
		{"unknown message, thread start", bot, inMessage, 404, discordgo.ErrCodeUnknownMessage, relay.ClassRetryable},
		{"unknown message, anywhere", bot, "", 404, discordgo.ErrCodeUnknownMessage, relay.ClassRetryable},
		{"unknown channel, bot thread", bot, inThread, 404, discordgo.ErrCodeUnknownChannel, relay.ClassRetryable},
		{"unknown channel, webhook thread", hook, inThread, 404, discordgo.ErrCodeUnknownChannel, relay.ClassRetryable},
		{"locked thread", bot, inThread, 403, discordgo.ErrCodeThreadIsLocked, relay.ClassRetryable},
		{"archived thread", bot, inThread, 400, discordgo.ErrCodePerformedOperationOnArchivedThread, relay.ClassRetryable},

		{"unknown channel, configured channel", bot, "", 404, discordgo.ErrCodeUnknownChannel, relay.ClassBroken},
		{"unknown channel, thread start", bot, inMessage, 404, discordgo.ErrCodeUnknownChannel, relay.ClassBroken},
		{"unknown channel, webhook", hook, "", 404, discordgo.ErrCodeUnknownChannel, relay.ClassBroken},
		{"unknown webhook, thread post", hook, inThread, 404, discordgo.ErrCodeUnknownWebhook, relay.ClassBroken},
		{"invalid webhook token, thread post", hook, inThread, 401, discordgo.ErrCodeInvalidWebhookTokenProvided, relay.ClassBroken},
		{"missing access, thread post", bot, inThread, 403, discordgo.ErrCodeMissingAccess, relay.ClassBroken},
		{"401 without code, thread post", bot, inThread, 401, 0, relay.ClassBroken},
		{"404 without code, thread post", bot, inThread, 404, 0, relay.ClassBroken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			raw := []byte(`{"code":` + strconv.Itoa(tc.code) + `,"message":"` + http.StatusText(tc.status) + `"}`)
			err := tc.sink.classify(call{op: "op", in: tc.in}, tc.status, http.Header{}, raw, time.Now())
			if class, _ := relay.Classify(err); class != tc.class {
				t.Fatalf("class %s, want %s (%v)", class, tc.class, err)
			}
			if tc.class != relay.ClassBroken && strings.Contains(err.Error(), "check webhook_url or channel_id") {
				t.Errorf("error %q blames the configuration", err)
			}
		})
	}
}
