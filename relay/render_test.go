package relay_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

func TestRendered(t *testing.T) {
	t.Parallel()
	if err := relay.Rendered(t.Context()); err != nil {
		t.Fatalf("live context: %v", err)
	}
	expired, cancel := context.WithDeadline(t.Context(), time.Unix(0, 0))
	defer cancel()
	err := relay.Rendered(expired)
	if c, _ := relay.Classify(err); c != relay.ClassPermanent || relay.ReasonOf(err) != relay.ReasonTimeout {
		t.Errorf("deadline passed: %v (class %s, reason %s), want permanent timeout", err, c, relay.ReasonOf(err))
	}
	cancelled, stop := context.WithCancel(t.Context())
	stop()
	if err := relay.Rendered(cancelled); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled (shutdown): %v, want context.Canceled", err)
	} else if c, _ := relay.Classify(err); c == relay.ClassPermanent {
		t.Error("a shutdown made the delivery permanent")
	}
}

func TestRenderMemo(t *testing.T) {
	t.Parallel()
	m := relay.NewRenderMemo[string](2)
	a, b, c := &relay.Event{ID: "a"}, &relay.Event{ID: "b"}, &relay.Event{ID: "c"}
	if _, ok := m.Get(a); ok {
		t.Fatal("empty memo remembers")
	}
	m.Put(a, "A")
	m.Put(b, "B")
	if v, ok := m.Get(a); !ok || v != "A" {
		t.Fatalf("Get(a) = %q, %v", v, ok)
	}
	twin := &relay.Event{ID: "a"} // same id, another event: not the same rendering
	if _, ok := m.Get(twin); ok {
		t.Error("an equal event that is not the same one hit")
	}
	m.Put(c, "C") // the oldest (a) goes
	if _, ok := m.Get(a); ok {
		t.Error("the memo holds more than its size")
	}
	for ev, want := range map[*relay.Event]string{b: "B", c: "C"} {
		if v, ok := m.Get(ev); !ok || v != want {
			t.Errorf("Get(%s) = %q, %v", ev.ID, v, ok)
		}
	}
	m.Put(c, "C2")
	if v, _ := m.Get(c); v != "C2" {
		t.Errorf("Put again: %q", v)
	}
}
