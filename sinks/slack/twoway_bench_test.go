package slack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/sinks/slack"
	"github.com/chatrelay/chatrelay/sinks/webhook"
)

// BenchmarkTwoWayLoad measures the two targets on loopback, with
// the real parts (the rig: POST /slack/events verified, the reply stored
// durably in bbolt, the dispatcher, the chatdata destination, the fakes
// answering at once): at a steady rate (BENCH_RATE events/s, default 100)
// for BENCH_DURATION (default 10s), agents' replies are POSTed, signed, to
// /slack/events, spread over 16 threads, each from its own goroutine (an
// open loop: a slow answer does not slow the load). Measured: the time to
// each answer (target p99 ≤ 50 ms) and from each POST until the relay's
// request to Chat Data leaves (target p99 ≤ 1 s).
//
// The baseline runs at the same time, at the same rate, on a store of its
// own: Chat Data events POSTed, signed, to the receiver's /webhook, each
// delivered to a webhook sink (the mirror path every event takes). The
// ratios of the two p99s say what the two-way path adds.
//
//	go test -run XXX -bench BenchmarkTwoWayLoad -benchtime 1x ./sinks/slack/
func BenchmarkTwoWayLoad(b *testing.B) {
	rate, dur := 100, 10*time.Second
	if v := os.Getenv("BENCH_RATE"); v != "" {
		fmt.Sscan(v, &rate)
	}
	if v := os.Getenv("BENCH_DURATION"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			dur = d
		}
	}
	for b.Loop() {
		reply, mirror := loadPaths(b, rate, dur)
		for _, m := range []struct {
			name string
			lat  []time.Duration
		}{
			{"events-answer", reply.answer}, {"reply-to-chatdata", reply.through},
			{"webhook-answer", mirror.answer}, {"event-to-sink", mirror.through},
		} {
			b.ReportMetric(ms(quantile(m.lat, 0.50)), m.name+"-p50-ms")
			b.ReportMetric(ms(quantile(m.lat, 0.99)), m.name+"-p99-ms")
		}
		b.ReportMetric(float64(quantile(reply.answer, 0.99))/float64(quantile(mirror.answer, 0.99)), "answer-p99-ratio")
		b.ReportMetric(float64(quantile(reply.through, 0.99))/float64(quantile(mirror.through, 0.99)), "through-p99-ratio")
		b.ReportMetric(float64(len(reply.through)), "replies")
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func quantile(lat []time.Duration, q float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// latencies are one path's measurements.
type latencies struct {
	mu      sync.Mutex
	sent    map[string]time.Time // by message, when its POST left
	answer  []time.Duration
	through []time.Duration
}

func (l *latencies) start(key string) time.Time {
	now := time.Now()
	l.mu.Lock()
	l.sent[key] = now
	l.mu.Unlock()
	return now
}

func (l *latencies) answered(start time.Time) {
	d := time.Since(start)
	l.mu.Lock()
	l.answer = append(l.answer, d)
	l.mu.Unlock()
}

func (l *latencies) arrived(key string) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if at, ok := l.sent[key]; ok {
		l.through = append(l.through, now.Sub(at))
		delete(l.sent, key)
	}
}

// loadPaths drives both paths at rate for dur, at the same time, and
// waits until every message arrived (or 30 s more passed).
func loadPaths(b *testing.B, rate int, dur time.Duration) (reply, mirror *latencies) {
	reply = &latencies{sent: map[string]time.Time{}}
	mirror = &latencies{sent: map[string]time.Time{}}

	// The two-way path. Its Slack sink's answers (the ✅ follow-ups) are
	// not measured: drained until the rig has stopped (cleanups run last
	// registered first).
	stopDrain, drained := make(chan struct{}), make(chan struct{})
	b.Cleanup(func() { close(stopDrain); <-drained })
	r := newRig(b, rigOptions{toChatData: func(req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(body))
		var lc struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(body, &lc) == nil {
			reply.arrived(lc.Message)
		}
	}})
	threads := make([]string, 16)
	for i := range threads {
		threads[i] = r.escalate(fmt.Sprintf("conv-load-%d", i))
	}
	go func() {
		defer close(drained)
		for {
			select {
			case <-r.slackIn:
			case <-stopDrain:
				return
			}
		}
	}()

	// The baseline: Chat Data's events into a webhook sink.
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var ev struct {
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
		}
		body, _ := io.ReadAll(req.Body)
		if json.Unmarshal(body, &ev) == nil && len(ev.Messages) > 0 {
			mirror.arrived(ev.Messages[0].Content)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(hook.Close)
	receiverURL := mirrorPath(b, hook.URL)

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	post := func(url, contentType string, body []byte, sign func(*http.Request)) bool {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		sign(req)
		resp, err := client.Do(req)
		if err != nil {
			b.Error(err)
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	end := time.Now().Add(dur)
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		wg.Go(func() {
			text := fmt.Sprintf("m-%d", i)
			body := []byte(message(threads[i%len(threads)], fmt.Sprintf("1766%06d.000200", i), dana, "reply: "+text, nil))
			start := reply.start(text)
			if post(r.events, "application/json", body, func(req *http.Request) {
				now := time.Now()
				req.Header.Set(slack.HeaderTimestamp, fmt.Sprint(now.Unix()))
				req.Header.Set(slack.HeaderSignature, slack.Sign(signingSecret, now, body))
			}) {
				reply.answered(start)
			}
		})
		wg.Go(func() {
			text := fmt.Sprintf("q-%d", i)
			body, _ := json.Marshal(map[string]any{"conversation_id": fmt.Sprintf("conv-%d", i%16), "chatbot_id": "bot",
				"messages": []map[string]string{{"role": "user", "content": text}}, "answer": map[string]any{"content": "a"}})
			start := mirror.start(text)
			if post(receiverURL, "application/json", body, func(req *http.Request) {
				req.Header.Set(relay.HeaderSignature, relay.Sign(body, "bench-secret"))
			}) {
				mirror.answered(start)
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		reply.mu.Lock()
		mirror.mu.Lock()
		left := len(reply.sent) + len(mirror.sent)
		mirror.mu.Unlock()
		reply.mu.Unlock()
		if left == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond) // a load generator's poll, not a test's synchronisation
	}
	if len(reply.sent)+len(mirror.sent) > 0 {
		b.Errorf("%d replies and %d events never arrived", len(reply.sent), len(mirror.sent))
	}
	return reply, mirror
}

// mirrorPath runs the receiver on a store of its own, delivering every
// event to a webhook sink at hookURL, and returns its POST /webhook URL.
func mirrorPath(b *testing.B, hookURL string) string {
	store, err := bolt.Open(b.TempDir(), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	m := relay.NewMetrics(prometheus.NewRegistry())
	rcv, err := relay.NewReceiver(relay.ReceiverConfig{Secrets: []relay.Secret{"bench-secret"}, Store: store,
		Router: relay.NewRouter([]string{"mirror"}, nil), Metrics: m})
	if err != nil {
		b.Fatal(err)
	}
	sink, err := webhook.New(webhook.Config{Name: "mirror", URL: relay.Secret(hookURL + "/in")}, relay.SinkDeps{})
	if err != nil {
		b.Fatal(err)
	}
	d, err := relay.NewDispatcher(relay.DispatcherConfig{Sink: sink, Queue: store.Queue("mirror"), Metrics: m, Concurrency: 4,
		Retry: relay.RetryPolicy{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, MaxAge: time.Hour}})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- d.Run(ctx) }()
	srv := httptest.NewServer(rcv)
	b.Cleanup(func() {
		srv.Close()
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
		store.Close()
	})
	return srv.URL + "/webhook"
}
