package bolt_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
	waitUntil(t, func() bool {
		again := *delivered
		again.ID = storetest.NewEvent(t, "A", 1).ID
		acc, err := s.Append(ctx, &again, nil)
		return err == nil && !acc.Duplicate
	})
	// Past retention: the delivered event goes, the dead letter stays.
	clock.Advance(time.Hour)
	waitUntil(t, func() bool {
		_, err := s.Lookup(ctx, delivered.ID)
		return errors.Is(err, relay.ErrNotFound)
	})
	if _, err := s.Lookup(ctx, dead.ID); err != nil {
		t.Fatalf("the dead letter's event was pruned: %v", err)
	}
	// Past the KV retention: the thread mapping goes.
	clock.Advance(time.Hour)
	waitUntil(t, func() bool {
		_, ok, err := s.KV("slack").Get(ctx, "conv")
		return err == nil && !ok
	})
}

// waitUntil polls cond (the writer prunes asynchronously after the clock
// moves) until it holds, or fails after 10 s.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition never held")
		}
		time.Sleep(10 * time.Millisecond)
	}
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
