package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
)

// TestSecurityAgainstTheBinary runs the built binary as a user would, on
// loopback without an admin token, and makes the requests of issue 11's
// audit: a captured body replayed under another topic, a web page's
// cross-site POST and a DNS-rebinding read of the admin API, oversized
// admin headers, slow bodies past max_inflight_bytes, and /readyz of a
// full store.
func TestSecurityAgainstTheBinary(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	hook := newHookReceiver(t, 0)
	listen, adminAddr := freeAddr(t), freeAddr(t)
	const signing = "security-test-signing-secret"
	cfgPath := writeConfig(t, fmt.Sprintf(`
listen: %s
admin: {listen: %s}
signing_secrets: [%s]
max_body_bytes: 1MiB
max_inflight_bytes: 2MiB
log: {level: info, format: json}
store: {path: %s, max_size: 1MiB}
sinks:
  - {name: crm, type: webhook, url: "%s/in"}
`, listen, adminAddr, signing, filepath.Join(t.TempDir(), "data"), hook.srv.URL))
	proc := exec.Command(bin, "serve", "--config", cfgPath)
	var logs relaytest.LogBuffer
	proc.Stderr = &logs
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = proc.Process.Signal(syscall.SIGTERM)
		_ = proc.Wait()
	})
	relaytest.Eventually(t, 30*time.Second, "the relay", func() bool {
		resp, err := http.Get("http://" + listen + "/readyz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	admin := "http://" + adminAddr

	do := func(method, url, host string, header map[string]string, body []byte) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}

	t.Run("topic replay", func(t *testing.T) {
		body := []byte(`{"conversation_id":"replay-1","messages":[{"role":"user","content":"hi"}],"answer":{"content":"hello"}}`)
		sig := map[string]string{relay.HeaderSignature: relay.Sign(body, signing), relay.HeaderTopic: "chat"}
		code, first := do("POST", "http://"+listen+"/webhook", "", sig, body)
		var a struct{ Status, ID string }
		if err := json.Unmarshal([]byte(first), &a); err != nil || code != 200 || a.Status != "accepted" {
			t.Fatalf("first: %d %s", code, first)
		}
		for _, topic := range []string{"live-chat-escalation", "lead-submission", "anything-new"} {
			sig[relay.HeaderTopic] = topic
			code, again := do("POST", "http://"+listen+"/webhook", "", sig, body)
			want := fmt.Sprintf(`{"status":"duplicate","id":%q}`, a.ID)
			if code != 200 || strings.TrimSpace(again) != want {
				t.Fatalf("replayed as %s: %d %s, want %s", topic, code, again, want)
			}
		}
	})

	t.Run("cross-site admin", func(t *testing.T) {
		// A page the operator visits posts a "simple" request.
		code, out := do("POST", admin+"/api/v1/dlq/purge", "", map[string]string{"Content-Type": "text/plain", "Origin": "http://attacker.example"}, []byte(`{"all":true}`))
		if code != 403 || !strings.Contains(out, `"error"`) {
			t.Fatalf("cross-site text/plain purge: %d %s, want 403 with a JSON error", code, out)
		}
		code, out = do("POST", admin+"/api/v1/dlq/replay", "", map[string]string{"Content-Type": "application/json", "Origin": "http://attacker.example"}, []byte(`{"all":true}`))
		if code != 403 {
			t.Fatalf("cross-origin JSON replay: %d %s, want 403", code, out)
		}
		// A DNS-rebinding page reads with its own name as Host.
		_, port, _ := net.SplitHostPort(adminAddr)
		for _, path := range []string{"/api/v1/events", "/metrics"} {
			if code, out := do("GET", admin+path, "rebind.attacker.example:"+port, nil, nil); code != 403 {
				t.Fatalf("GET %s with a foreign Host: %d %s, want 403", path, code, out)
			}
		}
		// The operator's own tools still work: curl, Prometheus, the CLI.
		if code, out := do("GET", admin+"/api/v1/events", "", nil, nil); code != 200 || !strings.Contains(out, "replay-1") {
			t.Fatalf("GET /api/v1/events from the machine: %d %s", code, out)
		}
		for _, args := range [][]string{{"dlq", "list"}, {"dlq", "purge", "--all"}} {
			cmd := exec.Command(bin, append(args, "--config", cfgPath)...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("chatrelay %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
	})

	t.Run("admin header limit", func(t *testing.T) {
		for _, addr := range []string{listen, adminAddr} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 128<<10))
			status, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err != nil || !strings.Contains(status, "431") {
				t.Fatalf("%s: 128 KiB of headers answered %q (%v), want 431", addr, status, err)
			}
		}
	})

	t.Run("max_inflight_bytes", func(t *testing.T) {
		const mib = 1 << 20
		// Two slow clients announce 1 MiB each; "100 Continue" says the
		// relay has reserved their bodies and started reading.
		var slow []net.Conn
		var slowR []*bufio.Reader
		for range 2 {
			c, err := net.Dial("tcp", listen)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(60 * time.Second))
			fmt.Fprintf(c, "POST /webhook HTTP/1.1\r\nHost: relay\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", mib)
			r := bufio.NewReader(c)
			if resp, err := http.ReadResponse(r, nil); err != nil || resp.StatusCode != 100 {
				t.Fatalf("want 100 Continue: %v %v", resp, err)
			}
			slow, slowR = append(slow, c), append(slowR, r)
		}
		if _, m := httpGet(t, admin+"/metrics", ""); metric(m, "chatrelay_inflight_body_bytes") != 2*mib {
			t.Fatalf("metrics do not show 2 MiB in flight:\n%s", grepLines(m, "inflight"))
		}
		// A third is refused at once, before it sends any of its body.
		c, err := net.Dial("tcp", listen)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		fmt.Fprintf(c, "POST /webhook HTTP/1.1\r\nHost: relay\r\nContent-Length: %d\r\n\r\n", 1000)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("no answer to a request over the budget whose body was not sent: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !resp.Close {
			t.Fatalf("over the budget: %d Retry-After %q close %v, want 503 with Retry-After, closing", resp.StatusCode, resp.Header.Get("Retry-After"), resp.Close)
		}
		// The slow clients finish (unsigned: 403); nothing stays reserved.
		for i, c := range slow {
			if _, err := c.Write(bytes.Repeat([]byte("x"), mib)); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(slowR[i], nil)
			if err != nil || resp.StatusCode != 403 {
				t.Fatalf("slow body %d: %v %v, want 403", i, resp, err)
			}
			resp.Body.Close()
		}
		if _, m := httpGet(t, admin+"/metrics", ""); metric(m, "chatrelay_inflight_body_bytes") != 0 ||
			metric(m, `chatrelay_events_received_total{result="unavailable",topic="chat"}`) != 1 {
			t.Fatalf("after the requests:\n%s", grepLines(m, "inflight", "unavailable"))
		}
	})

	t.Run("readyz of a full store", func(t *testing.T) {
		pad := strings.Repeat("x", 100<<10)
		full := false
		for i := 0; i < 40 && !full; i++ {
			body := fmt.Appendf(nil, `{"conversation_id":"fill-%d","pad":%q}`, i, pad)
			code, _ := do("POST", "http://"+listen+"/webhook", "", map[string]string{relay.HeaderSignature: relay.Sign(body, signing)}, body)
			full = code == 503
		}
		if !full {
			t.Fatal("4 MiB of events into a 1 MiB store were all accepted")
		}
		code, out := do("GET", "http://"+listen+"/readyz", "", nil, nil)
		if code != 503 || strings.TrimSpace(out) != `{"reason":"store_full","status":"unavailable"}` {
			t.Fatalf("/readyz of a full store: %d %s", code, out)
		}
		code, out = do("GET", admin+"/api/v1/ready", "", nil, nil)
		if code != 200 || !strings.Contains(out, `"reason": "store_full"`) || !strings.Contains(out, "maximum size") {
			t.Fatalf("/api/v1/ready of a full store: %d %s", code, out)
		}
		if !strings.Contains(logs.String(), "not ready") {
			t.Fatalf("the detail is not in the log:\n%s", logs.String())
		}
	})
}

// metric returns the value of one series in a Prometheus text exposition,
// or -1 when it is not there.
func metric(exposition, series string) float64 {
	for _, l := range strings.Split(exposition, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				return f
			}
		}
	}
	return -1
}

// grepLines returns the lines of s containing any of words.
func grepLines(s string, words ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
