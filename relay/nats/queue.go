package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/internal/ready"
)

// deliveryState is one delivery's record in the state bucket: what
// JetStream does not keep in chatrelay's terms (failed attempts, the start
// of retry.max_age, the last error, the outcome). It is written on Nak,
// Ack, Requeue and Purge; a delivery without one is on its first attempt.
type deliveryState struct {
	State    string `json:"state"`
	Attempts int    `json:"attempts"` // failed attempts (pending), attempts made (delivered)
	Since    int64  `json:"since"`
	Due      int64  `json:"due,omitempty"`
	LastErr  string `json:"last_error,omitempty"`
	Updated  int64  `json:"updated"`
}

func (s *Store) getState(ctx context.Context, enc, eventID string) (deliveryState, bool, error) {
	var st deliveryState
	e, err := s.state.Get(ctx, stateKey(enc, eventID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return st, false, nil
	}
	if err != nil {
		return st, false, classify(err)
	}
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return st, false, fmt.Errorf("delivery state %s: %w", e.Key(), err)
	}
	return st, true, nil
}

func (s *Store) putState(ctx context.Context, enc, eventID string, st deliveryState) error {
	v, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = s.state.Put(ctx, stateKey(enc, eventID), v)
	return classify(err)
}

// queue is one sink's queue on this replica. A puller per partition keeps a
// pull request open on the partition's durable consumer; with MaxAckPending
// 1 the server hands each partition's head to one replica at a time. Heads
// that arrive wait in ready, at most one per partition, and Next hands out
// the one queued first (lowest queue-stream sequence), as the embedded
// store does.
//
// The queue pulls and hands out only during a term: for a shared sink, one
// term from the first Queue call to Close; for an exclusive sink, each span
// in which this replica holds the sink's ownership lease (own.go).
type queue struct {
	s     *Store
	sink  string
	enc   string
	claim *claim // an exclusive sink's ownership lease; nil for a shared sink

	mu      sync.Mutex
	term    *term              // nil while this replica does not own the (exclusive) sink
	ready   *ready.Heap[*held] // by position in the queue stream: the order they were queued in
	changed chan struct{}      // closed and replaced when ready gains a head or the term changes
	held    map[*held]struct{} // received and not settled: in ready or handed out
	bySeq   map[uint64]*held   // held, by queue-stream sequence
}

// term is a span in which this replica pulls and hands out a sink's
// deliveries.
type term struct {
	ctx    context.Context // ends with the term: pulls stop
	cancel context.CancelFunc
	until  time.Time // nothing is handed out from then on (zero: no end); guarded by queue.mu

	// primed is closed once every partition was asked once without
	// waiting in this term, so the heads present at its start are all in
	// ready before the first is handed out.
	primed   chan struct{}
	unprimed atomic.Int32
}

func newTerm(parent context.Context, partitions int, until time.Time) *term {
	t := &term{until: until, primed: make(chan struct{})}
	t.ctx, t.cancel = context.WithCancel(parent)
	t.unprimed.Store(int32(partitions))
	return t
}

// prime records that one partition was asked; each puller calls it once
// per term.
func (t *term) prime() {
	if t.unprimed.Add(-1) == 0 {
		close(t.primed)
	}
}

func (t *term) isPrimed() bool {
	select {
	case <-t.primed:
		return true
	default:
		return false
	}
}

// live reports whether deliveries may be handed out at now; queue.mu must
// be held.
func (t *term) live(now time.Time) bool { return t.until.IsZero() || now.Before(t.until) }

// Queue implements relay.Store. The first call for a sink starts its
// pullers; for an exclusive sink (Options.Exclusive) they pull only while
// this replica owns the sink.
func (s *Store) Queue(sink string) relay.Queue {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q, ok := s.queues[sink]; ok {
		return q
	}
	q := &queue{
		s:       s,
		sink:    sink,
		enc:     encodeSink(sink),
		ready:   ready.New(func(a, b *held) bool { return a.seq < b.seq }),
		changed: make(chan struct{}),
		held:    make(map[*held]struct{}),
		bySeq:   make(map[uint64]*held),
	}
	if s.opts.Exclusive != nil && s.opts.Exclusive(sink) {
		q.claim = &claim{key: ownerKey(q.enc)}
		select {
		case s.claimNow <- struct{}{}:
		default:
		}
	} else {
		q.term = newTerm(s.ctx, s.opts.Partitions, time.Time{})
	}
	s.queues[sink] = q
	if !s.closing {
		s.wg.Add(s.opts.Partitions)
		for p := range s.opts.Partitions {
			go q.puller(p)
		}
	}
	return q
}

// Next implements relay.Queue. It hands out only during a term, and waits
// for one.
func (q *queue) Next(ctx context.Context) (*relay.Delivery, error) { return q.next(ctx, true) }

// TryNext implements relay.Queue.
func (q *queue) TryNext(ctx context.Context) (*relay.Delivery, error) { return q.next(ctx, false) }

// next hands out the first ready delivery; with wait, it waits for one.
func (q *queue) next(ctx context.Context, wait bool) (*relay.Delivery, error) {
	for {
		if q.s.ctx.Err() != nil {
			return nil, relay.ErrClosed
		}
		q.mu.Lock()
		t, changed := q.term, q.changed
		var primed <-chan struct{}
		if t != nil && t.live(time.Now()) {
			// Once ctx is done, or asked not to wait, what is ready goes
			// out without waiting for the term's first pulls.
			if !t.isPrimed() && ctx.Err() == nil && wait {
				primed = t.primed
			} else if q.ready.Len() > 0 {
				h := q.ready.Pop()
				q.mu.Unlock()
				if !h.valid(q.s.mono()) {
					continue // given up: its hold lapsed while it waited
				}
				return h.del, nil
			}
		}
		q.mu.Unlock()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !wait {
			return nil, nil
		}
		select {
		case <-changed:
		case <-primed:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-q.s.ctx.Done():
			return nil, relay.ErrClosed
		}
	}
}

// awaitTerm waits until this replica may hand out the sink's deliveries and
// returns the term and its end (zero: none), or nil once the store closes.
func (q *queue) awaitTerm() (*term, time.Time) {
	for {
		q.mu.Lock()
		t, changed := q.term, q.changed
		live := t != nil && t.live(time.Now())
		var until time.Time
		if live {
			until = t.until
		}
		q.mu.Unlock()
		if q.s.ctx.Err() != nil {
			return nil, time.Time{}
		}
		if live {
			return t, until
		}
		select {
		case <-changed:
		case <-q.s.ctx.Done():
			return nil, time.Time{}
		}
	}
}

func (q *queue) puller(p int) {
	defer q.s.wg.Done()
	var c jetstream.Consumer
	var primed *term // the term this puller primed
	failures := 0
	for q.s.ctx.Err() == nil {
		// The consumers come first, owner or not: they are shared, and
		// every replica has them at hand when its turn comes.
		if c == nil {
			ctx, cancel := q.s.opCtx()
			cs, err := q.s.queueConsumers(ctx, q.enc)
			cancel()
			if err != nil {
				// Next need not wait for this partition meanwhile.
				if t := q.currentTerm(); t != nil && primed != t {
					t.prime()
					primed = t
				}
				failures++
				if failures == 3 {
					q.s.log.Warn("cannot create the sink's consumers; retrying", "sink", q.sink, "err", err)
				}
				q.s.backoff(failures)
				continue
			}
			c = cs[p]
		}
		t, until := q.awaitTerm()
		if t == nil {
			return
		}
		if primed != t {
			if err := q.s.pullNoWait(c, q.receive); err != nil {
				// Only the first look of the term; the pulls that follow
				// report and retry.
				q.s.log.Debug("could not look for the sink's deliveries", "sink", q.sink, "partition", p, "err", err)
			}
			t.prime()
			primed = t
			continue
		}
		if err := q.s.pull(t.ctx, until, c, 64, q.receive); err != nil {
			if consumerGone(err) {
				q.s.forgetConsumers(q.enc)
				c = nil
			}
			failures++
			if failures == 3 {
				q.s.log.Warn("cannot read the sink's queue; retrying", "sink", q.sink, "partition", p, "err", err)
			}
			q.s.backoff(failures)
			continue
		}
		failures = 0
	}
}

func (q *queue) currentTerm() *term {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.term
}

// consumerGone reports a pull that failed because its consumer no longer
// exists (deleted by hand, or never created on a restored server).
func consumerGone(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) ||
		errors.Is(err, natsgo.ErrNoResponders)
}

// receive turns one message, which came on a pull request sent at pulled
// (mono), into a delivery and puts it in ready.
func (q *queue) receive(m jetstream.Msg, pulled int64) {
	h := &held{q: q, msg: m}
	h.renewed.Store(pulled)
	h.life, h.end = context.WithCancelCause(context.Background())
	ev, meta := eventOf(m.Headers(), m.Data())
	h.del = &relay.Delivery{Event: ev, Sink: q.sink, Since: parseNanos(m.Headers().Get(hdrSince)),
		LastError: unescape(m.Headers().Get(hdrLastErr)), Settler: h}
	if h.del.Since.IsZero() {
		h.del.Since = meta.Received
	}
	md, err := m.Metadata()
	if err != nil {
		q.s.log.Error("delivery without JetStream metadata; handing it back", "sink", q.sink, "event_id", meta.ID, "err", err)
		q.drop(h, func() error { return m.NakWithDelay(time.Second) })
		return
	}
	h.seq, h.delivered = md.Sequence.Stream, md.NumDelivered
	if old := q.track(h); old != nil {
		// The server handed out again a delivery this replica still
		// counted as held: it took the old hold for lapsed, so that one
		// is void (its send, if under way, is cut short).
		q.s.giveUp(old)
	}
	if !h.valid(q.s.mono()) {
		return // it came too late: the server may have handed it to another replica since
	}
	repeat := m.Headers().Get(hdrRepeat) != ""
	if md.NumDelivered > 1 || repeat {
		// Tried before (or handed back), or queued again by a repair: its
		// record says how often, why it failed, when it is due, or that
		// it was settled already.
		if !q.applyState(h, meta.ID, repeat) {
			return
		}
	}
	if !h.valid(q.s.mono()) {
		return // its record took too long to read
	}
	q.mu.Lock()
	if h.settled.Load() { // given up meanwhile
		q.mu.Unlock()
		return
	}
	if t := q.term; t == nil || !t.live(time.Now()) {
		// The sink's ownership lapsed while this was on its way: hand it
		// back untried for the owner.
		q.mu.Unlock()
		q.drop(h, h.msg.Nak)
		return
	}
	q.ready.Push(h)
	q.notifyLocked()
	q.mu.Unlock()
}

// notifyLocked wakes whoever waits on changed; q.mu must be held.
func (q *queue) notifyLocked() {
	close(q.changed)
	q.changed = make(chan struct{})
}

// applyState updates a delivery from its record, or settles the message
// and reports false when it is not to be handed out now. A repeat (queued
// again by a repair) whose delivery has a dead letter but no record of it
// is dropped too.
func (q *queue) applyState(h *held, eventID string, repeat bool) bool {
	ctx, cancel := q.s.opCtx()
	defer cancel()
	st, ok, err := q.s.getState(ctx, q.enc, eventID)
	if err == nil && !ok && repeat {
		var dead bool
		if dead, err = q.s.hasDeadLetter(ctx, q.enc, eventID); err == nil && dead {
			st, ok = deliveryState{State: relay.StateDead}, true
		}
	}
	if err != nil {
		// Without its record the attempt count would restart, or a
		// settled delivery go out again: try later.
		q.s.log.Warn("cannot read delivery state; handing the delivery back", "sink", q.sink, "event_id", eventID, "err", err)
		q.drop(h, func() error { return h.msg.NakWithDelay(time.Second) })
		return false
	}
	if !ok {
		return true
	}
	switch st.State {
	case relay.StateDelivered, relay.StateDead, relay.StatePurged:
		// Settled already: this is a repeat (a repair queued it again,
		// or terminating the message failed after it was parked); it is
		// not sent again.
		q.s.log.Debug("dropped a repeat of a settled delivery", "sink", q.sink, "event_id", eventID, "state", st.State)
		q.drop(h, h.msg.Ack)
		return false
	case relay.StatePending:
		if due := time.Unix(0, st.Due); st.Due != 0 && time.Until(due) > 10*time.Millisecond {
			// Back before its time (the replica that scheduled it died
			// between the record and the nak): wait the rest.
			q.drop(h, func() error { return h.msg.NakWithDelay(time.Until(due)) })
			return false
		}
		h.del.Attempts, h.del.LastError = st.Attempts, st.LastErr
		if st.Since != 0 {
			h.del.Since = time.Unix(0, st.Since).UTC()
		}
	}
	return true
}

// track counts h as held, and returns the delivery of the same message
// held before, if any.
func (q *queue) track(h *held) *held {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.held[h] = struct{}{}
	old := q.bySeq[h.seq]
	q.bySeq[h.seq] = h
	return old
}

// drop settles a message that is not handed out, if it is still held (a
// settlement of a lapsed one would land on another replica's hold).
func (q *queue) drop(h *held, settle func() error) {
	if h.valid(q.s.mono()) && h.settled.CompareAndSwap(false, true) {
		if err := settle(); err != nil {
			q.s.log.Warn("could not settle a delivery that is not handed out; NATS hands it out again after the ack wait",
				"sink", q.sink, "event_id", h.del.Event.ID, "err", err)
		}
	}
	q.untrack(h)
}

// untrack forgets a settled delivery.
func (q *queue) untrack(h *held) {
	h.end(errSettled)
	q.mu.Lock()
	delete(q.held, h)
	if q.bySeq[h.seq] == h {
		delete(q.bySeq, h.seq)
	}
	q.ready.Remove(h)
	q.mu.Unlock()
}

// handBack naks everything this replica holds and has not settled, so
// another replica takes it at once instead of after AckWait.
func (q *queue) handBack() {
	q.mu.Lock()
	hs := make([]*held, 0, len(q.held))
	for h := range q.held {
		hs = append(hs, h)
	}
	q.mu.Unlock()
	for _, h := range hs {
		q.drop(h, h.msg.Nak)
	}
}

// queueList returns the queues this replica consumes.
func (s *Store) queueList() []*queue {
	s.mu.Lock()
	defer s.mu.Unlock()
	qs := make([]*queue, 0, len(s.queues))
	for _, q := range s.queues {
		qs = append(qs, q)
	}
	return qs
}

// held is one delivery this replica received; it is the delivery's
// relay.Settler.
type held struct {
	q          *queue
	msg        jetstream.Msg
	seq        uint64 // position in the queue stream
	delivered  uint64 // how often the server handed it out, this time included
	ready.Slot        // its place in ready
	del        *relay.Delivery
	settled    atomic.Bool
	lost       atomic.Bool  // given up: its hold lapsed (hold.go)
	renewed    atomic.Int64 // its anchor: when the last renewal NATS confirmed was sent (Store.mono)

	// life ends when the delivery is settled or given up, with the
	// reason; a send under its hold (Hold) ends with it.
	life context.Context
	end  context.CancelCauseFunc
}

// settleCtx bounds a settlement. A settlement finishes even when the
// caller's ctx has ended (as a queued write of the embedded store does):
// an outcome that happened is worth recording, and Close waits for no one.
func (s *Store) settleCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), s.opts.Timeout)
}

var errSettled = errors.New("delivery already settled")

func (h *held) once() error {
	if !h.valid(h.q.s.mono()) {
		return errLost
	}
	if !h.settled.CompareAndSwap(false, true) {
		if h.lost.Load() {
			return errLost
		}
		return errSettled
	}
	return nil
}

// Ack records the delivery as delivered, then acks and waits for the
// server to confirm (the partition's next delivery may go only then). The
// record comes first: once the message is gone, a repeat of it may come
// out of the queue at once, and the record is what drops it. A record that
// cannot be written does not hold the ack back (on a full server the ack
// is what frees room); it is logged.
func (h *held) Ack(ctx context.Context) error {
	err := h.once()
	if err != nil && !errors.Is(err, errLost) {
		return err
	}
	defer h.q.untrack(h)
	ctx, cancel := h.q.s.settleCtx(ctx)
	defer cancel()
	d, s := h.del, h.q.s
	now := time.Now()
	// Recorded even when the hold lapsed meanwhile: the send was made, and
	// the record drops the copy the server hands out again, if it comes
	// out after this.
	if err := s.putState(ctx, h.q.enc, d.Event.ID, deliveryState{State: relay.StateDelivered, Attempts: d.Attempts + 1,
		Since: d.Since.UnixNano(), Updated: now.UnixNano()}); err != nil {
		s.log.Warn("delivered, but could not record it; a repeat of this delivery would not be recognised",
			"sink", h.q.sink, "event_id", d.Event.ID, "err", err)
	}
	if err != nil {
		return err // the ack would land on another replica's hold
	}
	if !h.still() {
		return errLost
	}
	if err := h.msg.DoubleAck(ctx); err != nil {
		return fmt.Errorf("ack: %w", classify(err))
	}
	return nil
}

// Nak records the failed attempt, then asks the server to deliver the
// message again after delay (to whichever replica asks first).
func (h *held) Nak(ctx context.Context, delay time.Duration, lastErr string) error {
	if err := h.once(); err != nil {
		return err
	}
	defer h.q.untrack(h)
	d, s := h.del, h.q.s
	ctx, cancel := s.settleCtx(ctx)
	defer cancel()
	now := time.Now()
	perr := s.putState(ctx, h.q.enc, d.Event.ID, deliveryState{State: relay.StatePending, Attempts: d.Attempts + 1,
		Since: d.Since.UnixNano(), Due: now.Add(delay).UnixNano(), LastErr: lastErr, Updated: now.UnixNano()})
	if !h.still() {
		return errLost
	}
	var nerr error
	if delay > 0 {
		nerr = h.msg.NakWithDelay(delay)
	} else {
		nerr = h.msg.Nak()
	}
	if nerr != nil {
		return fmt.Errorf("nak: %w", classify(nerr))
	}
	if perr != nil {
		// The retry is scheduled all the same; only its history is short.
		s.log.Warn("retry scheduled, but its attempt could not be recorded; the delivery's attempt count and last error restart",
			"sink", h.q.sink, "event_id", d.Event.ID, "err", perr)
	}
	return nil
}

// Term writes the dead letter first, then terminates the message. If the
// dead letter cannot be written (a full server) the delivery is handed
// back instead, so nothing is lost, after a delay growing with each time
// it came back (Options.Backoff): it will be sent again before it can be
// parked, and a sink refusing it must not see it a thousand times a
// second.
func (h *held) Term(ctx context.Context, reason string) error {
	if err := h.once(); err != nil {
		return err
	}
	defer h.q.untrack(h)
	d, s := h.del, h.q.s
	ctx, cancel := s.settleCtx(ctx)
	defer cancel()
	p := s.l.partitionHeader(h.msg.Headers(), d.Event)
	if err := s.park(ctx, h.q.sink, p, d.Event, d.Attempts, d.Since, reason); err != nil {
		if h.still() {
			delay := s.opts.Backoff.Backoff(int(h.delivered), rand.Float64())
			if nerr := h.msg.NakWithDelay(delay); nerr != nil {
				s.log.Warn("could not hand back a delivery that could not be parked; NATS hands it out again after the ack wait",
					"sink", h.q.sink, "event_id", d.Event.ID, "err", nerr)
			}
		}
		return fmt.Errorf("term: write dead letter: %w", err)
	}
	if !h.still() {
		// Parked; the server hands the message out again and its record
		// (dead) drops it.
		return nil
	}
	// Confirmed like Ack's: once Term returns, the message is out of the
	// queue stream, so Lookup reads the dead letter, not a queued delivery.
	if _, err := s.nc.RequestWithContext(ctx, h.msg.Reply(), []byte("+TERM "+termReason(reason))); err != nil {
		// Parked all the same; the message comes back after AckWait and
		// its new dead letter replaces this one.
		s.log.Warn("parked, but could not terminate the message", "sink", h.q.sink, "event_id", d.Event.ID, "err", err)
	}
	return nil
}

// Release hands the message back untried: the server delivers it again at
// once; the attempt count in the state bucket is untouched.
func (h *held) Release(context.Context) error {
	if err := h.once(); err != nil {
		return err
	}
	defer h.q.untrack(h)
	if err := h.msg.Nak(); err != nil {
		return fmt.Errorf("release: %w", classify(err))
	}
	return nil
}

// still reports whether h is still held, right before a settlement goes to
// the server: one that lapsed would land on another replica's hold (the
// server takes acks, naks and terms by stream sequence alone).
func (h *held) still() bool { return h.valid(h.q.s.mono()) }

// termReason is a dead letter's reason as a Term carries it: at most 256
// bytes.
func termReason(reason string) string {
	r, _ := relay.TruncateBytes(reason, 256)
	return r
}

// pullWait is one pull request's life: at most AckWait/4, so that a
// delivery arriving on one has most of its hold left (hold.go).
func (s *Store) pullWait() time.Duration { return min(maxPullWait, s.opts.AckWait/4) }

// pullNoWait takes what the consumer has for us right now, if anything.
// handle gets each message with the time the request was sent (mono).
func (s *Store) pullNoWait(c jetstream.Consumer, handle func(jetstream.Msg, int64)) error {
	if !s.nc.IsConnected() {
		return nil
	}
	sent := s.mono()
	res, err := c.FetchNoWait(1)
	if err != nil {
		return err
	}
	for m := range res.Messages() {
		handle(m, sent)
	}
	return res.Error()
}

// pull asks a consumer for up to batch messages and hands each to handle
// as it arrives, until the pull request expires, the connection comes back
// from an outage (the request may be gone with the old server), ctx ends
// (the queue's term) or the store closes. With until set the request
// expires then on the server too, so a replica whose ownership of a sink
// lapses has no request left there to receive the sink's messages. handle
// runs on the calling goroutine.
func (s *Store) pull(ctx context.Context, until time.Time, c jetstream.Consumer, batch int, handle func(jetstream.Msg, int64)) error {
	epoch := s.currentEpoch()
	if !s.nc.IsConnected() {
		// Nothing can arrive; wait for the reconnect (which ends the epoch).
		t := time.NewTimer(s.pullWait())
		defer t.Stop()
		select {
		case <-epoch.Done():
		case <-ctx.Done():
		case <-t.C:
		}
		return nil
	}
	deadline := time.Now().Add(s.pullWait())
	if !until.IsZero() && until.Before(deadline) {
		deadline = until
	}
	fctx, cancel := context.WithDeadline(epoch, deadline)
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()
	left := time.Until(deadline)
	if left < minPull {
		// The term ends now unless renewed meanwhile: wait and see.
		<-fctx.Done()
		return nil
	}
	opts := []jetstream.FetchOpt{jetstream.FetchContext(fctx)}
	if left >= 4*pullHeartbeat {
		opts = append(opts, jetstream.FetchHeartbeat(pullHeartbeat))
	}
	sent := s.mono()
	res, err := c.Fetch(batch, opts...)
	if err != nil {
		return err
	}
	for m := range res.Messages() {
		handle(m, sent)
	}
	err = res.Error()
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}
