package chatdata_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/storetest"
	"github.com/chatrelay/chatrelay/sinks/chatdata"
	"github.com/chatrelay/chatrelay/sinks/chatdata/chatdatatest"
	"github.com/chatrelay/chatrelay/sinks/webhook"
)

// BenchmarkReplyToChatData measures the relay's part of "agent message →
// Chat Data request" (issue 14: p99 ≤ 1 s on loopback): from the moment a
// platform adapter hands a thread message to the Inbox until Chat Data's
// API (the fake, answering at once) has the request: the reply stored
// durably (bbolt, fsync), queued, handed to the dispatcher, sent. Each
// iteration waits for its reply to arrive, so this is the latency of one
// reply at a time, spread over 16 conversations.
//
// The baseline, in the same run, is the mirror path every Chat Data event
// takes today: an event appended to the store and delivered to a webhook
// sink (a fake answering at once). The ratio of the two p99s says what the
// agent-reply path adds.
func BenchmarkReplyToChatData(b *testing.B) {
	b.Run("agent-reply→chatdata", func(b *testing.B) {
		api := chatdatatest.NewServer(b)
		got := make(chan int, 1)
		send, stop := pipeline(b, func(deps relay.SinkDeps) relay.Sink {
			deps.Transport = answered{got}
			s, err := chatdata.New(chatdata.Config{APIKey: relay.Secret(api.Key), APIURL: api.URL}, deps)
			if err != nil {
				b.Fatal(err)
			}
			return s
		})
		defer stop()
		index := threads{}
		for c := range 16 {
			index[fmt.Sprintf("support-slack/17650000%02d.000100", c)] = relay.ThreadConversation{ConversationID: fmt.Sprintf("conv-%d", c), ChatbotID: bot}
		}
		inbox := send.inbox(b, index)
		measure(b, got, func(i int) {
			if _, err := inbox.Accept(b.Context(), relay.ThreadMessage{Sink: "support-slack", Platform: "slack",
				Channel: "C0123456789", Thread: fmt.Sprintf("17650000%02d.000100", i%16), MessageID: fmt.Sprintf("1765%06d.000200", i),
				AgentID: "U0123AGENT", AgentName: "Alex", Text: "reply: Hi Sam, I've refunded the renewal."}); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("chat→webhook (baseline)", func(b *testing.B) {
		got := make(chan int, 1)
		hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
		defer hook.Close()
		send, stop := pipeline(b, func(deps relay.SinkDeps) relay.Sink {
			deps.Transport = answered{got}
			s, err := webhook.New(webhook.Config{Name: chatdata.Name, URL: relay.Secret(hook.URL + "/in")}, deps)
			if err != nil {
				b.Fatal(err)
			}
			return s
		})
		defer stop()
		measure(b, got, func(i int) {
			ev := storetest.NewEvent(b, fmt.Sprintf("conv-%d", i%16), i)
			if _, err := send.store.Append(b.Context(), ev, []string{chatdata.Name}); err != nil {
				b.Fatal(err)
			}
		})
	})
}

type bench struct {
	store *bolt.Store
	clock clockwork.Clock
	m     *relay.Metrics
	acc   *relay.Accepting
}

func (p *bench) inbox(b *testing.B, index threads) *relay.Inbox {
	in, err := relay.NewInbox(relay.InboxConfig{
		Store: p.store, Router: relay.NewRouter([]string{"support-slack", chatdata.Name}, nil, relay.ReplyDestinations(chatdata.Name)),
		Threads: index, Rules: map[string]relay.ReplyRule{"support-slack": {}}, Metrics: p.m, Clock: p.clock, Accepting: p.acc,
	})
	if err != nil {
		b.Fatal(err)
	}
	return in
}

// pipeline runs a bolt store and a dispatcher for the sink newSink makes,
// under the name chatdata.
func pipeline(b *testing.B, newSink func(relay.SinkDeps) relay.Sink) (*bench, func()) {
	store, err := bolt.Open(b.TempDir(), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	clock := clockwork.NewRealClock()
	p := &bench{store: store, clock: clock, m: relay.NewMetrics(prometheus.NewRegistry()), acc: relay.NewAccepting()}
	d, err := relay.NewDispatcher(relay.DispatcherConfig{
		Sink: newSink(relay.SinkDeps{Clock: clock}), Queue: store.Queue(chatdata.Name),
		Retry:       relay.RetryPolicy{Initial: time.Second, Max: time.Minute, MaxAge: time.Hour},
		Concurrency: 4, Metrics: p.m, Clock: clock, Accepting: p.acc, Stats: store,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	return p, func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
		store.Close()
	}
}

// measure runs one send per iteration, waits for its request to be
// answered, and reports the latencies' median and 99th percentile.
func measure(b *testing.B, answered <-chan int, send func(i int)) {
	var lat []time.Duration
	i := 0
	for b.Loop() {
		start := time.Now()
		send(i)
		select {
		case status := <-answered:
			if status >= 300 {
				b.Fatalf("answered %d", status)
			}
		case <-time.After(30 * time.Second):
			b.Fatal("nothing arrived in 30 s")
		}
		lat = append(lat, time.Since(start))
		i++
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
