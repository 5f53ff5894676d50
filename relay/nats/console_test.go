package nats_test

import (
	"fmt"
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
