package relay

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// BreakerThreshold is how many consecutive sends to one sink, across
// conversations, must fail to reach the destination at all (Unreachable)
// before the sink is marked down (SPEC §9).
const BreakerThreshold = 5

// StillDownEvery is how often a sink that stays down says so in the log.
const StillDownEvery = 5 * time.Minute

// Why a sink is down.
const (
	DownUnreachable = "unreachable" // the breaker tripped: nothing answers
	DownBroken      = "broken"      // the destination refuses our credentials or is gone
)

// SinkHealth is what a dispatcher knows about its destination, for
// chatrelay status and the admin API. Times are zero when they do not apply.
type SinkHealth struct {
	Up          bool
	DownSince   time.Time
	DownCause   string // DownUnreachable or DownBroken while down
	Reason      Reason // the failure's reason while down
	HeldUntil   time.Time
	LastError   string
	LastErrorAt time.Time
}

// outage is one dispatcher's record of its destination's health: the
// circuit breaker's streak of unreachable failures, the outage in progress
// (since when, why, how many probes failed), the last error, and the
// catching up after an outage. It is the breaker: it opens and closes the
// sink's probe ticket (probes), which holds the sends, and says so in the
// log.
type outage struct {
	mu         sync.Mutex
	streak     int // consecutive unreachable failures
	down       bool
	cause      string
	reason     Reason
	since      time.Time
	probeFails int
	lastErr    string
	lastErrAt  time.Time
	lastCause  error // the last failure itself (its text scrubbed), for Waits
	// After an outage: how many deliveries were pending when it ended, and
	// how many have been delivered since.
	backlog, drained int
	upAt             time.Time
	changed          chan struct{} // closed and replaced when down or up
}

func newOutage() *outage { return &outage{changed: make(chan struct{})} }

func (o *outage) notifyLocked() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// pendingOf returns the sink's queue stats, or ok false when they cannot be
// had (no source, or it failed within a short bound).
func (d *Dispatcher) pendingOf(ctx context.Context) (QueueStats, bool) {
	if d.cfg.Stats == nil {
		return QueueStats{}, false
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	stats, err := d.cfg.Stats.Stats(ctx)
	if err != nil {
		return QueueStats{}, false
	}
	for _, s := range stats {
		if s.Sink == d.name {
			return s, true
		}
	}
	return QueueStats{Sink: d.name}, true
}

// pendingAttrs are the log attributes describing the sink's backlog.
func (d *Dispatcher) pendingAttrs(ctx context.Context, now time.Time) []any {
	st, ok := d.pendingOf(ctx)
	if !ok {
		return nil
	}
	attrs := []any{"pending", st.Depth}
	if !st.Oldest.IsZero() {
		attrs = append(attrs, "oldest_pending", now.Sub(st.Oldest).Round(time.Second))
	}
	return attrs
}

// noteError records the last failure, for chatrelay status.
func (d *Dispatcher) noteError(now time.Time, err error) {
	d.outage.mu.Lock()
	d.outage.lastErr, d.outage.lastErrAt, d.outage.lastCause = err.Error(), now, err
	d.outage.mu.Unlock()
}

// downNow returns why the sink is down ("" when up) and its last failure.
func (d *Dispatcher) downNow() (string, error) {
	d.outage.mu.Lock()
	defer d.outage.mu.Unlock()
	if !d.outage.down {
		return "", nil
	}
	return d.outage.cause, d.outage.lastCause
}

// reachable resets the breaker: the destination answered.
func (d *Dispatcher) reachable() {
	d.outage.mu.Lock()
	d.outage.streak = 0
	d.outage.mu.Unlock()
}

// answered notes an answer from the destination that was not a success:
// the breaker's streak ends, and a probe that got one ends the outage. (A
// send in flight when the sink went down proves less: the probe decides.)
func (d *Dispatcher) answered(ctx context.Context, tk Ticket) {
	if tk.Probe {
		d.markUp(ctx)
		return
	}
	d.reachable()
}

// unreachable counts one send that reached nothing, and reports whether the
// breaker tripped on it.
func (d *Dispatcher) unreachable() (trip bool) {
	d.outage.mu.Lock()
	defer d.outage.mu.Unlock()
	d.outage.streak++
	return !d.outage.down && d.outage.streak >= BreakerThreshold
}

// markDown marks the sink down for cause and logs it once per outage (and
// again if the cause changes: a broken destination needs another fix than
// an unreachable one). probeAt is when the single probe may go.
func (d *Dispatcher) markDown(ctx context.Context, now time.Time, cause string, err error, probeAt time.Time) {
	o := d.outage
	o.mu.Lock()
	wasDown, oldCause := o.down, o.cause
	if !o.down {
		o.since, o.probeFails = now, 0
	}
	o.down, o.cause, o.reason, o.backlog, o.drained = true, cause, ReasonOf(err), 0, 0
	o.notifyLocked()
	o.mu.Unlock()
	d.probes.close(probeAt)
	d.cfg.Metrics.SinkUp.WithLabelValues(d.name).Set(0)
	if wasDown && oldCause == cause {
		return
	}
	attrs := append([]any{"reason", ReasonOf(err), "err", err}, d.pendingAttrs(ctx, now)...)
	if cause == DownBroken {
		d.cfg.Logger.Error("sink marked down: its destination refuses our credentials or no longer exists; "+
			"deliveries are held and retried every retry.max. Fix the sink's credentials or URL in the config and restart, "+
			"or wait for the next probe", append(attrs, "probe_every", d.cfg.Retry.Max)...)
		return
	}
	d.cfg.Logger.Warn("sink marked down: its destination cannot be reached; deliveries are held, one probe at a time "+
		"with backoff up to retry.max. Check that the destination is running and reachable from this host "+
		"(the URL's host and port, DNS, firewall, proxy, TLS certificate)",
		append(attrs, "failures_in_a_row", BreakerThreshold, "probe_max_every", d.cfg.Retry.Max)...)
}

// probeFailed keeps the sink down after its probe failed and returns when
// the next probe may go: every retry.max for a broken destination, with
// backoff up to retry.max for an unreachable one.
func (d *Dispatcher) probeFailed(now time.Time) time.Duration {
	o := d.outage
	o.mu.Lock()
	o.probeFails++
	n, cause := o.probeFails, o.cause
	o.mu.Unlock()
	delay := d.cfg.Retry.Max
	if cause == DownUnreachable {
		delay = d.cfg.Retry.Backoff(n+1, d.cfg.Rand())
	}
	d.probes.close(now.Add(delay))
	return delay
}

// downCause returns why the sink is down ("" when up).
func (d *Dispatcher) downCause() string {
	d.outage.mu.Lock()
	defer d.outage.mu.Unlock()
	if !d.outage.down {
		return ""
	}
	return d.outage.cause
}

// markUp ends an outage, if one is in progress, and logs it.
func (d *Dispatcher) markUp(ctx context.Context) {
	o := d.outage
	o.mu.Lock()
	if !o.down {
		o.streak = 0
		o.mu.Unlock()
		return
	}
	now := d.cfg.Clock.Now()
	since := o.since
	o.down, o.streak, o.cause, o.upAt, o.drained, o.backlog = false, 0, "", now, 0, 0
	o.notifyLocked()
	o.mu.Unlock()
	d.probes.open()
	d.cfg.Metrics.SinkUp.WithLabelValues(d.name).Set(1)
	st, ok := d.pendingOf(ctx)
	attrs := []any{"down_for", now.Sub(since).Round(time.Second)}
	if ok {
		attrs = append(attrs, "pending", st.Depth)
		o.mu.Lock()
		if !o.down && o.upAt.Equal(now) {
			o.backlog = st.Depth
		}
		o.mu.Unlock()
	}
	d.cfg.Logger.Info("sink is up again; sending what it held", attrs...)
}

// delivered counts deliveries after an outage and says once when the
// backlog it left has been sent.
func (d *Dispatcher) delivered(n int) {
	o := d.outage
	o.mu.Lock()
	if o.backlog == 0 {
		o.mu.Unlock()
		return
	}
	o.drained += n
	if o.drained < o.backlog {
		o.mu.Unlock()
		return
	}
	drained, took := o.drained, d.cfg.Clock.Since(o.upAt)
	o.backlog, o.drained = 0, 0
	o.mu.Unlock()
	d.cfg.Logger.Info("sink caught up after its outage", "drained", drained, "took", roundDuration(took))
}

// Health reports the sink's state now.
func (d *Dispatcher) Health() SinkHealth {
	o := d.outage
	o.mu.Lock()
	h := SinkHealth{Up: !o.down, LastError: o.lastErr, LastErrorAt: o.lastErrAt}
	if o.down {
		h.DownSince, h.DownCause, h.Reason = o.since, o.cause, o.reason
	}
	o.mu.Unlock()
	if until := d.hold.End(); until.After(d.cfg.Clock.Now()) {
		h.HeldUntil = until
	}
	return h
}

// watch says every StillDownEvery that the sink is still down, for as long
// as it stays down, until ctx ends.
func (d *Dispatcher) watch(ctx context.Context) error {
	o := d.outage
	for {
		o.mu.Lock()
		down, since, changed := o.down, o.since, o.changed
		o.mu.Unlock()
		if !down {
			select {
			case <-ctx.Done():
				return nil
			case <-changed:
				continue
			}
		}
		next := since.Add(StillDownEvery)
		for !next.After(d.cfg.Clock.Now()) {
			next = next.Add(StillDownEvery)
		}
		t := d.cfg.Clock.NewTimer(next.Sub(d.cfg.Clock.Now()))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-changed:
			t.Stop()
			continue
		case <-t.Chan():
		}
		o.mu.Lock()
		stillDown, lastErr, cause := o.down && o.since.Equal(since), o.lastErr, o.cause
		o.mu.Unlock()
		if !stillDown {
			continue
		}
		now := d.cfg.Clock.Now()
		attrs := append([]any{"down_for", now.Sub(since).Round(time.Second), "cause", cause},
			d.pendingAttrs(ctx, now)...)
		d.cfg.Logger.Log(ctx, slog.LevelWarn, "sink still down; deliveries held",
			append(attrs, "last_error", lastErr)...)
	}
}

// roundDuration rounds d for a log line: to the millisecond under a
// minute, else to the second.
func roundDuration(d time.Duration) time.Duration {
	if d < time.Minute {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}
