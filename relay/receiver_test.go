package relay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/relaytest"
)

const (
	secret      = "s3cret-signing-key-for-tests"
	otherSecret = "rotated-signing-key-for-tests"
)

type receiverFixture struct {
	srv     *httptest.Server
	store   *bolt.Store
	metrics *relay.Metrics
	logs    *relaytest.LogBuffer
}

func newReceiver(t *testing.T, store relay.Appender, routes []relay.Route) *receiverFixture {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := relay.NewMetrics(reg)
	logger, logs := relaytest.NewLogger()
	f := &receiverFixture{metrics: m, logs: logs}
	if store == nil {
		s, err := bolt.Open(t.TempDir(), bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		f.store, store = s, s
	}
	r, err := relay.NewReceiver(relay.ReceiverConfig{
		Secrets: []relay.Secret{secret, otherSecret}, MaxBody: 4096, Store: store,
		Router: relay.NewRouter([]string{"a", "b"}, routes), Metrics: m, Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(r)
	t.Cleanup(f.srv.Close)
	return f
}

type answer struct {
	Status string `json:"status"`
	ID     string `json:"id"`
	Error  string `json:"error"`
}

func post(t *testing.T, url, method string, body []byte, sig, topic string) (*http.Response, answer) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if sig != "" {
		req.Header.Set(relay.HeaderSignature, sig)
	}
	if topic != "" {
		req.Header.Set(relay.HeaderTopic, topic)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a answer
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &a)
	return resp, a
}

// TestReceiverAnswers covers every row of SPEC §4.
func TestReceiverAnswers(t *testing.T) {
	t.Parallel()
	chat := readPayload(t, "chat.json")
	tests := []struct {
		name     string
		method   string
		body     []byte
		sig      string
		status   int
		result   string // receive result label
		answer   string
		stored   bool
		allowHdr string
	}{
		{name: "valid", method: "POST", body: chat, sig: relay.Sign(chat, secret), status: 200, result: relay.ReceiveAccepted, answer: "accepted", stored: true},
		{name: "second secret (rotation)", method: "POST", body: chat, sig: relay.Sign(chat, otherSecret), status: 200, result: relay.ReceiveAccepted, answer: "accepted", stored: true},
		{name: "signature with whitespace", method: "POST", body: chat, sig: " " + relay.Sign(chat, secret) + "  ", status: 200, result: relay.ReceiveAccepted, answer: "accepted", stored: true},
		{name: "missing signature", method: "POST", body: chat, status: 403, result: relay.ReceiveRejectedSignature},
		{name: "wrong signature", method: "POST", body: chat, sig: relay.Sign(chat, "wrong"), status: 403, result: relay.ReceiveRejectedSignature},
		{name: "signature of another body", method: "POST", body: chat, sig: relay.Sign([]byte(`{}`), secret), status: 403, result: relay.ReceiveRejectedSignature},
		{name: "garbage signature", method: "POST", body: chat, sig: "%%%not-base64", status: 403, result: relay.ReceiveRejectedSignature},
		{name: "not JSON", method: "POST", body: []byte("hello"), sig: relay.Sign([]byte("hello"), secret), status: 400, result: relay.ReceiveRejectedBody},
		{name: "JSON array", method: "POST", body: []byte(`[1]`), sig: relay.Sign([]byte(`[1]`), secret), status: 400, result: relay.ReceiveRejectedBody},
		{name: "too large", method: "POST", body: bytes.Repeat([]byte("x"), 5000), sig: "x", status: 413, result: relay.ReceiveRejectedBody},
		{name: "GET", method: "GET", status: 405, allowHdr: "POST"},
		{name: "PUT", method: "PUT", body: chat, sig: relay.Sign(chat, secret), status: 405, allowHdr: "POST"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newReceiver(t, nil, nil)
			resp, a := post(t, f.srv.URL+"/webhook", tc.method, tc.body, tc.sig, "")
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (answer %+v)", resp.StatusCode, tc.status, a)
			}
			if tc.allowHdr != "" && !strings.Contains(resp.Header.Get("Allow"), tc.allowHdr) {
				t.Fatalf("Allow = %q", resp.Header.Get("Allow"))
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q, want application/json", ct)
			}
			if tc.answer != "" && (a.Status != tc.answer || a.ID == "") {
				t.Fatalf("answer %+v, want status %q with an id", a, tc.answer)
			}
			if tc.status >= 400 && a.Error == "" {
				t.Fatalf("error answer without an error message: %+v", a)
			}
			if tc.result != "" {
				if n := testutil.ToFloat64(f.metrics.EventsReceived.WithLabelValues("chat", tc.result)); n != 1 {
					t.Fatalf("events_received{chat,%s} = %v, want 1", tc.result, n)
				}
			}
			recent, err := f.store.Recent(t.Context(), "", 10)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(recent) > 0; got != tc.stored {
				t.Fatalf("stored = %v, want %v", got, tc.stored)
			}
			if tc.stored && recent[0].ID != a.ID {
				t.Fatalf("stored id %s, answered %s", recent[0].ID, a.ID)
			}
			relaytest.AssertNoSecret(t, "log", f.logs.String(), secret, otherSecret)
		})
	}
}

// TestReceiverDuplicate: the same signed body is one event, whatever topic
// header it carries (the header is not signed: SPEC §4). A captured chat
// body re-sent as live-chat-escalation, or under any made-up topic, is
// answered duplicate with the first id and delivered nowhere.
func TestReceiverDuplicate(t *testing.T) {
	t.Parallel()
	f := newReceiver(t, nil, nil)
	chat := readPayload(t, "chat.json")
	sig := relay.Sign(chat, secret)
	_, first := post(t, f.srv.URL+"/webhook", "POST", chat, sig, "chat")
	if first.Status != "accepted" {
		t.Fatalf("first: %+v", first)
	}
	replays := []string{"chat", "", "live-chat-escalation", "lead-submission", "made-up-topic-1", "made-up-topic-2"}
	for _, topic := range replays {
		resp, dup := post(t, f.srv.URL+"/webhook", "POST", chat, sig, topic)
		if resp.StatusCode != 200 || dup.Status != "duplicate" || dup.ID != first.ID {
			t.Fatalf("repeat under topic %q: %d %+v, want duplicate of %s", topic, resp.StatusCode, dup, first.ID)
		}
	}
	recent, err := f.store.Recent(t.Context(), "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(recent) != 1 || recent[0].ID != first.ID || recent[0].Topic != relay.TopicChat {
		t.Fatalf("stored %+v, want only the first event, topic chat", recent)
	}
	dups := 0.0
	for _, topic := range []string{"chat", "live-chat-escalation", "lead-submission", "other"} {
		dups += testutil.ToFloat64(f.metrics.EventsReceived.WithLabelValues(topic, relay.ReceiveDuplicate))
	}
	if dups != float64(len(replays)) {
		t.Fatalf("duplicates counted %v, want %d", dups, len(replays))
	}
}

func TestReceiverTopicFromBodyAndUnrouted(t *testing.T) {
	t.Parallel()
	f := newReceiver(t, nil, []relay.Route{{Match: relay.Match{Topic: []string{"chat"}}, Sinks: []string{"a"}}})
	body := []byte(`{"event":"lead-submission","lead":{"email":"x@y.z"}}`)
	_, a := post(t, f.srv.URL+"/webhook", "POST", body, relay.Sign(body, secret), "")
	if a.Status != "accepted" {
		t.Fatalf("answer %+v", a)
	}
	rec, err := f.store.Lookup(t.Context(), a.ID)
	if err != nil || rec.Event.Topic != relay.TopicLead || len(rec.Deliveries) != 0 {
		t.Fatalf("Lookup = %+v, %v; want a stored lead-submission with no deliveries", rec, err)
	}
	if n := testutil.ToFloat64(f.metrics.EventsReceived.WithLabelValues(relay.TopicLead, relay.ReceiveUnrouted)); n != 1 {
		t.Fatalf("unrouted counted %v", n)
	}
}

type failingStore struct{ err error }

func (s failingStore) Append(context.Context, *relay.Event, []string) (relay.Accepted, error) {
	return relay.Accepted{}, s.err
}
func (s failingStore) Ready(context.Context) error { return s.err }

func TestReceiverStoreUnavailable(t *testing.T) {
	t.Parallel()
	for _, err := range []error{relay.ErrFull, relay.ErrUnavailable, errors.New("disk on fire")} {
		f := newReceiver(t, failingStore{err: err}, nil)
		chat := readPayload(t, "chat.json")
		resp, a := post(t, f.srv.URL+"/webhook", "POST", chat, relay.Sign(chat, secret), "")
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || a.Status != "unavailable" {
			t.Fatalf("%v: %d Retry-After %q %+v; want 503 with Retry-After", err, resp.StatusCode, resp.Header.Get("Retry-After"), a)
		}
		rz, err := http.Get(f.srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		rz.Body.Close()
		if rz.StatusCode != 503 {
			t.Fatalf("/readyz = %d while the store fails", rz.StatusCode)
		}
	}
}

// TestReadyzSaysOnlyAReasonCode: /readyz answers not ready with a short
// reason code, never the store's error text (a file path, a host); the
// detail goes to the log, once per 10 s however often /readyz is polled.
func TestReadyzSaysOnlyAReasonCode(t *testing.T) {
	t.Parallel()
	const path = "/var/lib/chatrelay/chatrelay.db"
	tests := []struct {
		name   string
		err    error
		reason string
	}{
		{"full", fmt.Errorf("%w: write %s: no space left on device", relay.ErrFull, path), relay.ReadyStoreFull},
		{"unavailable", fmt.Errorf("%w: open %s: permission denied", relay.ErrUnavailable, path), relay.ReadyStoreUnavailable},
		{"nats down", fmt.Errorf("%w: not connected to NATS (reconnecting) nats://10.1.2.3:4222", relay.ErrUnavailable), relay.ReadyStoreUnavailable},
		{"closed", relay.ErrClosed, relay.ReadyStoreClosed},
		{"timeout", fmt.Errorf("events stream: %w", context.DeadlineExceeded), relay.ReadyStoreTimeout},
		{"unclassified", fmt.Errorf("read %s: input/output error", path), relay.ReadyStoreUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newReceiver(t, failingStore{err: tc.err}, nil)
			for range 3 {
				resp, err := http.Get(f.srv.URL + "/readyz")
				if err != nil {
					t.Fatal(err)
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var got map[string]string
				if err := json.Unmarshal(raw, &got); err != nil {
					t.Fatalf("answer %q: %v", raw, err)
				}
				want := map[string]string{"status": "unavailable", "reason": tc.reason}
				if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !reflect.DeepEqual(got, want) {
					t.Fatalf("/readyz = %d %s (Retry-After %q), want 503 %v with Retry-After",
						resp.StatusCode, raw, resp.Header.Get("Retry-After"), want)
				}
			}
			logs := f.logs.String()
			if n := strings.Count(logs, "not ready"); n != 1 {
				t.Fatalf("%d log lines for 3 failed checks within 10s, want 1:\n%s", n, logs)
			}
			if !strings.Contains(logs, tc.err.Error()) {
				t.Fatalf("the log does not carry the store's error %q:\n%s", tc.err, logs)
			}
		})
	}
}

func TestHealthAndReady(t *testing.T) {
	t.Parallel()
	f := newReceiver(t, nil, nil)
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(f.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s = %d", path, resp.StatusCode)
		}
	}
}

// FuzzReceiver drives the verify+parse path with arbitrary bodies and
// signature headers: it never panics, never answers 2xx to a bad signature,
// and answers 2xx only for JSON objects.
func FuzzReceiver(f *testing.F) {
	for _, name := range []string{"chat.json", "chat-string-fields.json", "lead-submission.json", "live-chat-escalation.json"} {
		b := readPayload(f, name)
		f.Add(b, relay.Sign(b, secret), true)
		f.Add(b, relay.Sign(b, "nope"), false)
	}
	f.Add([]byte(`[]`), "", true)
	f.Add([]byte("{\"a\":\"\xff\"}"), "AAAA", false)
	store := &memStore{}
	reg := prometheus.NewRegistry()
	r, err := relay.NewReceiver(relay.ReceiverConfig{
		Secrets: []relay.Secret{secret}, MaxBody: 1 << 16, Store: store,
		Router: relay.NewRouter([]string{"a"}, nil), Metrics: relay.NewMetrics(reg),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, sig string, signIt bool) {
		if signIt {
			sig = relay.Sign(body, secret)
		}
		req := httptest.NewRequest("POST", "/webhook", bytes.NewReader(body))
		req.Header.Set(relay.HeaderSignature, sig)
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		valid := relay.Verify(body, sig, []relay.Secret{secret})
		_, decErr := relay.DecodeEvent(body)
		switch {
		case !valid && w.Code != 403:
			t.Fatalf("bad signature answered %d", w.Code)
		case valid && decErr != nil && w.Code != 400:
			t.Fatalf("valid signature, not an object: %d", w.Code)
		case valid && decErr == nil && w.Code != 200:
			t.Fatalf("valid event answered %d: %s", w.Code, w.Body)
		}
	})
}

// FuzzVerifySignature: Verify accepts exactly the signatures Sign makes.
func FuzzVerifySignature(f *testing.F) {
	f.Add([]byte(`{}`), "", "k")
	f.Add(readPayload(f, "chat.json"), "bm90IGEgc2lnbmF0dXJl", "secret")
	f.Fuzz(func(t *testing.T, body []byte, header, key string) {
		if key == "" {
			return
		}
		s := relay.Secret(key)
		if !relay.Verify(body, relay.Sign(body, s), []relay.Secret{s}) {
			t.Fatal("own signature rejected")
		}
		if header != relay.Sign(body, s) && strings.TrimSpace(header) != relay.Sign(body, s) && relay.Verify(body, header, []relay.Secret{s}) {
			t.Fatalf("accepted a foreign signature %q", header)
		}
	})
}

// memStore is an in-memory Appender for the fuzz test.
type memStore struct{}

func (*memStore) Append(_ context.Context, ev *relay.Event, _ []string) (relay.Accepted, error) {
	return relay.Accepted{ID: ev.ID}, nil
}
func (*memStore) Ready(context.Context) error { return nil }

func TestRejectionsDoNotFloodTheLog(t *testing.T) {
	t.Parallel()
	f := newReceiver(t, nil, nil)
	body := []byte(`{"a":1}`)
	for range 50 {
		post(t, f.srv.URL+"/webhook", "POST", body, relay.Sign(body, "wrong"), "")
	}
	if n := strings.Count(f.logs.String(), "rejected request"); n != 1 {
		t.Fatalf("%d log lines for 50 rejected requests within 10s, want 1", n)
	}
	if n := testutil.ToFloat64(f.metrics.EventsReceived.WithLabelValues("chat", relay.ReceiveRejectedSignature)); n != 50 {
		t.Fatalf("counted %v rejections, want 50", n)
	}
}
