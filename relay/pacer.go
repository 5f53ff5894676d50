package relay

import (
	"context"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"golang.org/x/time/rate"
)

// Pacer decides when a sink may send next. It holds three kinds of wait:
// the platform's published pace (a token bucket), a hold until a time (a 429
// or rate-limit headers said so: the whole sink waits), and "down" (the
// destination is broken: only one probe every retry.max).
//
// One Pacer belongs to one sink. The dispatcher acquires from it before every
// send; the sink reports header information to it through Throttle.
type Pacer struct {
	clock clockwork.Clock

	mu        sync.Mutex
	limiter   *rate.Limiter // nil: no pace
	holdUntil time.Time
	down      bool
	probeAt   time.Time
	probing   bool
	changed   chan struct{} // closed and replaced on every change
}

// NewPacer returns a pacer with no pace, no hold, and the sink up.
func NewPacer(clock clockwork.Clock) *Pacer {
	return &Pacer{clock: clock, changed: make(chan struct{})}
}

// SetPace spaces sends by every, allowing bursts of burst. every <= 0
// removes the pace.
func (p *Pacer) SetPace(every time.Duration, burst int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if every <= 0 {
		p.limiter = nil
	} else {
		p.limiter = rate.NewLimiter(rate.Every(every), max(burst, 1))
	}
	p.notifyLocked()
}

// Charge takes n more slots of the pace, as if n more sends had gone: a
// send that posted several messages keeps the platform's pace on average.
func (p *Pacer) Charge(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.limiter == nil {
		return
	}
	now := p.clock.Now()
	for range n {
		p.limiter.ReserveN(now, 1)
	}
}

// HoldUntil stops every send until t (a 429's Retry-After, or rate-limit
// headers that say the bucket is empty). An earlier t than the current hold
// changes nothing.
func (p *Pacer) HoldUntil(t time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.After(p.holdUntil) {
		p.holdUntil = t
		p.notifyLocked()
	}
}

// Down marks the destination broken: until it is Up again, Acquire lets one
// probe through at probeAt and then one after each further Down.
func (p *Pacer) Down(probeAt time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down, p.probeAt, p.probing = true, probeAt, false
	p.notifyLocked()
}

// Up marks the destination working again.
func (p *Pacer) Up() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		p.down, p.probing = false, false
		p.notifyLocked()
	}
}

// Held reports whether a hold (HoldUntil) is in force now.
func (p *Pacer) Held() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.clock.Now().Before(p.holdUntil)
}

// HeldUntil returns the end of the current or last hold (HoldUntil).
func (p *Pacer) HeldUntil() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.holdUntil
}

// IsDown reports whether the destination is marked broken.
func (p *Pacer) IsDown() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.down
}

// Ticket is the permission to send once.
type Ticket struct {
	// Probe is set when the sink is down and this send is the probe that
	// finds out whether the destination works again.
	Probe bool
}

// Acquire waits until one send may start: past any hold, through the pace,
// and when the sink is down, as its single probe. It returns ctx.Err() if ctx
// ends first.
func (p *Pacer) Acquire(ctx context.Context) (Ticket, error) { return p.acquire(ctx, false) }

// Reacquire is Acquire for a send that already has its ticket but found a
// hold begun since (another send's 429): it waits out the hold and takes a
// fresh slot of the pace. Being down does not concern it: its ticket was
// granted before, as any send in flight when the sink went down.
func (p *Pacer) Reacquire(ctx context.Context) error {
	_, err := p.acquire(ctx, true)
	return err
}

func (p *Pacer) acquire(ctx context.Context, ticketed bool) (Ticket, error) {
	for {
		if err := ctx.Err(); err != nil {
			return Ticket{}, err
		}
		p.mu.Lock()
		now := p.clock.Now()
		var wait time.Duration
		changed := p.changed
		down := p.down && !ticketed
		switch {
		case now.Before(p.holdUntil):
			wait = p.holdUntil.Sub(now)
		case down && p.probing:
			wait = -1 // until the probe's outcome changes the state
		case down && now.Before(p.probeAt):
			wait = p.probeAt.Sub(now)
		case down:
			p.probing = true
			p.mu.Unlock()
			return Ticket{Probe: true}, nil
		case p.limiter != nil:
			r := p.limiter.ReserveN(now, 1)
			wait = r.DelayFrom(now)
			if wait > 0 {
				// The slot is ours: wait for it, then go, unless a hold
				// or "down" began meanwhile (another send got a 429 or
				// found the destination broken): then wait as they say.
				p.mu.Unlock()
				if err := p.sleep(ctx, wait, nil); err != nil {
					p.mu.Lock()
					r.CancelAt(p.clock.Now())
					p.mu.Unlock()
					return Ticket{}, err
				}
				p.mu.Lock()
				blocked := p.clock.Now().Before(p.holdUntil) || (p.down && !ticketed)
				p.mu.Unlock()
				if blocked {
					continue
				}
				return Ticket{}, nil
			}
			p.mu.Unlock()
			return Ticket{}, nil
		default:
			p.mu.Unlock()
			return Ticket{}, nil
		}
		p.mu.Unlock()
		if err := p.sleep(ctx, wait, changed); err != nil {
			return Ticket{}, err
		}
	}
}

// ReturnProbe gives back a probe ticket that was not used to send (the
// delivery expired and was parked without sending).
func (p *Pacer) ReturnProbe(t Ticket) {
	if !t.Probe {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.probing = false
	p.notifyLocked()
}

// sleep waits for d (d < 0: no timeout), a state change, or ctx.
func (p *Pacer) sleep(ctx context.Context, d time.Duration, changed <-chan struct{}) error {
	var timeout <-chan time.Time
	if d >= 0 {
		t := p.clock.NewTimer(d)
		defer t.Stop()
		timeout = t.Chan()
	}
	select {
	case <-timeout:
		return nil
	case <-changed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Pacer) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}
