package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"golang.org/x/sync/errgroup"
)

// RetryPolicy is the retry section of the config.
type RetryPolicy struct {
	Initial time.Duration // first backoff
	Max     time.Duration // backoff cap; also how often a down sink is probed
	MaxAge  time.Duration // past this, a delivery goes to the dead letters
}

// Backoff returns the wait before attempt n+1 after n failed attempts:
// exponential with full jitter, uniform in [Initial, min(Max, Initial·2^(n-1))].
// rnd is a uniform number in [0, 1).
func (p RetryPolicy) Backoff(n int, rnd float64) time.Duration {
	ceil := p.Initial
	for i := 1; i < n && ceil < p.Max; i++ {
		ceil *= 2
	}
	ceil = min(ceil, p.Max)
	if ceil <= p.Initial {
		return ceil
	}
	return p.Initial + time.Duration(rnd*float64(ceil-p.Initial))
}

// DispatcherConfig configures the dispatcher of one sink.
type DispatcherConfig struct {
	Sink         Sink
	Queue        Queue
	Pacer        *Pacer
	Retry        RetryPolicy
	Concurrency  int           // conversations in flight at once; default 4
	Redact       []string      // fields removed before the sink sees an event (see Redact)
	NoPacking    bool          // send every turn alone even if the sink can pack
	Timeout      time.Duration // per send; default the sink's SendTimeout (Budgeted), else DefaultTimeout
	DrainTimeout time.Duration // how long in-flight sends may finish after shutdown begins; default 10s
	Metrics      *Metrics
	// Stats, when set, gives the sink's pending count and oldest pending
	// delivery for the outage log lines (the store).
	Stats  StatsSource
	Logger *slog.Logger
	Clock  clockwork.Clock
	Rand   func() float64 // jitter source; default math/rand/v2
	// Accepting, shared with the receiver, holds a delivery until the
	// receiver has logged its event's acceptance; nil: no wait.
	Accepting *Accepting
	// ReplayCommand is the command line that replays a dead letter when
	// given its id, named in a parked delivery's log line; default
	// "chatrelay dlq replay".
	ReplayCommand string
	// Scrub removes the configured secrets from every error text before
	// it is stored (last_error, a dead letter's reason) or logged; nil
	// scrubs nothing.
	Scrub *Scrubber
}

// Dispatcher delivers one sink's queue: up to Concurrency conversations at
// once, each strictly in order, with retries, pacing, rate-limit holds,
// "sink down" probing and dead letters. It owns every goroutine it starts.
type Dispatcher struct {
	cfg    DispatcherConfig
	name   string
	packer Packer // nil unless the sink packs several turns into one message
	outage *outage

	mu      sync.Mutex
	lastErr string // last failure text, to log a retry at Warn only when it changes
}

// NewDispatcher returns a dispatcher; Run starts it.
func NewDispatcher(cfg DispatcherConfig) (*Dispatcher, error) {
	if cfg.Sink == nil || cfg.Queue == nil || cfg.Metrics == nil {
		return nil, errors.New("dispatcher: sink, queue and metrics are required")
	}
	if cfg.Retry.Initial <= 0 || cfg.Retry.Max < cfg.Retry.Initial || cfg.Retry.MaxAge <= 0 {
		return nil, fmt.Errorf("dispatcher %q: invalid retry policy %+v", cfg.Sink.Name(), cfg.Retry)
	}
	for _, p := range cfg.Redact {
		if err := CheckRedactPath(p); err != nil {
			return nil, fmt.Errorf("dispatcher %q: redact: %w", cfg.Sink.Name(), err)
		}
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
		if b, ok := cfg.Sink.(Budgeted); ok {
			cfg.Timeout = b.SendTimeout()
		}
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Pacer == nil {
		cfg.Pacer = NewPacer(cfg.Clock)
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.ReplayCommand == "" {
		cfg.ReplayCommand = "chatrelay dlq replay"
	}
	d := &Dispatcher{cfg: cfg, name: cfg.Sink.Name(), outage: newOutage()}
	if p, ok := cfg.Sink.(Packer); ok && p.MaxPack() > 1 && !cfg.NoPacking {
		d.packer = p
	}
	cfg.Metrics.InitSink(d.name)
	return d, nil
}

// Run delivers until ctx ends, then lets in-flight sends finish for up to
// DrainTimeout, hands back what was not sent, and returns once every
// goroutine it started has exited.
func (d *Dispatcher) Run(ctx context.Context) error {
	// Sends and settlements run on hard, which outlives ctx by the drain
	// budget: a send in flight at shutdown can finish and be acked.
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	var drain clockwork.Timer
	var drainMu sync.Mutex
	stop := context.AfterFunc(ctx, func() {
		drainMu.Lock()
		drain = d.cfg.Clock.AfterFunc(d.cfg.DrainTimeout, cancelHard)
		drainMu.Unlock()
	})
	defer func() {
		stop()
		drainMu.Lock()
		if drain != nil {
			drain.Stop()
		}
		drainMu.Unlock()
	}()

	g := new(errgroup.Group)
	for range d.cfg.Concurrency {
		g.Go(func() error { return d.work(ctx, hard) })
	}
	g.Go(func() error { return d.watch(ctx) })
	return g.Wait()
}

func (d *Dispatcher) work(ctx, hard context.Context) error {
	for {
		if ctx.Err() != nil {
			return nil // shutdown: start nothing new
		}
		del, err := d.cfg.Queue.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrClosed) {
				return nil
			}
			return fmt.Errorf("sink %q: next delivery: %w", d.name, err)
		}
		d.cfg.Accepting.Wait(ctx, del.Event.ID)
		tk, err := d.cfg.Pacer.Acquire(ctx)
		if err == nil && ctx.Err() != nil {
			// Shutting down: Next and Acquire still hand out what is due
			// at once, but only sends already in flight may finish.
			err = ctx.Err()
		}
		if err != nil {
			d.release(hard, del)
			return nil
		}
		if d.packer != nil && !tk.Probe {
			d.deliverPacked(ctx, hard, del)
			continue
		}
		d.deliver(ctx, hard, del, tk)
	}
}

func (d *Dispatcher) release(ctx context.Context, del *Delivery) {
	if err := del.Release(ctx); err != nil && !errors.Is(err, ErrClosed) {
		d.cfg.Logger.Warn("could not hand back delivery", "event_id", del.Event.ID, "err", err)
	}
}

// deliver makes one attempt and settles the delivery. The attempt and its
// settlement run on ctx (Run's hard context); soft ends when shutdown
// begins, after which no send starts.
func (d *Dispatcher) deliver(soft, ctx context.Context, del *Delivery, tk Ticket) {
	now := d.cfg.Clock.Now()
	if tk.Probe && now.Sub(del.Since) > d.cfg.Retry.MaxAge {
		// While the sink is down, deliveries past max_age are parked
		// without another request to a destination known to be broken.
		d.cfg.Pacer.ReturnProbe(tk)
		d.park(ctx, del, fmt.Sprintf("retry.max_age (%s) passed while the sink was down; last error: %s", d.cfg.Retry.MaxAge, del.LastError))
		return
	}
	ev, err := Redact(del.Event, d.cfg.Redact)
	if err != nil {
		d.cfg.Pacer.ReturnProbe(tk)
		d.park(ctx, del, "could not redact the event: "+err.Error())
		return
	}
	err = d.send(soft, ctx, tk, []*Delivery{del}, func(ctx context.Context) error {
		return d.guard(func() error { return d.post(ctx, ev) }, ev)
	})
	if err == nil {
		d.succeeded(ctx, []*Delivery{del}, tk)
		return
	}
	d.failed(ctx, []*Delivery{del}, tk, err)
}

// deliverPacked sends del together with whatever else is due right now
// (heads of other conversations) in one message, when the sink packs. A
// busy chatbot then still mirrors in near real time into a channel that
// takes one message per second: the pacer decides when the next message may
// go, and everything that became due meanwhile goes in it.
func (d *Dispatcher) deliverPacked(soft, ctx context.Context, del *Delivery) {
	first, err := Redact(del.Event, d.cfg.Redact)
	if err != nil {
		d.deliver(soft, ctx, del, Ticket{})
		return
	}
	if ok, err := d.canPack(ctx, first); err != nil {
		d.failed(ctx, []*Delivery{del}, Ticket{}, err)
		return
	} else if !ok {
		d.deliver(soft, ctx, del, Ticket{})
		return
	}
	batch, evs := []*Delivery{del}, []*Event{first}
	due, cancel := context.WithCancel(ctx)
	cancel() // Next with a done context hands out only what is due now
	for len(batch) < d.packer.MaxPack() {
		more, err := d.cfg.Queue.Next(due)
		if err != nil {
			break
		}
		d.cfg.Accepting.Wait(ctx, more.Event.ID)
		ev, err := Redact(more.Event, d.cfg.Redact)
		if err != nil {
			d.park(ctx, more, "could not redact the event: "+err.Error())
			continue
		}
		ok, err := d.canPack(ctx, ev)
		if err != nil {
			d.failed(ctx, []*Delivery{more}, Ticket{}, err)
			continue
		}
		if !ok {
			d.release(ctx, more) // it goes alone, on a ticket of its own
			break
		}
		batch, evs = append(batch, more), append(evs, ev)
	}
	sent := 1
	if len(batch) == 1 {
		err = d.send(soft, ctx, Ticket{}, batch, func(ctx context.Context) error {
			return d.guard(func() error { return d.post(ctx, first) }, first)
		})
	} else {
		err = d.send(soft, ctx, Ticket{}, batch, func(ctx context.Context) error {
			return d.guard(func() error {
				var rep Report
				var err error
				sent, rep, err = d.packer.SendPacked(ctx, evs)
				d.paced(rep)
				return err
			}, evs...)
		})
	}
	if err != nil {
		if class, _ := Classify(err); class == ClassPermanent && len(batch) > 1 && ctx.Err() == nil {
			// The platform refused the packed message; each turn may well
			// go through alone, so none is parked for what another did.
			d.cfg.Logger.Warn("packed message refused; sending its turns one by one", "events", len(batch), "err", err)
			for _, del := range batch {
				tk, err := d.cfg.Pacer.Acquire(soft)
				if err != nil {
					d.release(context.WithoutCancel(ctx), del) // shutting down: it stays for the next start
					continue
				}
				d.deliver(soft, ctx, del, tk)
			}
			return
		}
		d.failed(ctx, batch, Ticket{}, err)
		return
	}
	if sent < 1 || sent > len(batch) {
		d.cfg.Logger.Error("sink reported an impossible number of packed turns; sending them again",
			"sent", sent, "events", len(batch))
		sent = 0
	}
	// What did not fit goes in a later message, in its place.
	for _, rest := range batch[sent:] {
		d.release(ctx, rest)
	}
	if sent > 1 {
		d.cfg.Metrics.PackedEvents.WithLabelValues(d.name).Add(float64(sent))
		d.cfg.Logger.Debug("packed several turns into one message", "events", sent)
	}
	d.succeeded(ctx, batch[:sent], Ticket{})
}

// post sends ev: through the sink's books when it is a Poster, whose
// report then paces the sink.
func (d *Dispatcher) post(ctx context.Context, ev *Event) error {
	p, ok := d.cfg.Sink.(Poster)
	if !ok {
		return d.cfg.Sink.Send(ctx, ev)
	}
	rep, err := Post(ctx, p, ev)
	d.paced(rep)
	return err
}

// paced applies what a send reported to the sink's pace: a hold its
// destination asked for, and a slot of the pace for each message after
// the first, so that the channel's pace holds on average.
func (d *Dispatcher) paced(rep Report) {
	if !rep.HoldUntil.IsZero() {
		d.cfg.Pacer.HoldUntil(rep.HoldUntil)
	}
	d.cfg.Pacer.Charge(rep.Posts - 1)
}

// canPack asks the sink whether ev may share a message, under guard.
func (d *Dispatcher) canPack(ctx context.Context, ev *Event) (ok bool, err error) {
	err = d.guard(func() error {
		ok = d.packer.CanPack(ctx, ev)
		return nil
	}, ev)
	return ok, err
}

// maxPanicText bounds how much of a panic's value enters a dead letter's
// reason and the log.
const maxPanicText = 300

// guard runs one call into the sink (Send, SendPacked, CanPack) for evs. A
// panic there (a bug in the sink's rendering of these events) must not take
// the relay down, nor come back on every restart: it becomes a permanent
// error, so the delivery is parked with a reason that says what happened,
// and it is logged at error with the stack. The error a call returns comes
// back with the configured secrets scrubbed from its text.
func (d *Dispatcher) guard(call func() error, evs ...*Event) (err error) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		text, _ := Truncate(d.cfg.Scrub.Scrub(fmt.Sprint(v)), maxPanicText)
		err = Permanent(fmt.Errorf("sink %q panicked while handling the event (a bug in chatrelay; please report it with the log line): %s",
			d.name, text), ReasonOther)
		ids := make([]string, len(evs))
		for i, ev := range evs {
			ids[i] = ev.ID
		}
		attrs := []any{"panic", text, "stack", string(debug.Stack())}
		if len(ids) == 1 {
			attrs = append(attrs, "event_id", ids[0])
		} else {
			attrs = append(attrs, "event_ids", ids)
		}
		d.cfg.Logger.Error("sink panicked; treated as a permanent error for this delivery", attrs...)
	}()
	return d.cfg.Scrub.Error(call())
}

// errNotSent reports a send that did not start because shutdown began.
var errNotSent = errors.New("shutdown began before the send started")

// send makes one attempt for dels with the sink's timeout.
func (d *Dispatcher) send(soft, ctx context.Context, tk Ticket, dels []*Delivery, post func(context.Context) error) error {
	if !tk.Probe && d.cfg.Pacer.Held() {
		// Another send's 429 was read between this send's ticket and now
		// (packing reads the store in between): the whole sink waits, this
		// send included, and then takes a fresh slot of the pace.
		if err := d.cfg.Pacer.Reacquire(soft); err != nil {
			return errNotSent
		}
	}
	// Right before posting, not at Next: a wait for the pace, a hold or a
	// stalled process may have outlasted a store's hold on the delivery.
	ctx, unhold, err := hold(ctx, dels)
	if err != nil {
		return err
	}
	defer unhold()
	// The cause wraps context.DeadlineExceeded: HTTP clients report the
	// cause, and it must still read as a timeout (reason "timeout").
	sendCtx, cancel := context.WithTimeoutCause(ctx, d.cfg.Timeout,
		fmt.Errorf("sink %q: no answer within %s: %w", d.name, d.cfg.Timeout, context.DeadlineExceeded))
	defer cancel()
	start := d.cfg.Clock.Now()
	err = post(sendCtx)
	d.cfg.Metrics.DeliveryAttempts.WithLabelValues(d.name).Inc()
	d.cfg.Metrics.DeliveryDuration.WithLabelValues(d.name).Observe(d.cfg.Clock.Since(start).Seconds())
	if cause := context.Cause(ctx); err != nil && errors.Is(cause, ErrNotHeld) {
		// Cut short because the store gave a delivery up mid-send.
		err = fmt.Errorf("%w: %w", cause, err)
	}
	return err
}

// hold takes the store's hold (Holder) on each delivery for one send: the
// context ends when the store gives one up. An error wraps ErrNotHeld.
func hold(ctx context.Context, dels []*Delivery) (context.Context, func(), error) {
	var cancels []context.CancelFunc
	unhold := func() {
		for _, c := range cancels {
			c()
		}
	}
	for _, del := range dels {
		h, ok := del.Settler.(Holder)
		if !ok {
			continue
		}
		hctx, cancel, err := h.Hold(ctx)
		if err != nil {
			unhold()
			return nil, nil, err
		}
		ctx, cancels = hctx, append(cancels, cancel)
	}
	return ctx, unhold, nil
}

func (d *Dispatcher) succeeded(ctx context.Context, dels []*Delivery, tk Ticket) {
	d.markUp(ctx) // the destination works (and the breaker's streak ends)
	// Recorded even past the drain deadline: the send happened.
	ctx = context.WithoutCancel(ctx)
	acked := 0
	for _, del := range dels {
		if err := del.Ack(ctx); err != nil {
			// Not recorded: the delivery will be sent again (at least once).
			d.cfg.Logger.Error("delivered, but could not record it; it will be sent again",
				"event_id", del.Event.ID, "conversation_id", del.Event.ConversationID, "err", err)
			continue
		}
		acked++
		d.cfg.Metrics.Deliveries.WithLabelValues(d.name, ResultDelivered).Inc()
		d.cfg.Logger.Info("delivered", "event_id", del.Event.ID, "topic", del.Event.Topic,
			"conversation_id", del.Event.ConversationID, "attempt", del.Attempts+1)
	}
	d.delivered(acked)
	d.mu.Lock()
	d.lastErr = ""
	d.mu.Unlock()
}

// failed settles every delivery of one failed attempt (one, or a packed
// batch) by the error's class; what concerns the whole sink (down, a
// rate-limit hold) is done once.
func (d *Dispatcher) failed(ctx context.Context, dels []*Delivery, tk Ticket, err error) {
	if errors.Is(err, ErrNotHeld) {
		// The store gave a delivery up before or during the send (it may
		// be another consumer's by now): nothing was sent, or what was is
		// not ours to record. Those still held go back untried.
		d.cfg.Pacer.ReturnProbe(tk)
		d.cfg.Logger.Warn("not sent: the store no longer holds the delivery; it goes out again from the store",
			"event_id", dels[0].Event.ID, "events", len(dels), "err", err)
		for _, del := range dels {
			if err := del.Release(context.WithoutCancel(ctx)); err != nil && !errors.Is(err, ErrNotHeld) && !errors.Is(err, ErrClosed) {
				d.cfg.Logger.Warn("could not hand back delivery", "event_id", del.Event.ID, "err", err)
			}
		}
		return
	}
	if ctx.Err() != nil || errors.Is(err, errNotSent) {
		// Shutdown's drain budget ran out mid-send, or shutdown began
		// before it started: not the destination's fault, so no attempt
		// is counted.
		for _, del := range dels {
			d.release(context.WithoutCancel(ctx), del)
		}
		return
	}
	class, after := Classify(err)
	reason := ReasonOf(err)
	d.cfg.Metrics.DeliveryFailures.WithLabelValues(d.name, string(reason)).Inc()
	now := d.cfg.Clock.Now()
	d.noteError(now, err)
	switch class {
	case ClassPermanent:
		// The destination answered: it works, this event does not.
		d.answered(ctx, tk)
		for _, del := range dels {
			d.park(ctx, del, err.Error())
		}
	case ClassBroken:
		d.reachable()
		delay := d.cfg.Retry.Max
		if tk.Probe || d.downCause() != DownBroken {
			// A send in flight when the sink went down leaves the probe
			// alone: only a probe (or the first sign) sets the next one.
			d.markDown(ctx, now, DownBroken, err, now.Add(delay))
		}
		for _, del := range dels {
			d.retryLater(ctx, del, delay, err, ResultRetried)
		}
	case ClassRateLimited:
		d.answered(ctx, tk)
		d.cfg.Metrics.RateLimited.WithLabelValues(d.name).Inc()
		if after <= 0 {
			// "Retry-After: 0" (or a date in the past): no reason to
			// wait, but no reason to hammer either.
			after = d.cfg.Retry.Initial
		}
		// A hold longer than max_age would outlive every delivery it holds.
		d.cfg.Pacer.HoldUntil(now.Add(min(after, d.cfg.Retry.MaxAge)))
		d.cfg.Logger.Warn("rate limited; holding the sink", "event_id", dels[0].Event.ID, "events", len(dels),
			"delay", after, "reason", reason)
		for _, del := range dels {
			d.retryLater(ctx, del, after, err, ResultRateLimited)
		}
	default:
		unreachable := Unreachable(err)
		var probeDelay time.Duration
		switch {
		case tk.Probe && (unreachable || d.downCause() == DownBroken):
			// Still no sign of life: keep the sink down, probe again later.
			probeDelay = d.probeFailed(now)
		case tk.Probe:
			// The destination answered (a 5xx, say): it is reachable
			// again, and this delivery backs off as any other.
			d.answered(ctx, tk)
		case unreachable:
			if d.unreachable() {
				d.markDown(ctx, now, DownUnreachable, err, now.Add(d.cfg.Retry.Backoff(1, d.cfg.Rand())))
			}
		default:
			d.reachable()
		}
		for _, del := range dels {
			delay := d.cfg.Retry.Backoff(del.Attempts+1, d.cfg.Rand())
			if probeDelay > 0 {
				delay = probeDelay
			}
			d.retryLater(ctx, del, delay, err, ResultRetried)
		}
	}
}

// retryLater schedules another attempt after delay, or parks the delivery
// when that would take it past retry.max_age.
func (d *Dispatcher) retryLater(ctx context.Context, del *Delivery, delay time.Duration, cause error, result string) {
	now := d.cfg.Clock.Now()
	if now.Add(delay).Sub(del.Since) > d.cfg.Retry.MaxAge {
		d.park(ctx, del, fmt.Sprintf("retry.max_age (%s) exceeded after %d attempts; last error: %s",
			d.cfg.Retry.MaxAge, del.Attempts+1, cause))
		return
	}
	if err := del.Nak(ctx, delay, d.cfg.Scrub.Scrub(cause.Error())); err != nil {
		d.cfg.Logger.Error("could not schedule retry", "event_id", del.Event.ID, "err", err)
		return
	}
	d.cfg.Metrics.Deliveries.WithLabelValues(d.name, result).Inc()
	d.mu.Lock()
	changed := d.lastErr != cause.Error()
	d.lastErr = cause.Error()
	d.mu.Unlock()
	level := slog.LevelDebug
	if changed {
		level = slog.LevelWarn
	}
	d.cfg.Logger.Log(ctx, level, "delivery failed; will retry", "event_id", del.Event.ID,
		"conversation_id", del.Event.ConversationID, "attempt", del.Attempts+1, "delay", delay,
		"reason", ReasonOf(cause), "err", cause)
}

// park moves the delivery to the dead letters.
func (d *Dispatcher) park(ctx context.Context, del *Delivery, reason string) {
	reason = d.cfg.Scrub.Scrub(reason)
	if err := del.Term(ctx, reason); err != nil {
		d.cfg.Logger.Error("could not park delivery in the dead letters", "event_id", del.Event.ID, "err", err)
		return
	}
	d.cfg.Metrics.Deliveries.WithLabelValues(d.name, ResultDead).Inc()
	d.cfg.Logger.Error("delivery parked in the dead letters", "event_id", del.Event.ID, "topic", del.Event.Topic,
		"conversation_id", del.Event.ConversationID, "attempt", del.Attempts+1, "reason", reason,
		"replay", d.cfg.ReplayCommand+" "+DeadLetterID(del.Event.ID, d.name))
}
