package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
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
)

// freeAddr returns a loopback address with a port free right now.
//
// The port is picked below the kernel's ephemeral range (32768 and up on
// Linux), where neither an outgoing connection nor another test's port-0
// listener is given it between this check and the relay's own listen (an
// ephemeral port freed here could be, and once was). Another test may pick
// the same one only by the same random draw, and the check then moves on.
func freeAddr(t testing.TB) string {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000)))
		if err != nil {
			continue
		}
		addr := ln.Addr().String()
		ln.Close()
		return addr
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// hookReceiver is a fake generic-webhook destination recording what it got.
type hookReceiver struct {
	srv *httptest.Server

	mu     sync.Mutex
	bodies [][]byte
	ids    []string // webhook-id of each request, in arrival order
	header []http.Header
	delay  time.Duration
	got    chan struct{}
}

func newHookReceiver(t *testing.T, delay time.Duration) *hookReceiver {
	t.Helper()
	h := &hookReceiver{delay: delay, got: make(chan struct{}, 100000)}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if h.delay > 0 {
			select {
			case <-time.After(h.delay):
			case <-r.Context().Done():
				return
			}
		}
		h.mu.Lock()
		h.bodies = append(h.bodies, b)
		h.ids = append(h.ids, r.Header.Get("webhook-id"))
		h.header = append(h.header, r.Header.Clone())
		h.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		h.got <- struct{}{}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookReceiver) received() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.ids...)
}

func httpGet(t testing.TB, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServeEndToEnd runs serve, send-test and dlq in-process against a
// fake webhook destination, as a user would from two terminals.
func TestServeEndToEnd(t *testing.T) {
	t.Parallel()
	hook := newHookReceiver(t, 0)
	dir := t.TempDir()
	listen, adminAddr := freeAddr(t), freeAddr(t)
	const signing, adminToken = "e2e-signing-secret", "e2e-admin-token"
	cfgPath := writeConfig(t, fmt.Sprintf(`
listen: %s
admin: {listen: %s, token: %s}
signing_secrets: [%s]
log: {level: debug, format: json}
store: {path: %s}
sinks:
  - name: crm
    type: webhook
    url: %s/in/tok-e2e-secret-path
    headers: {X-Team: support}
`, listen, adminAddr, adminToken, signing, filepath.Join(dir, "data"), hook.srv.URL))

	ctx, cancel := context.WithCancel(t.Context())
	var stdout, stderr relaytest.LogBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve", "--config", cfgPath}, nil, &stdout, &stderr, os.Getenv) }()
	relaytest.Eventually(t, 30*time.Second, "the receiver", func() bool {
		resp, err := http.Get("http://" + listen + "/readyz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})

	var out, errOut bytes.Buffer
	if code := run(t.Context(), []string{"send-test", "--config", cfgPath}, nil, &out, &errOut, os.Getenv); code != 0 {
		t.Fatalf("send-test exit %d: %s %s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "HTTP 200 OK") || !strings.Contains(out.String(), `"status":"accepted"`) {
		t.Fatalf("send-test printed %q", out.String())
	}
	<-hook.got
	hook.mu.Lock()
	body, hdr := hook.bodies[0], hook.header[0]
	hook.mu.Unlock()
	if !json.Valid(body) || !bytes.Contains(body, []byte("Do you ship to Canada")) || hdr.Get("X-Team") != "support" ||
		hdr.Get("X-Chat-Data-Topic") != "chat" || !strings.HasPrefix(hdr.Get("webhook-id"), "msg_") {
		t.Fatalf("destination got %s with %v", body, hdr)
	}

	// A wrong secret is refused, and send-test exits non-zero.
	out.Reset()
	if code := run(t.Context(), []string{"send-test", "--config", cfgPath, "--secret", "wrong"}, nil, &out, &errOut, os.Getenv); code == 0 ||
		!strings.Contains(out.String(), "403") {
		t.Fatalf("wrong secret: exit %d, %s", code, out.String())
	}

	// Admin API: token required, metrics open.
	if code, _ := httpGet(t, "http://"+adminAddr+"/api/v1/dlq", ""); code != 401 {
		t.Fatalf("/api/v1/dlq without token = %d", code)
	}
	if code, body := httpGet(t, "http://"+adminAddr+"/api/v1/dlq", "wrong"); code != 401 || strings.Contains(body, adminToken) {
		t.Fatalf("/api/v1/dlq with a wrong token = %d %s", code, body)
	}
	if code, body := httpGet(t, "http://"+adminAddr+"/api/v1/sinks", adminToken); code != 200 || !strings.Contains(body, `"name": "crm"`) {
		t.Fatalf("/api/v1/sinks = %d %s", code, body)
	}
	var code int
	var metrics string
	relaytest.Eventually(t, 30*time.Second, "the delivery to be recorded", func() bool {
		code, metrics = httpGet(t, "http://"+adminAddr+"/metrics", "")
		return strings.Contains(metrics, `chatrelay_deliveries_total{result="delivered",sink="crm"} 1`) &&
			strings.Contains(metrics, `chatrelay_queue_depth{sink="crm"} 0`)
	})
	for _, want := range []string{
		`chatrelay_events_received_total{result="accepted",topic="chat"} 1`,
		`chatrelay_events_received_total{result="rejected_signature",topic="chat"} 1`,
		`chatrelay_deliveries_total{result="delivered",sink="crm"} 1`,
		`chatrelay_queue_depth{sink="crm"} 0`,
		`chatrelay_sink_up{sink="crm"} 1`,
		`chatrelay_dead_letters{sink="crm"} 0`,
		`chatrelay_oldest_pending_seconds{sink="crm"} 0`,
		`chatrelay_rate_limited_total{sink="crm"} 0`,
		`chatrelay_delivery_duration_seconds_count{sink="crm"} 1`,
	} {
		if code != 200 || !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	out.Reset()
	if code := run(t.Context(), []string{"dlq", "list", "--config", cfgPath}, nil, &out, &errOut, os.Getenv); code != 0 ||
		out.Len() != 0 || !strings.Contains(errOut.String(), "no dead letters") {
		t.Fatalf("dlq list: exit %d %q %q", code, out.String(), errOut.String())
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("serve exit %d:\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop after its context ended")
	}
	logs := stderr.String()
	for _, secret := range []string{signing, adminToken, "tok-e2e-secret-path"} {
		if strings.Contains(logs, secret) || strings.Contains(stdout.String(), secret) {
			t.Errorf("a secret reached the output: %s", secret)
		}
	}
	if !strings.Contains(logs, `"msg":"accepted event"`) || !strings.Contains(logs, `"msg":"delivered"`) {
		t.Errorf("expected one log line per accepted event and per delivery:\n%s", logs)
	}
}

// TestEmbeddedDefaultsFirstStart runs serve with no config in an empty
// directory: it generates a secret, prints a ready-to-paste send-test line
// once (as chatrelay was started: here go run), and the console shows the
// test event. A first start that cannot listen keeps no secret (it was
// never shown); later starts say where the secret is kept.
func TestEmbeddedDefaultsFirstStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	listen, adminAddr := freeAddr(t), freeAddr(t)
	// Embedded mode is LoadConfig with no file; only the addresses and the
	// data directory are moved so the test can run beside others.
	cfg, err := LoadConfig(filepath.Join(dir, "none.yaml"), false, os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen, cfg.Admin.Listen, cfg.Store.Bolt.Path = listen, adminAddr, filepath.Join(dir, "chatrelay-data")
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr relaytest.LogBuffer
	const self = "go run ./cmd/chatrelay"

	// The port is taken: serve fails, and keeps no secret it never showed.
	taken, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	if err := (&app{stdout: &stdout, stderr: &stderr, getenv: os.Getenv, self: self}).serve(t.Context(), cfg); err == nil {
		t.Fatal("serve started on a taken port")
	}
	taken.Close()
	if _, err := os.Stat(filepath.Join(cfg.Store.Bolt.Path, secretFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed first start kept a secret it never showed: %v", err)
	}

	a := &app{stdout: &stdout, stderr: &stderr, getenv: os.Getenv, self: self}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.serve(ctx, cfg) }()
	relaytest.Eventually(t, 30*time.Second, "the banner", func() bool { return strings.Contains(stdout.String(), "send-test --url") })
	secret, err := os.ReadFile(filepath.Join(cfg.Store.Bolt.Path, secretFileName))
	if err != nil {
		t.Fatal(err)
	}
	line := stdout.String()
	paste := self + " send-test --url http://" + listen + "/webhook --secret " + strings.TrimSpace(string(secret))
	if !strings.Contains(line, "    "+paste+"\n") || !strings.Contains(line, "the signing secret Chat Data shows under Settings → Webhooks") {
		t.Fatalf("banner lacks the line to paste (%s) or which secret Chat Data needs:\n%s", paste, line)
	}
	body := []byte(`{"messages":[{"role":"user","content":"Hello from the test"}],"answer":{"content":"Hi!","score":0.9},"conversation_id":"c1"}`)
	req, _ := http.NewRequest("POST", "http://"+listen+"/webhook", bytes.NewReader(body))
	req.Header.Set(relay.HeaderSignature, relay.Sign(body, relay.Secret(strings.TrimSpace(string(secret)))))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST: %v %v", resp, err)
	}
	resp.Body.Close()
	relaytest.Eventually(t, 30*time.Second, "the console output", func() bool { return strings.Contains(stdout.String(), "Hello from the test") })
	if strings.Contains(stderr.String(), strings.TrimSpace(string(secret))) {
		t.Error("the generated secret reached the log")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Second start: the secret is not printed again.
	stdout2 := &relaytest.LogBuffer{}
	a2 := &app{stdout: stdout2, stderr: &stderr, getenv: os.Getenv, self: self}
	ctx2, cancel2 := context.WithCancel(t.Context())
	done2 := make(chan error, 1)
	go func() { done2 <- a2.serve(ctx2, cfg) }()
	relaytest.Eventually(t, 30*time.Second, "the second banner", func() bool { return strings.Contains(stdout2.String(), "embedded defaults") })
	cancel2()
	if err := <-done2; err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stdout2.String(), strings.TrimSpace(string(secret))) {
		t.Fatal("the secret was printed on the second start")
	}
	if want := "signing secret is kept in " + filepath.Join(cfg.Store.Bolt.Path, secretFileName); !strings.Contains(stdout2.String(), want) ||
		!strings.Contains(stdout2.String(), self+" send-test --url http://"+listen+"/webhook") {
		t.Fatalf("second start does not say %q and how to send a test:\n%s", want, stdout2.String())
	}
}

// buildBinary builds the chatrelay binary once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "chatrelay")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}
	return bin
}

// TestCrashRecoveryKill9 runs the real binary, sends many signed events,
// kills it with SIGKILL right after the last 2xx, restarts it, and checks
// that every accepted event is delivered, in conversation order.
func TestCrashRecoveryKill9(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	hook := newHookReceiver(t, 5*time.Millisecond) // slow enough that a backlog builds up
	dir := t.TempDir()
	listen, adminAddr := freeAddr(t), freeAddr(t)
	const signing = "crash-test-signing-secret"
	cfgPath := writeConfig(t, fmt.Sprintf(`
listen: %s
admin: {listen: %s}
signing_secrets: [%s]
log: {level: warn, format: json}
store: {path: %s}
sinks:
  - {name: crm, type: webhook, url: %s/in, concurrency: 4}
`, listen, adminAddr, signing, filepath.Join(dir, "data"), hook.srv.URL))

	startProc := func() *exec.Cmd {
		cmd := exec.Command(bin, "serve", "--config", cfgPath)
		var errb relaytest.LogBuffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		relaytest.Eventually(t, 30*time.Second, "the relay", func() bool {
			resp, err := http.Get("http://" + listen + "/readyz")
			if err == nil {
				resp.Body.Close()
			}
			return err == nil && resp.StatusCode == 200
		})
		return cmd
	}
	proc := startProc()

	const convs, perConv = 10, 30
	accepted := make([][]string, convs) // per conversation, event ids in acceptance order
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	for c := range convs {
		wg.Go(func() {
			for i := range perConv {
				body := fmt.Appendf(nil, `{"conversation_id":"conv-%d","messages":[{"role":"user","content":"turn %d"}],"answer":{"content":"a"}}`, c, i)
				req, _ := http.NewRequest("POST", "http://"+listen+"/webhook", bytes.NewReader(body))
				req.Header.Set(relay.HeaderSignature, relay.Sign(body, signing))
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("POST: %v", err)
					return
				}
				var a struct{ Status, ID string }
				_ = json.NewDecoder(resp.Body).Decode(&a)
				resp.Body.Close()
				if resp.StatusCode != 200 || a.Status != "accepted" {
					t.Errorf("answer %d %+v", resp.StatusCode, a)
					return
				}
				accepted[c] = append(accepted[c], a.ID)
			}
		})
	}
	wg.Wait()
	// Right after the last 2xx: no goodbye.
	if err := proc.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = proc.Wait()
	before := len(hook.received())
	proc = startProc()
	defer func() {
		_ = proc.Process.Signal(syscall.SIGTERM)
		_ = proc.Wait()
	}()

	want := map[string]bool{}
	for _, ids := range accepted {
		for _, id := range ids {
			want[id] = true
		}
	}
	idOf := func(webhookID string) string {
		s := strings.TrimPrefix(webhookID, "msg_")
		return strings.TrimSuffix(s, "_crm")
	}
	relaytest.Eventually(t, 60*time.Second, "every accepted event at the destination", func() bool {
		seen := map[string]bool{}
		for _, w := range hook.received() {
			seen[idOf(w)] = true
		}
		for id := range want {
			if !seen[id] {
				return false
			}
		}
		return true
	})
	got := hook.received()
	count := map[string]int{}
	for _, w := range got {
		count[idOf(w)]++
	}
	dups := 0
	for _, n := range count {
		dups += n - 1
	}
	// Order: within a conversation, deliveries never go back to an older turn
	// (a repeat of the turn in flight at the crash is allowed).
	pos := map[string][2]int{}
	for c, ids := range accepted {
		for i, id := range ids {
			pos[id] = [2]int{c, i}
		}
	}
	last := make([]int, convs)
	for i := range last {
		last[i] = -1
	}
	for _, w := range got {
		p, ok := pos[idOf(w)]
		if !ok {
			t.Fatalf("destination got an event that was never accepted: %s", w)
		}
		if p[1] < last[p[0]] {
			t.Errorf("conversation %d went back from turn %d to %d", p[0], last[p[0]], p[1])
		}
		last[p[0]] = max(last[p[0]], p[1])
	}
	t.Logf("accepted %d events; %d delivered before the kill; %d deliveries in all; %d duplicates (at most one per conversation in flight at the kill)",
		len(want), before, len(got), dups)
	if dups > convs {
		t.Errorf("%d duplicates, want at most %d (one in flight per conversation)", dups, convs)
	}
}

// TestSIGTERMStopsWithinShutdownTimeout: a destination that never answers
// does not keep chatrelay from stopping; it exits 0 within
// shutdown_timeout, and the undelivered event is delivered after a restart.
func TestSIGTERMStopsWithinShutdownTimeout(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	// Until working is closed the destination never answers; a request
	// that arrived before then is never answered at all, so only a send of
	// the restarted relay can succeed.
	working := make(chan struct{})
	delivered := make(chan struct{}, 10)
	hanging := make(chan struct{}, 10)
	dest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-working:
			w.WriteHeader(http.StatusNoContent)
			delivered <- struct{}{}
		default:
			hanging <- struct{}{}
			<-r.Context().Done()
		}
	}))
	defer dest.Close()
	listen, adminAddr := freeAddr(t), freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf(`
listen: %s
admin: {listen: %s}
signing_secrets: [term-secret]
shutdown_timeout: 2s
log: {level: info, format: json}
store: {path: %s}
sinks:
  - {name: hook, type: webhook, url: "%s/in", timeout: 1m}
`, listen, adminAddr, filepath.Join(t.TempDir(), "data"), dest.URL))
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "serve", "--config", cfg)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		relaytest.Eventually(t, 30*time.Second, "the relay", func() bool {
			resp, err := http.Get("http://" + listen + "/readyz")
			if err == nil {
				resp.Body.Close()
			}
			return err == nil && resp.StatusCode == 200
		})
		return cmd
	}
	proc := start()
	postSigned(t, listen, "term-secret", []byte(`{"conversation_id":"c","messages":[{"role":"user","content":"hi"}]}`))
	select {
	case <-hanging: // the send is in flight, and hangs
	case <-time.After(30 * time.Second):
		t.Fatal("the relay never sent the event")
	}
	t0 := time.Now()
	if err := proc.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := proc.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if took := time.Since(t0); took > 5*time.Second {
		t.Fatalf("stopping took %s with shutdown_timeout 2s", took)
	}
	close(working) // the destination works again
	proc = start()
	defer func() {
		_ = proc.Process.Signal(syscall.SIGTERM)
		_ = proc.Wait()
	}()
	select {
	case <-delivered:
	case <-time.After(30 * time.Second):
		t.Fatal("the event in flight at shutdown was not delivered after the restart")
	}
}
