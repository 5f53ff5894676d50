package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/slack/slacktest"
)

// serveFor runs serve with the config text (listen and admin addresses are
// filled in) until the test ends; it returns the receiver's address.
func serveFor(t testing.TB, yaml string) (listen, admin string, logs *relaytest.LogBuffer) {
	t.Helper()
	listen, admin = freeAddr(t), freeAddr(t)
	head := fmt.Sprintf("listen: %s\nadmin: {listen: %s}\n", listen, admin)
	if !strings.Contains(yaml, "\nstore:") {
		head += fmt.Sprintf("store: {path: %s}\n", filepath.Join(t.TempDir(), "data"))
	}
	cfg := writeConfig(t, head+yaml)
	ctx, cancel := context.WithCancel(context.Background())
	logs = &relaytest.LogBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", cfg}, nil, &relaytest.LogBuffer{}, logs, os.Getenv)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exit %d:\n%s", code, logs.String())
		}
	})
	relaytest.Eventually(t, 30*time.Second, "the receiver", func() bool {
		resp, err := http.Get("http://" + listen + "/readyz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	return listen, admin, logs
}

func postSigned(t testing.TB, listen, secret string, body []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+listen+"/webhook", bytes.NewReader(body))
	req.Header.Set(relay.HeaderSignature, relay.Sign(body, relay.Secret(secret)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST answered %d", resp.StatusCode)
	}
}

// TestBurstIntoPacedSlackWebhook: 30 conversations arrive in one burst into
// a Slack webhook that takes one message per second. Packing makes them all
// visible within 15 s in fewer than 30 messages, each conversation in
// order, with no 429.
func TestBurstIntoPacedSlackWebhook(t *testing.T) {
	t.Parallel()
	// Slack takes about one message per second per channel and tolerates
	// short bursts; the fake allows a burst of two so that scheduling
	// jitter on a loaded test machine is not mistaken for a pacing fault.
	slackSrv := slacktest.NewServer(t, slacktest.WithRateLimit(time.Second, 2))
	listen, _, logs := serveFor(t, fmt.Sprintf(`
signing_secrets: [burst-secret]
log: {level: info, format: json}
sinks:
  - {name: team, type: slack, webhook_url: "%s"}
`, slackSrv.WebhookURL()))

	start := time.Now()
	var markers []string
	for c := range 30 {
		turns := 1
		if c < 5 {
			turns = 2 // a few conversations say two things: their order must hold
		}
		for turn := range turns {
			marker := fmt.Sprintf("conv%02d-turn%d", c, turn)
			markers = append(markers, marker)
			postSigned(t, listen, "burst-secret", fmt.Appendf(nil,
				`{"conversation_id":"conv-%02d","messages":[{"role":"user","content":"question %s"}],"answer":{"content":"answer","score":0.7},"source":"widget"}`, c, marker))
		}
	}
	visible := func() (string, int) {
		var all strings.Builder
		msgs := slackSrv.Messages()
		for _, m := range msgs {
			all.WriteString(m.Text)
			all.Write(m.Blocks)
			all.WriteString("\n")
		}
		return all.String(), len(msgs)
	}
	relaytest.Eventually(t, 15*time.Second, "every turn in the Slack channel", func() bool {
		text, _ := visible()
		for _, m := range markers {
			if !strings.Contains(text, m) {
				return false
			}
		}
		return true
	})
	took := time.Since(start)
	text, n := visible()
	if n >= 30 {
		t.Errorf("%d messages for %d turns: packing did not happen", n, len(markers))
	}
	for c := range 5 {
		first := strings.Index(text, fmt.Sprintf("conv%02d-turn0", c))
		second := strings.Index(text, fmt.Sprintf("conv%02d-turn1", c))
		if first < 0 || second < first {
			t.Errorf("conversation %d out of order", c)
		}
	}
	limited := 0
	for _, r := range slackSrv.Requests() {
		if r.Status == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited > 0 {
		t.Errorf("%d requests were answered 429: pacing should prevent that", limited)
	}
	t.Logf("%d turns of 30 conversations visible after %s in %d messages", len(markers), took.Round(time.Millisecond), n)
	_ = logs
}
