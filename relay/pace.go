package relay

import (
	"context"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"golang.org/x/time/rate"
)

// Pace spaces a sink's sends by its platform's published pace, a token
// bucket (the sink's own, Paced, or the config's rate): every send takes a
// slot, and a send that posted several messages takes one more for each
// (Charge). The dispatcher composes it with the sink's Hold and, while the
// sink is down, its probe ticket.
type Pace struct {
	clock   clockwork.Clock
	mu      sync.Mutex
	limiter *rate.Limiter // nil: no pace
}

// NewPace returns a pace of one send every every, in bursts of up to
// burst; every <= 0 paces nothing.
func NewPace(clock clockwork.Clock, every time.Duration, burst int) *Pace {
	p := &Pace{clock: clock}
	if every > 0 {
		p.limiter = rate.NewLimiter(rate.Every(every), max(burst, 1))
	}
	return p
}

// Reserve takes the next slot and says how long until it comes; cancel
// gives it back when the send will not wait for it.
func (p *Pace) Reserve() (wait time.Duration, cancel func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.limiter == nil {
		return 0, func() {}
	}
	now := p.clock.Now()
	r := p.limiter.ReserveN(now, 1)
	return r.DelayFrom(now), func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		r.CancelAt(p.clock.Now())
	}
}

// Wait takes the next slot and waits for it; it gives it back and returns
// ctx.Err() if ctx ends first.
func (p *Pace) Wait(ctx context.Context) error {
	wait, cancel := p.Reserve()
	if err := sleep(ctx, p.clock, wait, nil); err != nil {
		cancel()
		return err
	}
	return nil
}

// Charge takes n more slots, as if n more sends had gone: a send that
// posted several messages keeps the platform's pace on average.
func (p *Pace) Charge(n int) {
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

// sleep waits for d (d < 0: no timeout), a close of changed, or the end of
// ctx (then ctx.Err()). It is how every wait of the dispatcher's parts is
// made: on the injected clock, cancellable.
func sleep(ctx context.Context, clock clockwork.Clock, d time.Duration, changed <-chan struct{}) error {
	if d == 0 {
		return ctx.Err()
	}
	var timeout <-chan time.Time
	if d > 0 {
		t := clock.NewTimer(d)
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
