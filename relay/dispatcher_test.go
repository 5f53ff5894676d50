package relay_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// call is one send the fake sink saw.
type call struct {
	id, conv string
	at       time.Time
}

// fakeSink answers each send with what its script says.
type fakeSink struct {
	name   string
	script func(n int, ev *relay.Event) error // n counts this event's attempts from 1

	mu       sync.Mutex
	calls    []call
	attempts map[string]int
	inflight map[string]bool
	overlap  string // a conversation sent twice at once, if ever
	sent     chan string
}

func newFakeSink(script func(int, *relay.Event) error) *fakeSink {
	return &fakeSink{name: "fake", script: script, attempts: map[string]int{}, inflight: map[string]bool{},
		sent: make(chan string, 10000)}
}

func (s *fakeSink) Name() string { return s.name }

func (s *fakeSink) Send(ctx context.Context, ev *relay.Event) error {
	s.mu.Lock()
	if s.inflight[ev.ConversationID] {
		s.overlap = ev.ConversationID
	}
	s.inflight[ev.ConversationID] = true
	s.attempts[ev.ID]++
	n := s.attempts[ev.ID]
	s.calls = append(s.calls, call{id: ev.ID, conv: ev.ConversationID, at: time.Now()})
	s.mu.Unlock()
	err := s.script(n, ev)
	s.mu.Lock()
	s.inflight[ev.ConversationID] = false
	s.mu.Unlock()
	if err == nil {
		s.sent <- ev.ID
	}
	return err
}

func (s *fakeSink) callsOf(id string) []call {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []call
	for _, c := range s.calls {
		if c.id == id {
			out = append(out, c)
		}
	}
	return out
}

type fixture struct {
	store   *bolt.Store
	metrics *relay.Metrics
	logs    *relaytest.LogBuffer
	d       *relay.Dispatcher
	cancel  context.CancelFunc
	done    chan error
}

// start opens a store in dir and runs a dispatcher for sink on it; edits
// have a last say on its config. Call stop before the test (or bubble)
// ends.
func start(t *testing.T, dir string, sink relay.Sink, retry relay.RetryPolicy, concurrency int, edits ...func(*relay.DispatcherConfig)) *fixture {
	t.Helper()
	clock := clockwork.NewRealClock() // inside a synctest bubble, time is the bubble's
	store, err := bolt.Open(dir, bolt.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	logger, logs := relaytest.NewLogger()
	m := relay.NewMetrics(prometheus.NewRegistry())
	cfg := relay.DispatcherConfig{
		Sink: sink, Queue: store.Queue(sink.Name()), Retry: retry, Concurrency: concurrency,
		Timeout: 5 * time.Second, DrainTimeout: 5 * time.Second, Metrics: m, Logger: logger, Clock: clock,
		Rand: func() float64 { return 0.5 }, Stats: store,
	}
	for _, edit := range edits {
		edit(&cfg)
	}
	d, err := relay.NewDispatcher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &fixture{store: store, metrics: m, logs: logs, d: d, cancel: cancel, done: make(chan error, 1)}
	go func() { f.done <- d.Run(ctx) }()
	return f
}

// paced is an edit for start: the sink takes one message per every.
func paced(every time.Duration) func(*relay.DispatcherConfig) {
	return func(cfg *relay.DispatcherConfig) { cfg.PaceEvery, cfg.PaceBurst = every, 1 }
}

func (f *fixture) stop(t *testing.T) {
	t.Helper()
	f.cancel()
	if err := <-f.done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if err := f.store.Close(); err != nil {
		t.Error(err)
	}
}

func (f *fixture) append(t *testing.T, conv string, n int, sinks ...string) *relay.Event {
	t.Helper()
	ev := storetest.NewEvent(t, conv, n)
	if len(sinks) == 0 {
		sinks = []string{"fake"}
	}
	if _, err := f.store.Append(t.Context(), ev, sinks); err != nil {
		t.Fatal(err)
	}
	return ev
}

func (f *fixture) deliveries(sink, result string) float64 {
	return testutil.ToFloat64(f.metrics.Deliveries.WithLabelValues(sink, result))
}

var policy = relay.RetryPolicy{Initial: time.Second, Max: time.Minute, MaxAge: time.Hour}

func TestRetriesUntilDelivered(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		sink := newFakeSink(func(n int, ev *relay.Event) error {
			if n <= 3 {
				return relay.Retryable(&relay.StatusError{Status: 500}, relay.ReasonServerError)
			}
			return nil
		})
		f := start(t, dir, sink, policy, 1)
		defer f.stop(t)
		ev := f.append(t, "A", 1)
		<-sink.sent
		calls := sink.callsOf(ev.ID)
		if len(calls) != 4 {
			t.Fatalf("%d attempts, want 4", len(calls))
		}
		// Backoff with jitter 0.5: 1s, then uniform [1s,2s] → 1.5s, then [1s,4s] → 2.5s.
		want := []time.Duration{time.Second, 1500 * time.Millisecond, 2500 * time.Millisecond}
		for i, w := range want {
			if got := calls[i+1].at.Sub(calls[i].at); got != w {
				t.Errorf("wait before attempt %d = %s, want %s", i+2, got, w)
			}
		}
		synctest.Wait()
		if r, d := f.deliveries("fake", relay.ResultRetried), f.deliveries("fake", relay.ResultDelivered); r != 3 || d != 1 {
			t.Fatalf("metrics retried %v delivered %v", r, d)
		}
		rec, _ := f.store.Lookup(t.Context(), ev.ID)
		if rec.Deliveries[0].State != relay.StateDelivered || rec.Deliveries[0].Attempts != 4 {
			t.Fatalf("record %+v", rec.Deliveries)
		}
	})
}

func TestRetryAfterHoldsTheWholeSink(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		var limited sync.Once
		sink := newFakeSink(func(n int, ev *relay.Event) error {
			var err error
			limited.Do(func() { err = relay.RetryAfter(errors.New("HTTP 429"), 30*time.Second) })
			return err
		})
		f := start(t, dir, sink, policy, 4)
		defer f.stop(t)
		t0 := time.Now()
		a := f.append(t, "A", 1)
		<-sink.sent // whichever got through after the hold
		b := f.append(t, "B", 1)
		<-sink.sent
		ac, bc := sink.callsOf(a.ID), sink.callsOf(b.ID)
		if len(ac) != 2 || len(bc) != 1 {
			t.Fatalf("attempts A %d B %d, want 2 and 1", len(ac), len(bc))
		}
		if got := ac[1].at.Sub(t0); got != 30*time.Second {
			t.Errorf("A retried after %s, want exactly Retry-After 30s", got)
		}
		if bc[0].at.Before(t0.Add(30 * time.Second)) {
			t.Errorf("B was sent %s into the hold: the whole sink must wait", bc[0].at.Sub(t0))
		}
		synctest.Wait()
		if rl := testutil.ToFloat64(f.metrics.RateLimited.WithLabelValues("fake")); rl != 1 {
			t.Errorf("rate_limited_total = %v", rl)
		}
		if r := f.deliveries("fake", relay.ResultRateLimited); r != 1 {
			t.Errorf("deliveries{rate_limited} = %v", r)
		}
	})
}

// hangingSink never answers its first send: it returns what net/http
// returns when the request's context ends, a *url.Error carrying the
// context's cause. Later sends succeed.
type hangingSink struct {
	sends atomic.Int32
	sent  chan struct{}
}

func (s *hangingSink) Name() string { return "fake" }

func (s *hangingSink) Send(ctx context.Context, _ *relay.Event) error {
	if s.sends.Add(1) > 1 {
		close(s.sent)
		return nil
	}
	<-ctx.Done()
	return &url.Error{Op: "Post", URL: "[redacted]", Err: context.Cause(ctx)}
}

// TestSendTimeoutIsReasonTimeout: a destination that never answers within
// the sink's timeout is counted as reason "timeout", also when the HTTP
// client reports the deadline's cause instead of context.DeadlineExceeded.
func TestSendTimeoutIsReasonTimeout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		sink := &hangingSink{sent: make(chan struct{})}
		f := start(t, dir, sink, policy, 1)
		defer f.stop(t)
		f.append(t, "A", 1)
		<-sink.sent
		synctest.Wait()
		for reason, want := range map[relay.Reason]float64{relay.ReasonTimeout: 1, relay.ReasonNetwork: 0} {
			if got := testutil.ToFloat64(f.metrics.DeliveryFailures.WithLabelValues("fake", string(reason))); got != want {
				t.Errorf("delivery_failures_total{reason=%q} = %v, want %v", reason, got, want)
			}
		}
		if !strings.Contains(f.logs.String(), "no answer within 5s") {
			t.Errorf("the retry's log line does not say the send timed out:\n%s", f.logs.String())
		}
	})
}

func TestBackoffDoesNotHoldOtherConversations(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		sink := newFakeSink(func(n int, ev *relay.Event) error {
			if ev.ConversationID == "A" && n == 1 {
				return errors.New("connection reset")
			}
			return nil
		})
		f := start(t, dir, sink, relay.RetryPolicy{Initial: time.Minute, Max: time.Hour, MaxAge: 24 * time.Hour}, 2)
		defer f.stop(t)
		t0 := time.Now()
		a1 := f.append(t, "A", 1)
		a2 := f.append(t, "A", 2)
		b1 := f.append(t, "B", 1)
		got := []string{<-sink.sent, <-sink.sent, <-sink.sent}
		if got[0] != b1.ID || got[1] != a1.ID || got[2] != a2.ID {
			t.Fatalf("delivered %v, want B first (not held by A's backoff), then A in order", got)
		}
		if at := sink.callsOf(b1.ID)[0].at.Sub(t0); at != 0 {
			t.Fatalf("B waited %s behind A", at)
		}
	})
}

func TestPermanentErrorParksAndReplayDelivers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		reject := true
		sink := newFakeSink(func(n int, ev *relay.Event) error {
			mu.Lock()
			defer mu.Unlock()
			if reject && strings.Contains(string(ev.Body), `"q1"`) {
				return relay.Permanent(errors.New("HTTP 400: invalid_blocks"), relay.ReasonClientError)
			}
			return nil
		})
		f := start(t, dir, sink, policy, 1)
		defer f.stop(t)
		bad := f.append(t, "A", 1)
		next := f.append(t, "A", 2)
		if id := <-sink.sent; id != next.ID {
			t.Fatalf("delivered %s, want the next turn %s (a parked turn must not block its conversation)", id, next.ID)
		}
		synctest.Wait()
		dead, err := f.store.ListDead(t.Context(), "fake", 0)
		if err != nil || len(dead) != 1 || dead[0].EventID != bad.ID || !strings.Contains(dead[0].Reason, "invalid_blocks") || dead[0].Attempts != 1 {
			t.Fatalf("dead letters %+v, %v", dead, err)
		}
		if len(sink.callsOf(bad.ID)) != 1 {
			t.Fatal("a permanent error was retried")
		}
		if d := f.deliveries("fake", relay.ResultDead); d != 1 {
			t.Fatalf("deliveries{dead} = %v", d)
		}
		mu.Lock()
		reject = false
		mu.Unlock()
		if n, err := f.store.Requeue(t.Context(), []string{dead[0].ID}); err != nil || n != 1 {
			t.Fatalf("Requeue = %d, %v", n, err)
		}
		if id := <-sink.sent; id != bad.ID {
			t.Fatalf("after replay delivered %s", id)
		}
		if !strings.Contains(f.logs.String(), "delivery parked in the dead letters") {
			t.Error("no log line for the dead letter")
		}
	})
}

func TestMaxAgeParksRetries(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		sink := newFakeSink(func(int, *relay.Event) error { return errors.New("HTTP 503") })
		f := start(t, dir, sink, relay.RetryPolicy{Initial: time.Second, Max: 10 * time.Second, MaxAge: time.Minute}, 1)
		defer f.stop(t)
		t0 := time.Now()
		ev := f.append(t, "A", 1)
		for {
			time.Sleep(time.Second) // bubble time: returns when every goroutine is idle
			if dead, _ := f.store.ListDead(t.Context(), "", 0); len(dead) == 1 {
				if !strings.Contains(dead[0].Reason, "retry.max_age (1m0s) exceeded") || !strings.Contains(dead[0].Reason, "HTTP 503") {
					t.Fatalf("reason %q", dead[0].Reason)
				}
				break
			}
			if time.Since(t0) > time.Hour {
				t.Fatal("never parked")
			}
		}
		calls := sink.callsOf(ev.ID)
		if last := calls[len(calls)-1].at.Sub(t0); last > time.Minute {
			t.Fatalf("attempted at %s, past max_age", last)
		}
	})
}

func TestBrokenDestinationHoldsAndProbes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		broken := true
		sink := newFakeSink(func(int, *relay.Event) error {
			mu.Lock()
			defer mu.Unlock()
			if broken {
				return relay.Broken(errors.New("invalid_auth"), relay.ReasonAuth)
			}
			return nil
		})
		retry := relay.RetryPolicy{Initial: time.Second, Max: 5 * time.Minute, MaxAge: 24 * time.Hour}
		f := start(t, dir, sink, retry, 4)
		defer f.stop(t)
		t0 := time.Now()
		var evs []*relay.Event
		for i := range 5 {
			evs = append(evs, f.append(t, fmt.Sprintf("c%d", i), i))
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if up := testutil.ToFloat64(f.metrics.SinkUp.WithLabelValues("fake")); up != 0 {
			t.Fatalf("sink_up = %v while broken", up)
		}
		sink.mu.Lock()
		early := len(sink.calls)
		sink.mu.Unlock()
		if early > 4 {
			t.Fatalf("%d sends in the first minute to a broken destination; want only the first wave", early)
		}
		time.Sleep(20 * time.Minute)
		synctest.Wait()
		sink.mu.Lock()
		probes := len(sink.calls) - early
		sink.mu.Unlock()
		if probes < 3 || probes > 5 {
			t.Fatalf("%d probes in 20 minutes with retry.max 5m, want about 4", probes)
		}
		mu.Lock()
		broken = false
		mu.Unlock()
		for range evs {
			<-sink.sent
		}
		if dead, _ := f.store.ListDead(t.Context(), "", 0); len(dead) != 0 {
			t.Fatalf("a broken destination dead-lettered %d deliveries; it must hold them", len(dead))
		}
		if up := testutil.ToFloat64(f.metrics.SinkUp.WithLabelValues("fake")); up != 1 {
			t.Fatalf("sink_up = %v after recovery", up)
		}
		if !strings.Contains(f.logs.String(), "sink marked down") || strings.Count(f.logs.String(), "sink marked down") != 1 {
			t.Fatalf("want exactly one 'sink marked down' error log:\n%s", f.logs.String())
		}
		_ = t0
	})
}

// TestOrderUnderConcurrency delivers many conversations with random
// failures through a concurrent dispatcher: every event arrives, each
// conversation in acceptance order, never two of one conversation at once.
func TestOrderUnderConcurrency(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	rnd := rand.New(rand.NewPCG(1, 2))
	sink := newFakeSink(func(n int, ev *relay.Event) error {
		mu.Lock()
		fail := rnd.IntN(5) == 0
		mu.Unlock()
		if fail {
			return errors.New("flaky")
		}
		return nil
	})
	f := start(t, t.TempDir(), sink, relay.RetryPolicy{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxAge: time.Hour}, 8)
	defer f.stop(t)
	const convs, per = 20, 15
	order := map[string][]string{}
	var wg sync.WaitGroup
	var omu sync.Mutex
	for c := range convs {
		wg.Go(func() {
			conv := fmt.Sprintf("conv-%02d", c)
			for i := range per {
				ev := f.append(t, conv, c*100+i)
				omu.Lock()
				order[conv] = append(order[conv], ev.ID)
				omu.Unlock()
			}
		})
	}
	wg.Wait()
	got := map[string][]string{}
	timeout := time.After(60 * time.Second)
	for range convs * per {
		select {
		case id := <-sink.sent:
			rec, err := f.store.Lookup(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			got[rec.Event.ConversationID] = append(got[rec.Event.ConversationID], id)
		case <-timeout:
			t.Fatal("not everything was delivered")
		}
	}
	for conv, want := range order {
		if !slices.Equal(got[conv], want) {
			t.Errorf("%s delivered out of order", conv)
		}
	}
	if sink.overlap != "" {
		t.Errorf("conversation %s had two deliveries in flight at once", sink.overlap)
	}
}

// TestRestartResumesBacklog closes the store mid-backlog and reopens it:
// every event is delivered, in order, at most the in-flight one twice.
func TestRestartResumesBacklog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	gate := make(chan struct{})
	first := newFakeSink(func(n int, ev *relay.Event) error {
		<-gate
		return nil
	})
	f := start(t, dir, first, policy, 2)
	var evs []*relay.Event
	for i := range 40 {
		evs = append(evs, f.append(t, fmt.Sprintf("c%d", i%4), i))
	}
	for range 10 {
		gate <- struct{}{}
		<-first.sent
	}
	close(gate) // the rest go through as shutdown drains the in-flight ones
	f.stop(t)

	second := newFakeSink(func(int, *relay.Event) error { return nil })
	f2 := start(t, dir, second, policy, 2)
	defer f2.stop(t)
	delivered := map[string]int{}
	first.mu.Lock()
	for _, c := range first.calls {
		delivered[c.id]++
	}
	first.mu.Unlock()
	missing := 0
	for _, ev := range evs {
		if delivered[ev.ID] == 0 {
			missing++
		}
	}
	for range missing {
		select {
		case id := <-second.sent:
			delivered[id]++
		case <-time.After(30 * time.Second):
			t.Fatal("backlog not resumed after restart")
		}
	}
	dups := 0
	for _, ev := range evs {
		switch n := delivered[ev.ID]; {
		case n == 0:
			t.Errorf("event %s never delivered", ev.ID)
		case n > 1:
			dups++
		}
	}
	if dups > 4 {
		t.Errorf("%d duplicates after a clean restart, want at most one in flight per conversation", dups)
	}
}

func TestShutdownFinishesInFlightSend(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		started := make(chan struct{})
		sink := newFakeSink(func(n int, ev *relay.Event) error {
			close(started)
			time.Sleep(2 * time.Second) // a slow platform
			return nil
		})
		f := start(t, dir, sink, policy, 1)
		ev := f.append(t, "A", 1)
		<-started
		t0 := time.Now()
		f.cancel()
		if err := <-f.done; err != nil {
			t.Fatal(err)
		}
		if took := time.Since(t0); took != 2*time.Second {
			t.Errorf("shutdown took %s, want the in-flight send's 2s", took)
		}
		// Closing the store commits what the dispatcher handed it.
		if err := f.store.Close(); err != nil {
			t.Fatal(err)
		}
		s, err := bolt.Open(dir, bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		rec, err := s.Lookup(t.Context(), ev.ID)
		if err != nil || rec.Deliveries[0].State != relay.StateDelivered {
			t.Fatalf("in-flight delivery not recorded: %+v %v", rec, err)
		}
	})
}

// TestShutdownCutsOffAHangingSend: a send still hanging when the drain
// budget runs out is cut off and handed back; Run returns and nothing is
// sent after the shutdown began.
func TestShutdownCutsOffAHangingSend(t *testing.T) {
	t.Parallel()
	store, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var sends atomic.Int32
	started := make(chan struct{}, 100)
	sink := &funcSink{name: "fake", send: func(ctx context.Context, _ *relay.Event) error {
		sends.Add(1)
		select {
		case started <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return context.Cause(ctx)
	}}
	d, err := relay.NewDispatcher(relay.DispatcherConfig{
		Sink: sink, Queue: store.Queue("fake"), Retry: policy, Timeout: time.Minute, DrainTimeout: 200 * time.Millisecond,
		Metrics: relay.NewMetrics(prometheus.NewRegistry()),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	ev := storetest.NewEvent(t, "A", 1)
	if _, err := store.Append(t.Context(), ev, []string{"fake"}); err != nil {
		t.Fatal(err)
	}
	<-started
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Run did not return 10s after shutdown began (drain budget 200ms); %d sends", sends.Load())
	}
	if n := sends.Load(); n != 1 {
		t.Errorf("%d sends, want 1: nothing may start after the shutdown began", n)
	}
	rec, err := store.Lookup(t.Context(), ev.ID)
	if err != nil || rec.Deliveries[0].State != relay.StatePending || rec.Deliveries[0].Attempts != 0 {
		t.Fatalf("the cut-off delivery is not pending untried: %+v %v", rec, err)
	}
}

// funcSink sends with a function.
type funcSink struct {
	name string
	send func(context.Context, *relay.Event) error
}

func (s *funcSink) Name() string { return s.name }

func (s *funcSink) Send(ctx context.Context, ev *relay.Event) error { return s.send(ctx, ev) }

func TestLogsCarryNoMessageContent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		sink := newFakeSink(func(n int, ev *relay.Event) error {
			if n == 1 {
				return errors.New("HTTP 502")
			}
			return nil
		})
		f := start(t, dir, sink, policy, 1)
		defer f.stop(t)
		body := []byte(`{"conversation_id":"c","client_ip":"198.51.100.23","messages":[{"role":"user","content":"my card is 4111"}]}`)
		ev, _ := relay.DecodeEvent(body)
		ev.ID, ev.Topic, ev.ReceivedAt = "01900000-0000-7000-8000-0000000000ff", relay.TopicChat, time.Now()
		if _, err := f.store.Append(t.Context(), ev, []string{"fake"}); err != nil {
			t.Fatal(err)
		}
		<-sink.sent
		synctest.Wait()
		logs := f.logs.String()
		if strings.Contains(logs, "4111") || strings.Contains(logs, "198.51.100.23") {
			t.Fatalf("message content or client IP in the logs:\n%s", logs)
		}
		if !strings.Contains(logs, ev.ID) {
			t.Fatal("the event id is missing from the logs")
		}
	})
}

// packSink is a fake sink that packs up to 10 turns per message and
// records each message.
type packSink struct {
	*fakeSink
	mu2      sync.Mutex
	messages [][]string // event ids per message
	at       []time.Time
	threaded map[string]bool // conversations that cannot pack (have a thread)
}

var _ relay.Packer = (*packSink)(nil)

func (s *packSink) MaxPack() int { return 10 }
func (s *packSink) CanPack(_ context.Context, ev *relay.Event) bool {
	s.mu2.Lock()
	defer s.mu2.Unlock()
	return !s.threaded[ev.ConversationID]
}
func (s *packSink) Send(ctx context.Context, ev *relay.Event) error {
	_, _, err := s.SendPacked(ctx, []*relay.Event{ev})
	return err
}

// SendPacked posts at most 7 turns, as if no more fit one message.
func (s *packSink) SendPacked(_ context.Context, evs []*relay.Event) (int, relay.Report, error) {
	evs = evs[:min(len(evs), 7)]
	s.mu2.Lock()
	var ids []string
	for _, ev := range evs {
		ids = append(ids, ev.ID)
	}
	s.messages = append(s.messages, ids)
	s.at = append(s.at, time.Now())
	s.mu2.Unlock()
	for _, id := range ids {
		s.sent <- id
	}
	return len(evs), relay.Report{Posts: 1}, nil
}

func TestPackingKeepsUpWithAPacedChannel(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		sink := &packSink{fakeSink: newFakeSink(nil), threaded: map[string]bool{"threaded": true}}
		sink.name = "fake"
		f := start(t, dir, sink, policy, 2, paced(time.Second)) // a channel that takes one message per second
		defer f.stop(t)
		t0 := time.Now()
		order := map[string][]string{}
		for i := range 30 {
			conv := fmt.Sprintf("conv-%02d", i)
			for turn := range 2 {
				ev := f.append(t, conv, i*10+turn)
				order[conv] = append(order[conv], ev.ID)
			}
		}
		th := f.append(t, "threaded", 999)
		for range 61 {
			<-sink.sent
		}
		took := time.Since(t0)
		sink.mu2.Lock()
		msgs := len(sink.messages)
		got := map[string][]string{}
		for _, m := range sink.messages {
			for _, id := range m {
				rec, _ := f.store.Lookup(t.Context(), id)
				got[rec.Event.ConversationID] = append(got[rec.Event.ConversationID], id)
			}
			if len(m) > 1 && slices.Contains(m, th.ID) {
				t.Errorf("a turn that cannot pack was packed: %v", m)
			}
		}
		for i := 1; i < len(sink.at); i++ {
			if gap := sink.at[i].Sub(sink.at[i-1]); gap < time.Second {
				t.Errorf("messages %d and %d only %s apart: the pace is one per second", i-1, i, gap)
			}
		}
		sink.mu2.Unlock()
		if took > 15*time.Second || msgs >= 30 {
			t.Fatalf("61 turns took %s in %d messages; want all within 15s in fewer than 30", took, msgs)
		}
		for conv, want := range order {
			if !slices.Equal(got[conv], want) {
				t.Errorf("%s out of order: %v, want %v", conv, got[conv], want)
			}
		}
		synctest.Wait()
		if n := testutil.ToFloat64(f.metrics.PackedEvents.WithLabelValues("fake")); n < 50 {
			t.Errorf("packed_events_total = %v", n)
		}
		t.Logf("61 turns of 31 conversations delivered in %s in %d messages", took, msgs)
	})
}

// TestShutdownStartsNothingNew: with a backlog due and a destination that
// hangs, cancelling Run lets the sends in flight run out the drain budget,
// starts no other send, and returns.
func TestShutdownStartsNothingNew(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		sink := newFakeSink(nil)
		f := start(t, dir, ctxSink{sink}, policy, 2)
		for i := range 10 {
			f.append(t, fmt.Sprintf("c%d", i), i)
		}
		synctest.Wait() // both workers are stuck in a send
		t0 := time.Now()
		f.cancel()
		if err := <-f.done; err != nil {
			t.Fatal(err)
		}
		if took := time.Since(t0); took != 5*time.Second {
			t.Errorf("Run returned after %s, want the 5s drain budget", took)
		}
		sink.mu.Lock()
		calls := len(sink.calls)
		sink.mu.Unlock()
		if calls != 2 {
			t.Errorf("%d sends, want only the 2 in flight at shutdown", calls)
		}
		if err := f.store.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

// ctxSink hangs until its send's context ends, as a destination that never
// answers does with a well-behaved HTTP client.
type ctxSink struct{ *fakeSink }

func (s ctxSink) Send(ctx context.Context, ev *relay.Event) error {
	s.mu.Lock()
	s.calls = append(s.calls, call{id: ev.ID, conv: ev.ConversationID, at: time.Now()})
	s.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

func TestRetryAfterZeroDoesNotSpin(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		sink := newFakeSink(func(n int, ev *relay.Event) error {
			if n <= 3 {
				return relay.RetryAfter(errors.New("HTTP 429"), 0)
			}
			return nil
		})
		f := start(t, dir, sink, policy, 1)
		defer f.stop(t)
		ev := f.append(t, "A", 1)
		<-sink.sent
		calls := sink.callsOf(ev.ID)
		if len(calls) != 4 {
			t.Fatalf("%d attempts, want 4", len(calls))
		}
		for i := 1; i < len(calls); i++ {
			if gap := calls[i].at.Sub(calls[i-1].at); gap < policy.Initial {
				t.Errorf("retry %d after %s: Retry-After 0 must not mean at once", i, gap)
			}
		}
	})
}

// TestRefusedPackGoesTurnByTurn: when the platform refuses a packed
// message, its turns are sent alone; only the one it refuses alone is
// parked.
func TestRefusedPackGoesTurnByTurn(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		sink := &refusingPacker{packSink: &packSink{fakeSink: newFakeSink(nil), threaded: map[string]bool{}}}
		sink.name = "fake"
		f := start(t, dir, sink, policy, 1, paced(time.Second))
		defer f.stop(t)
		var evs []*relay.Event
		for i := range 5 {
			evs = append(evs, f.append(t, fmt.Sprintf("c%d", i), i))
		}
		for range 4 {
			<-sink.sent
		}
		synctest.Wait()
		dead, _ := f.store.ListDead(t.Context(), "", 0)
		if len(dead) != 1 || !strings.Contains(string(evs[2].Body), "q2") || dead[0].EventID != evs[2].ID {
			t.Fatalf("dead letters %+v, want only the turn refused alone (%s)", dead, evs[2].ID)
		}
	})
}

// refusingPacker refuses every packed message holding the turn "q2", and
// that turn alone.
type refusingPacker struct{ *packSink }

func (s *refusingPacker) Send(ctx context.Context, ev *relay.Event) error {
	if strings.Contains(string(ev.Body), `"q2"`) {
		return relay.Permanent(errors.New("invalid_blocks"), relay.ReasonClientError)
	}
	return s.packSink.Send(ctx, ev)
}

var _ relay.Packer = (*refusingPacker)(nil)

func (s *refusingPacker) SendPacked(ctx context.Context, evs []*relay.Event) (int, relay.Report, error) {
	for _, ev := range evs {
		if strings.Contains(string(ev.Body), `"q2"`) {
			return 0, relay.Report{}, relay.Permanent(errors.New("invalid_blocks"), relay.ReasonClientError)
		}
	}
	return s.packSink.SendPacked(ctx, evs)
}

// TestHoldStopsASendAlreadyTicketed: a send that got its pace ticket just
// before another send's 429 was read (it was still gathering turns to pack)
// waits out the Retry-After too, instead of going into the hold.
func TestHoldStopsASendAlreadyTicketed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		sink := &holdRaceSink{
			packSink: &packSink{fakeSink: newFakeSink(nil), threaded: map[string]bool{}},
			aGo:      make(chan struct{}), bIn: make(chan struct{}), bGo: make(chan struct{}),
		}
		sink.name = "fake"
		f := start(t, dir, sink, policy, 2)
		defer f.stop(t)
		t0 := time.Now()
		f.append(t, "A", 1)
		synctest.Wait() // A's send is in flight
		b := f.append(t, "B", 1)
		<-sink.bIn // B has its ticket and is gathering turns to pack
		close(sink.aGo)
		synctest.Wait() // A's 429 was read: the sink holds for 30s
		if f.d.Health().HeldUntil.IsZero() {
			t.Fatal("no hold after a 429")
		}
		close(sink.bGo)
		var got []string
		for range 2 {
			got = append(got, <-sink.sent)
		}
		sink.mu2.Lock()
		defer sink.mu2.Unlock()
		if len(sink.at) != 2 || !slices.Contains(got, b.ID) {
			t.Fatalf("messages %v at %v", sink.messages, sink.at)
		}
		for i, at := range sink.at {
			if at.Sub(t0) < 30*time.Second {
				t.Errorf("message %d (%v) sent %s after the start, inside the 30s hold", i, sink.messages[i], at.Sub(t0))
			}
		}
	})
}

// holdRaceSink answers conversation A's first send with a 429 once aGo is
// closed, and stalls the first CanPack of conversation B (a worker holding
// a ticket) until bGo is closed.
type holdRaceSink struct {
	*packSink
	aGo, bIn, bGo chan struct{}
	aOnce, bOnce  sync.Once
}

func (s *holdRaceSink) CanPack(ctx context.Context, ev *relay.Event) bool {
	if ev.ConversationID == "B" {
		s.bOnce.Do(func() {
			close(s.bIn)
			<-s.bGo
		})
	}
	return s.packSink.CanPack(ctx, ev)
}

func (s *holdRaceSink) Send(ctx context.Context, ev *relay.Event) error {
	var err error
	if ev.ConversationID == "A" {
		s.aOnce.Do(func() {
			<-s.aGo
			err = relay.RetryAfter(errors.New("HTTP 429"), 30*time.Second)
		})
	}
	if err != nil {
		return err
	}
	return s.packSink.Send(ctx, ev)
}

// postSink is a fake relay.Poster: each turn takes parts messages, and
// the first turn's send reports a rate-limit hold of hold.
type postSink struct {
	*fakeSink
	parts int
	hold  time.Duration
	books *relay.Books

	mu2   sync.Mutex
	posts []time.Time
	turns int
}

var _ relay.Poster = (*postSink)(nil)

func (s *postSink) Send(ctx context.Context, ev *relay.Event) error {
	_, err := relay.Post(ctx, s, ev)
	return err
}

func (s *postSink) Turn(_ context.Context, ev *relay.Event) (*relay.Turn, error) {
	s.mu2.Lock()
	s.turns++
	first := s.turns == 1
	s.mu2.Unlock()
	rep := &relay.Report{}
	return &relay.Turn{Books: s.books, Event: ev, Dest: "C1", Parts: s.parts, Report: rep,
		Post: func(context.Context, int, string) (relay.Placed, error) {
			s.mu2.Lock()
			s.posts = append(s.posts, time.Now())
			s.mu2.Unlock()
			if first && s.hold > 0 {
				rep.Hold(time.Now().Add(s.hold))
			}
			return relay.Placed{}, nil
		}}, nil
}

// TestSeveralPostsTakeSeveralSlots: what a send reports paces the sink: a
// send that posted three messages takes three slots of the pace, and a
// hold the destination's rate-limit headers asked for holds every send.
func TestSeveralPostsTakeSeveralSlots(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		parts int
		hold  time.Duration
		gap   time.Duration // between the first post of the first send and that of the second
	}{
		{"one message", 1, 0, time.Second},
		{"three messages", 3, 0, 3 * time.Second},
		{"a hold", 1, 10 * time.Second, 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			synctest.Test(t, func(t *testing.T) {
				sink := &postSink{fakeSink: newFakeSink(nil), parts: tc.parts, hold: tc.hold,
					books: relay.NewBooks(relay.NewMemKV(), "fake", nil)}
				f := start(t, dir, sink, policy, 2, paced(time.Second))
				defer f.stop(t)
				f.append(t, "conv-a", 1)
				f.append(t, "conv-b", 2)
				for {
					synctest.Wait()
					sink.mu2.Lock()
					n := len(sink.posts)
					sink.mu2.Unlock()
					if n == 2*tc.parts {
						break
					}
					time.Sleep(100 * time.Millisecond) // fake time, in the bubble
				}
				sink.mu2.Lock()
				defer sink.mu2.Unlock()
				if gap := sink.posts[tc.parts].Sub(sink.posts[0]); gap != tc.gap {
					t.Errorf("second send %s after the first, want %s", gap, tc.gap)
				}
			})
		})
	}
}

// brokenQueue fails every Next, as a store that can no longer read its
// deliveries would.
type brokenQueue struct{ err error }

func (q brokenQueue) Next(context.Context) (*relay.Delivery, error)    { return nil, q.err }
func (q brokenQueue) TryNext(context.Context) (*relay.Delivery, error) { return nil, q.err }

// TestFailingWorkerStopsTheSinkVisibly: a worker whose queue fails does
// not vanish while the others go on: Run stops every worker, logs the
// failure at error, shows the sink down and returns the error.
func TestFailingWorkerStopsTheSinkVisibly(t *testing.T) {
	t.Parallel()
	boom := errors.New("bucket queue/fake: page 42 unreadable")
	logger, logs := relaytest.NewLogger()
	m := relay.NewMetrics(prometheus.NewRegistry())
	d, err := relay.NewDispatcher(relay.DispatcherConfig{Sink: newFakeSink(nil), Queue: brokenQueue{err: boom},
		Retry: policy, Concurrency: 4, Metrics: m, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	err = d.Run(t.Context())
	if !errors.Is(err, boom) {
		t.Fatalf("Run = %v, want the queue's error", err)
	}
	if up := testutil.ToFloat64(m.SinkUp.WithLabelValues("fake")); up != 0 {
		t.Errorf("sink_up = %v, want 0", up)
	}
	if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "page 42 unreadable") {
		t.Errorf("no error log line with the cause:\n%s", l)
	}
}
