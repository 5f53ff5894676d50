package fault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

// logBuffer collects a child's output across restarts and wakes whoever
// waits for a line.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newLogBuffer() *logBuffer { return &logBuffer{changed: make(chan struct{})} }

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return n, err
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

// waitLine waits for a complete line after offset from that contains
// substr, and returns it. It gives up when done is closed or the deadline
// passes.
func (b *logBuffer) waitLine(from int, substr string, done <-chan struct{}, d time.Duration) (string, error) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		text := b.buf.String()[from:]
		changed := b.changed
		b.mu.Unlock()
		for line := range strings.Lines(text) {
			if strings.HasSuffix(line, "\n") && strings.Contains(line, substr) {
				return line, nil
			}
		}
		select {
		case <-changed:
		case <-done:
			return "", errors.New("the process exited")
		case <-deadline.C:
			return "", fmt.Errorf("no log line with %q within %s", substr, d)
		}
	}
}

// count returns how many lines contain substr.
func (b *logBuffer) count(substr string) int {
	n := 0
	for line := range strings.Lines(b.String()) {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

// relayProc is the chatrelay binary run as a child process, restartable.
// It listens on ports the kernel picks (listen and admin.listen end in :0)
// and reads them from its "chatrelay started" log line.
type relayProc struct {
	t    *testing.T
	bin  string
	cfg  string
	logs *logBuffer

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	listen  string
	admin   string
	up      chan struct{} // closed at the next successful start
	exitErr error
}

// relayConfig is the part of a config every fault test shares.
type relayConfig struct {
	Secret     string
	AdminToken string
	Extra      string // YAML appended: store, retry, sinks, routes, shutdown_timeout...
}

// newRelay writes the config and returns a relay that is not started. The
// store is in a fresh temporary directory unless extra sets store.
func newRelay(t *testing.T, c relayConfig) *relayProc {
	t.Helper()
	bin := binary(t)
	dir := t.TempDir()
	yaml := fmt.Sprintf("listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0, token: %q}\nsigning_secrets: [%q]\nlog: {level: info, format: json}\n%s",
		c.AdminToken, c.Secret, c.Extra)
	if !strings.Contains(c.Extra, "shutdown_timeout:") {
		yaml += "shutdown_timeout: 5s\n"
	}
	if !strings.Contains(c.Extra, "store:") {
		yaml += fmt.Sprintf("store: {path: %q}\n", filepath.Join(dir, "data"))
	}
	cfg := filepath.Join(dir, "chatrelay.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &relayProc{t: t, bin: bin, cfg: cfg, logs: newLogBuffer(), up: make(chan struct{})}
	t.Cleanup(func() {
		r.mu.Lock()
		cmd, exited := r.cmd, r.exited
		r.mu.Unlock()
		if cmd == nil {
			return
		}
		select {
		case <-exited:
		default:
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("chatrelay log (last 8 KiB):\n%s", tail(r.logs.String(), 8<<10))
		}
	})
	return r
}

// rewriteConfig replaces the config file (for a restart with other
// settings).
func (r *relayProc) rewriteConfig(from, to string) {
	r.t.Helper()
	b, err := os.ReadFile(r.cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(from)) {
		r.t.Fatalf("config has no %q", from)
	}
	if err := os.WriteFile(r.cfg, bytes.Replace(b, []byte(from), []byte(to), 1), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// env is the child's environment: ours, without CHATRELAY_ overrides.
func childEnv(extra ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "CHATRELAY_") })
	return append(env, extra...)
}

// start runs serve and waits until it logged that it listens.
func (r *relayProc) start() {
	r.t.Helper()
	from := r.logs.Len()
	cmd := exec.Command(r.bin, "serve", "--config", r.cfg)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = r.logs, r.logs
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	exited := make(chan struct{})
	r.mu.Lock()
	r.cmd, r.exited = cmd, exited
	r.mu.Unlock()
	go func() {
		err := cmd.Wait()
		r.mu.Lock()
		r.exitErr = err
		r.mu.Unlock()
		close(exited)
	}()
	line, err := r.logs.waitLine(from, `"msg":"chatrelay started"`, exited, 30*time.Second)
	if err != nil {
		r.t.Fatalf("chatrelay did not start: %v\n%s", err, tail(r.logs.String()[from:], 4<<10))
	}
	var started struct{ Listen, Admin string }
	if err := json.Unmarshal([]byte(line), &started); err != nil || started.Listen == "" || started.Admin == "" {
		r.t.Fatalf("unreadable start line %q: %v", line, err)
	}
	r.mu.Lock()
	r.listen, r.admin = started.Listen, started.Admin
	close(r.up)
	r.up = make(chan struct{})
	r.mu.Unlock()
}

// addr returns the receiver's address and a channel closed at the next
// start: a client whose request to addr failed waits on it.
func (r *relayProc) addr() (string, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.listen, r.up
}

func (r *relayProc) adminAddr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.admin
}

// kill9 sends SIGKILL and waits for the process to be gone.
func (r *relayProc) kill9() {
	r.t.Helper()
	r.mu.Lock()
	cmd, exited := r.cmd, r.exited
	r.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		r.t.Fatal(err)
	}
	<-exited
}

// stop sends SIGTERM and expects a clean exit within the bound.
func (r *relayProc) stop(within time.Duration) {
	r.t.Helper()
	r.mu.Lock()
	cmd, exited := r.cmd, r.exited
	r.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		r.t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(within):
		r.t.Fatalf("chatrelay did not stop within %s of SIGTERM", within)
	}
	r.mu.Lock()
	err := r.exitErr
	r.mu.Unlock()
	if err != nil {
		r.t.Fatalf("chatrelay exited with %v after SIGTERM", err)
	}
}

// runCLI runs another chatrelay command against the same config (dlq ...),
// pointed at the running admin listener.
func (r *relayProc) runCLI(args ...string) (string, error) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, append(args, "--config", r.cfg)...)
	cmd.Env = childEnv("CHATRELAY_ADMIN_LISTEN=" + r.adminAddr())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// client is an HTTP client of one test, with its own connections.
type client struct {
	t     *testing.T
	http  *http.Client
	token string
}

func newClient(t *testing.T, token string) *client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{t: t, http: &http.Client{Transport: tr, Timeout: 15 * time.Second}, token: token}
}

// answer is the receiver's JSON answer.
type answer struct {
	Status string `json:"status"`
	ID     string `json:"id"`
	Error  string `json:"error"`
}

// reply is one HTTP answer, read whole.
type reply struct {
	Code   int
	Header http.Header
	Body   string
}

// post sends body to the receiver at addr with the given signature header
// ("" for none) and topic header ("" for none).
func (c *client) post(addr string, body []byte, signature, topic string) (reply, error) {
	req, err := http.NewRequestWithContext(c.t.Context(), http.MethodPost, "http://"+addr+"/webhook", bytes.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if signature != "" {
		req.Header.Set(relay.HeaderSignature, signature)
	}
	if topic != "" {
		req.Header.Set(relay.HeaderTopic, topic)
	}
	return c.do(req)
}

// postSigned signs body with secret and sends it.
func (c *client) postSigned(addr, secret string, body []byte) (reply, answer, error) {
	rep, err := c.post(addr, body, relay.Sign(body, relay.Secret(secret)), "")
	if err != nil {
		return rep, answer{}, err
	}
	var a answer
	_ = json.Unmarshal([]byte(rep.Body), &a)
	return rep, a, nil
}

func (c *client) do(req *http.Request) (reply, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return reply{}, err
	}
	return reply{Code: resp.StatusCode, Header: resp.Header, Body: string(b)}, nil
}

// get fetches url with the client's bearer token (if any).
func (c *client) get(url string) reply {
	c.t.Helper()
	return c.call(http.MethodGet, url, "", c.token)
}

// call makes one admin request with an explicit Authorization value.
func (c *client) call(method, url, body, token string) reply {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(c.t.Context(), method, url, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rep, err := c.do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, url, err)
	}
	return rep
}

// adminJSON GETs an admin API path and decodes its JSON answer.
func (c *client) adminJSON(r *relayProc, path string, out any) {
	c.t.Helper()
	rep := c.get("http://" + r.adminAddr() + path)
	if rep.Code != http.StatusOK {
		c.t.Fatalf("GET %s = %d %s", path, rep.Code, rep.Body)
	}
	if err := json.Unmarshal([]byte(rep.Body), out); err != nil {
		c.t.Fatalf("GET %s: %v in %s", path, err, rep.Body)
	}
}

// metrics is one scrape of /metrics: series (name{labels}) to value.
type metrics map[string]float64

func (c *client) metrics(r *relayProc) metrics {
	c.t.Helper()
	rep := c.get("http://" + r.adminAddr() + "/metrics")
	if rep.Code != http.StatusOK {
		c.t.Fatalf("/metrics = %d", rep.Code)
	}
	m := metrics{}
	for line := range strings.Lines(rep.Body) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m
}

// get returns a series' value; labels are name, value pairs in any order.
// A missing series fails the test: the contract says which exist.
func (m metrics) get(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	key := seriesKey(name, labels...)
	v, ok := m[key]
	if !ok {
		t.Fatalf("/metrics has no series %s", key)
	}
	return v
}

func seriesKey(name string, labels ...string) string {
	type pair struct{ k, v string }
	var ps []pair
	for i := 0; i+1 < len(labels); i += 2 {
		ps = append(ps, pair{labels[i], labels[i+1]})
	}
	slices.SortFunc(ps, func(a, b pair) int { return strings.Compare(a.k, b.k) })
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = fmt.Sprintf("%s=%q", p.k, p.v)
	}
	if len(parts) == 0 {
		return name
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}

// deadLetters lists the dead letters through the admin API.
func (c *client) deadLetters(r *relayProc) []relay.DeadLetter {
	c.t.Helper()
	var out struct {
		DeadLetters []relay.DeadLetter `json:"dead_letters"`
	}
	c.adminJSON(r, "/api/v1/dlq", &out)
	return out.DeadLetters
}

// failures returns chatrelay_delivery_failures_total for a sink and
// reason; the series exists only once such a failure happened.
func (m metrics) failures(sink, reason string) float64 {
	return m[seriesKey("chatrelay_delivery_failures_total", "sink", sink, "reason", reason)]
}
