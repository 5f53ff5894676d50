package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/relay/relaytest"
)

// TestDLQByFilter runs serve in-process, lets a destination refuse three
// events (400: parked at once), and replays them with the CLI by filter,
// as an operator would: dlq replay --sink S --reason R --since 2h. The
// same relay serves the console on its admin listener and counts usage.
func TestDLQByFilter(t *testing.T) {
	t.Parallel()
	var refuse atomic.Bool
	refuse.Store(true)
	var delivered atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refuse.Load() {
			http.Error(w, "bad payload", http.StatusBadRequest)
			return
		}
		delivered.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hook.Close)
	dir := t.TempDir()
	listen, adminAddr := freeAddr(t), freeAddr(t)
	const adminToken = "dlq-filter-admin-token"
	cfgPath := writeConfig(t, fmt.Sprintf(`
listen: %s
admin: {listen: %s, token: %s}
signing_secrets: [dlq-filter-signing-secret]
log: {level: info, format: json}
store: {path: %s}
sinks:
  - name: crm
    type: webhook
    url: %s/in
`, listen, adminAddr, adminToken, filepath.Join(dir, "data"), hook.URL))

	ctx, cancel := context.WithCancel(t.Context())
	var stdout, stderr relaytest.LogBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve", "--config", cfgPath}, nil, &stdout, &stderr, os.Getenv) }()
	defer func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("serve exit %d:\n%s", code, stderr.String())
			}
		case <-time.After(20 * time.Second):
			t.Error("serve did not stop after its context ended")
		}
	}()
	relaytest.Eventually(t, 30*time.Second, "the receiver", func() bool {
		resp, err := http.Get("http://" + listen + "/readyz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	cli := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(t.Context(), append(args, "--config", cfgPath), nil, &out, &errOut, os.Getenv)
		return code, out.String(), errOut.String()
	}
	for _, topic := range []string{"chat", "lead-submission", "live-chat-escalation"} {
		if code, out, errOut := cli("send-test", "--file", "samples/"+topic+".json", "--topic", topic); code != 0 {
			t.Fatalf("send-test %s: exit %d %s %s", topic, code, out, errOut)
		}
	}
	relaytest.Eventually(t, 30*time.Second, "three dead letters", func() bool {
		_, out, _ := cli("dlq", "list")
		return strings.Count(out, "\n") == 3
	})

	if code, out, _ := cli("dlq", "list", "--reason", "HTTP 400", "--since", "1h"); code != 0 || strings.Count(out, "\n") != 3 {
		t.Fatalf("dlq list by filter: exit %d\n%s", code, out)
	}
	if code, out, _ := cli("dlq", "list", "--reason", "no such reason"); code != 0 || out != "" {
		t.Fatalf("dlq list, nothing matching: exit %d %q", code, out)
	}
	if code, _, errOut := cli("dlq", "replay", "some-id.crm", "--reason", "400"); code != 2 {
		t.Fatalf("ids and a filter: exit %d (%s), want 2", code, errOut)
	}
	if code, _, errOut := cli("dlq", "replay", "--since", "yesterday"); code == 0 || !strings.Contains(errOut, "since") {
		t.Fatalf("bad --since: exit %d %q", code, errOut)
	}

	refuse.Store(false)
	if code, out, errOut := cli("dlq", "replay", "--sink", "crm", "--reason", "400", "--since", "2h"); code != 0 || out != "requeued 3 deliveries\n" {
		t.Fatalf("dlq replay by filter: exit %d %q %q", code, out, errOut)
	}
	relaytest.Eventually(t, 30*time.Second, "the replayed deliveries", func() bool { return delivered.Load() == 3 })
	if code, out, _ := cli("dlq", "list"); code != 0 || out != "" {
		t.Fatalf("after the replay: exit %d %q", code, out)
	}

	// The usage metrics count the chat event (one new conversation, its
	// credits and its score); the console asks for a login.
	code, metrics := httpGet(t, "http://"+adminAddr+"/metrics", "")
	for _, want := range []string{
		`chatrelay_conversations_total{chatbot="654aee418bc9a33b0e50d0ad",source="widget"} 1`,
		`chatrelay_cost_credits_total{chatbot="654aee418bc9a33b0e50d0ad"} 20`,
		`chatrelay_answer_score_count{chatbot="654aee418bc9a33b0e50d0ad"} 1`,
	} {
		if code != 200 || !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, metricLines(metrics, "chatrelay_conversations|chatrelay_answer_score_count|chatrelay_cost"))
		}
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+adminAddr+"/", nil)
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
		t.Fatalf("console without a login: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func metricLines(text, words string) string {
	var out []string
	for line := range strings.SplitSeq(text, "\n") {
		for w := range strings.SplitSeq(words, "|") {
			if strings.Contains(line, w) {
				out = append(out, line)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
