package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
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
