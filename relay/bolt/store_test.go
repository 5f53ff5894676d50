package bolt_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir, os.Getenv(crashModeEnv)) // never returns: killed by the parent
	}
	goleak.VerifyTestMain(m)
}

func open(t *testing.T, dir string, clock *clockwork.FakeClock) *bolt.Store {
	t.Helper()
	s, err := bolt.Open(dir, bolt.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) storetest.Harness {
		dir := t.TempDir()
		s := open(t, dir, clock)
		cur := s
		t.Cleanup(func() { _ = cur.Close() })
		return storetest.Harness{
			Store: s,
			Clock: clock,
			Reopen: func(t *testing.T) relay.Store {
				if err := cur.Close(); err != nil {
					t.Fatal(err)
				}
				cur = open(t, dir, clock)
				return cur
			},
		}
	})
}

func TestSecondProcessGetsClearError(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir, clockwork.NewFakeClock())
	defer s.Close()
	_, err := bolt.Open(dir, bolt.Options{LockTimeout: 100 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "in use by another chatrelay process") {
		t.Fatalf("second Open: %v", err)
	}
}

func TestPruning(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClock()
	s, err := bolt.Open(t.TempDir(), bolt.Options{Clock: clock, PruneEvery: time.Minute,
		Retention: time.Hour, DedupeWindow: 30 * time.Minute, KVRetention: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	delivered := storetest.NewEvent(t, "A", 1)
	dead := storetest.NewEvent(t, "B", 1)
	delivered.ReceivedAt, dead.ReceivedAt = clock.Now(), clock.Now()
	for _, ev := range []*relay.Event{delivered, dead} {
		if _, err := s.Append(ctx, ev, []string{"s"}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		d, err := s.Queue("s").Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d.Event.ID == dead.ID {
			err = d.Term(ctx, "bad")
		} else {
			err = d.Ack(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.KV("slack").Put(ctx, "conv", "ts"); err != nil {
		t.Fatal(err)
	}
	// Past the dedupe window: the same body is a new event.
	clock.Advance(31 * time.Minute)
	relaytest.Eventually(t, 10*time.Second, "the same body past the dedupe window to be a new event", func() bool {
		again := *delivered
		again.ID = storetest.NewEvent(t, "A", 1).ID
		acc, err := s.Append(ctx, &again, nil)
		return err == nil && !acc.Duplicate
	})
	// Past retention: the delivered event goes, the dead letter stays.
	clock.Advance(time.Hour)
	relaytest.Eventually(t, 10*time.Second, "the delivered event to be pruned", func() bool {
		_, err := s.Lookup(ctx, delivered.ID)
		return errors.Is(err, relay.ErrNotFound)
	})
	if _, err := s.Lookup(ctx, dead.ID); err != nil {
		t.Fatalf("the dead letter's event was pruned: %v", err)
	}
	// Past the KV retention: the thread mapping goes.
	clock.Advance(time.Hour)
	relaytest.Eventually(t, 10*time.Second, "the thread mapping to be pruned", func() bool {
		_, ok, err := s.KV("slack").Get(ctx, "conv")
		return err == nil && !ok
	})
}

// TestFullStoreNeverClaimsDuplicate fills a store to its size bound: the
// append that fails must not be remembered, so the sender's retry of the
// same event is refused again (503), never answered "duplicate".
func TestFullStoreNeverClaimsDuplicate(t *testing.T) {
	t.Parallel()
	s, err := bolt.Open(t.TempDir(), bolt.Options{MaxSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pad := strings.Repeat("x", 8<<10)
	var failed *relay.Event
	for i := range 1000 {
		ev := storetest.NewEvent(t, "c", i)
		ev.Body = append(ev.Body[:len(ev.Body)-1], []byte(`,"pad":"`+pad+`"}`)...)
		if _, err := s.Append(t.Context(), ev, []string{"s"}); err != nil {
			if !errors.Is(err, relay.ErrFull) {
				t.Fatalf("append %d: %v, want ErrFull", i, err)
			}
			failed = ev
			if took := i * len(pad); took > 2<<20 {
				t.Errorf("a 1 MiB store took %d KiB before it refused an append", took>>10)
			}
			break
		}
	}
	if failed == nil {
		t.Fatal("a 1 MiB store took 8 MiB")
	}
	if err := s.Ready(t.Context()); !errors.Is(err, relay.ErrFull) {
		t.Fatalf("Ready = %v, want ErrFull", err)
	}
	again := *failed
	acc, err := s.Append(t.Context(), &again, []string{"s"})
	if err == nil || acc.Duplicate {
		t.Fatalf("retry of an event that was not stored: %+v, %v", acc, err)
	}
	if _, err := s.Lookup(t.Context(), failed.ID); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("the refused event is in the store: %v", err)
	}
}

// TestSettlingOnAFullStoreDoesNotRepeatTheDelivery: a delivery settled
// (delivered, or refused for good) while the store is full may not be
// recordable; it must then not be handed out again (the destination would
// get it again and again) and its conversation waits. After a restart it is
// handed out once more (at least once).
func TestSettlingOnAFullStoreDoesNotRepeatTheDelivery(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		settle func(context.Context, *relay.Delivery) error
		log    string
	}{
		{"ack", func(ctx context.Context, d *relay.Delivery) error { return d.Ack(ctx) }, "could not record a delivery as done"},
		{"term", func(ctx context.Context, d *relay.Delivery) error { return d.Term(ctx, "refused") }, "could not record a dead letter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			settleOnAFullStore(t, tc.settle, tc.log)
		})
	}
}

func settleOnAFullStore(t *testing.T, settle func(context.Context, *relay.Delivery) error, failedLog string) {
	dir := t.TempDir()
	clock := clockwork.NewFakeClock()
	logger, logs := relaytest.NewLogger()
	s, err := bolt.Open(dir, bolt.Options{Clock: clock, MaxSize: 1 << 20, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	ctx := t.Context()
	const convs = 200
	for i := range convs {
		if _, err := s.Append(ctx, storetest.NewEvent(t, fmt.Sprint("c", i), 1), []string{"s"}); err != nil {
			t.Fatal(err)
		}
	}
	// Fill the store with events nobody delivers until it refuses large
	// ones, then small ones.
	for _, pad := range []int{16 << 10, 0} {
		for i := 0; ; i++ {
			ev := storetest.NewEvent(t, "filler", i)
			ev.Body = append(ev.Body[:len(ev.Body)-1], []byte(fmt.Sprintf(`,"pad":%q}`, strings.Repeat("x", pad)))...)
			_, err := s.Append(ctx, ev, nil)
			if errors.Is(err, relay.ErrFull) {
				break
			}
			if err != nil || i > 10000 {
				t.Fatalf("filling: %v after %d events", err, i)
			}
		}
	}
	// Then with small key/value entries, down to the last free page.
	for i := 0; ; i++ {
		err := s.KV("filler").Put(ctx, fmt.Sprint("k", i), strings.Repeat("v", 100))
		if errors.Is(err, relay.ErrFull) {
			break
		}
		if err != nil || i > 100000 {
			t.Fatalf("filling: %v after %d entries", err, i)
		}
	}
	// Settle every conversation's turn; some settlements find the store
	// full.
	handed := map[string]int{}
	next := func(d time.Duration) (*relay.Delivery, error) {
		short, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return s.Queue("s").Next(short)
	}
	for {
		d, err := next(300 * time.Millisecond)
		if err != nil {
			break
		}
		handed[d.Event.ID]++
		if handed[d.Event.ID] > 1 {
			t.Fatalf("event %s handed out again after it was settled: recording it failed on the full store, and the delivery was repeated", d.Event.ID)
		}
		if err := settle(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	// Acks are written (and their failures logged) by the writer; Close
	// writes out what is still queued. Count after it.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	unrecorded := strings.Count(logs.String(), failedLog)
	t.Logf("%d of %d settlements found the store full", unrecorded, convs)
	if unrecorded == 0 {
		t.Fatal("no settlement found the store full: the test proves nothing")
	}
	if len(handed) != convs {
		t.Errorf("%d conversations handed out, want %d", len(handed), convs)
	}
	// After a restart (with room), the unrecorded deliveries come once more.
	s, err = bolt.Open(dir, bolt.Options{Clock: clock, MaxSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	again := 0
	for {
		d, err := next(300 * time.Millisecond)
		if err != nil {
			break
		}
		again++
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if again != unrecorded {
		t.Errorf("%d deliveries handed out after the restart, want the %d unrecorded ones", again, unrecorded)
	}
}

// TestRetentionKeepsUndeliveredEvents: an event whose delivery was never
// even tried (a sink held for longer than retention) is not pruned.
func TestRetentionKeepsUndeliveredEvents(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClock()
	dir := t.TempDir()
	s, err := bolt.Open(dir, bolt.Options{Clock: clock, PruneEvery: time.Minute, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ev := storetest.NewEvent(t, "c", 1)
	ev.ReceivedAt = clock.Now()
	if _, err := s.Append(t.Context(), ev, []string{"held"}); err != nil {
		t.Fatal(err)
	}
	marker := storetest.NewEvent(t, "m", 1)
	marker.ReceivedAt = clock.Now()
	if _, err := s.Append(t.Context(), marker, nil); err != nil { // unrouted: prunable
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour)
	relaytest.Eventually(t, 10*time.Second, "the prune to remove the unrouted event", func() bool {
		// The applier may have set its prune ticker after the advance
		// (it starts asynchronously): keep time moving until it fires.
		clock.Advance(time.Minute)
		_, err := s.Lookup(t.Context(), marker.ID)
		return errors.Is(err, relay.ErrNotFound)
	})
	if _, err := s.Lookup(t.Context(), ev.ID); err != nil {
		t.Fatalf("pending event pruned: %v", err)
	}
	s.Close()
	s, err = bolt.Open(dir, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, err := s.Queue("held").Next(t.Context())
	if err != nil || d.Event.ID != ev.ID {
		t.Fatalf("after a restart: %v %v", d, err)
	}
}

// TestReplayOfAGoneEventKeepsTheDeadLetter: replaying a dead letter whose
// event no longer exists requeues nothing and loses nothing.
func TestReplayOfAGoneEventKeepsTheDeadLetter(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir(), clockwork.NewFakeClock())
	defer s.Close()
	if n, err := s.Requeue(t.Context(), []string{"01900000-0000-7000-8000-000000000009.s"}); err != nil || n != 0 {
		t.Fatalf("Requeue(unknown) = %d, %v", n, err)
	}
}
