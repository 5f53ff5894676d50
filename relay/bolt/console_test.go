package bolt_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

func TestHistory(t *testing.T) {
	t.Parallel()
	storetest.RunHistory(t, func(t *testing.T, clock *clockwork.FakeClock) storetest.Harness {
		dir := t.TempDir()
		cur := open(t, dir, clock)
		t.Cleanup(func() { _ = cur.Close() })
		return storetest.Harness{
			Store: cur,
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

// checkUsageCountsEachEventOnce: the usage figures count every event the
// store holds, once, however the writes before were cut short (the crash
// tests: an intake record applied again at a replay adds nothing twice).
func checkUsageCountsEachEventOnce(t *testing.T, s *bolt.Store) {
	t.Helper()
	events := 0
	for before := ""; ; {
		page, err := s.Recent(t.Context(), before, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		events += len(page)
		before = page[len(page)-1].ID
	}
	minutes, err := s.Usage(t.Context(), time.Now().Add(-relay.UsageKept))
	if err != nil {
		t.Fatal(err)
	}
	counted := 0
	for _, m := range minutes {
		counted += m.Topics[relay.TopicChat]
	}
	if counted != events {
		t.Fatalf("the usage figures count %d events; the store holds %d", counted, events)
	}
}

// TestUsageKept: the usage figures outlive the events they count (past
// store.retention the events go, the figures stay) and go once they are
// older than relay.UsageKept and its margin.
func TestUsageKept(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClock()
	s, err := bolt.Open(t.TempDir(), bolt.Options{Clock: clock, PruneEvery: time.Minute, Retention: time.Hour,
		DedupeWindow: 30 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	ev := storetest.NewEvent(t, "A", 1)
	ev.ReceivedAt = clock.Now()
	if _, err := s.Append(ctx, ev, []string{"s"}); err != nil {
		t.Fatal(err)
	}
	d, err := s.Queue("s").Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	chats := func() int {
		minutes, err := s.Usage(ctx, ev.ReceivedAt)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, m := range minutes {
			n += m.Topics[relay.TopicChat]
		}
		return n
	}
	clock.Advance(2 * time.Hour)
	relaytest.Eventually(t, 10*time.Second, "the delivered event to be pruned", func() bool {
		_, err := s.Lookup(ctx, ev.ID)
		// A prune that ran before the ack reached the database left the
		// event: the next one (a minute on) takes it.
		clock.Advance(time.Minute)
		return errors.Is(err, relay.ErrNotFound)
	})
	if n := chats(); n != 1 {
		t.Fatalf("after the event was pruned, the figures count %d chat events, want 1", n)
	}
	clock.Advance(relay.UsageKept)
	relaytest.Eventually(t, 10*time.Second, "the day-old figures to be pruned", func() bool { return chats() == 0 })
}

// BenchmarkUsage reads the last day's usage figures (as the console does
// each UsageEvery while an overview is open) from a store holding a day of
// chat events from 5 chatbots, at two rates: the cost is the day's
// minutes, not its events.
//
//	go test -run '^$' -bench Usage -benchtime 200x ./relay/bolt/
func BenchmarkUsage(b *testing.B) {
	for _, perMinute := range []int{5, 25} {
		b.Run(fmt.Sprintf("events=%d", perMinute*24*60), func(b *testing.B) {
			s, err := bolt.Open(b.TempDir(), bolt.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			now := time.Now()
			var wg sync.WaitGroup
			for w := range 16 {
				wg.Go(func() {
					for i := w; i < perMinute*24*60; i += 16 {
						ev := storetest.NewEvent(b, fmt.Sprint("conv-", i), i)
						ev.ReceivedAt = now.Add(-time.Duration(i/perMinute) * time.Minute)
						ev.ChatbotID = fmt.Sprint("bot-", i%5)
						if _, err := s.Append(b.Context(), ev, []string{"s"}); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			if _, err := s.Usage(b.Context(), now.Add(-relay.UsageKept)); err != nil { // the database caught up
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				minutes, err := s.Usage(b.Context(), now.Add(-relay.UsageKept))
				if err != nil || len(minutes) < 24*60 {
					b.Fatalf("%d minutes, %v", len(minutes), err)
				}
			}
		})
	}
}
