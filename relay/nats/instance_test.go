package nats_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/nats"
	"github.com/chatrelay/chatrelay/relay/relaytest"
)

const testSecret = relay.Secret("test-signing-secret")

// delivery is one send a recorder saw.
type delivery struct {
	conv     string
	n        int
	instance string
}

// recorder is what the fake destination received, from every instance.
type recorder struct {
	mu   sync.Mutex
	got  []delivery
	more chan struct{} // closed and replaced on every delivery
}

func newRecorder() *recorder { return &recorder{more: make(chan struct{})} }

func (r *recorder) add(d delivery) {
	r.mu.Lock()
	r.got = append(r.got, d)
	close(r.more)
	r.more = make(chan struct{})
	r.mu.Unlock()
}

func (r *recorder) snapshot() ([]delivery, chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got), r.more
}

// waitFor waits until every (conversation, n) in want was delivered at least
// once.
func (r *recorder) waitFor(t *testing.T, want map[string][]int, timeout time.Duration) []delivery {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		got, more := r.snapshot()
		seen := map[string]map[int]bool{}
		for _, d := range got {
			if seen[d.conv] == nil {
				seen[d.conv] = map[int]bool{}
			}
			seen[d.conv][d.n] = true
		}
		missing := 0
		for conv, ns := range want {
			for _, n := range ns {
				if !seen[conv][n] {
					missing++
				}
			}
		}
		if missing == 0 {
			return got
		}
		select {
		case <-more:
		case <-deadline.C:
			t.Fatalf("%d accepted events never reached the sink (of %d deliveries seen)", missing, len(got))
		}
	}
}

// checkOrder asserts that each conversation's deliveries never go back to
// an older turn (a repeat of the turn just sent is allowed: at least once)
// and returns how many deliveries were repeats.
func checkOrder(t *testing.T, got []delivery) (dups int) {
	t.Helper()
	last := map[string]int{}
	for _, d := range got {
		prev, ok := last[d.conv]
		switch {
		case ok && d.n < prev:
			t.Errorf("conversation %s: turn %d delivered after turn %d (by %s)", d.conv, d.n, prev, d.instance)
		case ok && d.n == prev:
			dups++
		}
		last[d.conv] = d.n
	}
	return dups
}

// fakeSink records what it is sent. Once crashed it sends nothing: a dead
// process posts no more messages. With crashAfter set, the next send
// reaches the destination and then the process dies (crashAfter runs)
// before it can record the delivery as done: the worst moment.
type fakeSink struct {
	instance   string
	rec        *recorder
	crashed    atomic.Bool
	crashAfter atomic.Pointer[func()]
	gate       chan struct{} // when non-nil, sends wait until it is closed
}

func (s *fakeSink) Name() string { return "fake" }

func (s *fakeSink) Send(ctx context.Context, ev *relay.Event) error {
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.crashed.Load() {
		return errors.New("instance crashed")
	}
	var body struct {
		N int `json:"n"`
	}
	if err := json.Unmarshal(ev.Body, &body); err != nil {
		return relay.Permanent(err, relay.ReasonOther)
	}
	s.rec.add(delivery{conv: ev.ConversationID, n: body.N, instance: s.instance})
	if crash := s.crashAfter.Swap(nil); crash != nil {
		(*crash)()
	}
	return nil
}

// instance is one chatrelay replica: the real receiver and dispatcher on
// its own store.
type instance struct {
	name    string
	store   *nats.Store
	sink    *fakeSink
	http    *httptest.Server
	cancel  context.CancelFunc
	done    chan error
	metrics *relay.Metrics
}

func startInstance(t *testing.T, name, url string, rec *recorder, gate chan struct{}) *instance {
	t.Helper()
	opts := testOptions(url)
	store := open(t, opts)
	in := &instance{name: name, store: store, sink: &fakeSink{instance: name, rec: rec, gate: gate},
		metrics: relay.NewMetrics(prometheus.NewRegistry()), done: make(chan error, 1)}
	recv, err := relay.NewReceiver(relay.ReceiverConfig{
		Secrets: []relay.Secret{testSecret},
		Store:   store,
		Router:  relay.NewRouter([]string{"fake"}, nil),
		Metrics: in.metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	in.http = httptest.NewServer(recv)
	disp, err := relay.NewDispatcher(relay.DispatcherConfig{
		Sink:         in.sink,
		Queue:        store.Queue("fake"),
		Retry:        relay.RetryPolicy{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond, MaxAge: time.Minute},
		Concurrency:  4,
		Timeout:      5 * time.Second,
		DrainTimeout: time.Second,
		Metrics:      in.metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	go func() { in.done <- disp.Run(ctx) }()
	t.Cleanup(in.stop)
	return in
}

// stop shuts the instance down (idempotent).
func (in *instance) stop() {
	if in.cancel == nil {
		return
	}
	in.http.Close()
	in.cancel()
	<-in.done
	_ = in.store.Close()
	in.cancel = nil
}

// post sends one signed chat event; it returns the answer's status and body.
func post(client *http.Client, url string, body []byte) (int, string, http.Header, error) {
	req, err := http.NewRequest(http.MethodPost, url+"/webhook", bytes.NewReader(body))
	if err != nil {
		return 0, "", nil, err
	}
	req.Header.Set(relay.HeaderSignature, relay.Sign(body, testSecret))
	req.Header.Set(relay.HeaderTopic, relay.TopicChat)
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b), resp.Header, nil
}

func eventBody(conv string, n int) []byte {
	return fmt.Appendf(nil, `{"conversation_id":%q,"chatbot_id":"bot","n":%d,"messages":[{"role":"user","content":"question %d"}],"answer":{"role":"assistant","content":"answer %d"}}`, conv, n, n, n)
}

// proxy forwards TCP connections to a NATS server, so a test can cut one
// instance off at once, as a crash or a network failure would.
type proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  []net.Conn
	paused bool
	stuck  chan struct{} // non-nil while frozen: forwarding waits for it to close
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Go(p.serve)
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		paused := p.paused
		p.mu.Unlock()
		if paused {
			c.Close()
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Go(func() { p.forward(s, c); s.Close() })
		p.wg.Go(func() { p.forward(c, s); c.Close() })
	}
}

// forward copies from src to dst, holding each chunk while the proxy is
// frozen.
func (p *proxy) forward(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			stuck := p.stuck
			p.mu.Unlock()
			if stuck != nil {
				<-stuck
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// freeze stops forwarding without closing anything: to either side the
// other looks alive but says nothing, as a frozen process or a
// half-open link does.
func (p *proxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stuck == nil {
		p.stuck = make(chan struct{})
	}
}

// thaw forwards again what was held and what follows.
func (p *proxy) thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stuck != nil {
		close(p.stuck)
		p.stuck = nil
	}
}

// pause drops every connection and refuses new ones until resume.
func (p *proxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) resume() {
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
}

// cut closes the proxy for good and waits for its goroutines.
func (p *proxy) cut() {
	p.ln.Close()
	p.pause()
	p.thaw()
	p.wg.Wait()
}

// TestTwoInstancesShareTheWork runs two replicas on one NATS server:
// events of several conversations alternate between their receivers, and
// halfway one replica is cut off from NATS and stops sending, as a crash
// would look. Every accepted event must reach the sink, in order per
// conversation.
func TestTwoInstancesShareTheWork(t *testing.T) {
	t.Parallel()
	ns := startServer(t, "", 0)
	rec := newRecorder()
	a := startInstance(t, "a", ns.ClientURL(), rec, nil)
	cut := newProxy(t, ns.Addr().String())
	b := startInstance(t, "b", cut.url(), rec, nil)

	const convs, turns = 6, 24
	total := convs * turns
	var accepted atomic.Int32
	crash := make(chan struct{})
	crashed := make(chan struct{})
	var crashOnce sync.Once
	var bDown atomic.Bool
	client := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	var sentTo [2]atomic.Int32
	for c := range convs {
		wg.Go(func() {
			conv := fmt.Sprintf("conv-%d", c)
			for n := range turns {
				body := eventBody(conv, n)
				// Turns alternate between the replicas; a replica that
				// fails or is gone is skipped, as a load balancer would.
				target := (c + n) % 2
				for attempt := 0; ; attempt++ {
					if attempt > 200 {
						t.Errorf("%s turn %d was never accepted", conv, n)
						return
					}
					in := []*instance{a, b}[target]
					if in == b && bDown.Load() {
						target, in = 0, a
					}
					status, _, _, err := post(client, in.http.URL, body)
					if err == nil && status == http.StatusOK {
						sentTo[target].Add(1)
						break
					}
					target = 1 - target
				}
				if accepted.Add(1) == int32(total/2) {
					crashOnce.Do(func() { close(crash) })
					<-crashed
				}
			}
		})
	}
	<-crash
	// The crash: right after b's next send reached the destination, b
	// loses NATS and sends nothing more. Nothing it held is handed back or
	// acked, so NATS redelivers it all to a after AckWait.
	died := make(chan struct{})
	var dieOnce sync.Once
	die := func() {
		dieOnce.Do(func() {
			bDown.Store(true)
			b.sink.crashed.Store(true)
			cut.cut()
			close(died)
		})
	}
	b.sink.crashAfter.Store(&die)
	select {
	case <-died:
	case <-time.After(2 * time.Second): // b had nothing to send: die idle
		die()
	}
	close(crashed)
	wg.Wait()
	b.stop()

	want := map[string][]int{}
	for c := range convs {
		for n := range turns {
			want[fmt.Sprintf("conv-%d", c)] = append(want[fmt.Sprintf("conv-%d", c)], n)
		}
	}
	got := rec.waitFor(t, want, 60*time.Second)
	dups := checkOrder(t, got)
	byInstance := map[string]int{}
	for _, d := range got {
		byInstance[d.instance]++
	}
	t.Logf("%d events accepted (a took %d, b %d), %d deliveries (a %d, b %d), %d repeated",
		total, sentTo[0].Load(), sentTo[1].Load(), len(got), byInstance["a"], byInstance["b"], dups)
	if byInstance["b"] == 0 {
		t.Error("b delivered nothing before its crash: the replicas did not share the work")
	}
	if dups > convs {
		t.Errorf("%d repeated deliveries; at most one per conversation in flight at the crash (%d) is expected", dups, convs)
	}
	st := statsOf(t, a.store, "fake")
	if st.Depth != 0 || st.Dead != 0 {
		t.Errorf("after delivery: %+v, want empty", st)
	}
}

// statsOf polls Stats until the queue is empty (acks are removed
// asynchronously), returning the last stats seen.
func statsOf(t *testing.T, s *nats.Store, sink string) relay.QueueStats {
	t.Helper()
	var last relay.QueueStats
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		stats, err := s.Stats(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range stats {
			if st.Sink == sink {
				last = st
			}
		}
		if last.Depth == 0 {
			return last
		}
		time.Sleep(20 * time.Millisecond)
	}
	return last
}

// TestNATSOutage shuts the NATS server down under a running instance:
// the receiver must answer 503 with Retry-After and /readyz must fail;
// when a new server starts on the same port and store directory, work
// resumes and nothing accepted is lost.
func TestNATSOutage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ns := startServer(t, dir, 0)
	port := ns.Addr().(*net.TCPAddr).Port
	rec := newRecorder()
	gate := make(chan struct{})
	in := startInstance(t, "a", ns.ClientURL(), rec, gate)
	client := &http.Client{Timeout: 10 * time.Second}

	want := map[string][]int{}
	accept := func(conv string, n int) {
		t.Helper()
		status, body, _, err := post(client, in.http.URL, eventBody(conv, n))
		if err != nil || status != http.StatusOK {
			t.Fatalf("POST %s turn %d: %d %s %v", conv, n, status, body, err)
		}
		want[conv] = append(want[conv], n)
	}
	// Accepted while the sink is stuck: some wait in the queue, some are
	// in flight when NATS goes away.
	for n := range 5 {
		accept("conv-a", n)
		accept("conv-b", n)
	}

	ns.Shutdown()
	ns.WaitForShutdown()
	relaytest.Eventually(t, 20*time.Second, "receiver answers 503 while NATS is down", func() bool {
		status, _, hdr, err := post(client, in.http.URL, eventBody("conv-a", 99))
		return err == nil && status == http.StatusServiceUnavailable && hdr.Get("Retry-After") != ""
	})
	if err := in.store.Ready(t.Context()); !errors.Is(err, relay.ErrUnavailable) {
		t.Fatalf("Ready while NATS is down: %v, want ErrUnavailable", err)
	}
	if status, _, _, _ := get(client, in.http.URL+"/readyz"); status != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while NATS is down: %d, want 503", status)
	}

	startServer(t, dir, port)
	relaytest.Eventually(t, 20*time.Second, "/readyz recovers", func() bool {
		status, _, _, err := get(client, in.http.URL+"/readyz")
		return err == nil && status == http.StatusOK
	})
	close(gate)
	for n := 5; n < 10; n++ {
		accept("conv-a", n)
		accept("conv-b", n)
	}
	got := rec.waitFor(t, want, 60*time.Second)
	for _, d := range got {
		if d.n == 99 {
			t.Errorf("an event answered 503 was delivered: %+v", d)
		}
	}
	dups := checkOrder(t, got)
	t.Logf("%d events accepted, %d deliveries, %d repeated", 20, len(got), dups)
}

func get(client *http.Client, url string) (int, string, http.Header, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, strings.TrimSpace(string(b)), resp.Header, nil
}

// jetStreamClient is a JetStream client of its own, as a test's view of
// the server (outside the store under test), closed when the test ends.
func jetStreamClient(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := natsgo.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
