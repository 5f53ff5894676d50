package relay

import (
	"context"
	"sync"
)

// Accepting keeps the log in causal order (SPEC §9): the receiver's
// "accepted" line of an event comes before any line about its deliveries.
// The store makes an event's deliveries visible when it commits, before
// Append returns to the receiver, so a dispatcher could otherwise send one
// and log it before the receiver has logged the acceptance.
//
// The receiver opens a gate under the event's id before Append and closes
// it once it has logged; a dispatcher that is handed a delivery waits at
// its event's gate. The wait is the few microseconds between the commit and
// the receiver's log line, and only for events this process is accepting
// right now. A nil *Accepting orders nothing.
type Accepting struct {
	mu    sync.Mutex
	gates map[string]chan struct{}
}

// NewAccepting returns an empty set of gates.
func NewAccepting() *Accepting { return &Accepting{gates: make(map[string]chan struct{})} }

// Begin opens the gate of the event id; the function it returns closes it
// and may be called more than once.
func (a *Accepting) Begin(id string) (done func()) {
	if a == nil {
		return func() {}
	}
	ch := make(chan struct{})
	a.mu.Lock()
	a.gates[id] = ch
	a.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			if a.gates[id] == ch {
				delete(a.gates, id)
			}
			a.mu.Unlock()
			close(ch)
		})
	}
}

// Wait returns once the gate of the event id is closed (at once if there is
// none), or ctx ends.
func (a *Accepting) Wait(ctx context.Context, id string) {
	if a == nil {
		return
	}
	a.mu.Lock()
	ch := a.gates[id]
	a.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case <-ch:
	case <-ctx.Done():
	}
}
