package nats_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/nats"
	"github.com/chatrelay/chatrelay/relay/relaytest"
)

// exclusiveOptions make "chan" exclusive and "hook" shared. With AckWait
// 600ms, leases renew every 200ms: an owner hands out for 400ms after a
// renewal, and its lease is taken for stale after 600ms without one.
func exclusiveOptions(url string) nats.Options {
	o := testOptions(url)
	o.AckWait = 600 * time.Millisecond
	o.Exclusive = func(sink string) bool { return sink == "chan" }
	return o
}

// leaseEvery mirrors the store's renewal period for these options.
func leaseEvery(o nats.Options) time.Duration { return o.AckWait / 3 }

// send is one send a recording sink made.
type send struct {
	sink, replica, conv string
	n                   int
	start, end          time.Time
}

// sendLog records every replica's sends to every sink.
type sendLog struct {
	mu    sync.Mutex
	sends []send
	more  chan struct{} // closed and replaced on every send
}

func newSendLog() *sendLog { return &sendLog{more: make(chan struct{})} }

func (l *sendLog) add(s send) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sends = append(l.sends, s)
	close(l.more)
	l.more = make(chan struct{})
}

// waitUntil waits until cond holds for the sends so far and returns them.
func (l *sendLog) waitUntil(t *testing.T, what string, timeout time.Duration, cond func([]send) bool) []send {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		got, more := slices.Clone(l.sends), l.more
		l.mu.Unlock()
		if cond(got) {
			return got
		}
		select {
		case <-more:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s (%d sends so far)", what, len(got))
		}
	}
}

// sendsTo returns the sends to one sink in the order they began.
func sendsTo(ss []send, sink string) []send {
	var out []send
	for _, s := range ss {
		if s.sink == sink {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b send) int { return a.start.Compare(b.start) })
	return out
}

// allSent reports whether every turn of every conversation reached sink.
func allSent(ss []send, sink string, convs, turns int) bool {
	seen := map[string]bool{}
	for _, s := range ss {
		if s.sink == sink {
			seen[fmt.Sprint(s.conv, "/", s.n)] = true
		}
	}
	for c := range convs {
		for n := range turns {
			if !seen[fmt.Sprint(convName(c), "/", n)] {
				return false
			}
		}
	}
	return true
}

func convName(c int) string { return fmt.Sprintf("conv-%d", c) }

// turn is turn n of a conversation, as the receiver would append it.
func turn(t *testing.T, conv string, n int) *relay.Event {
	t.Helper()
	ev, err := relay.DecodeEvent(eventBody(conv, n))
	if err != nil {
		t.Fatal(err)
	}
	ev.ID, ev.Topic, ev.ReceivedAt = uuid.NewString(), relay.TopicChat, time.Now()
	return ev
}

// recSink is one replica's sink that records its sends. A send takes a
// few milliseconds, so two replicas sending at once would overlap. Once
// dead it sends nothing: a dead process posts no more messages. With a
// gate, sends wait until it is closed.
type recSink struct {
	name, replica string
	log           *sendLog
	gate          chan struct{}
	dead          atomic.Bool
}

func (s *recSink) Name() string { return s.name }

func (s *recSink) Send(ctx context.Context, ev *relay.Event) error {
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.dead.Load() {
		return errors.New("replica died")
	}
	start := time.Now()
	t := time.NewTimer(3 * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	if s.dead.Load() {
		return errors.New("replica died")
	}
	var body struct {
		N int `json:"n"`
	}
	if err := json.Unmarshal(ev.Body, &body); err != nil {
		return relay.Permanent(err, relay.ReasonOther)
	}
	s.log.add(send{sink: s.name, replica: s.replica, conv: ev.ConversationID, n: body.N, start: start, end: time.Now()})
	return nil
}

// replica is one chatrelay replica: a dispatcher per sink on its own store.
// "chan" is paced, as a chat channel is, and sends only once gate is
// closed.
type replica struct {
	store  *nats.Store
	sinks  []*recSink
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startReplica(t *testing.T, name string, opts nats.Options, log *sendLog, gate chan struct{}) *replica {
	t.Helper()
	r := &replica{store: open(t, opts)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	metrics := relay.NewMetrics(prometheus.NewRegistry())
	for _, sink := range []string{"chan", "hook"} {
		rs := &recSink{name: sink, replica: name, log: log}
		r.sinks = append(r.sinks, rs)
		every := time.Duration(-1) // no pace
		if sink == "chan" {
			every = 10 * time.Millisecond
			rs.gate = gate
		}
		d, err := relay.NewDispatcher(relay.DispatcherConfig{
			Sink:         rs,
			Queue:        r.store.Queue(sink),
			PaceEvery:    every,
			PaceBurst:    1,
			Retry:        relay.RetryPolicy{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond, MaxAge: time.Minute},
			Concurrency:  4,
			Timeout:      5 * time.Second,
			DrainTimeout: time.Second,
			Metrics:      metrics,
		})
		if err != nil {
			t.Fatal(err)
		}
		r.wg.Go(func() {
			if err := d.Run(ctx); err != nil {
				t.Errorf("%s: dispatcher %s: %v", name, sink, err)
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

// stop shuts the replica down cleanly (idempotent).
func (r *replica) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.wg.Wait()
	_ = r.store.Close()
	r.cancel = nil
}

// TestExclusiveSinkFailsOver runs two replicas on one server with an
// exclusive sink and a shared one, and a backlog of conversations. The
// first replica owns the exclusive sink; partway through it closes, or
// dies (cut off from NATS, sending nothing more). The exclusive sink must
// be sent to by one replica at a time: the first, then the second, never
// both at once, and the second within a bound set by the lease timings.
// Every turn reaches both sinks in conversation order, and the shared sink
// is served by both replicas.
func TestExclusiveSinkFailsOver(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		crash bool
	}{
		{"owner closes", false},
		{"owner dies", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := startServer(t, "", 0)
			opts := exclusiveOptions(ns.ClientURL())
			cut := newProxy(t, ns.Addr().String())
			viaProxy := opts
			viaProxy.URL = cut.url()
			log := newSendLog()
			gate := make(chan struct{})
			firstLogger, firstLogs := relaytest.NewLogger()
			viaProxy.Logger = firstLogger
			first := startReplica(t, "first", viaProxy, log, gate)
			// Alone, the first replica takes the exclusive sink.
			relaytest.Eventually(t, 20*time.Second, "the first replica owns the sink", func() bool {
				return strings.Contains(firstLogs.String(), "now sends to the sink")
			})
			// Its first append creates the sinks' consumers: the second
			// replica finds them.
			mustAppend(t, first.store, turn(t, "warm-up", 0), "chan", "hook")
			logger, logs := relaytest.NewLogger()
			secondOpts := opts
			secondOpts.Logger = logger
			second := startReplica(t, "second", secondOpts, log, gate)

			const convs, turns = 6, 16
			stores := []*nats.Store{first.store, second.store}
			for n := range turns {
				for c := range convs {
					mustAppend(t, stores[(c+n)%2], turn(t, convName(c), n), "chan", "hook")
				}
			}
			close(gate)
			log.waitUntil(t, "part of the backlog sent", 20*time.Second, func(ss []send) bool {
				return len(sendsTo(ss, "chan")) >= convs*turns/3
			})
			failover := time.Now()
			if tc.crash {
				for _, s := range first.sinks {
					s.dead.Store(true)
				}
				cut.cut()
			} else {
				first.stop()
			}

			got := log.waitUntil(t, "every turn sent to both sinks", 30*time.Second, func(ss []send) bool {
				return allSent(ss, "chan", convs, turns) && allSent(ss, "hook", convs, turns)
			})
			chans := sendsTo(got, "chan")
			took := slices.IndexFunc(chans, func(s send) bool { return s.replica == "second" })
			if took <= 0 {
				t.Fatalf("the exclusive sink's sends by replica: %v", replicasOf(chans))
			}
			for i, s := range chans {
				if want := map[bool]string{true: "first", false: "second"}[i < took]; s.replica != want {
					t.Errorf("send %d to the exclusive sink came from %s, want %s: %v", i, s.replica, want, replicasOf(chans))
				}
			}
			last, next := chans[took-1], chans[took]
			if next.start.Before(last.end) {
				t.Errorf("the second replica began sending at %s, before the first's last send ended at %s",
					next.start.Format(time.StampMicro), last.end.Format(time.StampMicro))
			}
			// A dead owner's lease is taken over once it went unchanged for
			// 3 renewals, seen up to 1 renewal late, checked every renewal;
			// what the owner held comes back after AckWait. The slack is
			// for a loaded machine.
			every := leaseEvery(opts)
			bound := 5*every + opts.AckWait
			gap := next.start.Sub(failover)
			if gap < 0 || gap > bound+2*time.Second {
				t.Errorf("the second replica took over %s after the failover; want within %s", gap, bound)
			}

			dups := checkOrder(t, asDeliveries(chans))
			checkOrder(t, asDeliveries(sendsTo(got, "hook")))
			if !tc.crash && dups > 0 {
				t.Errorf("%d turns sent twice after a clean handover", dups)
			}
			if tc.crash && dups > convs {
				t.Errorf("%d turns sent twice; at most one per conversation in flight at the crash", dups)
			}
			hooks := map[string]int{}
			for _, s := range sendsTo(got, "hook") {
				if s.start.Before(failover) {
					hooks[s.replica]++
				}
			}
			if hooks["first"] == 0 || hooks["second"] == 0 {
				t.Errorf("the shared sink was sent to by %v before the failover; want both replicas", hooks)
			}
			if tc.crash && !strings.Contains(logs.String(), "took the sink over") {
				t.Errorf("no log of the takeover:\n%s", logs.String())
			}
			t.Logf("exclusive sink: %d sends by the first replica, %d by the second, taken over %s after the failover (bound %s); shared sink before it: %v",
				took, len(chans)-took, gap.Round(time.Millisecond), bound, hooks)
		})
	}
}

func replicasOf(ss []send) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.replica
	}
	return out
}

func asDeliveries(ss []send) []delivery {
	out := make([]delivery, len(ss))
	for i, s := range ss {
		out[i] = delivery{conv: s.conv, n: s.n, instance: s.replica}
	}
	return out
}

// TestExclusiveSinkLostLease has a third party take the lease of a sink a
// replica owns and keep renewing it: the replica must stop handing out at
// once (what it has handed out it still settles), and so must a replica
// that never owned it. When the third party lets go, the replica takes the
// sink back and hands out the rest in order.
func TestExclusiveSinkLostLease(t *testing.T) {
	t.Parallel()
	ns := startServer(t, "", 0)
	opts := exclusiveOptions(ns.ClientURL())
	logger, logs := relaytest.NewLogger()
	opts.Logger = logger
	s1 := open(t, opts)
	defer s1.Close()
	// A and B fall in different partitions: B's head is free to go while
	// A's is handed out.
	a1, a2, b1 := turn(t, "A", 1), turn(t, "A", 2), turn(t, "B", 1)
	for _, ev := range []*relay.Event{a1, a2, b1} {
		mustAppend(t, s1, ev, "chan")
	}
	held := next(t, s1, "chan")
	if held.Event.ID != a1.ID {
		t.Fatalf("first delivery %s, want %s", held.Event.ID, a1.ID)
	}

	js := jetStreamClient(t, ns.ClientURL())
	leases, err := js.KeyValue(t.Context(), "CHATRELAY_REPLICAS")
	if err != nil {
		t.Fatal(err)
	}
	// The usurper writes the lease twice per renewal period, as a live
	// owner would, until told to stop.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(leaseEvery(opts) / 2)
		defer tick.Stop()
		for {
			if _, err := leases.Put(context.Background(), "sink.chan", []byte(`{"replica":"usurper"}`)); err != nil {
				t.Errorf("usurper: %v", err)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	relaytest.Eventually(t, 20*time.Second, "the owner notices it lost the sink", func() bool {
		return strings.Contains(logs.String(), "lost the sink's ownership")
	})
	s2 := open(t, opts)
	nothingDue(t, s1, "chan", 3*opts.AckWait)
	nothingDue(t, s2, "chan", opts.AckWait)
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	// Handed out before the loss, it is still this replica's to settle,
	// and the next turn waits for it.
	if err := held.Ack(t.Context()); err != nil {
		t.Fatalf("Ack of a delivery handed out before the loss: %v", err)
	}

	close(stop)
	wg.Wait()
	if err := leases.Delete(t.Context(), "sink.chan"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []*relay.Event{a2, b1} { // in queue order
		d := next(t, s1, "chan")
		if d.Event.ID != want.ID {
			t.Fatalf("after taking the sink back: %s (%s), want %s", d.Event.ID, d.Event.ConversationID, want.ID)
		}
		if err := d.Ack(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}
