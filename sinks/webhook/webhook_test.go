package webhook_test

import (
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/webhook"
)

func newSecret(t *testing.T) string {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return "whsec_" + base64.StdEncoding.EncodeToString(key)
}

func TestConformance(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	relaytest.Conformance(t, relaytest.Target{
		Policy:     relay.WebhookPolicy(),
		SecretPath: "/hooks/tok-3f9a8c7d2e",
		Secrets:    []string{secret},
		New: func(t *testing.T, base string, deps relay.SinkDeps) relay.Sink {
			s, err := webhook.New(webhook.Config{Name: "crm", URL: relay.Secret(base + "/hooks/tok-3f9a8c7d2e"),
				Secret: relay.Secret(secret)}, deps)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	})
}

type captured struct {
	header http.Header
	body   []byte
}

func TestSendsOriginalBytesSigned(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	key, err := webhook.DecodeSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []captured
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, captured{r.Header.Clone(), b})
		n := len(got)
		mu.Unlock()
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()

	clock := clockwork.NewFakeClockAt(time.Unix(1_700_000_000, 0))
	s, err := webhook.New(webhook.Config{Name: "crm", URL: relay.Secret(srv.URL + "/in"), Secret: relay.Secret(secret),
		Headers: map[string]relay.Secret{"X-Team": "support"}}, relay.SinkDeps{Clock: clock, UserAgent: "chatrelay/test"})
	if err != nil {
		t.Fatal(err)
	}
	// Odd spacing and key order must survive: the body is never re-encoded.
	body := []byte(`{ "conversation_id" : "c1",   "answer":{"content":"ünïcödé <b>"} ,"chatbot_id":"b"}`)
	ev, err := relay.DecodeEvent(body)
	if err != nil {
		t.Fatal(err)
	}
	ev.ID, ev.Topic = "01900000-0000-7000-8000-00000000abcd", relay.TopicEscalation

	if err := s.Send(t.Context(), ev); err == nil {
		t.Fatal("503: Send succeeded")
	} else if c, _ := relay.Classify(err); c != relay.ClassRetryable {
		t.Fatalf("503: class %s", c)
	}
	clock.Advance(90 * time.Second)
	if err := s.Send(t.Context(), ev); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("%d requests", len(got))
	}
	if got[0].header.Get("webhook-id") != got[1].header.Get("webhook-id") {
		t.Error("webhook-id changed between attempts")
	}
	if got[0].header.Get("webhook-timestamp") == got[1].header.Get("webhook-timestamp") {
		t.Error("webhook-timestamp not refreshed for the retry")
	}
	for i, c := range got {
		if string(c.body) != string(body) {
			t.Errorf("attempt %d body %q, want the original bytes", i, c.body)
		}
		h := c.header
		ts, _ := strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
		want := webhook.Signature(key, h.Get("webhook-id"), time.Unix(ts, 0), c.body)
		if h.Get("webhook-signature") != want {
			t.Errorf("attempt %d signature %q, want %q", i, h.Get("webhook-signature"), want)
		}
		for k, v := range map[string]string{
			"Content-Type":      "application/json",
			"X-Team":            "support",
			"X-Chat-Data-Topic": relay.TopicEscalation,
			"User-Agent":        "chatrelay/test",
			"webhook-id":        "msg_01900000-0000-7000-8000-00000000abcd_crm",
			"webhook-timestamp": strconv.FormatInt(clock.Now().Add(-90*time.Second*time.Duration(1-i)).Unix(), 10),
		} {
			if h.Get(k) != v {
				t.Errorf("attempt %d header %s = %q, want %q", i, k, h.Get(k), v)
			}
		}
	}
}

func TestNewRejects(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]webhook.Config{
		"no scheme":    {Name: "x", URL: "example.com/x"},
		"ftp":          {Name: "x", URL: "ftp://example.com/x"},
		"bad secret":   {Name: "x", URL: "https://example.com/x", Secret: "hunter2"},
		"short secret": {Name: "x", URL: "https://example.com/x", Secret: "whsec_c2hvcnQ="},
		"bad header":   {Name: "x", URL: "https://example.com/x", Headers: map[string]relay.Secret{"Bad Header": "v"}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := webhook.New(cfg, relay.SinkDeps{}); err == nil {
				t.Fatal("New accepted it")
			} else {
				relaytest.AssertNoSecret(t, "error", err.Error(), "hunter2", "example.com/x")
			}
		})
	}
}

// TestErrorBodyNeverCarriesTheURL: a destination whose error page echoes the
// request ("Cannot POST /hooks/<token>", as many web frameworks answer)
// must not bring the URL's token into the error, which reaches logs and
// dead letters.
func TestErrorBodyNeverCarriesTheURL(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, "<pre>Cannot POST "+r.URL.RequestURI()+"</pre> (full URL: http://"+r.Host+r.URL.RequestURI()+")")
	}))
	defer srv.Close()
	const path, query = "/hooks/tok-9d8e7f6a5b4c", "key=q-4f5e6d7c"
	s, err := webhook.New(webhook.Config{Name: "crm", URL: relay.Secret(srv.URL + path + "?" + query)}, relay.SinkDeps{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Send(t.Context(), relaytest.SampleEvent(t))
	if c, _ := relay.Classify(err); c != relay.ClassPermanent {
		t.Fatalf("404: %v (class %s), want permanent", err, c)
	}
	for _, secret := range []string{"tok-9d8e7f6a5b4c", "q-4f5e6d7c"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error carries the URL's token %q: %v", secret, err)
		}
	}
	if !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "Cannot POST") {
		t.Errorf("the error lost what the destination said: %v", err)
	}
}
