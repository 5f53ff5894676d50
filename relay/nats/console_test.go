package nats_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/nats"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

func TestHistory(t *testing.T) {
	t.Parallel()
	storetest.RunHistory(t, func(t *testing.T, _ *clockwork.FakeClock) storetest.Harness {
		ns := startServer(t, "", 0)
		opts := testOptions(ns.ClientURL())
		cur := open(t, opts)
		t.Cleanup(func() { _ = cur.Close() })
		return storetest.Harness{
			Store: cur,
			Reopen: func(t *testing.T) relay.Store {
				if err := cur.Close(); err != nil {
					t.Fatal(err)
				}
				cur = open(t, opts)
				return cur
			},
		}
	})
}

// TestUsageAcrossReplicas: replicas on one NATS read the same usage
// figures: the events every replica appended, each once, each replica
// going on from where its last read stopped.
func TestUsageAcrossReplicas(t *testing.T) {
	t.Parallel()
	ns := startServer(t, "", 0)
	opts := testOptions(ns.ClientURL())
	a, b := open(t, opts), open(t, opts)
	defer a.Close()
	defer b.Close()
	ctx := t.Context()
	now := time.Now()
	appendOn := func(s *nats.Store, from, n int) {
		t.Helper()
		for i := from; i < from+n; i++ {
			ev := storetest.NewEvent(t, fmt.Sprint("conv-", i), i) // a first turn of chatbot "bot"
			ev.ReceivedAt = now
			if _, err := s.Append(ctx, ev, []string{"s"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	check := func(when string, want int) {
		t.Helper()
		for name, s := range map[string]*nats.Store{"a": a, "b": b} {
			minutes, err := s.Usage(ctx, now.Add(-time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			events, convs := 0, 0
			for _, m := range minutes {
				events += m.Topics[relay.TopicChat]
				convs += m.Bots["bot"].Conversations
			}
			if events != want || convs != want {
				t.Errorf("%s: replica %s counts %d events, %d conversations; want %d of each", when, name, events, convs, want)
			}
		}
	}
	appendOn(a, 0, 10)
	appendOn(b, 10, 15)
	check("first read", 25)
	appendOn(b, 25, 5)
	check("second read", 30)
	check("nothing new", 30)

	// One body taken by both replicas: a duplicate on the second, counted once.
	ev := storetest.NewEvent(t, "conv-dup", 99)
	ev.ReceivedAt = now
	again := *ev
	again.ID = storetest.NewEvent(t, "conv-dup", 99).ID
	if _, err := a.Append(ctx, ev, []string{"s"}); err != nil {
		t.Fatal(err)
	}
	if acc, err := b.Append(ctx, &again, []string{"s"}); err != nil || !acc.Duplicate {
		t.Fatalf("the repeat on the other replica: %+v, %v; want a duplicate", acc, err)
	}
	check("after a duplicate", 31)
}

// BenchmarkUsage reads the usage figures from a stream of 20,000 chat
// events: "first" is a replica's first read after it starts (the headers
// of every event of the day, no bodies), "again" a later one with nothing
// new (the console's read each UsageEvery while an overview is open).
//
//	go test -run '^$' -bench Usage -benchtime 20x ./relay/nats/
func BenchmarkUsage(b *testing.B) {
	const events = 20000
	ns := startServer(b, "", 0)
	opts := testOptions(ns.ClientURL())
	s := open(b, opts)
	defer s.Close()
	now := time.Now()
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := w; i < events; i += 32 {
				ev := storetest.NewEvent(b, fmt.Sprint("conv-", i), i)
				ev.ReceivedAt = now
				if _, err := s.Append(b.Context(), ev, []string{"s"}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	read := func(b *testing.B, s *nats.Store) {
		minutes, err := s.Usage(b.Context(), now.Add(-relay.UsageKept))
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for _, m := range minutes {
			n += m.Topics[relay.TopicChat]
		}
		if n != events {
			b.Fatalf("counted %d events, want %d", n, events)
		}
	}
	b.Run("first", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			fresh := open(b, opts)
			b.StartTimer()
			read(b, fresh)
			b.StopTimer()
			_ = fresh.Close()
			b.StartTimer()
		}
	})
	b.Run("again", func(b *testing.B) {
		read(b, s)
		for b.Loop() {
			read(b, s)
		}
	})
}
