package nats_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

// restartServer shuts ns down and starts a new server on the same port and
// store directory, as a nats-server restarted by its supervisor would be.
func restartServer(t *testing.T, ns *server.Server, dir string) *server.Server {
	t.Helper()
	port := ns.Addr().(*net.TCPAddr).Port
	ns.Shutdown()
	ns.WaitForShutdown()
	return startServer(t, dir, port)
}

// setQueueSubjects points the queue stream at other subjects, so that a
// publish of a delivery finds no stream (as a refused write would), or
// back at its own.
func setQueueSubjects(t *testing.T, js jetstream.JetStream, subjects ...string) {
	t.Helper()
	st, err := js.Stream(t.Context(), "CHATRELAY_QUEUE")
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.Subjects = subjects
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
}

// appendAsSender appends ev as a sender would: a 503 (relay.ErrUnavailable:
// NATS still recovering its streams after a restart) is tried again.
func appendAsSender(t *testing.T, s relay.Store, ev *relay.Event, sinks ...string) relay.Accepted {
	t.Helper()
	var acc relay.Accepted
	var err error
	relaytest.Eventually(t, 20*time.Second, "an append accepted", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		acc, err = s.Append(ctx, ev, sinks)
		if err != nil && !errors.Is(err, relay.ErrUnavailable) {
			t.Fatalf("Append: %v", err)
		}
		return err == nil
	})
	return acc
}

func lookupState(t *testing.T, s relay.Store, id, sink string) relay.DeliveryStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	rec, err := s.Lookup(ctx, id)
	if err != nil {
		t.Fatalf("Lookup(%s): %v", id, err)
	}
	for _, d := range rec.Deliveries {
		if d.Sink == sink {
			return d
		}
	}
	t.Fatalf("Lookup(%s): no delivery to %s in %+v", id, sink, rec.Deliveries)
	return relay.DeliveryStatus{}
}

// TestHalfAppendRetriedAfterRestartIsDeliveredOnce (issue 18, finding 1):
// the event is stored but queueing its delivery fails, so the sender gets
// an error and retries. The retry comes after a NATS restart (the queue
// stream's duplicate window, kept in the server's memory, is gone) and
// long after the first attempt by the store's own measure (Timeout is
// short): it must be answered "duplicate" and the delivery queued, once.
// Until then Lookup must not claim the delivery was made.
func TestHalfAppendRetriedAfterRestartIsDeliveredOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ns := startServer(t, dir, 0)
	opts := testOptions(ns.ClientURL())
	opts.Timeout = 200 * time.Millisecond
	s := open(t, opts)
	defer s.Close()
	// The test's own calls get a roomy deadline (a call without one gets
	// the short Timeout), so that a loaded machine does not fail them.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	appendOnce := func(ev *relay.Event) relay.Accepted {
		t.Helper()
		acc, err := s.Append(ctx, ev, []string{"s"})
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		return acc
	}
	ev := storetest.NewEvent(t, "A", 1)
	appendOnce(storetest.NewEvent(t, "B", 1)) // the sink's consumers exist

	js := jetStreamClient(t, ns.ClientURL())
	setQueueSubjects(t, js, "chatrelay.q.refused.>")
	if _, err := s.Append(ctx, ev, []string{"s"}); !errors.Is(err, relay.ErrUnavailable) {
		t.Fatalf("Append with the queue refusing: %v, want ErrUnavailable", err)
	}
	setQueueSubjects(t, js, "chatrelay.q.>")
	// Five times the store's Timeout later: the first attempt is long over.
	time.Sleep(5 * opts.Timeout)
	if st := lookupState(t, s, ev.ID, "s"); st.State != relay.StatePending {
		t.Fatalf("Lookup of the half-written event: %s, want pending (it was never queued)", st.State)
	}
	restartServer(t, ns, dir)
	relaytest.Eventually(t, 20*time.Second, "the store reconnects", func() bool { return s.Ready(t.Context()) == nil })

	retry := *ev
	retry.ID = storetest.NewEvent(t, "A", 1).ID
	if acc := appendAsSender(t, s, &retry, "s"); !acc.Duplicate || acc.ID != ev.ID {
		t.Fatalf("retry answered %+v, want duplicate of %s", acc, ev.ID)
	}
	ack(t, next(t, s, "s")) // B's turn, queued first
	d := next(t, s, "s")
	if d.Event.ID != ev.ID {
		t.Fatalf("delivered %s, want %s", d.Event.ID, ev.ID)
	}
	ack(t, d)
	// A second retry: the delivery is recorded; nothing is queued again.
	if acc := appendOnce(&retry); !acc.Duplicate || acc.ID != ev.ID {
		t.Fatalf("second retry answered %+v", acc)
	}
	nothingDue(t, s, "s", time.Second)
	if st := lookupState(t, s, ev.ID, "s"); st.State != relay.StateDelivered || st.Attempts != 1 {
		t.Fatalf("Lookup after delivery: %+v, want delivered after 1 attempt", st)
	}
}

// TestHalfAppendToTwoSinks (issue 18, findings 1 and 2, every routed
// sink): an event routed to two sinks is queued for one and refused for
// the other, so the sender gets an error. The queued delivery is made;
// NATS restarts (the queue stream's duplicate window, in the server's
// memory, is gone); the sender retries. The retry must queue the delivery
// that was never queued, once, and not the one already made.
func TestHalfAppendToTwoSinks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ns := startServer(t, dir, 0)
	s := open(t, testOptions(ns.ClientURL()))
	defer s.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	first := storetest.NewEvent(t, "B", 1) // the sinks' consumers exist
	mustAppend(t, s, first, "a", "b")

	js := jetStreamClient(t, ns.ClientURL())
	setQueueSubjects(t, js, "chatrelay.q.a.>")
	ev := storetest.NewEvent(t, "A", 1)
	if _, err := s.Append(ctx, ev, []string{"a", "b"}); !errors.Is(err, relay.ErrUnavailable) {
		t.Fatalf("Append with sink b's queue refusing: %v, want ErrUnavailable", err)
	}
	setQueueSubjects(t, js, "chatrelay.q.>")
	for _, want := range []string{first.ID, ev.ID} {
		if d := next(t, s, "a"); d.Event.ID != want {
			t.Fatalf("sink a: %s, want %s", d.Event.ID, want)
		} else {
			ack(t, d)
		}
	}
	ack(t, next(t, s, "b")) // first's
	if st := lookupState(t, s, ev.ID, "b"); st.State != relay.StatePending {
		t.Fatalf("Lookup of the delivery never queued: %s, want pending", st.State)
	}

	restartServer(t, ns, dir)
	relaytest.Eventually(t, 20*time.Second, "the store reconnects", func() bool { return s.Ready(t.Context()) == nil })
	retry := *ev
	retry.ID = storetest.NewEvent(t, "A", 1).ID
	if acc := appendAsSender(t, s, &retry, "a", "b"); !acc.Duplicate || acc.ID != ev.ID {
		t.Fatalf("retry answered %+v, want duplicate of %s", acc, ev.ID)
	}
	if d := next(t, s, "b"); d.Event.ID != ev.ID {
		t.Fatalf("sink b: %s, want %s", d.Event.ID, ev.ID)
	} else {
		ack(t, d)
	}
	nothingDue(t, s, "a", time.Second)
	nothingDue(t, s, "b", 100*time.Millisecond)
	for _, sink := range []string{"a", "b"} {
		if st := lookupState(t, s, ev.ID, sink); st.State != relay.StateDelivered || st.Attempts != 1 {
			t.Errorf("Lookup of %s's delivery: %+v, want delivered after 1 attempt", sink, st)
		}
	}
}

// TestRepeatAfterRestartIsNotDeliveredAgain (issue 18, finding 2a): an
// event delivered (and settled every way a delivery can be), NATS
// restarted gracefully, the same bodies posted again: each is answered
// "duplicate" and nothing is delivered again.
func TestRepeatAfterRestartIsNotDeliveredAgain(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ns := startServer(t, dir, 0)
	s := open(t, testOptions(ns.ClientURL()))
	defer s.Close()
	delivered, parked, purged := storetest.NewEvent(t, "A", 1), storetest.NewEvent(t, "B", 1), storetest.NewEvent(t, "C", 1)
	for _, ev := range []*relay.Event{delivered, parked, purged} {
		mustAppend(t, s, ev, "s")
	}
	for range 3 {
		d := next(t, s, "s")
		switch d.Event.ID {
		case delivered.ID:
			ack(t, d)
		default:
			if err := d.Term(t.Context(), "HTTP 400"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n, err := s.Purge(t.Context(), []string{relay.DeadLetterID(purged.ID, "s")}); err != nil || n != 1 {
		t.Fatalf("Purge = %d, %v", n, err)
	}

	restartServer(t, ns, dir)
	relaytest.Eventually(t, 20*time.Second, "the store reconnects", func() bool { return s.Ready(t.Context()) == nil })
	for _, ev := range []*relay.Event{delivered, parked, purged} {
		again := *ev
		again.ID = storetest.NewEvent(t, "X", 0).ID
		if acc := appendAsSender(t, s, &again, "s"); !acc.Duplicate || acc.ID != ev.ID {
			t.Fatalf("repeat of %s answered %+v", ev.ID, acc)
		}
	}
	nothingDue(t, s, "s", time.Second)
	for id, want := range map[string]string{delivered.ID: relay.StateDelivered, parked.ID: relay.StateDead, purged.ID: relay.StatePurged} {
		if st := lookupState(t, s, id, "s"); st.State != want {
			t.Errorf("Lookup(%s) = %s, want %s", id, st.State, want)
		}
	}
}

// TestRepeatCopyOfSettledDeliveryIsDropped: a delivery queued again by a
// repair that raced its first copy (hdrRepeat) is dropped when it comes
// out if its record shows the first copy settled, and its conversation's
// next turn goes out.
func TestRepeatCopyOfSettledDeliveryIsDropped(t *testing.T) {
	t.Parallel()
	ns := startServer(t, "", 0)
	s := open(t, testOptions(ns.ClientURL()))
	defer s.Close()
	a1, a2 := storetest.NewEvent(t, "A", 1), storetest.NewEvent(t, "A", 2)
	mustAppend(t, s, a1, "s")
	d := next(t, s, "s")
	ack(t, d)

	// The repair's copy, as a second replica's queueMissing would have
	// published it after checking before the first copy settled.
	js := jetStreamClient(t, ns.ClientURL())
	orig, err := js.Stream(t.Context(), "CHATRELAY_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	m, err := orig.GetMsg(t.Context(), 0, jetstream.WithGetMsgSubject("chatrelay.ev.*."+a1.ID))
	if err != nil {
		t.Fatal(err)
	}
	cp := natsgo.NewMsg("chatrelay.q.s.003." + a1.ID)
	cp.Data = m.Data
	for _, k := range []string{"Chatrelay-Id", "Chatrelay-Topic", "Chatrelay-Received", "Chatrelay-Conversation"} {
		cp.Header.Set(k, m.Header.Get(k))
	}
	cp.Header.Set("Chatrelay-Repeat", "1")
	if _, err := js.PublishMsg(t.Context(), cp); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, a2, "s")
	if d := next(t, s, "s"); d.Event.ID != a2.ID {
		t.Fatalf("next delivery %s, want %s (the repeat of %s dropped)", d.Event.ID, a2.ID, a1.ID)
	} else {
		ack(t, d)
	}
	nothingDue(t, s, "s", 300*time.Millisecond)
}

// TestReplicaKilledAfterNATSRestart (issue 18, finding 2b): two replicas
// take a steady load, NATS restarts, and soon after one replica is cut off
// for good (as a kill looks to the others). The survivor reaps the dead
// replica's lease and repairs its last appends: nothing may be delivered
// again after a newer turn, every accepted event arrives, and repeats stay
// within the deliveries in flight at the faults.
func TestReplicaKilledAfterNATSRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ns := startServer(t, dir, 0)
	port := ns.Addr().(*net.TCPAddr).Port
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	rec := newRecorder()
	a := startInstance(t, "a", url, rec, nil)
	cut := newProxy(t, fmt.Sprintf("127.0.0.1:%d", port))
	b := startInstance(t, "b", cut.url(), rec, nil)

	const convs = 6
	var bDown atomic.Bool
	client := &http.Client{Timeout: 10 * time.Second}
	stop := make(chan struct{})
	var mu sync.Mutex
	want := map[string][]int{}
	var wg sync.WaitGroup
	for c := range convs {
		wg.Go(func() {
			conv := fmt.Sprintf("conv-%d", c)
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-time.After(30 * time.Millisecond):
				}
				target := []*instance{a, b}[(c+n)%2]
				for attempt := 0; ; attempt++ {
					if attempt > 400 {
						t.Errorf("%s turn %d was never accepted", conv, n)
						return
					}
					if target == b && bDown.Load() {
						target = a
					}
					status, _, _, err := post(client, target.http.URL, eventBody(conv, n))
					if err == nil && status == http.StatusOK {
						break
					}
					if target == a {
						target = b
					} else {
						target = a
					}
					time.Sleep(20 * time.Millisecond)
				}
				mu.Lock()
				want[conv] = append(want[conv], n)
				mu.Unlock()
			}
		})
	}
	time.Sleep(time.Second)
	restartServer(t, ns, dir)
	relaytest.Eventually(t, 20*time.Second, "both replicas reconnect", func() bool {
		return a.store.Ready(t.Context()) == nil && b.store.Ready(t.Context()) == nil
	})
	time.Sleep(300 * time.Millisecond)
	bDown.Store(true)
	b.sink.crashed.Store(true)
	cut.cut()
	time.Sleep(2 * testOptions(url).AckWait)
	close(stop)
	wg.Wait()
	b.stop()

	got := rec.waitFor(t, want, 60*time.Second)
	dups := checkOrder(t, got)
	total := 0
	for _, ns := range want {
		total += len(ns)
	}
	t.Logf("%d events accepted, %d deliveries, %d repeated", total, len(got), dups)
	// In flight at the faults: one per conversation at the restart and at
	// the kill.
	if dups > 2*convs {
		t.Errorf("%d repeated deliveries; at most %d (one per conversation per fault) are expected", dups, 2*convs)
	}
}

func ack(t *testing.T, d *relay.Delivery) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := d.Ack(ctx); err != nil {
		t.Fatalf("Ack(%s): %v", d.Event.ID, err)
	}
}

// TestStaleHolderIsFenced (issue 18, finding 3): a replica holds a
// conversation's head when its link to NATS goes silent (a frozen process,
// a half-open connection: nothing is closed, nothing gets through). The
// other replica takes the head after AckWait and delivers the
// conversation's next turn. The silent replica, even once its link works
// again, must neither start a send of the old head (Hold) nor settle it:
// its late ack would land on whatever the server hands out by then.
func TestStaleHolderIsFenced(t *testing.T) {
	t.Parallel()
	ns := startServer(t, "", 0)
	opts := testOptions(ns.ClientURL())
	opts.AckWait = 900 * time.Millisecond
	logger, logs := relaytest.NewLogger()
	opts.Logger = logger
	defer func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	}()
	link := newProxy(t, ns.Addr().String())
	viaLink := opts
	viaLink.URL = link.url()
	stale, other := open(t, viaLink), open(t, opts)
	defer stale.Close()
	defer other.Close()
	a1, a2, a3 := storetest.NewEvent(t, "A", 1), storetest.NewEvent(t, "A", 2), storetest.NewEvent(t, "A", 3)
	for _, ev := range []*relay.Event{a1, a2, a3} {
		mustAppend(t, other, ev, "s")
	}
	held := next(t, stale, "s")
	if held.Event.ID != a1.ID {
		t.Fatalf("got %s, want %s", held.Event.ID, a1.ID)
	}
	holder, ok := held.Settler.(relay.Holder)
	if !ok {
		t.Fatal("a NATS delivery does not implement relay.Holder")
	}
	sendCtx, unhold, err := holder.Hold(t.Context())
	if err != nil {
		t.Fatalf("Hold right after Next: %v", err)
	}

	link.freeze()
	taken := next(t, other, "s") // after AckWait the server hands a1 over
	if taken.Event.ID != a1.ID {
		t.Fatalf("the other replica got %s, want %s", taken.Event.ID, a1.ID)
	}
	ack(t, taken)
	d2 := next(t, other, "s")
	if d2.Event.ID != a2.ID {
		t.Fatalf("next turn %s, want %s", d2.Event.ID, a2.ID)
	}
	// The stale replica's send under its hold was cut short...
	select {
	case <-sendCtx.Done():
		if !errors.Is(context.Cause(sendCtx), relay.ErrNotHeld) {
			t.Fatalf("send context ended with %v, want ErrNotHeld", context.Cause(sendCtx))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the send context outlived the hold")
	}
	unhold()
	link.thaw()
	// ... and with its link back, it may neither send nor settle a1.
	if _, _, err := holder.Hold(t.Context()); !errors.Is(err, relay.ErrNotHeld) {
		t.Fatalf("Hold after the hold lapsed: %v, want ErrNotHeld", err)
	}
	if err := held.Ack(t.Context()); !errors.Is(err, relay.ErrNotHeld) {
		t.Fatalf("late Ack: %v, want ErrNotHeld", err)
	}
	// a2 is still the other replica's: its ack goes through, and a3 is
	// next, once. (The stale replica closes first: it pulls again since
	// its link is back, and would take a3.)
	if err := stale.Close(); err != nil {
		t.Fatal(err)
	}
	ack(t, d2)
	d3 := next(t, other, "s")
	if d3.Event.ID != a3.ID {
		t.Fatalf("after a2: %s (attempts %d), want %s; a1 %s a2 %s", d3.Event.ID, d3.Attempts, a3.ID, a1.ID, a2.ID)
	}
	ack(t, d3)
	nothingDue(t, other, "s", 2*opts.AckWait)
}

// fullServer starts an in-process server whose JetStream may store only
// maxStore bytes in all, in dir.
func fullServer(t *testing.T, maxStore int64) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		JetStreamMaxStore: maxStore,
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	return ns
}

// fill appends events routed to sink until the server refuses one.
func fill(t *testing.T, s relay.Store, sink string) int {
	t.Helper()
	for i := range 100000 {
		ev := storetest.NewEvent(t, "filler", i)
		ev.Body = append(ev.Body[:len(ev.Body)-1], fmt.Sprintf(`,"pad":%q}`, strings.Repeat("x", 2048))...)
		if _, err := s.Append(t.Context(), ev, []string{sink}); err != nil {
			if !errors.Is(err, relay.ErrFull) {
				t.Fatalf("Append on a full server: %v, want ErrFull", err)
			}
			return i
		}
	}
	t.Fatal("the server never filled up")
	return 0
}

// refusingSink answers every send with a permanent error and records when
// each came.
type refusingSink struct {
	mu    sync.Mutex
	times []time.Time
}

func (s *refusingSink) Name() string { return "s" }
func (s *refusingSink) Send(context.Context, *relay.Event) error {
	s.mu.Lock()
	s.times = append(s.times, time.Now())
	s.mu.Unlock()
	return relay.Permanent(errors.New("HTTP 400: no"), relay.ReasonClientError)
}

func (s *refusingSink) sent() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.times)
}

// TestFullServerNoRequestStorm (issue 18, finding 4): JetStream is full, so
// a delivery the sink refuses for good cannot be parked in the dead
// letters. It is handed back with a delay of at least Options.Backoff's
// Initial, growing, not at once: the sink must not be flooded with the
// same request (a plain nak sent it about a thousand times a second). Once
// there is room it is parked. What is asserted is a lower bound on each
// gap between two sends, which a loaded machine only makes longer.
func TestFullServerNoRequestStorm(t *testing.T) {
	t.Parallel()
	ns := fullServer(t, 1<<20)
	opts := testOptions(ns.ClientURL())
	opts.Backoff = relay.RetryPolicy{Initial: 100 * time.Millisecond, Max: time.Second}
	s := open(t, opts)
	defer s.Close()
	ev := storetest.NewEvent(t, "A", 1)
	mustAppend(t, s, ev, "s")
	n := fill(t, s, "other")

	sink := &refusingSink{}
	logger, logs := relaytest.NewLogger()
	d, err := relay.NewDispatcher(relay.DispatcherConfig{
		Sink: sink, Queue: s.Queue("s"), Concurrency: 4, Logger: logger,
		Retry:   relay.RetryPolicy{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond, MaxAge: time.Hour},
		Metrics: relay.NewMetrics(prometheus.NewRegistry()),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	const sends = 5
	relaytest.Eventually(t, 20*time.Second, "the refused delivery sent five times", func() bool { return len(sink.sent()) >= sends })
	times := sink.sent()
	t.Logf("server full after %d events; the refused delivery was sent %d times in %s", n, len(times), times[len(times)-1].Sub(times[0]))
	for i := 1; i < len(times); i++ {
		// The server hands it out again no sooner than the delay of the
		// nak, which came after the send. (Its timer may round a little:
		// a tenth of the delay is allowed for that.)
		if gap := times[i].Sub(times[i-1]); gap < opts.Backoff.Initial*9/10 {
			t.Fatalf("sends %d and %d of a delivery that cannot be parked came %s apart; want at least the backoff's %s\n%s",
				i, i+1, gap, opts.Backoff.Initial, tail(logs.String(), 2000))
		}
	}
	if dead, err := s.ListDead(t.Context(), "s", 0); err != nil || len(dead) != 0 {
		t.Fatalf("dead letters on a full server: %v, %v", dead, err)
	}

	// Room again: the filler events go (acked by a consumer of their own).
	js := jetStreamClient(t, ns.ClientURL())
	for _, stream := range []string{"CHATRELAY_QUEUE", "CHATRELAY_EVENTS"} {
		st, err := js.Stream(t.Context(), stream)
		if err != nil {
			t.Fatal(err)
		}
		filter := "chatrelay.q.other.>"
		if stream == "CHATRELAY_EVENTS" {
			filter = ""
		}
		if err := st.Purge(t.Context(), jetstream.WithPurgeSubject(filter)); err != nil {
			t.Fatal(err)
		}
	}
	relaytest.Eventually(t, 20*time.Second, "the delivery parked once there is room", func() bool {
		dead, err := s.ListDead(t.Context(), "s", 0)
		return err == nil && len(dead) == 1 && dead[0].EventID == ev.ID
	})
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// accountLimitedServer starts an in-process server where the store's user
// belongs to an account allowed maxStore bytes of JetStream file storage.
func accountLimitedServer(t *testing.T, maxStore int64) (*server.Server, string) {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, `listen: 127.0.0.1:-1
jetstream: {store_dir: %q}
accounts: {
  RELAY: {jetstream: {max_file: %d, max_mem: 1MB}, users: [{user: relay, password: relay-pass}]}
}
`, t.TempDir(), maxStore), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	o.NoLog, o.NoSigs = true, true
	ns, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	addr := ns.Addr().(*net.TCPAddr)
	return ns, fmt.Sprintf("nats://relay:relay-pass@127.0.0.1:%d", addr.Port)
}

// TestReadyWhenJetStreamRefuses (issue 18, finding 5): when the server's
// or the account's storage limit refuses every append, Ready says so
// (relay.ErrFull), and says ready again once there is room.
func TestReadyWhenJetStreamRefuses(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		start func(t *testing.T) string // the URL of a server with a 1 MiB limit
	}{
		{"server limit", func(t *testing.T) string { return fullServer(t, 1<<20).ClientURL() }},
		{"account limit", func(t *testing.T) string { _, url := accountLimitedServer(t, 1<<20); return url }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := tc.start(t)
			s := open(t, testOptions(url))
			defer s.Close()
			if err := s.Ready(t.Context()); err != nil {
				t.Fatalf("Ready on an empty server: %v", err)
			}
			fill(t, s, "other")
			if err := s.Ready(t.Context()); !errors.Is(err, relay.ErrFull) {
				t.Fatalf("Ready right after an append was refused: %v, want ErrFull", err)
			}
			// Still full when the last append's outcome is old news: the
			// probe finds it.
			time.Sleep(time.Second) // Ready trusts an append's outcome for 1s
			if err := s.Ready(t.Context()); !errors.Is(err, relay.ErrFull) {
				t.Fatalf("Ready a while after: %v, want ErrFull", err)
			}
			js := jetStreamClient(t, url)
			for _, stream := range []string{"CHATRELAY_QUEUE", "CHATRELAY_EVENTS"} {
				st, err := js.Stream(t.Context(), stream)
				if err != nil {
					t.Fatal(err)
				}
				if err := st.Purge(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			relaytest.Eventually(t, 20*time.Second, "Ready once there is room", func() bool { return s.Ready(t.Context()) == nil })
			mustAppend(t, s, storetest.NewEvent(t, "A", 1), "s")
		})
	}
}

// TestNakWithoutRecordStillSchedules (issue 18, finding 7): when only the
// record of a failed attempt cannot be written, the retry is scheduled all
// the same; Nak reports success (a warning says the history is short)
// rather than a failure the dispatcher would log as "could not schedule".
func TestNakWithoutRecordStillSchedules(t *testing.T) {
	t.Parallel()
	ns := startServer(t, "", 0)
	opts := testOptions(ns.ClientURL())
	logger, logs := relaytest.NewLogger()
	opts.Logger = logger
	s := open(t, opts)
	defer s.Close()
	ev := storetest.NewEvent(t, "A", 1)
	mustAppend(t, s, ev, "s")
	d := next(t, s, "s")

	// The state bucket refuses writes from now on.
	js := jetStreamClient(t, ns.ClientURL())
	st, err := js.Stream(t.Context(), "KV_CHATRELAY_STATE")
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.Sealed = true
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if err := d.Nak(t.Context(), 100*time.Millisecond, "HTTP 503"); err != nil {
		t.Fatalf("Nak with the record refused: %v, want the retry scheduled", err)
	}
	if !strings.Contains(logs.String(), "attempt could not be recorded") {
		t.Fatalf("no warning about the missing record:\n%s", logs.String())
	}
	if again := next(t, s, "s"); again.Event.ID != ev.ID {
		t.Fatalf("after the nak: %s, want %s again", again.Event.ID, ev.ID)
	}
}
