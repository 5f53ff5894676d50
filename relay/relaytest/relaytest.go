// Package relaytest holds what tests of every sink share: the sink
// conformance suite (status-code table, Retry-After, cancellation, secrets,
// drained bodies) and a log capture.
package relaytest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
)

// LogBuffer captures log output (text handler, debug level) for assertions.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything logged so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// NewLogger returns a debug-level logger writing to a new LogBuffer.
func NewLogger() (*slog.Logger, *LogBuffer) {
	b := &LogBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// AssertNoSecret fails the test if any secret appears in text.
func AssertNoSecret(t testing.TB, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s contains a secret (%d chars, starting %q):\n%s", what, len(s), s[:min(len(s), 6)], text)
		}
	}
}

// Target describes a sink under conformance test.
type Target struct {
	// New builds the sink so that it posts to the fake server at baseURL
	// (no trailing slash), with deps.
	New func(t *testing.T, baseURL string, deps relay.SinkDeps) relay.Sink
	// Event is what the suite sends (a sample chat event when nil).
	Event *relay.Event
	// Policy is how the sink must classify HTTP statuses.
	Policy relay.HTTPPolicy
	// ErrorBody is the body the fake server sends with error statuses
	// (platforms often send JSON); empty for a short text.
	ErrorBody func(status int) (contentType, body string)
	// SuccessBody is what the fake sends for a 200.
	SuccessBody func() (contentType, body string)
	// Secrets must appear in no error and no log line (tokens, webhook URL
	// paths). The suite adds the full URLs it hands to New.
	Secrets []string
	// SecretPath is a path under baseURL that carries a secret (like a
	// webhook's /services/T/B/X); New is expected to use it.
	SecretPath string
	// SkipStatuses are statuses the platform never sends and the sink need
	// not handle as the generic table says (Slack's Web API answers 200 or
	// an error, never 201).
	SkipStatuses []int
}

func (tg Target) secrets(base string) []string {
	if tg.SecretPath == "" {
		return tg.Secrets
	}
	return append([]string{base + tg.SecretPath, tg.SecretPath}, tg.Secrets...)
}

// SampleEvent returns a chat event like Chat Data's documented sample.
func SampleEvent(t testing.TB) *relay.Event {
	t.Helper()
	body := []byte(`{"messages":[{"role":"user","content":"Do you ship to Canada?"}],"answer":{"role":"assistant","content":"Yes, in 5-7 days.","score":0.85},"chatbot_id":"bot-1","source":"widget","conversation_id":"conv-1"}`)
	ev, err := relay.DecodeEvent(body)
	if err != nil {
		t.Fatal(err)
	}
	ev.ID, ev.Topic, ev.ReceivedAt = "01900000-0000-7000-8000-000000000001", relay.TopicChat, time.Unix(1_700_000_000, 0).UTC()
	return ev
}

// Conformance checks a sink against the rules every sink keeps.
func Conformance(t *testing.T, tg Target) {
	if tg.Event == nil {
		tg.Event = SampleEvent(t)
	}
	statuses := []int{200, 201, 204, 301, 400, 401, 403, 404, 405, 408, 409, 410, 413, 422, 429, 500, 502, 503, 504}
	for _, status := range statuses {
		if slices.Contains(tg.SkipStatuses, status) {
			continue
		}
		t.Run(fmt.Sprintf("status_%d", status), func(t *testing.T) {
			t.Parallel()
			srv, _ := fake(t, func(w http.ResponseWriter, r *http.Request) {
				respond(w, tg, status)
			})
			logger, logs := NewLogger()
			sink := tg.New(t, srv.URL, relay.SinkDeps{Logger: logger, Clock: clockwork.NewRealClock()})
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			err := sink.Send(ctx, tg.Event)
			secrets := tg.secrets(srv.URL)
			AssertNoSecret(t, "log", logs.String(), secrets...)
			if err != nil {
				AssertNoSecret(t, "error", err.Error(), secrets...)
			}
			want, wantOK := expect(tg.Policy, status)
			if wantOK {
				if err != nil {
					t.Fatalf("HTTP %d: Send = %v, want success", status, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("HTTP %d: Send succeeded, want %s", status, want)
			}
			if got, _ := relay.Classify(err); got != want {
				t.Fatalf("HTTP %d: class %s (%v), want %s", status, got, err, want)
			}
		})
	}

	t.Run("RetryAfter", func(t *testing.T) {
		t.Parallel()
		srv, _ := fake(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "7")
			respond(w, tg, http.StatusTooManyRequests)
		})
		sink := tg.New(t, srv.URL, relay.SinkDeps{Clock: clockwork.NewRealClock()})
		err := sink.Send(t.Context(), tg.Event)
		class, after := relay.Classify(err)
		if class != relay.ClassRateLimited || after != 7*time.Second {
			t.Fatalf("429 Retry-After 7: class %s after %s (%v), want rate_limited 7s", class, after, err)
		}
	})

	t.Run("CanceledContextReturnsPromptly", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		srv, _ := fake(t, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		})
		defer close(release)
		logger, logs := NewLogger()
		sink := tg.New(t, srv.URL, relay.SinkDeps{Logger: logger, Clock: clockwork.NewRealClock()})
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() { errc <- sink.Send(ctx, tg.Event) }()
		cancel()
		select {
		case err := <-errc:
			if err == nil {
				t.Fatal("Send with a canceled context succeeded")
			}
			secrets := tg.secrets(srv.URL)
			AssertNoSecret(t, "error", err.Error(), secrets...)
			AssertNoSecret(t, "log", logs.String(), secrets...)
		case <-time.After(5 * time.Second):
			t.Fatal("Send ignored its canceled context")
		}
	})

	t.Run("BodiesDrainedAndClosed", func(t *testing.T) {
		t.Parallel()
		status := 200
		var mu sync.Mutex
		srv, _ := fake(t, func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			st := status
			mu.Unlock()
			respond(w, tg, st)
		})
		watch := &WatchTransport{}
		sink := tg.New(t, srv.URL, relay.SinkDeps{Clock: clockwork.NewRealClock(), Transport: watch})
		for _, st := range []int{200, 500, 400, 200} {
			mu.Lock()
			status = st
			mu.Unlock()
			_ = sink.Send(t.Context(), tg.Event)
		}
		if err := watch.Check(); err != nil {
			t.Fatal(err)
		}
	})
}

// WatchTransport is an http.RoundTripper that records every response body
// and can tell whether each was read to the end and closed.
type WatchTransport struct {
	Base http.RoundTripper // nil: http.DefaultTransport

	mu     sync.Mutex
	bodies []*watchedBody
}

// RoundTrip implements http.RoundTripper.
func (w *WatchTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	base := w.Base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(r)
	if err != nil || resp.Body == nil {
		return resp, err
	}
	b := &watchedBody{rc: resp.Body, status: resp.StatusCode}
	resp.Body = b
	w.mu.Lock()
	w.bodies = append(w.bodies, b)
	w.mu.Unlock()
	return resp, nil
}

// Check returns an error unless at least one response was seen and every
// response body was read to EOF and closed.
func (w *WatchTransport) Check() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.bodies) == 0 {
		return fmt.Errorf("no HTTP response went through the transport: does the sink use SinkDeps.Transport?")
	}
	for i, b := range w.bodies {
		b.mu.Lock()
		eof, closed := b.eof, b.closed
		b.mu.Unlock()
		if !eof || !closed {
			return fmt.Errorf("response %d (HTTP %d): read to EOF %v, closed %v; want both, so the connection is reused", i, b.status, eof, closed)
		}
	}
	return nil
}

type watchedBody struct {
	rc     io.ReadCloser
	status int

	mu          sync.Mutex
	eof, closed bool
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.mu.Lock()
		b.eof = true
		b.mu.Unlock()
	}
	return n, err
}

func (b *watchedBody) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return b.rc.Close()
}

// expect returns the class a status must map to, or ok for 2xx.
func expect(p relay.HTTPPolicy, status int) (relay.Class, bool) {
	if status >= 200 && status < 300 {
		return 0, true
	}
	class, _ := relay.Classify(p.Classify(status, http.Header{}, "", time.Now()))
	return class, false
}

func respond(w http.ResponseWriter, tg Target, status int) {
	ct, body := "text/plain", http.StatusText(status)
	switch {
	case status >= 200 && status < 300 && tg.SuccessBody != nil:
		ct, body = tg.SuccessBody()
	case status >= 300 && tg.ErrorBody != nil:
		ct, body = tg.ErrorBody(status)
	}
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// fake starts a server running h, counting new connections.
func fake(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}
