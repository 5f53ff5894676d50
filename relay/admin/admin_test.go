package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/admin"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "admin-test-token-123"

type fixture struct {
	srv     *httptest.Server
	store   *bolt.Store
	metrics *relay.Metrics
}

func setup(t *testing.T) *fixture {
	t.Helper()
	store, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if _, err := store.Reconcile(t.Context(), []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := relay.NewMetrics(reg)
	srv := httptest.NewServer(admin.Handler(admin.Config{Store: store, Gatherer: reg, Metrics: m, Token: token, Sinks: []string{"a", "b"}}))
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, store: store, metrics: m}
}

func (f *fixture) call(t *testing.T, method, path, tok string, body any) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, f.srv.URL+path, r)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &out)
	if strings.Contains(string(raw), token) {
		t.Fatalf("answer echoes the token: %s", raw)
	}
	return resp.StatusCode, out
}

// park appends an event for sink a and parks its delivery.
func (f *fixture) park(t *testing.T, conv string, n int) string {
	t.Helper()
	ev := storetest.NewEvent(t, conv, n)
	if _, err := f.store.Append(t.Context(), ev, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	d, err := f.store.Queue("a").Next(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Term(t.Context(), "HTTP 400: bad"); err != nil {
		t.Fatal(err)
	}
	return relay.DeadLetterID(ev.ID, "a")
}

func TestAuth(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for _, tok := range []string{"", "wrong", token + "x"} {
		if code, _ := f.call(t, "GET", "/api/v1/dlq", tok, nil); code != 401 {
			t.Errorf("token %q: %d, want 401", tok, code)
		}
		if code, _ := f.call(t, "POST", "/api/v1/dlq/replay", tok, admin.Selection{All: true}); code != 401 {
			t.Errorf("replay with token %q: %d, want 401", tok, code)
		}
	}
	if code, _ := f.call(t, "GET", "/api/v1/dlq", token, nil); code != 200 {
		t.Errorf("right token: %d", code)
	}
	if code, _ := f.call(t, "GET", "/metrics", "", nil); code != 200 {
		t.Errorf("/metrics: %d", code)
	}
}

func TestDeadLetterLifecycle(t *testing.T) {
	t.Parallel()
	f := setup(t)
	id := f.park(t, "A", 1)
	other := f.park(t, "B", 2)

	code, out := f.call(t, "GET", "/api/v1/dlq?sink=a", token, nil)
	if code != 200 || len(out["dead_letters"].([]any)) != 2 {
		t.Fatalf("list: %d %v", code, out)
	}
	code, out = f.call(t, "GET", "/api/v1/dlq/"+id, token, nil)
	if code != 200 || out["dead_letter"].(map[string]any)["reason"] != "HTTP 400: bad" || out["event"] == nil {
		t.Fatalf("show: %d %v", code, out)
	}
	if code, _ := f.call(t, "GET", "/api/v1/dlq/nope.a", token, nil); code != 404 {
		t.Fatalf("show unknown: %d", code)
	}
	if code, _ := f.call(t, "POST", "/api/v1/dlq/replay", token, map[string]any{"ids": []string{id}, "all": true}); code != 400 {
		t.Fatalf("ids and all: %d", code)
	}
	if code, _ := f.call(t, "POST", "/api/v1/dlq/replay", token, admin.Selection{All: true, Sink: "zzz"}); code != 404 {
		t.Fatalf("unknown sink: %d", code)
	}
	code, out = f.call(t, "POST", "/api/v1/dlq/replay", token, admin.Selection{IDs: []string{id}})
	if code != 200 || out["requeued"].(float64) != 1 {
		t.Fatalf("replay: %d %v", code, out)
	}
	if n := testutil.ToFloat64(f.metrics.Deliveries.WithLabelValues("a", relay.ResultReplayed)); n != 1 {
		t.Fatalf("replayed metric %v", n)
	}
	d, err := f.store.Queue("a").Next(t.Context())
	if err != nil || relay.DeadLetterID(d.Event.ID, "a") != id {
		t.Fatalf("replayed delivery: %v %v", d, err)
	}
	_ = d.Ack(t.Context())
	code, out = f.call(t, "POST", "/api/v1/dlq/purge", token, admin.Selection{All: true})
	if code != 200 || out["purged"].(float64) != 1 {
		t.Fatalf("purge: %d %v", code, out)
	}
	code, out = f.call(t, "GET", "/api/v1/events/"+strings.TrimSuffix(other, ".a"), token, nil)
	if code != 200 || out["deliveries"].([]any)[0].(map[string]any)["state"] != relay.StatePurged {
		t.Fatalf("event: %d %v", code, out)
	}
	code, out = f.call(t, "GET", "/api/v1/events?limit=10", token, nil)
	if code != 200 || len(out["events"].([]any)) != 2 {
		t.Fatalf("events: %d %v", code, out)
	}
	code, out = f.call(t, "GET", "/api/v1/sinks", token, nil)
	if code != 200 || len(out["sinks"].([]any)) != 2 {
		t.Fatalf("sinks: %d %v", code, out)
	}
}

// unready is a store whose readiness check fails.
type unready struct {
	*bolt.Store
	err error
}

func (u unready) Ready(context.Context) error { return u.err }

// TestReady: GET /api/v1/ready gives the detail /readyz leaves out, behind
// the token.
func TestReady(t *testing.T) {
	t.Parallel()
	f := setup(t)
	if code, _ := f.call(t, "GET", "/api/v1/ready", "", nil); code != 401 {
		t.Fatalf("without the token: %d, want 401", code)
	}
	code, out := f.call(t, "GET", "/api/v1/ready", token, nil)
	if code != 200 || out["ready"] != true || out["reason"] != nil {
		t.Fatalf("ready store: %d %v", code, out)
	}

	full := fmt.Errorf("%w: database reached maximum size", relay.ErrFull)
	reg := prometheus.NewRegistry()
	srv := httptest.NewServer(admin.Handler(admin.Config{Store: unready{f.store, full}, Gatherer: reg, Token: token}))
	t.Cleanup(srv.Close)
	g := &fixture{srv: srv}
	code, out = g.call(t, "GET", "/api/v1/ready", token, nil)
	if code != 200 || out["ready"] != false || out["reason"] != relay.ReadyStoreFull || out["error"] != full.Error() {
		t.Fatalf("full store: %d %v", code, out)
	}
}

// tokenless serves the admin API without a token, as on loopback, with
// parked dead letters to purge.
func tokenless(t *testing.T) (*fixture, *relaytest.LogBuffer) {
	t.Helper()
	store, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if _, err := store.Reconcile(t.Context(), []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := relay.NewMetrics(reg)
	logger, logs := relaytest.NewLogger()
	srv := httptest.NewServer(admin.Handler(admin.Config{Store: store, Gatherer: reg, Metrics: m, Sinks: []string{"a", "b"}, Logger: logger}))
	t.Cleanup(srv.Close)
	f := &fixture{srv: srv, store: store, metrics: m}
	f.park(t, "A", 1)
	f.park(t, "B", 2)
	return f, logs
}

// request sends one request to the admin listener as a browser (or any
// client) would: Host, Content-Type and browser headers as given.
func request(t *testing.T, f *fixture, method, path, host string, header map[string]string, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, f.srv.URL+path, strings.NewReader(body))
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
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusForbidden {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" || json.Unmarshal(raw, &out) != nil {
			t.Errorf("%s %s: 403 without a JSON error: %s %q", method, path, ct, raw)
		}
	} else {
		_ = json.Unmarshal(raw, &out)
	}
	return resp.StatusCode, out
}

func (f *fixture) deadCount(t *testing.T) int {
	t.Helper()
	dead, err := f.store.ListDead(t.Context(), "", 100)
	if err != nil {
		t.Fatal(err)
	}
	return len(dead)
}

// TestTokenlessAdminRefusesCrossSite: without a token, a web page cannot
// change anything (SPEC §9): not with the simple text/plain POST a page may
// send anywhere, not with another origin, not through DNS rebinding. The
// CLI's requests (application/json, no Origin) and the listener's own
// pages still work.
func TestTokenlessAdminRefusesCrossSite(t *testing.T) {
	t.Parallel()
	const purge = `{"all":true}`
	tests := []struct {
		name      string
		host      string
		header    map[string]string
		ownOrigin bool // add Origin: the listener's own
		want      int
	}{
		{"form-like text/plain POST from a page", "", map[string]string{"Content-Type": "text/plain", "Origin": "http://attacker.example"}, false, 403},
		{"text/plain without Origin", "", map[string]string{"Content-Type": "text/plain"}, false, 403},
		{"urlencoded", "", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, false, 403},
		{"no Content-Type", "", nil, false, 403},
		{"JSON from another origin", "", map[string]string{"Content-Type": "application/json", "Origin": "http://attacker.example"}, false, 403},
		{"JSON from another port on loopback", "", map[string]string{"Content-Type": "application/json", "Origin": "http://127.0.0.1:1"}, false, 403},
		{"JSON from a sandboxed page", "", map[string]string{"Content-Type": "application/json", "Origin": "null"}, false, 403},
		{"JSON marked cross-site by the browser", "", map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, false, 403},
		{"JSON marked same-site (another port) by the browser", "", map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "same-site"}, false, 403},
		{"DNS rebinding: JSON to a foreign Host", "attacker.example:9090", map[string]string{"Content-Type": "application/json"}, false, 403},
		{"the CLI: JSON, no Origin", "", map[string]string{"Content-Type": "application/json; charset=utf-8"}, false, 200},
		{"the listener's own page", "", map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "same-origin"}, true, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, logs := tokenless(t)
			if tc.ownOrigin {
				tc.header["Origin"] = f.srv.URL
			}
			code, out := request(t, f, "POST", "/api/v1/dlq/purge", tc.host, tc.header, purge)
			if code != tc.want {
				t.Fatalf("purge answered %d %v, want %d", code, out, tc.want)
			}
			left := f.deadCount(t)
			if tc.want == 403 {
				if msg, _ := out["error"].(string); !strings.HasPrefix(msg, "request refused: ") {
					t.Fatalf("403 error %q", msg)
				}
				if left != 2 {
					t.Fatalf("a refused purge purged: %d dead letters left, want 2", left)
				}
				if !strings.Contains(logs.String(), "admin request refused") {
					t.Fatalf("refusal not logged:\n%s", logs)
				}
			} else if out["purged"] != float64(2) || left != 0 {
				t.Fatalf("purge: %v, %d left", out, left)
			}
		})
	}
}

// TestTokenlessAdminRefusesForeignHost: without a token, reads too answer
// only a loopback Host, so a DNS-rebinding page (its own name now resolving
// to 127.0.0.1) cannot read events, metrics or profiles.
func TestTokenlessAdminRefusesForeignHost(t *testing.T) {
	t.Parallel()
	f, _ := tokenless(t)
	_, port, _ := net.SplitHostPort(f.srv.Listener.Addr().String())
	paths := []string{"/api/v1/events", "/api/v1/dlq", "/api/v1/sinks", "/metrics", "/healthz", "/debug/pprof/"}
	for _, host := range []string{"attacker.example:" + port, "attacker.example", "127.0.0.1.nip.io:" + port, "localhost.attacker.example:" + port, "10.1.2.3:" + port} {
		for _, path := range paths {
			if code, out := request(t, f, "GET", path, host, nil, ""); code != 403 {
				t.Errorf("GET %s with Host %s: %d %v, want 403", path, host, code, out)
			}
		}
	}
	for _, host := range []string{"", "localhost:" + port, "LOCALHOST:" + port, "[::1]:" + port, "127.0.0.2:" + port} {
		for _, path := range paths {
			if code, out := request(t, f, "GET", path, host, nil, ""); code != 200 {
				t.Errorf("GET %s with Host %q: %d %v, want 200", path, host, code, out)
			}
		}
	}
	// A page's cross-origin read (an image, a no-cors fetch) is refused
	// too: a profile costs CPU even when the page cannot read it.
	if code, _ := request(t, f, "GET", "/debug/pprof/", "", map[string]string{"Sec-Fetch-Site": "cross-site"}, ""); code != 403 {
		t.Errorf("cross-site GET of a profile: %d, want 403", code)
	}
	if code, _ := request(t, f, "GET", "/api/v1/events", "", map[string]string{"Sec-Fetch-Site": "none"}, ""); code != 200 {
		t.Errorf("URL typed in the address bar: %d, want 200", code)
	}
}

// TestTokenAdminSkipsBrowserChecks: with a token (which a browser never
// sends on its own) the token is the guard: a proxy may present any Host,
// and scripts may post without a Content-Type, as before.
func TestTokenAdminSkipsBrowserChecks(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.park(t, "A", 1)
	auth := map[string]string{"Authorization": "Bearer " + token}
	if code, out := request(t, f, "GET", "/api/v1/dlq", "admin.example.com", auth, ""); code != 200 {
		t.Fatalf("token, proxy Host: %d %v", code, out)
	}
	if code, out := request(t, f, "POST", "/api/v1/dlq/purge", "admin.example.com", auth, `{"all":true}`); code != 200 || out["purged"] != float64(1) {
		t.Fatalf("token, no Content-Type: %d %v", code, out)
	}
	if code, _ := request(t, f, "POST", "/api/v1/dlq/purge", "", map[string]string{"Content-Type": "text/plain", "Origin": "http://attacker.example"}, `{"all":true}`); code != 401 {
		t.Fatalf("a page's POST without the token: %d, want 401", code)
	}
}

type health relay.SinkHealth

func (h health) Health() relay.SinkHealth { return relay.SinkHealth(h) }

// TestStatus: /api/v1/status gives each sink's state (up or down since
// when and why, pending, oldest, rate-limit hold, last error), the store
// and the version, for chatrelay status.
func TestStatus(t *testing.T) {
	t.Parallel()
	store, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	for i := range 3 {
		if _, err := store.Append(t.Context(), storetest.NewEvent(t, "c", i), []string{"a"}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC().Add(time.Hour).Truncate(time.Second) // an hour after the events
	size := int64(4096)
	states := map[string]admin.SinkState{
		"a": health{Up: false, DownSince: now.Add(-10 * time.Minute), DownCause: relay.DownUnreachable,
			LastError: "dial tcp 127.0.0.1:9: connect: connection refused", LastErrorAt: now.Add(-time.Second)},
		"b": health{Up: true, HeldUntil: now.Add(30 * time.Second)},
	}
	reg := prometheus.NewRegistry()
	srv := httptest.NewServer(admin.Handler(admin.Config{Store: store, Gatherer: reg, Metrics: relay.NewMetrics(reg),
		Sinks: []string{"a", "b"}, States: states, Version: "1.2.3", Now: func() time.Time { return now },
		StoreInfo: func(context.Context) admin.StoreInfo {
			return admin.StoreInfo{Driver: "bolt", Path: "/data/chatrelay.db", SizeBytes: &size}
		}}))
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st admin.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != 200 {
		t.Fatalf("status %d: %v", resp.StatusCode, err)
	}
	if st.Version != "1.2.3" || st.Store == nil || st.Store.Path != "/data/chatrelay.db" || *st.Store.SizeBytes != 4096 || len(st.Sinks) != 2 {
		t.Fatalf("status = %+v", st)
	}
	a, b := st.Sinks[0], st.Sinks[1]
	if a.Name != "a" || a.Up || a.DownCause != "unreachable" || a.DownSince == nil || !a.DownSince.Equal(now.Add(-10*time.Minute)) ||
		a.Depth != 3 || a.OldestPendingSeconds <= 0 || !strings.Contains(a.LastError, "connection refused") || a.LastErrorAt == nil {
		t.Errorf("sink a = %+v", a)
	}
	if b.Name != "b" || !b.Up || b.DownSince != nil || b.RateLimitedUntil == nil || !b.RateLimitedUntil.Equal(now.Add(30*time.Second)) || b.Depth != 0 {
		t.Errorf("sink b = %+v", b)
	}
}
