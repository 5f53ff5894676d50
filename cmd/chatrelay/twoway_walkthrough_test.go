package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/chatdata/chatdatatest"
	"github.com/chatrelay/chatrelay/sinks/slack"
	"github.com/chatrelay/chatrelay/sinks/slack/slacktest"
)

// TestTwoWayWalkthrough is the README's "Two-way live chat" section tried
// as a new user would, with the built binary and the fakes standing in for
// Slack and Chat Data: check-config --probe, serve, send-test of an
// escalation, then an agent's note, Claim, a reply (✅), a reply Chat Data
// refuses (the thread told; dlq replay sends it), Resolve, and an
// unclaimed escalation re-paged. Each step asserts what the thread shows;
// go test -run TestTwoWayWalkthrough -v ./cmd/chatrelay/ prints it.
func TestTwoWayWalkthrough(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	sl := slacktest.NewServer(t)
	sl.AddUser(slacktest.User{ID: "U0DANA", Name: "dana", RealName: "Dana Scully", DisplayName: "Dana",
		Image72: "https://avatars.example.com/dana_72.png"})
	sl.AddUser(slacktest.User{ID: "U0SAM", Name: "sam", RealName: "Sam Lee"})
	api := chatdatatest.NewServer(t)
	addrs := freeAddrs(t, 2)
	listen, adminAddr := addrs[0], addrs[1]
	const (
		chatDataSecret = "walkthrough-chat-data-signing-secret"
		slackSecret    = "walkthrough-slack-signing-secret"
		adminToken     = "walkthrough-admin-token-0123456789"
		channel        = "C0123456789"
		mention        = "<!subteam^S0123ABCDE>" // the README's
	)
	env := append(os.Environ(), "CHAT_DATA_SIGNING_SECRET="+chatDataSecret, "CHAT_DATA_API_KEY="+api.Key,
		"SLACK_BOT_TOKEN="+sl.Token, "SLACK_SIGNING_SECRET="+slackSecret, "CHATRELAY_ADMIN_TOKEN="+adminToken)
	// The README's two-way config, with the fakes' URLs (api_url) and a
	// short repage_after, under the few keys every config has.
	cfg := writeConfig(t, fmt.Sprintf(`
listen: %s
admin: {listen: %s, token: ${CHATRELAY_ADMIN_TOKEN}}
signing_secrets: [${CHAT_DATA_SIGNING_SECRET}]
store: {path: %s}
`, listen, adminAddr, filepath.Join(t.TempDir(), "data"))+readmeTwoWay(t, map[string]string{
		"  # api_url: https://api.chat-data.com   # another base URL (a proxy, a test server)\n": "  api_url: " + api.URL + "\n",
		"    channel: C0123456789\n": "    channel: " + channel + "\n    api_url: " + sl.APIURL() + "\n",
		"      repage_after: 10m ":   "      repage_after: 4s ",
	}))
	var outputs bytes.Buffer
	chatrelay := func(args ...string) (int, string) {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), bin, append([]string{"--config", cfg}, args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		outputs.Write(out)
		code := 0
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		t.Logf("$ chatrelay %s  (exit %d)\n%s", strings.Join(args, " "), code, out)
		return code, string(out)
	}

	// Step 1: check-config --probe checks the key and the bot's scopes.
	if code, out := chatrelay("check-config", "--probe"); code != 0 || !strings.Contains(out, "support-slack: credentials OK") ||
		!strings.Contains(out, "chatdata: credentials OK") {
		t.Fatalf("check-config --probe: exit %d", code)
	}

	// Step 2: serve.
	var serveOut syncBuffer
	serve := exec.Command(bin, "--config", cfg, "serve")
	serve.Env, serve.Stdout, serve.Stderr = env, &serveOut, &serveOut
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = serve.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("serve: %v\n%s", err, serveOut.String())
			}
		case <-time.After(60 * time.Second):
			_ = serve.Process.Kill()
			t.Errorf("serve did not stop on SIGTERM:\n%s", serveOut.String())
		}
	}
	t.Cleanup(stop)
	relaytest.Eventually(t, 60*time.Second, "the receiver", func() bool {
		resp, err := http.Get("http://" + listen + "/readyz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})
	relaytest.Eventually(t, 30*time.Second, "serve to say where Slack's events go", func() bool {
		return strings.Contains(serveOut.String(), "POST "+slack.EventsPath)
	})

	// Step 3: a visitor asks for a person (send-test signs it as Chat Data
	// does): the escalation appears with the mention, how to answer, Claim
	// and Resolve.
	if code, _ := chatrelay("send-test", "--topic", relay.TopicEscalation); code != 0 {
		t.Fatalf("send-test: exit %d", code)
	}
	root, conv := waitEscalation(t, sl, nil)
	threadKnown(t, adminAddr)
	shown := showMessage(t, sl, channel, root)
	t.Logf("step 3, the escalation in the channel:\n%s", shown)
	for _, want := range []string{relay.EscalationLine, mention, `start a message in this thread with "reply:"`, "[Claim]", "[Resolve]"} {
		if !strings.Contains(shown, want) {
			t.Errorf("the escalation lacks %q", want)
		}
	}

	slackPost := func(contentType string, body []byte) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+listen+slack.EventsPath, bytes.NewReader(body))
		now := time.Now()
		req.Header.Set("Content-Type", contentType)
		req.Header.Set(slack.HeaderTimestamp, fmt.Sprint(now.Unix()))
		req.Header.Set(slack.HeaderSignature, slack.Sign(slackSecret, now, body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/slack/events answered %d", resp.StatusCode)
		}
	}
	say := func(user, ts, text string) {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"type": "event_callback", "team_id": "T0123ABCD", "event_id": "Ev" + ts,
			"event": map[string]any{"type": "message", "channel": channel, "channel_type": "channel", "user": user,
				"text": text, "ts": ts, "thread_ts": root}})
		slackPost("application/json", body)
	}
	click := func(user, action, ts string) {
		t.Helper()
		m, _ := sl.Message(channel, ts)
		p, _ := json.Marshal(map[string]any{"type": "block_actions", "user": map[string]any{"id": user},
			"container": map[string]any{"type": "message", "message_ts": ts, "channel_id": channel},
			"channel":   map[string]any{"id": channel}, "message": map[string]any{"type": "message", "ts": ts, "text": m.Text, "blocks": m.Blocks},
			"actions": []map[string]any{{"type": "button", "action_id": action, "value": conv}}})
		slackPost("application/x-www-form-urlencoded", []byte(url.Values{"payload": {string(p)}}.Encode()))
	}

	// Step 4: an internal note stays in Slack.
	say("U0DANA", "1765000000.000100", "checking the order with billing first")
	relaytest.Eventually(t, 30*time.Second, "the note counted as ignored", func() bool {
		_, m := httpGet(t, "http://"+adminAddr+"/metrics", "")
		return strings.Contains(m, `chatrelay_agent_replies_total{result="ignored",sink="support-slack"} 1`)
	})

	// Step 5: Dana claims it: the message shows who has it; Claim is gone.
	click("U0DANA", "chatrelay_claim", root)
	relaytest.Eventually(t, 30*time.Second, "the claim shown", func() bool {
		return strings.Contains(showMessage(t, sl, channel, root), "🙋 Claimed by Dana")
	})
	shown = showMessage(t, sl, channel, root)
	t.Logf("step 5, after Dana's Claim:\n%s", shown)
	if strings.Contains(shown, "[Claim]") || !strings.Contains(shown, "[Resolve]") || !strings.Contains(shown, relay.EscalationLine) {
		t.Errorf("after the claim: Claim gone, Resolve and the escalation kept; got\n%s", shown)
	}

	// Step 6: Dana answers with the prefix: the visitor gets it under her
	// name and avatar; her message gets a ✅.
	say("U0DANA", "1765000000.000200", "reply: Hi! I'm Dana from support. <https://example.com/returns|Our returns page> has the label; I've *refunded* you.")
	relaytest.Eventually(t, 30*time.Second, "the reply at Chat Data and its ✅", func() bool {
		return len(api.Messages(conv)) == 1 && len(sl.Reactions()) == 1
	})
	got := api.Messages(conv)[0]
	t.Logf("step 6, the visitor got: %+v; reactions: %+v", got, sl.Reactions())
	if got.Text != "Hi! I'm Dana from support. Our returns page (https://example.com/returns) has the label; I've refunded you." ||
		got.Name != "Dana" || got.Avatar != "https://avatars.example.com/dana_72.png" || got.Role != "human" {
		t.Errorf("the visitor got %+v", got)
	}
	if r := sl.Reactions()[0]; r.TS != "1765000000.000200" || r.Name != "white_check_mark" {
		t.Errorf("reaction %+v", r)
	}

	// Step 7: Chat Data refuses the next one (404: the conversation is
	// gone on its side): the thread says so, with the replay command;
	// dlq list shows it, dlq replay sends it again (now accepted, ✅).
	api.Script(chatdatatest.Response{Status: http.StatusNotFound, Error: "Conversation not found"})
	say("U0DANA", "1765000000.000300", "reply: Anything else I can help with?")
	var note slacktest.Message
	relaytest.Eventually(t, 30*time.Second, "the thread told", func() bool {
		for _, m := range sl.Messages() {
			if m.ThreadTS == root && strings.Contains(m.Text, relay.NotDelivered) {
				note = m
				return true
			}
		}
		return false
	})
	t.Logf("step 7, the thread note:\n%s", note.Text)
	// The command names this binary and this config: paste it as it is.
	_, replay, ok := strings.Cut(note.Text, bin+" --config "+cfg+" dlq replay ")
	id, _, _ := strings.Cut(replay, "`")
	if !ok || id == "" || !strings.Contains(note.Text, "HTTP 404") {
		t.Fatalf("the note %q lacks the reason or the replay command", note.Text)
	}
	if code, out := chatrelay("dlq", "list", "--sink", "chatdata"); code != 0 || !strings.Contains(out, id) {
		t.Fatalf("dlq list: exit %d", code)
	}
	if code, _ := chatrelay("dlq", "replay", id); code != 0 {
		t.Fatalf("dlq replay: exit %d", code)
	}
	relaytest.Eventually(t, 30*time.Second, "the replayed reply at Chat Data and its ✅", func() bool {
		return len(api.Messages(conv)) == 2 && len(sl.Reactions()) == 2
	})

	// Step 8: Sam resolves it: the message shows it; no button is left.
	click("U0SAM", "chatrelay_resolve", root)
	relaytest.Eventually(t, 30*time.Second, "the resolution shown", func() bool {
		return strings.Contains(showMessage(t, sl, channel, root), "✅ Resolved by Sam Lee")
	})
	shown = showMessage(t, sl, channel, root)
	t.Logf("step 8, after Sam's Resolve:\n%s", shown)
	if strings.Contains(shown, "[Claim]") || strings.Contains(shown, "[Resolve]") || strings.Contains(shown, "Claimed by") {
		t.Errorf("after Resolve no button and one status line; got\n%s", shown)
	}
	if m, _ := sl.Message(channel, root); strings.Count(m.Text, "Resolved by")+strings.Count(m.Text, "Claimed by") != 1 {
		t.Errorf("the notification text stacks statuses: %q", m.Text)
	}

	// Step 9: a second escalation nobody claims is posted again in its
	// thread, shown in the channel, with the mention, after repage_after.
	if code, _ := chatrelay("send-test", "--topic", relay.TopicEscalation); code != 0 {
		t.Fatalf("send-test: exit %d", code)
	}
	root2, _ := waitEscalation(t, sl, map[string]bool{root: true})
	var again slacktest.Message
	relaytest.Eventually(t, 60*time.Second, "the re-page", func() bool {
		for _, m := range sl.Messages() {
			if m.ThreadTS == root2 && strings.Contains(m.Text, "Still unclaimed") {
				again = m
				return true
			}
		}
		return false
	})
	t.Logf("step 9, the re-page (broadcast %v):\n%s", again.Broadcast, showMessage(t, sl, channel, again.TS))
	if !again.Broadcast || !strings.Contains(again.Text, mention) {
		t.Errorf("the re-page is not shown in the channel with the mention: %+v", again)
	}

	_, metrics := httpGet(t, "http://"+adminAddr+"/metrics", "")
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "chatrelay_agent_replies_total") {
			t.Log(line)
		}
	}
	stop()
	relaytest.AssertNoSecret(t, "the relay's output", serveOut.String()+outputs.String(), chatDataSecret, slackSecret, adminToken, api.Key, sl.Token)
	if strings.Contains(serveOut.String(), "Anything else I can help with") {
		t.Error("a reply's text reached the log at info level")
	}
}

// readmeTwoWay is the README's two-way config (the first yaml block of
// its "Two-way live chat" section) with each key of edits replaced by its
// value (each must be there once).
func readmeTwoWay(t *testing.T, edits map[string]string) string {
	t.Helper()
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(raw), "\n## Two-way live chat\n")
	_, block, ok2 := strings.Cut(section, "```yaml\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("no yaml block in the README's Two-way live chat section")
	}
	for from, to := range edits {
		if strings.Count(block, from) != 1 {
			t.Fatalf("the README's two-way config has no line %q (once)", from)
		}
		block = strings.Replace(block, from, to, 1)
	}
	return block
}

// waitEscalation waits for an escalation in the fake Slack not in seen and
// returns its ts and the conversation its buttons are for.
func waitEscalation(t *testing.T, sl *slacktest.Server, seen map[string]bool) (ts, conv string) {
	t.Helper()
	relaytest.Eventually(t, 60*time.Second, "the escalation in Slack", func() bool {
		for _, m := range sl.Messages() {
			if m.ThreadTS == "" && !seen[m.TS] && strings.Contains(m.Text, relay.EscalationLine) {
				ts, conv = m.TS, buttonValue(m.Blocks)
				return conv != ""
			}
		}
		return false
	})
	return ts, conv
}

// slackBlock is what showMessage reads of a Block Kit block.
type slackBlock struct {
	Type string `json:"type"`
	Text *struct {
		Text string `json:"text"`
	} `json:"text"`
	Elements []struct {
		Type string          `json:"type"`
		Text json.RawMessage `json:"text"`
		// Value is a button's.
		Value string `json:"value"`
	} `json:"elements"`
}

// buttonValue is the value of the first button in blocks.
func buttonValue(raw json.RawMessage) string {
	var blocks []slackBlock
	_ = json.Unmarshal(raw, &blocks)
	for _, b := range blocks {
		for _, e := range b.Elements {
			if e.Type == "button" {
				return e.Value
			}
		}
	}
	return ""
}

// showMessage renders a message of the fake Slack as a reader sees it,
// roughly: each block's text on a line, buttons as [Label].
func showMessage(t *testing.T, sl *slacktest.Server, channel, ts string) string {
	t.Helper()
	m, ok := sl.Message(channel, ts)
	if !ok {
		t.Fatalf("no message %s", ts)
	}
	var blocks []slackBlock
	if err := json.Unmarshal(m.Blocks, &blocks); err != nil {
		return m.Text
	}
	var b strings.Builder
	for _, bl := range blocks {
		if bl.Text != nil {
			b.WriteString(bl.Text.Text + "\n")
		}
		var line []string
		for _, e := range bl.Elements {
			var s string
			var obj struct {
				Text string `json:"text"`
			}
			switch {
			case json.Unmarshal(e.Text, &s) == nil:
			case json.Unmarshal(e.Text, &obj) == nil:
				s = obj.Text
			}
			if e.Type == "button" {
				s = "[" + s + "]"
			}
			if s != "" {
				line = append(line, s)
			}
		}
		if len(line) > 0 {
			b.WriteString(strings.Join(line, " ") + "\n")
		}
	}
	return b.String()
}

// syncBuffer is a bytes.Buffer a process writes to while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
