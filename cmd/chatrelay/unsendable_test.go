package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
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
	waitFor(t, 30*time.Second, "the dead letter", func() bool {
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
