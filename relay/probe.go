package relay

import (
	"context"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// probes is the probe ticket of a sink that is down: while it is down (the
// breaker, outage.go, says so), no send starts but one probe at a time, not
// before its time; the probe's outcome says whether the sink is up again,
// and when the next probe may go.
type probes struct {
	clock   clockwork.Clock
	mu      sync.Mutex
	down    bool
	at      time.Time // when the next probe may go
	out     bool      // a probe is in flight
	changed chan struct{}
}

func newProbes(clock clockwork.Clock) *probes {
	return &probes{clock: clock, changed: make(chan struct{})}
}

func (p *probes) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// close marks the sink down, with its next probe at at (also after a probe
// that failed).
func (p *probes) close(at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down, p.at, p.out = true, at, false
	p.notifyLocked()
}

// open marks the sink up: sends start as the pace lets them.
func (p *probes) open() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		p.down, p.out = false, false
		p.notifyLocked()
	}
}

// isDown reports whether the sink is down.
func (p *probes) isDown() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.down
}

// take returns false at once while the sink is up. While it is down, it
// waits until the probe may go and none is in flight, and takes the probe
// (true); ctx.Err() if ctx ends first.
func (p *probes) take(ctx context.Context) (probe bool, err error) {
	for {
		p.mu.Lock()
		if !p.down {
			p.mu.Unlock()
			return false, nil
		}
		wait := time.Duration(-1) // until the probe's outcome
		if !p.out {
			if wait = p.at.Sub(p.clock.Now()); wait <= 0 {
				p.out = true
				p.mu.Unlock()
				return true, nil
			}
		}
		changed := p.changed
		p.mu.Unlock()
		if err := sleep(ctx, p.clock, wait, changed); err != nil {
			return false, err
		}
	}
}

// giveBack returns a probe that was not used to send (its delivery
// expired, or a hold began before it went).
func (p *probes) giveBack() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.out {
		p.out = false
		p.notifyLocked()
	}
}
