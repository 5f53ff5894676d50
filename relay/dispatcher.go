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

// DispatcherConfig configures the dispatcher of one sink.
type DispatcherConfig struct {
	Sink        Sink
	Queue       Queue
	Retry       RetryPolicy
	Concurrency int      // conversations in flight at once; default 4
	Redact      []string // fields removed before the sink sees an event (see Redact)
	NoPacking   bool     // send every turn alone even if the sink can pack
	// PaceEvery and PaceBurst space the sink's sends (Pace): unless
	// PaceEvery is set, the sink's own pace (Paced), if it has one;
	// PaceEvery < 0 paces nothing.
	PaceEvery    time.Duration
	PaceBurst    int
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
	// Outcomes, when set, is told how each delivery ended (delivered, or
	// dead-lettered) before the store records it: what it queues in
	// consequence (Followups) is durable before the delivery is settled.
	// If it implements Waits too, it is told of each delivery that waits.
	Outcomes Outcomes
}

// Outcomes is told how deliveries ended.
type Outcomes interface {
	// Outcome is called once the delivery's end is known and before it is
	// recorded; ctx outlives shutdown's start. It must not block for
	// long: the delivery is settled after it returns.
	Outcome(ctx context.Context, o Outcome)
}

// Waits, when the Outcomes implements it too, is told of each delivery
// that is not settled but waits (SPEC §5: held, not dead): one that failed
// and is to be tried again, and one handed out while its sink is down,
// which waits for the sink's probe. It is told on every such wait (what it
// does in consequence must be idempotent), before the retry is scheduled,
// and must not block for long.
type Waits interface {
	Waiting(ctx context.Context, w Wait)
}

// Wait is a delivery that waits for another attempt.
type Wait struct {
	Sink  string
	Event *Event
	// Down is why the sink is down (DownBroken, DownUnreachable); "" while
	// it is up.
	Down string
	// Err is the last failure (its text scrubbed): this attempt's, or the
	// sink's last while it is down.
	Err error
	// Since is the start of the delivery's retry.max_age (as Outcome's);
	// Next is when it may be tried again, zero when that is the sink's
	// next probe.
	Since, Next time.Time
}

// Outcome is how one delivery ended.
type Outcome struct {
	Sink  string
	Event *Event
	// Dead is set when the delivery goes to the dead letters, with the
	// reason (scrubbed) and its dead letter's id; else it was delivered.
	Dead         bool
	Reason       string
	DeadLetterID string
	// Since is the start of the delivery's retry.max_age: its acceptance,
	// or its last replay.
	Since time.Time
}

// Dispatcher delivers one sink's queue: up to Concurrency conversations at
// once, each strictly in order, with retries, pacing, rate-limit holds,
// "sink down" probing and dead letters. It owns every goroutine it starts.
//
// Two contexts run through it: ctx ends when shutdown begins (nothing new
// starts after that), and drain outlives it by DrainTimeout (a send in
// flight may finish, and its outcome is recorded).
type Dispatcher struct {
	cfg    DispatcherConfig
	name   string
	packer *packer // nil unless the sink packs several turns into one message
	// When a send may start, by the parts admit composes: the sink's
	// pace, a hold its destination asked for, and while it is down (the
	// breaker, outage), its probe ticket.
	pace   *Pace
	hold   *Hold
	probes *probes
	outage *outage

	mu      sync.Mutex
	lastErr string // last failure text, to log a retry at Warn only when it changes
}

// Ticket is the permission to send once.
type Ticket struct {
	// Probe is set when the sink is down and this send is the probe that
	// finds out whether the destination works again.
	Probe bool
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
	if cfg.PaceEvery == 0 {
		if p, ok := cfg.Sink.(Paced); ok {
			cfg.PaceEvery, cfg.PaceBurst = p.Pace()
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
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.ReplayCommand == "" {
		cfg.ReplayCommand = "chatrelay dlq replay"
	}
	d := &Dispatcher{cfg: cfg, name: cfg.Sink.Name(), outage: newOutage(),
		pace: NewPace(cfg.Clock, cfg.PaceEvery, cfg.PaceBurst), hold: NewHold(cfg.Clock), probes: newProbes(cfg.Clock)}
	if p, ok := cfg.Sink.(Packer); ok && p.MaxPack() > 1 && !cfg.NoPacking {
		d.packer = &packer{d: d, sink: p}
	}
	cfg.Metrics.InitSink(d.name)
	return d, nil
}

// Run delivers until ctx ends, then lets in-flight sends finish for up to
// DrainTimeout, hands back what was not sent, and returns once every
// goroutine it started has exited. A worker that fails (the store cannot
// hand out deliveries) stops the others: the sink's deliveries stop, which
// is logged at error and returned.
func (d *Dispatcher) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	drain, stop := d.drainAfter(ctx)
	defer stop()
	for range d.cfg.Concurrency {
		g.Go(func() error { return d.work(ctx, drain) })
	}
	g.Go(func() error { return d.watch(ctx) })
	if err := g.Wait(); err != nil {
		d.cfg.Metrics.SinkUp.WithLabelValues(d.name).Set(0)
		d.cfg.Logger.Error("the sink's deliveries stopped; nothing is sent to it until chatrelay restarts", "err", err)
		return fmt.Errorf("sink %q: %w", d.name, err)
	}
	return nil
}

// drainAfter returns the drain context: it ends DrainTimeout after ctx
// does, or when stop is called.
func (d *Dispatcher) drainAfter(ctx context.Context) (drain context.Context, stop func()) {
	drain, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var mu sync.Mutex
	var timer clockwork.Timer
	unregister := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		timer = d.cfg.Clock.AfterFunc(d.cfg.DrainTimeout, cancel)
	})
	return drain, func() {
		unregister()
		mu.Lock()
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancel()
	}
}

// work is one worker: it takes the next due delivery, waits until a send
// may start, and sends it (with what may share its message).
func (d *Dispatcher) work(ctx, drain context.Context) error {
	for ctx.Err() == nil {
		del, err := d.cfg.Queue.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrClosed) {
				return nil
			}
			return fmt.Errorf("next delivery: %w", err)
		}
		d.cfg.Accepting.Wait(ctx, del.Event.ID)
		if down, err := d.downNow(); down != "" {
			// Held without an attempt until the probe finds the sink up.
			d.waiting(ctx, Wait{Sink: d.name, Event: del.Event, Down: down, Err: err, Since: del.Since})
		}
		tk, err := d.admit(ctx)
		if err == nil && ctx.Err() != nil {
			// Shutting down: what is due at once is still handed out,
			// but only sends already in flight may finish.
			if tk.Probe {
				d.probes.giveBack()
			}
			err = ctx.Err()
		}
		if err != nil {
			d.release(drain, del)
			return nil
		}
		if d.packer != nil && !tk.Probe {
			d.packer.deliver(ctx, drain, del)
			continue
		}
		d.deliver(ctx, drain, del, tk)
	}
	return nil
}

// admit waits until one send may start: past any hold, as the one probe
// of a sink that is down (at its time), else through the pace. A hold or
// an outage that begins while a send waits for its slot of the pace holds
// that send too. It returns ctx.Err() if ctx ends first.
func (d *Dispatcher) admit(ctx context.Context) (Ticket, error) {
	for {
		if err := d.hold.Wait(ctx); err != nil {
			return Ticket{}, err
		}
		probe, err := d.probes.take(ctx)
		if err != nil {
			return Ticket{}, err
		}
		if probe {
			if d.hold.Held() { // a hold began while it waited
				d.probes.giveBack()
				continue
			}
			return Ticket{Probe: true}, nil
		}
		if err := d.pace.Wait(ctx); err != nil {
			return Ticket{}, err
		}
		if d.hold.Held() || d.probes.isDown() {
			continue // begun while this send waited for its slot: wait as they say
		}
		return Ticket{}, nil
	}
}

// readmit is admit for a send that has its ticket but found a hold begun
// since (another send's 429, read while this one gathered turns to pack):
// it waits the hold out and takes a fresh slot of the pace. Being down
// does not concern it: its ticket was granted before, as any send's in
// flight when the sink went down.
func (d *Dispatcher) readmit(ctx context.Context) error {
	for {
		if err := d.hold.Wait(ctx); err != nil {
			return err
		}
		if err := d.pace.Wait(ctx); err != nil {
			return err
		}
		if !d.hold.Held() {
			return nil
		}
	}
}

func (d *Dispatcher) release(ctx context.Context, del *Delivery) {
	if err := del.Release(ctx); err != nil && !errors.Is(err, ErrClosed) {
		d.cfg.Logger.Warn("could not hand back delivery", "event_id", del.Event.ID, "err", err)
	}
}

// deliver makes one attempt at del alone and settles it.
func (d *Dispatcher) deliver(ctx, drain context.Context, del *Delivery, tk Ticket) {
	if tk.Probe && d.cfg.Clock.Now().Sub(del.Since) > d.cfg.Retry.MaxAge {
		// While the sink is down, deliveries past max_age are parked
		// without another request to a destination known to be broken.
		d.probes.giveBack()
		d.park(drain, del, fmt.Sprintf("retry.max_age (%s) passed while the sink was down; last error: %s", d.cfg.Retry.MaxAge, del.LastError))
		return
	}
	ev, err := Redact(del.Event, d.cfg.Redact)
	if err != nil {
		if tk.Probe {
			d.probes.giveBack()
		}
		d.park(drain, del, "could not redact the event: "+err.Error())
		return
	}
	d.sendOne(ctx, drain, del, ev, tk)
}

// sendOne sends ev, del's event as the sink sees it, and settles del.
func (d *Dispatcher) sendOne(ctx, drain context.Context, del *Delivery, ev *Event, tk Ticket) {
	dels := []*Delivery{del}
	err := d.send(ctx, drain, tk, dels, func(ctx context.Context) error { return d.post(ctx, ev) })
	d.settle(drain, dels, tk, err)
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
		d.hold.Until(rep.HoldUntil)
	}
	d.pace.Charge(rep.Posts - 1)
}

// errNotSent reports a send that did not start because shutdown began.
var errNotSent = errors.New("shutdown began before the send started")

// send makes one attempt for dels within the sink's send timeout: call,
// a call into the sink, runs under guard. A send that meets a hold begun
// after its ticket waits it out first.
func (d *Dispatcher) send(ctx, drain context.Context, tk Ticket, dels []*Delivery, call func(context.Context) error) error {
	if !tk.Probe && d.hold.Held() {
		// Another send's 429 was read between this send's ticket and now
		// (packing reads the store in between): the whole sink waits, this
		// send included, and then takes a fresh slot of the pace.
		if err := d.readmit(ctx); err != nil {
			return errNotSent
		}
	}
	// Right before posting, not at Next: a wait for the pace, a hold or a
	// stalled process may have outlasted a store's hold on the delivery.
	held, unhold, err := holdDeliveries(drain, dels)
	if err != nil {
		return err
	}
	defer unhold()
	// The cause wraps context.DeadlineExceeded: HTTP clients report the
	// cause, and it must still read as a timeout (reason "timeout").
	sendCtx, cancel := context.WithTimeoutCause(held, d.cfg.Timeout,
		fmt.Errorf("sink %q: no answer within %s: %w", d.name, d.cfg.Timeout, context.DeadlineExceeded))
	defer cancel()
	start := d.cfg.Clock.Now()
	err = d.guard(func() error { return call(sendCtx) }, dels...)
	d.cfg.Metrics.DeliveryAttempts.WithLabelValues(d.name).Inc()
	d.cfg.Metrics.DeliveryDuration.WithLabelValues(d.name).Observe(d.cfg.Clock.Since(start).Seconds())
	if cause := context.Cause(held); err != nil && errors.Is(cause, ErrNotHeld) {
		// Cut short because the store gave a delivery up mid-send.
		err = fmt.Errorf("%w: %w", cause, err)
	}
	return err
}

// holdDeliveries takes the store's hold (Holder) on each delivery for
// one send: the
// context ends when the store gives one up. An error wraps ErrNotHeld.
func holdDeliveries(ctx context.Context, dels []*Delivery) (context.Context, func(), error) {
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

// maxPanicText bounds how much of a panic's value enters a dead letter's
// reason and the log.
const maxPanicText = 300

// guard runs one call into the sink (Turn, Send, SendPacked, CanPack) for
// dels. A
// panic there (a bug in the sink's rendering of these events) must not take
// the relay down, nor come back on every restart: it becomes a permanent
// error, so the delivery is parked with a reason that says what happened,
// and it is logged at error with the stack. The error a call returns comes
// back with the configured secrets scrubbed from its text.
func (d *Dispatcher) guard(call func() error, dels ...*Delivery) (err error) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		text, _ := Truncate(d.cfg.Scrub.Scrub(fmt.Sprint(v)), maxPanicText)
		err = Permanent(fmt.Errorf("sink %q panicked while handling the event (a bug in chatrelay; please report it with the log line): %s",
			d.name, text), ReasonOther)
		ids := make([]string, len(dels))
		for i, del := range dels {
			ids[i] = del.Event.ID
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

// settle records the outcome of one attempt for dels.
func (d *Dispatcher) settle(drain context.Context, dels []*Delivery, tk Ticket, err error) {
	if err == nil {
		d.succeeded(drain, dels, tk)
		return
	}
	d.failed(drain, dels, tk, err)
}

func (d *Dispatcher) succeeded(ctx context.Context, dels []*Delivery, tk Ticket) {
	d.markUp(ctx) // the destination works (and the breaker's streak ends)
	// Recorded even past the drain deadline: the send happened.
	ctx = context.WithoutCancel(ctx)
	acked := 0
	for _, del := range dels {
		d.outcome(ctx, Outcome{Sink: d.name, Event: del.Event, Since: del.Since})
		if err := del.Ack(ctx); err != nil {
			if errors.Is(err, ErrNotHeld) {
				// The store gave the delivery up while it was being sent
				// (this process stalled, or lost the store): it is someone
				// else's by now, and this send counts as a repeat.
				d.cfg.Logger.Warn("sent, but the store had given the delivery up meanwhile (this replica stalled or lost "+
					"the store); not counted as delivered here, the store hands it out again",
					"event_id", del.Event.ID, "conversation_id", del.Event.ConversationID, "err", err)
				continue
			}
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
		if tk.Probe {
			d.probes.giveBack()
		}
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
		if tk.Probe {
			d.probes.giveBack()
		}
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
		d.hold.Until(now.Add(min(after, d.cfg.Retry.MaxAge)))
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
	// Told before the retry is scheduled, while this worker holds the
	// delivery: what it queues precedes what the delivery's end queues.
	d.waiting(ctx, Wait{Sink: d.name, Event: del.Event, Down: d.downCause(), Err: cause, Since: del.Since, Next: now.Add(delay)})
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
	d.outcome(ctx, Outcome{Sink: d.name, Event: del.Event, Dead: true, Reason: reason,
		DeadLetterID: DeadLetterID(del.Event.ID, d.name), Since: del.Since})
	if err := del.Term(ctx, reason); err != nil {
		d.cfg.Logger.Error("could not park delivery in the dead letters", "event_id", del.Event.ID, "err", err)
		return
	}
	d.cfg.Metrics.Deliveries.WithLabelValues(d.name, ResultDead).Inc()
	d.cfg.Logger.Error("delivery parked in the dead letters", "event_id", del.Event.ID, "topic", del.Event.Topic,
		"conversation_id", del.Event.ConversationID, "attempt", del.Attempts+1, "reason", reason,
		"replay", d.cfg.ReplayCommand+" "+DeadLetterID(del.Event.ID, d.name))
}

// waiting tells the Outcomes, if they implement Waits, of a delivery that
// waits.
func (d *Dispatcher) waiting(ctx context.Context, w Wait) {
	if ws, ok := d.cfg.Outcomes.(Waits); ok {
		ws.Waiting(context.WithoutCancel(ctx), w)
	}
}

// outcome tells the Outcomes, if any, how a delivery ended.
func (d *Dispatcher) outcome(ctx context.Context, o Outcome) {
	if d.cfg.Outcomes != nil {
		d.cfg.Outcomes.Outcome(context.WithoutCancel(ctx), o)
	}
}
