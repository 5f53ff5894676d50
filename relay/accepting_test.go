package relay_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/relaytest"
)

// slowReturn is a store whose Append, once the event is durable (and its
// deliveries visible to the dispatcher), lets everything else in the bubble
// run before it returns to the receiver: the worst case of a receiver
// goroutine descheduled between the commit and its log line.
type slowReturn struct{ *bolt.Store }

func (s slowReturn) Append(ctx context.Context, ev *relay.Event, sinks []string) (relay.Accepted, error) {
	acc, err := s.Store.Append(ctx, ev, sinks)
	synctest.Wait()
	return acc, err
}

// TestAcceptedIsLoggedBeforeDeliveries: an event's "accepted event" line
// precedes every line about its delivery, however the goroutines are
// scheduled.
func TestAcceptedIsLoggedBeforeDeliveries(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		clock := clockwork.NewRealClock()
		store, err := bolt.Open(dir, bolt.Options{Clock: clock})
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		logger, logs := relaytest.NewLogger()
		m := relay.NewMetrics(prometheus.NewRegistry())
		accepting := relay.NewAccepting()
		recv, err := relay.NewReceiver(relay.ReceiverConfig{
			Secrets: []relay.Secret{secret}, Store: slowReturn{store}, Router: relay.NewRouter([]string{"fake"}, nil),
			Metrics: m, Logger: logger, Clock: clock, Accepting: accepting,
		})
		if err != nil {
			t.Fatal(err)
		}
		sink := newFakeSink(func(int, *relay.Event) error { return nil })
		d, err := relay.NewDispatcher(relay.DispatcherConfig{
			Sink: sink, Queue: store.Queue("fake"), Retry: policy, Concurrency: 4, Metrics: m, Logger: logger,
			Clock: clock, Accepting: accepting,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		const n = 20
		for i := range n {
			body := fmt.Appendf(nil, `{"conversation_id":"c%d","answer":{"content":"hi"}}`, i)
			req := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(body))
			req.Header.Set(relay.HeaderSignature, relay.Sign(body, secret))
			w := httptest.NewRecorder()
			recv.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				t.Fatalf("POST: %d %s", w.Code, w.Body)
			}
		}
		for range n {
			<-sink.sent
		}
		time.Sleep(time.Second)
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		accepted := map[string]bool{}
		delivered := 0
		for l := range strings.Lines(logs.String()) {
			id := field(l, "event_id")
			switch {
			case strings.Contains(l, `msg="accepted event"`):
				accepted[id] = true
			case id != "":
				if strings.Contains(l, "msg=delivered") {
					delivered++
				}
				if !accepted[id] {
					t.Errorf("logged before the event's acceptance: %s", l)
				}
			}
		}
		if len(accepted) != n || delivered != n {
			t.Fatalf("%d accepted and %d delivered lines, want %d each:\n%s", len(accepted), delivered, n, logs)
		}
	})
}

// field returns the value of key=value in a text log line.
func field(line, key string) string {
	_, rest, ok := strings.Cut(line, " "+key+"=")
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, " ")
	return strings.TrimSpace(v)
}
