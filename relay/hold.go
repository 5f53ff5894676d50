package relay

import (
	"context"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// Hold stops every send of a sink until a time: a 429's Retry-After, or
// the destination's rate-limit headers saying its bucket is empty
// (Report.HoldUntil). The whole sink waits, not only the send that was
// told. A later time extends it; an earlier one changes nothing.
type Hold struct {
	clock   clockwork.Clock
	mu      sync.Mutex
	until   time.Time
	changed chan struct{} // closed and replaced when the hold is extended
}

// NewHold returns a sink's hold, none in force.
func NewHold(clock clockwork.Clock) *Hold {
	return &Hold{clock: clock, changed: make(chan struct{})}
}

// Until holds every send until t.
func (h *Hold) Until(t time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t.After(h.until) {
		h.until = t
		close(h.changed)
		h.changed = make(chan struct{})
	}
}

// End returns the end of the current or the last hold.
func (h *Hold) End() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.until
}

// Held reports whether a hold is in force now.
func (h *Hold) Held() bool { return h.clock.Now().Before(h.End()) }

// Wait returns once no hold is in force, or ctx.Err() if ctx ends first.
func (h *Hold) Wait(ctx context.Context) error {
	for {
		h.mu.Lock()
		left, changed := h.until.Sub(h.clock.Now()), h.changed
		h.mu.Unlock()
		if left <= 0 {
			return ctx.Err()
		}
		if err := sleep(ctx, h.clock, left, changed); err != nil {
			return err
		}
	}
}
