package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"weak"
)

// Rendered is what a sink returns when ctx ended while it rendered an event,
// before it posted anything, and nil while ctx is live. A rendering that
// outlasted the send's deadline would outlast it on every attempt: it is
// permanent for this delivery (SPEC §9). A context cancelled otherwise
// (shutdown) is returned as it is: the delivery stays for the next start.
func Rendered(ctx context.Context) error {
	err := ctx.Err()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return Permanent(fmt.Errorf("rendering the event took longer than the send's timeout, as it would on every attempt: %w", err), ReasonTimeout)
	}
	return err
}

// RenderMemo remembers what a sink rendered for the last few events, so that
// an event rendered to decide whether it can share a message (CanPack) is
// not rendered again when it is sent right after (SendPacked, or Send).
// Entries are keyed by the event itself, which the dispatcher hands to both
// calls, through weak pointers: the memo keeps no event alive, and holds at
// most size renderings; a sink puts only small ones in it. It is safe for
// concurrent use.
type RenderMemo[T any] struct {
	mu   sync.Mutex
	size int
	ring []weak.Pointer[Event] // insertion order; the oldest is replaced
	next int
	vals map[weak.Pointer[Event]]T
}

// NewRenderMemo returns a memo of at most size renderings.
func NewRenderMemo[T any](size int) *RenderMemo[T] {
	size = max(size, 1)
	return &RenderMemo[T]{size: size, ring: make([]weak.Pointer[Event], 0, size), vals: make(map[weak.Pointer[Event]]T, size)}
}

// Get returns what was put for ev, if it is still remembered.
func (m *RenderMemo[T]) Get(ev *Event) (T, bool) {
	key := weak.Make(ev)
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.vals[key]
	if !ok || key.Value() != ev {
		var zero T
		return zero, false
	}
	return v, true
}

// Put remembers v for ev, forgetting the oldest entry when full.
func (m *RenderMemo[T]) Put(ev *Event, v T) {
	key := weak.Make(ev)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.vals[key]; ok {
		m.vals[key] = v
		return
	}
	if len(m.ring) < m.size {
		m.ring = append(m.ring, key)
	} else {
		delete(m.vals, m.ring[m.next])
		m.ring[m.next] = key
		m.next = (m.next + 1) % m.size
	}
	m.vals[key] = v
}
