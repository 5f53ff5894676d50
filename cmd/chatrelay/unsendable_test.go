package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/discord/discordtest"
	"github.com/chatrelay/chatrelay/sinks/slack/slacktest"
)

// TestUnsendableTopicIsParkedAtOnce: an event whose "event" field holds a
// line break (a topic no HTTP header can carry) is parked for the webhook
// sink at its first attempt, with a reason that says why, and the next turn
// of its conversation is delivered right after; it is not retried for
// retry.max_age while the conversation waits.
func TestUnsendableTopicIsParkedAtOnce(t *testing.T) {
	t.Parallel()
	hook := newHookReceiver(t, 0)
	listen, admin, _ := serveFor(t, fmt.Sprintf(`
signing_secrets: [topic-signing-secret]
retry: {initial: 1h, max: 1h, max_age: 24h}
sinks:
  - {name: crm, type: webhook, url: "%s/in"}
`, hook.srv.URL))
	postSigned(t, listen, "topic-signing-secret", []byte(`{"event":"chat\r\nX-Injected: 1","conversation_id":"c1","messages":[{"role":"user","content":"first"}]}`))
	postSigned(t, listen, "topic-signing-secret", []byte(`{"conversation_id":"c1","messages":[{"role":"user","content":"second"}]}`))
	select {
	case <-hook.got:
	case <-time.After(60 * time.Second):
		t.Fatal("the conversation's next turn was not delivered: it waits behind the unsendable one")
	}
	var dlq struct {
		DeadLetters []struct {
			Attempts int    `json:"attempts"`
			Reason   string `json:"reason"`
		} `json:"dead_letters"`
	}
	relaytest.Eventually(t, 30*time.Second, "the dead letter", func() bool {
		_, body := httpGet(t, "http://"+admin+"/api/v1/dlq", "")
		return json.Unmarshal([]byte(body), &dlq) == nil && len(dlq.DeadLetters) == 1
	})
	if d := dlq.DeadLetters[0]; d.Attempts != 1 || !strings.Contains(d.Reason, "X-Chat-Data-Topic") {
		t.Fatalf("dead letter %+v: want one attempt and a reason naming the header", d)
	}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	if len(hook.bodies) != 1 || !strings.Contains(string(hook.bodies[0]), "second") {
		t.Fatalf("destination got %d requests: %q", len(hook.bodies), hook.bodies)
	}
}

// TestHugeHostileAnswerIsDelivered: a 900 KB answer built to make Markdown
// conversion quadratic ("[a](" repeated, on one line) once took minutes of
// CPU, outlived the send timeout and held up shutdown. It is now delivered
// to Slack and Discord in at most four messages each, well within the send
// timeout; serve then stops cleanly (serveFor's cleanup checks the exit).
func TestHugeHostileAnswerIsDelivered(t *testing.T) {
	t.Parallel()
	slackSrv := slacktest.NewServer(t)
	discordSrv := discordtest.NewServer(t)
	channel := discordSrv.AddChannel(discordgo.ChannelTypeGuildText)
	listen, admin, _ := serveFor(t, fmt.Sprintf(`
signing_secrets: [huge-signing-secret]
sinks:
  - {name: slack, type: slack, webhook_url: "%s", timeout: 10s}
  - {name: discord, type: discord, webhook_url: "%s", timeout: 10s}
`, slackSrv.WebhookURL(), discordSrv.AddWebhook(channel)))
	answer := "| table |\n\n" + strings.Repeat("[a](", (900<<10)/4)
	body, _ := json.Marshal(map[string]any{
		"conversation_id": "huge",
		"messages":        []map[string]string{{"role": "user", "content": "hi"}},
		"answer":          map[string]any{"role": "assistant", "content": answer},
	})
	postSigned(t, listen, "huge-signing-secret", body)
	relaytest.Eventually(t, 120*time.Second, "the turn delivered to both sinks", func() bool {
		_, m := httpGet(t, "http://"+admin+"/metrics", "")
		return strings.Contains(m, `chatrelay_deliveries_total{result="delivered",sink="slack"} 1`) &&
			strings.Contains(m, `chatrelay_deliveries_total{result="delivered",sink="discord"} 1`)
	})
	if n := len(slackSrv.Messages()); n < 1 || n > 4 {
		t.Errorf("Slack got %d messages, want 1 to 4", n)
	}
	if n := len(discordSrv.Messages(channel)); n < 1 || n > 4 {
		t.Errorf("Discord got %d messages, want 1 to 4", n)
	}
}
