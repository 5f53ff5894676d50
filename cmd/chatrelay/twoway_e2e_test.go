package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/chatdata/chatdatatest"
	"github.com/chatrelay/chatrelay/sinks/slack"
	"github.com/chatrelay/chatrelay/sinks/slack/slacktest"
)

// Two-way live chat through serve itself: the fake Slack and the fake Chat
// Data API stand in for the platforms; events are signed as Slack and Chat
// Data sign them.

const (
	twoWaySecret  = "e2e-two-way-chat-data-secret"
	slackSigning  = "e2e-slack-signing-secret-0123"
	twoWayChannel = "C0123456789"
	twoWayConv    = "5b0c7c1e-2d2f-4a36-9d8e-0f7d2c1a9b11"
)

// twoWayConfig is a config with one two-way Slack sink and the chatdata
// destination at apiURL; store is the store section.
func twoWayConfig(listen, admin, store string, sl *slacktest.Server, apiKey, apiURL string) string {
	return fmt.Sprintf(`
listen: %s
admin: {listen: %s}
signing_secrets: [%s]
log: {level: debug, format: json}
retry: {initial: 100ms, max: 1s, max_age: 1h}
%s
chatdata:
  api_key: %s
  api_url: %s
sinks:
  - name: support-slack
    type: slack
    token: %s
    channel: %s
    api_url: %s
    rate: 20/s
    reply:
      signing_secret: %s
`, listen, admin, twoWaySecret, store, apiKey, apiURL, sl.Token, twoWayChannel, sl.APIURL(), slackSigning)
}

// relayRun is one serve process of a test.
type relayRun = replicaProc

// startSlackServe runs serve on cfg until stop (or the test's end).
func startSlackServe(t *testing.T, cfg, listen, admin string) *relayRun {
	t.Helper()
	return serveAt(t, "serve", writeConfig(t, cfg), listen, admin)
}

// escalation is Chat Data's live-chat-escalation of the conversation.
func escalation(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "sinks", "slack", "testdata", "live-chat-escalation.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m["event"] = relay.TopicEscalation
	out, _ := json.Marshal(m)
	return out
}

// slackReply POSTs, signed as Slack does, an agent's message in thread
// to the relay's /slack/events, and returns the status.
func slackReply(t *testing.T, listen, thread, ts, text string) int {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"type": "event_callback", "team_id": "T0123ABCD", "event_id": "Ev" + ts,
		"event": map[string]any{"type": "message", "channel": twoWayChannel, "user": "U0DANA", "text": text, "ts": ts, "thread_ts": thread}})
	req, _ := http.NewRequest(http.MethodPost, "http://"+listen+slack.EventsPath, strings.NewReader(string(body)))
	now := time.Now()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(slack.HeaderTimestamp, fmt.Sprint(now.Unix()))
	req.Header.Set(slack.HeaderSignature, slack.Sign(slackSigning, now, body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// rootOf waits for the escalation's message in the fake Slack and returns
// its ts: the conversation's thread. It returns once a relay (of those
// with admin listeners admins) has also recorded the thread: the sink
// keeps it once Slack has answered, so a reply sent as soon as the
// message shows would find no relay thread.
func rootOf(t *testing.T, sl *slacktest.Server, admins ...string) string {
	t.Helper()
	var ts string
	relaytest.Eventually(t, 30*time.Second, "the escalation in Slack", func() bool {
		for _, m := range sl.Messages() {
			if m.ThreadTS == "" && strings.Contains(m.Text, relay.EscalationLine) {
				ts = m.TS
				return true
			}
		}
		return false
	})
	threadKnown(t, admins...)
	return ts
}

// threadKnown waits until one of the relays with admin listeners admins
// has delivered an event to support-slack (and so recorded its thread).
func threadKnown(t *testing.T, admins ...string) {
	t.Helper()
	relaytest.Eventually(t, 30*time.Second, "the escalation's delivery settled (its thread recorded)", func() bool {
		for _, admin := range admins {
			_, m := httpGet(t, "http://"+admin+"/metrics", "")
			_, n, _ := strings.Cut(m, `chatrelay_deliveries_total{result="delivered",sink="support-slack"} `)
			if n != "" && !strings.HasPrefix(n, "0\n") {
				return true
			}
		}
		return false
	})
}

// TestServeTwoWayRestartBeforeDelivery: an agent's reply is stored (Slack
// got its 200) while Chat Data cannot be reached; the relay restarts (now
// reaching it), and the reply reaches the visitor once, and the agent's
// message gets its ✅.
func TestServeTwoWayRestartBeforeDelivery(t *testing.T) {
	t.Parallel()
	sl := slacktest.NewServer(t)
	sl.AddUser(slacktest.User{ID: "U0DANA", Name: "dana", DisplayName: "Dana"})
	api := chatdatatest.NewServer(t)
	store := fmt.Sprintf("store: {path: %s}", filepath.Join(t.TempDir(), "data"))
	addrs := freeAddrs(t, 3)
	listen, admin := addrs[0], addrs[1]
	down := "http://" + addrs[2] // nothing listens there

	first := startSlackServe(t, twoWayConfig(listen, admin, store, sl, api.Key, down), listen, admin)
	postSigned(t, listen, twoWaySecret, escalation(t))
	thread := rootOf(t, sl, admin)
	if code := slackReply(t, listen, thread, "1765000000.000200", "reply: your refund is on its way"); code != 200 {
		t.Fatalf("/slack/events answered %d:\n%s", code, first.logs.String())
	}
	relaytest.Eventually(t, 30*time.Second, "the reply stored", func() bool {
		_, m := httpGet(t, "http://"+admin+"/metrics", "")
		return strings.Contains(m, `chatrelay_agent_replies_total{result="accepted",sink="support-slack"} 1`) &&
			strings.Contains(m, `chatrelay_delivery_attempts_total{sink="chatdata"}`)
	})
	first.stop()
	if n := len(api.Requests()); n != 0 {
		t.Fatalf("Chat Data got %d requests while unreachable", n)
	}

	second := startSlackServe(t, twoWayConfig(listen, admin, store, sl, api.Key, api.URL), listen, admin)
	relaytest.Eventually(t, 30*time.Second, "the reply at Chat Data and the ✅", func() bool {
		return len(api.Messages(twoWayConv)) == 1 && len(sl.Reactions()) == 1
	})
	if m := api.Messages(twoWayConv)[0]; m.Text != "your refund is on its way" || m.Name != "Dana" || m.Role != "human" {
		t.Fatalf("the visitor got %+v", m)
	}
	if r := sl.Reactions()[0]; r.TS != "1765000000.000200" || r.Channel != twoWayChannel {
		t.Fatalf("reaction %+v", r)
	}
	// The console's conversation page shows the escalation.
	_, page := httpGet(t, "http://"+admin+"/conversations/"+twoWayConv, "")
	if !strings.Contains(page, "Escalated") || !strings.Contains(page, "your refund is on its way") {
		t.Errorf("the console's conversation page lacks the escalation or the reply:\n%.2000s", page)
	}
	relaytest.AssertNoSecret(t, "logs", first.logs.String()+second.logs.String(), slackSigning, sl.Token, api.Key)
}

// TestServeTwoWayOnTwoNATSReplicas: two replicas share a JetStream
// server; the escalation goes through one, the agent's reply comes in
// through replica A: it reaches the visitor once, and its ✅ is added once.
func TestServeTwoWayOnTwoNATSReplicas(t *testing.T) {
	t.Parallel()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	sl := slacktest.NewServer(t)
	sl.AddUser(slacktest.User{ID: "U0DANA", Name: "dana", DisplayName: "Dana"})
	api := chatdatatest.NewServer(t)
	store := fmt.Sprintf("store:\n  driver: nats\n  nats: {url: %q, partitions: 4}", ns.ClientURL())
	addrs := freeAddrs(t, 4)
	la, aa, lb, ab := addrs[0], addrs[1], addrs[2], addrs[3]
	a := startSlackServe(t, twoWayConfig(la, aa, store, sl, api.Key, api.URL), la, aa)
	b := startSlackServe(t, twoWayConfig(lb, ab, store, sl, api.Key, api.URL), lb, ab)

	postSigned(t, lb, twoWaySecret, escalation(t))
	thread := rootOf(t, sl, aa, ab)
	if code := slackReply(t, la, thread, "1765000000.000200", "reply: hello from replica A"); code != 200 {
		t.Fatalf("/slack/events on A answered %d", code)
	}
	relaytest.Eventually(t, 60*time.Second, "the reply at Chat Data and the ✅", func() bool {
		return len(api.Messages(twoWayConv)) == 1 && len(sl.Reactions()) == 1
	})
	// A retry of the same event through replica B is the same reply.
	if code := slackReply(t, lb, thread, "1765000000.000200", "reply: hello from replica A"); code != 200 {
		t.Fatalf("/slack/events on B answered %d", code)
	}
	relaytest.Eventually(t, 30*time.Second, "the duplicate counted", func() bool {
		_, m := httpGet(t, "http://"+ab+"/metrics", "")
		return strings.Contains(m, `chatrelay_agent_replies_total{result="duplicate",sink="support-slack"} 1`)
	})
	if n := len(api.Messages(twoWayConv)); n != 1 {
		t.Fatalf("the visitor got %d messages", n)
	}
	if n := len(sl.Reactions()); n != 1 {
		t.Fatalf("%d reactions", n)
	}
	escalations := 0
	for _, m := range sl.Messages() {
		if strings.Contains(m.Text, relay.EscalationLine) {
			escalations++
		}
	}
	if escalations != 1 {
		t.Fatalf("the escalation was posted %d times", escalations)
	}
	relaytest.AssertNoSecret(t, "logs", a.logs.String()+b.logs.String(), slackSigning, sl.Token, api.Key)
}

// freeAddrs returns n distinct loopback addresses, each free right now.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for len(out) < n {
		if a := freeAddr(t); !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// TestCheckConfigProbesSlackScopes: check-config --probe names the scopes
// a two-way Slack sink's token lacks, and passes with every one.
func TestCheckConfigProbesSlackScopes(t *testing.T) {
	t.Parallel()
	api := chatdatatest.NewServer(t)
	for _, tc := range []struct {
		name   string
		scopes []string
		code   int
		says   []string
	}{
		{"every scope", slacktest.ReplyScopes, 0, []string{"support-slack: credentials OK", "chatdata: credentials OK"}},
		{"mirror-only app", []string{"chat:write", "chat:write.public"}, 1,
			[]string{"support-slack: FAILED", "reactions:write, users:read, channels:history (public channel) or groups:history (private channel)"}},
	} {
		sl := slacktest.NewServer(t, slacktest.WithScopes(tc.scopes...))
		addrs := freeAddrs(t, 2)
		cfg := twoWayConfig(addrs[0], addrs[1], "store: {path: "+filepath.Join(t.TempDir(), "data")+"}", sl, api.Key, api.URL)
		code, out, errOut := cli(t, "--config", writeConfig(t, cfg), "check-config", "--probe")
		if code != tc.code {
			t.Errorf("%s: exit %d, want %d:\n%s%s", tc.name, code, tc.code, out, errOut)
		}
		for _, s := range tc.says {
			if !strings.Contains(out, s) {
				t.Errorf("%s: no %q in:\n%s", tc.name, s, out)
			}
		}
		relaytest.AssertNoSecret(t, "output", out+errOut, sl.Token, api.Key, slackSigning)
	}
}
