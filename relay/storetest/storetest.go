// Package storetest is the conformance suite every relay.Store passes: the
// embedded bbolt store and the NATS JetStream store run the same tests.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
)

// Harness is one store under test.
type Harness struct {
	Store relay.Store
	// Reopen closes the store and opens it again on the same data,
	// returning the new store (a restart).
	Reopen func(t *testing.T) relay.Store
	// Clock is the fake clock the store schedules by, or nil when the
	// store waits in real time (then delays in the tests are short and
	// real).
	Clock *clockwork.FakeClock
}

// Factory opens a fresh, empty store for one test. Stores that take a clock
// use the one given.
type Factory func(t *testing.T, clock *clockwork.FakeClock) Harness

// Run runs the whole suite.
func Run(t *testing.T, open Factory) {
	t.Run("AppendNextAck", func(t *testing.T) { t.Parallel(); testAppendNextAck(t, open) })
	t.Run("Dedupe", func(t *testing.T) { t.Parallel(); testDedupe(t, open) })
	t.Run("ConversationOrder", func(t *testing.T) { t.Parallel(); testConversationOrder(t, open) })
	t.Run("NakDelaysOnlyItsConversation", func(t *testing.T) { t.Parallel(); testNak(t, open) })
	t.Run("TermRequeuePurge", func(t *testing.T) { t.Parallel(); testDeadLetters(t, open) })
	t.Run("Release", func(t *testing.T) { t.Parallel(); testRelease(t, open) })
	t.Run("NextWithDoneContextDoesNotWait", func(t *testing.T) { t.Parallel(); testNextDone(t, open) })
	t.Run("TryNextDoesNotWait", func(t *testing.T) { t.Parallel(); testTryNext(t, open) })
	t.Run("Restart", func(t *testing.T) { t.Parallel(); testRestart(t, open) })
	t.Run("KV", func(t *testing.T) { t.Parallel(); testKV(t, open) })
	t.Run("ThreadsBothWays", func(t *testing.T) { t.Parallel(); testThreads(t, open) })
	t.Run("Reconcile", func(t *testing.T) { t.Parallel(); testReconcile(t, open) })
	t.Run("LookupAndStats", func(t *testing.T) { t.Parallel(); testLookup(t, open) })
	t.Run("ConcurrentAppendsKeepOrder", func(t *testing.T) { t.Parallel(); testConcurrent(t, open) })
	t.Run("AgentReplies", func(t *testing.T) { t.Parallel(); testAgentReplies(t, open) })
	t.Run("Swap", func(t *testing.T) { t.Parallel(); testSwap(t, open) })
	t.Run("SwapRace", func(t *testing.T) { t.Parallel(); testSwapRace(t, open) })
	t.Run("RacingClaims", func(t *testing.T) { t.Parallel(); testRacingClaims(t, open) })
}

// NewEvent builds a chat event of conversation conv whose body is unique by
// n.
func NewEvent(t testing.TB, conv string, n int) *relay.Event {
	t.Helper()
	body := fmt.Sprintf(`{"conversation_id":%q,"chatbot_id":"bot","messages":[{"role":"user","content":"q%d"}],"answer":{"role":"assistant","content":"a%d","score":0.5}}`, conv, n, n)
	ev, err := relay.DecodeEvent([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	ev.ID = newID(t)
	ev.Topic = relay.TopicChat
	ev.ReceivedAt = time.Now()
	return ev
}

func newID(t testing.TB) string {
	t.Helper()
	id, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

func mustAppend(t *testing.T, s relay.Store, ev *relay.Event, sinks ...string) relay.Accepted {
	t.Helper()
	acc, err := s.Append(t.Context(), ev, sinks)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return acc
}

// next waits (up to 10 s) for the sink's next delivery.
func next(t *testing.T, s relay.Store, sink string) *relay.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	d, err := s.Queue(sink).Next(ctx)
	if err != nil {
		t.Fatalf("Next(%s): %v", sink, err)
	}
	return d
}

// none asserts that no delivery is due for the sink within a short wait.
func none(t *testing.T, s relay.Store, sink string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
	defer cancel()
	d, err := s.Queue(sink).Next(ctx)
	if err == nil {
		_ = d.Release(t.Context())
		t.Fatalf("Next(%s) gave %s (%s), want nothing due", sink, d.Event.ID, d.Event.ConversationID)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next(%s): %v, want deadline exceeded", sink, err)
	}
}

func ack(t *testing.T, d *relay.Delivery) {
	t.Helper()
	if err := d.Ack(t.Context()); err != nil {
		t.Fatalf("Ack: %v", err)
	}
}

func testAppendNextAck(t *testing.T, open Factory) {
	h := open(t, clockwork.NewFakeClock())
	ev := NewEvent(t, "c1", 1)
	acc := mustAppend(t, h.Store, ev, "a", "b")
	if acc.Duplicate || acc.ID != ev.ID {
		t.Fatalf("Append = %+v, want new event %s", acc, ev.ID)
	}
	for _, sink := range []string{"a", "b"} {
		d := next(t, h.Store, sink)
		if d.Event.ID != ev.ID || string(d.Event.Body) != string(ev.Body) || d.Event.Topic != relay.TopicChat {
			t.Fatalf("sink %s got %s %q", sink, d.Event.ID, d.Event.Body)
		}
		if d.Event.ConversationID != "c1" || d.Event.Question() != "q1" {
			t.Fatalf("parsed view lost: conv %q question %q", d.Event.ConversationID, d.Event.Question())
		}
		if d.Attempts != 0 || d.Sink != sink {
			t.Fatalf("delivery = attempts %d sink %s", d.Attempts, d.Sink)
		}
		ack(t, d)
		if err := d.Ack(t.Context()); err == nil {
			t.Fatal("second Ack of one delivery succeeded")
		}
		none(t, h.Store, sink)
	}
}

func testDedupe(t *testing.T, open Factory) {
	h := open(t, clockwork.NewFakeClock())
	ev := NewEvent(t, "c1", 1)
	first := mustAppend(t, h.Store, ev, "a")

	again := *ev
	again.ID = newID(t)
	dup := mustAppend(t, h.Store, &again, "a")
	if !dup.Duplicate || dup.ID != first.ID {
		t.Fatalf("same topic+body: %+v, want duplicate of %s", dup, first.ID)
	}
	// The topic header is not signed: the same body under any other topic
	// is the same event (SPEC §4), or a captured chat body could be
	// replayed as an escalation.
	for _, topic := range []string{relay.TopicEscalation, relay.TopicLead, "made-up-topic"} {
		other := *ev
		other.ID, other.Topic = newID(t), topic
		if acc := mustAppend(t, h.Store, &other, "a"); !acc.Duplicate || acc.ID != first.ID {
			t.Fatalf("same body, topic %q: %+v, want duplicate of %s", topic, acc, first.ID)
		}
	}
	// A different body is a new event.
	changed := *ev
	changed.ID, changed.Body = newID(t), append(append([]byte(nil), ev.Body...), ' ')
	if acc := mustAppend(t, h.Store, &changed, "a"); acc.Duplicate {
		t.Fatalf("a different body answered duplicate of %s", acc.ID)
	}
	if d := next(t, h.Store, "a"); d.Event.ID != first.ID || d.Event.Topic != ev.Topic {
		t.Fatalf("first delivery is %s (%s), want %s (%s)", d.Event.ID, d.Event.Topic, first.ID, ev.Topic)
	} else {
		ack(t, d)
	}
	ack(t, next(t, h.Store, "a"))
	none(t, h.Store, "a") // the duplicates were not queued
}

func testConversationOrder(t *testing.T, open Factory) {
	h := open(t, clockwork.NewFakeClock())
	a1, a2, b1 := NewEvent(t, "A", 1), NewEvent(t, "A", 2), NewEvent(t, "B", 1)
	for _, ev := range []*relay.Event{a1, a2, b1} {
		mustAppend(t, h.Store, ev, "s")
	}
	d1 := next(t, h.Store, "s")
	d2 := next(t, h.Store, "s")
	got := []string{d1.Event.ID, d2.Event.ID}
	if !slices.Contains(got, a1.ID) || !slices.Contains(got, b1.ID) {
		t.Fatalf("first two deliveries = %v, want the heads %s and %s", got, a1.ID, b1.ID)
	}
	none(t, h.Store, "s") // a2 waits for a1
	for _, d := range []*relay.Delivery{d1, d2} {
		ack(t, d)
	}
	d3 := next(t, h.Store, "s")
	if d3.Event.ID != a2.ID {
		t.Fatalf("third delivery %s, want %s", d3.Event.ID, a2.ID)
	}
	ack(t, d3)
}

func testNak(t *testing.T, open Factory) {
	clock := clockwork.NewFakeClock()
	h := open(t, clock)
	delay := time.Hour
	if h.Clock == nil {
		// Real time (a server's redelivery): long enough that B is appended
		// and handed out well before A is due again, even on a busy machine.
		delay = 2 * time.Second
	}
	a1, a2, b1 := NewEvent(t, "A", 1), NewEvent(t, "A", 2), NewEvent(t, "B", 1)
	mustAppend(t, h.Store, a1, "s")
	mustAppend(t, h.Store, a2, "s")
	d := next(t, h.Store, "s")
	if d.Event.ID != a1.ID {
		t.Fatalf("head %s, want %s", d.Event.ID, a1.ID)
	}
	if err := d.Nak(t.Context(), delay, "HTTP 503"); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, h.Store, b1, "s")
	db := next(t, h.Store, "s")
	if db.Event.ID != b1.ID {
		t.Fatalf("while A backs off, got %s, want B's %s", db.Event.ID, b1.ID)
	}
	ack(t, db)
	if h.Clock != nil {
		none(t, h.Store, "s")
		h.Clock.Advance(delay)
	}
	d = next(t, h.Store, "s")
	if d.Event.ID != a1.ID || d.Attempts != 1 || d.LastError != "HTTP 503" {
		t.Fatalf("after the delay got %s attempts %d last error %q, want %s, 1, HTTP 503",
			d.Event.ID, d.Attempts, d.LastError, a1.ID)
	}
	ack(t, d)
	ack(t, next(t, h.Store, "s")) // a2
}

func testDeadLetters(t *testing.T, open Factory) {
	h := open(t, clockwork.NewFakeClock())
	ev := NewEvent(t, "A", 1)
	later := NewEvent(t, "A", 2)
	mustAppend(t, h.Store, ev, "s", "t")
	mustAppend(t, h.Store, later, "s")
	d := next(t, h.Store, "s")
	if err := d.Term(t.Context(), "HTTP 400: bad payload"); err != nil {
		t.Fatal(err)
	}
	// The next turn of the conversation is not held up by the parked one.
	d2 := next(t, h.Store, "s")
	if d2.Event.ID != later.ID {
		t.Fatalf("after parking the head got %s, want %s", d2.Event.ID, later.ID)
	}
	ack(t, d2)

	dead, err := h.Store.ListDead(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	wantID := relay.DeadLetterID(ev.ID, "s")
	if len(dead) != 1 || dead[0].ID != wantID || dead[0].Reason != "HTTP 400: bad payload" ||
		dead[0].Sink != "s" || dead[0].ConversationID != "A" || dead[0].Topic != relay.TopicChat {
		t.Fatalf("ListDead = %+v", dead)
	}
	if other, _ := h.Store.ListDead(t.Context(), "t", 0); len(other) != 0 {
		t.Fatalf("ListDead(t) = %+v, want none", other)
	}
	dl, dev, err := h.Store.GetDead(t.Context(), wantID)
	if err != nil || dl.ID != wantID || string(dev.Body) != string(ev.Body) {
		t.Fatalf("GetDead = %+v, %v, %v", dl, dev, err)
	}
	if _, _, err := h.Store.GetDead(t.Context(), "nope.s"); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("GetDead(unknown) err = %v, want ErrNotFound", err)
	}
	waitStats(t, h.Store, "s", func(st relay.QueueStats) bool { return st.Dead == 1 })

	n, err := h.Store.Requeue(t.Context(), []string{wantID, "nope.s"})
	if err != nil || n != 1 {
		t.Fatalf("Requeue = %d, %v; want 1", n, err)
	}
	d = next(t, h.Store, "s")
	if d.Event.ID != ev.ID || d.Attempts != 0 {
		t.Fatalf("replayed delivery %s attempts %d", d.Event.ID, d.Attempts)
	}
	if err := d.Term(t.Context(), "again"); err != nil {
		t.Fatal(err)
	}
	if n, err := h.Store.PurgeAll(t.Context(), "s"); err != nil || n != 1 {
		t.Fatalf("PurgeAll = %d, %v; want 1", n, err)
	}
	if dead, _ := h.Store.ListDead(t.Context(), "", 0); len(dead) != 0 {
		t.Fatalf("after purge: %+v", dead)
	}
	waitStats(t, h.Store, "s", func(st relay.QueueStats) bool { return st.Dead == 0 })
	ack(t, next(t, h.Store, "t"))
}

func testRelease(t *testing.T, open Factory) {
	h := open(t, clockwork.NewFakeClock())
	ev := NewEvent(t, "A", 1)
	mustAppend(t, h.Store, ev, "s")
	d := next(t, h.Store, "s")
	if err := d.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	d = next(t, h.Store, "s")
	if d.Event.ID != ev.ID {
		t.Fatalf("after release got %s", d.Event.ID)
	}
	ack(t, d)
}

func testNextDone(t *testing.T, open Factory) {
	h := open(t, clockwork.NewFakeClock())
	a, b := NewEvent(t, "A", 1), NewEvent(t, "B", 1)
	mustAppend(t, h.Store, a, "s")
	mustAppend(t, h.Store, b, "s")
	// Let the store make both due (stores may publish asynchronously).
	first := next(t, h.Store, "s")
	done, cancel := context.WithCancel(t.Context())
	cancel()
	var second *relay.Delivery
	relaytest.Eventually(t, 10*time.Second, "the other ready head", func() bool {
		d, err := h.Store.Queue("s").Next(done)
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("Next(done ctx): %v", err)
		}
		second = d
		return err == nil
	})
	if second.Event.ConversationID == first.Event.ConversationID {
		t.Fatalf("Next(done ctx) did not hand out the other ready head")
	}
	start := time.Now()
	if _, err := h.Store.Queue("s").Next(done); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next(done ctx) with nothing due: %v, want context.Canceled", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("Next(done ctx) waited")
	}
	ack(t, first)
	ack(t, second)
}

// testTryNext: TryNext hands out what is due now, and never waits: with
// nothing due (the other conversation's head is in flight) it returns nil
// at once, on a context that is not done.
func testTryNext(t *testing.T, open Factory) {
	h := open(t, clockwork.NewFakeClock())
	a, a2, b := NewEvent(t, "A", 1), NewEvent(t, "A", 2), NewEvent(t, "B", 1)
	mustAppend(t, h.Store, a, "s")
	mustAppend(t, h.Store, a2, "s")
	mustAppend(t, h.Store, b, "s")
	q := h.Store.Queue("s")
	first := next(t, h.Store, "s")
	var second *relay.Delivery
	// Stores may publish asynchronously: the other head comes when it is
	// due, and TryNext never waits for it.
	relaytest.Eventually(t, 10*time.Second, "the other conversation's head", func() bool {
		d, err := q.TryNext(t.Context())
		if err != nil {
			t.Fatalf("TryNext: %v", err)
		}
		second = d
		return d != nil
	})
	if second.Event.ConversationID == first.Event.ConversationID {
		t.Fatalf("TryNext handed out %s while its conversation's head was in flight", second.Event.ID)
	}
	start := time.Now()
	if d, err := q.TryNext(t.Context()); d != nil || err != nil {
		t.Fatalf("TryNext with both heads in flight = %v, %v; want nothing", d, err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("TryNext waited")
	}
	ack(t, first)
	ack(t, second)
}

func testRestart(t *testing.T, open Factory) {
	h := open(t, clockwork.NewFakeClock())
	var evs []*relay.Event
	for i := range 6 {
		ev := NewEvent(t, fmt.Sprintf("c%d", i%2), i)
		evs = append(evs, ev)
		mustAppend(t, h.Store, ev, "s")
	}
	ack(t, next(t, h.Store, "s"))
	inflight := next(t, h.Store, "s") // never settled: a crash mid-delivery
	_ = inflight

	s := h.Reopen(t)
	if _, err := s.Reconcile(t.Context(), []string{"s"}); err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for range 5 {
		d := next(t, s, "s")
		got[d.Event.ConversationID] = append(got[d.Event.ConversationID], d.Event.ID)
		ack(t, d)
	}
	none(t, s, "s")
	want := map[string][]string{}
	for _, ev := range evs[1:] {
		want[ev.ConversationID] = append(want[ev.ConversationID], ev.ID)
	}
	for conv := range want {
		if !slices.Equal(got[conv], want[conv]) {
			t.Fatalf("after restart conversation %s delivered %v, want %v", conv, got[conv], want[conv])
		}
	}
	// The dedupe index survives too.
	again := *evs[0]
	again.ID = newID(t)
	if acc, err := s.Append(t.Context(), &again, []string{"s"}); err != nil || !acc.Duplicate {
		t.Fatalf("after restart: Append = %+v, %v; want duplicate", acc, err)
	}
}

func testKV(t *testing.T, open Factory) {
	h := open(t, clockwork.NewFakeClock())
	kv := h.Store.KV("slack-1")
	if _, ok, err := kv.Get(t.Context(), "conv"); err != nil || ok {
		t.Fatalf("Get(missing) = %v, %v", ok, err)
	}
	if err := kv.Put(t.Context(), "conv", "1700000000.000100"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := h.Store.KV("other").Get(t.Context(), "conv"); ok {
		t.Fatal("namespaces are not separate")
	}
	s := h.Reopen(t)
	v, ok, err := s.KV("slack-1").Get(t.Context(), "conv")
	if err != nil || !ok || v != "1700000000.000100" {
		t.Fatalf("after restart Get = %q, %v, %v", v, ok, err)
	}
}

// testThreads: the relay's books (relay.Books) keep a conversation's
// thread both ways through the store's key/value facility, across a
// restart: conversation → thread for the next turn, thread → sink and
// conversation for a reply posted in it. A thread a sink recorded before
// the relay kept the books is read and then found both ways too.
func testThreads(t *testing.T, open Factory) {
	h := open(t, clockwork.NewFakeClock())
	ctx := t.Context()
	conv := relay.ThreadConversation{ConversationID: "conv-a", ChatbotID: "bot-1"}
	books := relay.NewBooks(h.Store.KV("slack-1"), "slack-1", nil)
	if err := books.SetThread(ctx, "C0123", conv, "1700000000.000100"); err != nil {
		t.Fatal(err)
	}
	if err := h.Store.KV("discord-1").Put(ctx, "thread:42:conv-b", "1234567890"); err != nil { // as the Discord sink wrote it
		t.Fatal(err)
	}
	s := h.Reopen(t)
	books = relay.NewBooks(s.KV("slack-1"), "slack-1", nil)
	if th, err := books.Thread(ctx, "C0123", conv); err != nil || th != "1700000000.000100" {
		t.Fatalf("after restart Thread = %q, %v", th, err)
	}
	threads := relay.StoreThreads{KV: s.KV}
	got, ok, err := threads.ThreadConversation(ctx, "slack-1", "1700000000.000100")
	if err != nil || !ok || got != conv {
		t.Fatalf("after restart ThreadConversation = %+v, %v, %v; want %+v", got, ok, err, conv)
	}
	if _, ok, err := threads.ThreadConversation(ctx, "discord-1", "1700000000.000100"); ok || err != nil {
		t.Fatalf("another sink's thread: %v, %v", ok, err)
	}
	if _, ok, err := threads.ThreadConversation(ctx, "slack-1", "1700000000.999999"); ok || err != nil {
		t.Fatalf("a thread the relay did not open: %v, %v", ok, err)
	}
	other := relay.NewBooks(s.KV("discord-1"), "discord-1", nil)
	convB := relay.ThreadConversation{ConversationID: "conv-b", ChatbotID: "bot-2"}
	if th, err := other.Thread(ctx, "42", convB); err != nil || th != "1234567890" {
		t.Fatalf("the earlier record: Thread = %q, %v", th, err)
	}
	if got, ok, err := threads.ThreadConversation(ctx, "discord-1", "1234567890"); err != nil || !ok || got != convB {
		t.Fatalf("the earlier record, looked up: %+v, %v, %v", got, ok, err)
	}
}

func testReconcile(t *testing.T, open Factory) {
	h := open(t, clockwork.NewFakeClock())
	ev := NewEvent(t, "A", 1)
	mustAppend(t, h.Store, ev, "kept", "gone")
	s := h.Reopen(t)
	moved, err := s.Reconcile(t.Context(), []string{"kept"})
	if err != nil || moved != 1 {
		t.Fatalf("Reconcile = %d, %v; want 1 moved", moved, err)
	}
	dead, err := s.ListDead(t.Context(), "gone", 0)
	if err != nil || len(dead) != 1 || dead[0].Reason != "sink removed" {
		t.Fatalf("dead letters of the removed sink: %+v, %v", dead, err)
	}
	ack(t, next(t, s, "kept"))
	// A dead letter of a sink that is not configured is not replayed.
	if n, err := s.RequeueAll(t.Context(), "gone"); err != nil || n != 0 {
		t.Fatalf("RequeueAll(removed sink) = %d, %v; want 0", n, err)
	}
}

func testLookup(t *testing.T, open Factory) {
	h := open(t, clockwork.NewFakeClock())
	ev := NewEvent(t, "A", 1)
	mustAppend(t, h.Store, ev, "a", "b")
	ack(t, next(t, h.Store, "a"))
	waitStats(t, h.Store, "b", func(st relay.QueueStats) bool { return st.Depth == 1 && !st.Oldest.IsZero() })
	waitStats(t, h.Store, "a", func(st relay.QueueStats) bool { return st.Depth == 0 })

	rec, err := h.Store.Lookup(t.Context(), ev.ID)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, d := range rec.Deliveries {
		states[d.Sink] = d.State
	}
	if string(rec.Event.Body) != string(ev.Body) || states["a"] != relay.StateDelivered || states["b"] != relay.StatePending {
		t.Fatalf("Lookup = %q %v", rec.Event.Body, states)
	}
	if _, err := h.Store.Lookup(t.Context(), "nope"); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("Lookup(unknown) err = %v", err)
	}
	recent, err := h.Store.Recent(t.Context(), "", 10)
	if err != nil || len(recent) != 1 || recent[0].ID != ev.ID {
		t.Fatalf("Recent = %+v, %v", recent, err)
	}
	if err := h.Store.Ready(t.Context()); err != nil {
		t.Fatalf("Ready: %v", err)
	}
}

// testConcurrent appends from many goroutines and consumes with several
// workers; every conversation must arrive in the order Append returned.
func testConcurrent(t *testing.T, open Factory) {
	h := open(t, clockwork.NewFakeClock())
	const convs, perConv = 8, 25
	var mu sync.Mutex
	order := map[string][]string{} // conversation → ids in acceptance order
	var wg sync.WaitGroup
	for c := range convs {
		wg.Go(func() {
			conv := fmt.Sprintf("conv-%d", c)
			for i := range perConv {
				ev := NewEvent(t, conv, c*1000+i)
				if _, err := h.Store.Append(t.Context(), ev, []string{"s"}); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				order[conv] = append(order[conv], ev.ID)
				mu.Unlock()
			}
		})
	}
	got := map[string][]string{}
	var gmu sync.Mutex
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var workers sync.WaitGroup
	total := convs * perConv
	done := make(chan struct{})
	var count int
	for range 4 {
		workers.Go(func() {
			for {
				d, err := h.Store.Queue("s").Next(ctx)
				if err != nil {
					return
				}
				gmu.Lock()
				got[d.Event.ConversationID] = append(got[d.Event.ConversationID], d.Event.ID)
				count++
				if count == total {
					close(done)
				}
				gmu.Unlock()
				if err := d.Ack(t.Context()); err != nil {
					t.Errorf("Ack: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-done:
	case <-ctx.Done():
		t.Errorf("delivered %d of %d", count, total)
	}
	cancel()
	workers.Wait()
	for conv, want := range order {
		if !slices.Equal(got[conv], want) {
			t.Errorf("conversation %s: delivered %s\nwant %s", conv, strings.Join(got[conv], " "), strings.Join(want, " "))
		}
	}
}

// waitStats polls Stats until ok holds for the sink (stores may count
// asynchronously).
func waitStats(t *testing.T, s relay.Store, sink string, ok func(relay.QueueStats) bool) {
	t.Helper()
	var last relay.QueueStats
	relaytest.Eventually(t, 10*time.Second, "the stats of "+sink, func() bool {
		stats, err := s.Stats(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		last = relay.QueueStats{Sink: sink}
		for _, st := range stats {
			if st.Sink == sink {
				last = st
			}
		}
		return ok(last)
	})
}
