package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/discord/discordtest"
	"github.com/chatrelay/chatrelay/sinks/slack/slacktest"
)

// TestRedactedValuesNeverLeave sends events carrying a client IP, a lead
// email and a phone through one sink of every type, each told to redact
// them, and checks every byte each fake destination received.
func TestRedactedValuesNeverLeave(t *testing.T) {
	t.Parallel()
	slackSrv := slacktest.NewServer(t)
	discordSrv := discordtest.NewServer(t)
	discordHook := discordSrv.AddWebhook(discordSrv.AddChannel(discordgo.ChannelTypeGuildText))
	hook := newHookReceiver(t, 0)
	listen, admin, _ := serveFor(t, fmt.Sprintf(`
signing_secrets: [redact-secret]
sinks:
  - {name: slack, type: slack, webhook_url: "%s", redact: [client_ip, lead.email, lead.phone]}
  - {name: discord, type: discord, webhook_url: "%s", redact: [client_ip, lead.*]}
  - {name: crm, type: webhook, url: "%s/in", redact: [client_ip, lead.email, lead.phone]}
`, slackSrv.WebhookURL(), discordHook, hook.srv.URL))

	const ip, email, phone = "198.51.100.77", "ada.secret@example.com", "+1 555 0199"
	for _, body := range []string{
		fmt.Sprintf(`{"conversation_id":"c1","client_ip":%q,"messages":[{"role":"user","content":"hello"}],"answer":{"content":"hi","score":0.9},"lead":{"uuid":"u1","email":%q}}`, ip, email),
		fmt.Sprintf(`{"event":"lead-submission","conversation_id":"c2","client_ip":%q,"lead":{"name":"Ada","email":%q,"phone":%q}}`, ip, email, phone),
		// Chat Data may send the lead as a JSON-encoded string.
		fmt.Sprintf(`{"event":"live-chat-escalation","conversation_id":"c3","client_ip":%q,"lead":"{\"email\":\"%s\",\"phone\":\"%s\"}","messages":[{"role":"user","content":"a human please"}]}`, ip, email, phone),
	} {
		postSigned(t, listen, "redact-secret", []byte(body))
	}
	// Turns may be packed into fewer messages: count deliveries, not requests.
	relaytest.Eventually(t, 60*time.Second, "three events delivered to every sink", func() bool {
		_, m := httpGet(t, "http://"+admin+"/metrics", "")
		for _, sink := range []string{"slack", "discord", "crm"} {
			if !strings.Contains(m, `chatrelay_deliveries_total{result="delivered",sink="`+sink+`"} 3`) {
				return false
			}
		}
		return true
	})
	var slackBytes, discordBytes, hookBytes bytes.Buffer
	for _, r := range slackSrv.Requests() {
		slackBytes.Write(r.Body)
	}
	for _, r := range discordSrv.Requests() {
		discordBytes.Write(r.Body)
		discordBytes.WriteString(r.Path + "?" + r.Query.Encode())
	}
	hook.mu.Lock()
	for _, b := range hook.bodies {
		hookBytes.Write(b)
	}
	hook.mu.Unlock()
	for name, got := range map[string]string{"slack": slackBytes.String(), "discord": discordBytes.String(), "webhook": hookBytes.String()} {
		for _, secret := range []string{ip, email, phone, strings.ReplaceAll(phone, " ", "")} {
			if strings.Contains(got, secret) {
				t.Errorf("%s received the redacted value %q", name, secret)
			}
		}
		if !strings.Contains(got, "hello") && !strings.Contains(got, "a human please") {
			t.Errorf("%s received no message text at all: the test proves nothing", name)
		}
	}
	if !strings.Contains(hookBytes.String(), `"uuid":"u1"`) || !strings.Contains(slackBytes.String(), "Ada") {
		t.Error("fields that were not redacted went missing")
	}
}
