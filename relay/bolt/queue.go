package bolt

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	bbolt "go.etcd.io/bbolt"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/internal/ready"
)

// item is one pending delivery, in memory: 64 bytes. The event body stays
// on disk until the delivery is handed out, and the conversation's key is
// kept once per conversation, so a large backlog costs little memory.
type item struct {
	seq      uint64
	id       uuid.UUID
	received int64
	since    int64
	due      int64
	attempts int
	written  uint64 // intake record of its last change (0: applied before the start)
}

// queued is an item on its way from a commit to its sink's queue.
type queued struct {
	sink, key string
	it        *item
}

// conv is one conversation's FIFO within one sink's queue. Only its head is
// ever handed out, and only when no delivery of it is in flight.
type conv struct {
	key        string
	items      []*item
	inflight   bool
	ready.Slot // its place in the ready heap
}

// queue is the scheduler of one sink: a FIFO per conversation and a heap of
// the conversations whose head may go next, ordered by due time, then by
// acceptance order. A conversation that backs off never holds up another.
type queue struct {
	s    *Store
	sink string

	mu      sync.Mutex
	convs   map[string]*conv
	ready   *ready.Heap[*conv]
	depth   int
	dead    int
	closed  bool
	changed chan struct{} // closed and replaced when a head may have become due
}

func (s *Store) newQueue(sink string) *queue {
	return &queue{s: s, sink: sink, convs: make(map[string]*conv), changed: make(chan struct{}),
		ready: ready.New(byDue)}
}

// push appends it to the conversation key; the caller holds mu or owns q
// alone.
func (q *queue) push(key string, it *item) {
	c, ok := q.convs[key]
	if !ok {
		c = &conv{key: key}
		q.convs[key] = c
	}
	c.items = append(c.items, it)
	q.depth++
	if len(c.items) == 1 && !c.inflight {
		q.ready.Push(c)
	}
}

// add is push for a delivery just made durable. It runs on the logger
// (an entry's after): the waiters hear of it once for the whole group.
func (q *queue) add(key string, it *item) {
	q.mu.Lock()
	q.push(key, it)
	q.mu.Unlock()
	q.s.wakeAfterGroup(q)
}

func (q *queue) notifyLocked() {
	close(q.changed)
	q.changed = make(chan struct{})
}

func (q *queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		q.notifyLocked()
	}
}

// Next implements relay.Queue.
func (q *queue) Next(ctx context.Context) (*relay.Delivery, error) { return q.next(ctx, true) }

// TryNext implements relay.Queue.
func (q *queue) TryNext(ctx context.Context) (*relay.Delivery, error) { return q.next(ctx, false) }

// next hands out the first due head; with wait, it waits for one.
func (q *queue) next(ctx context.Context, wait bool) (*relay.Delivery, error) {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return nil, relay.ErrClosed
		}
		until := time.Duration(-1)
		if q.ready.Len() > 0 {
			c := q.ready.Peek()
			it := c.items[0]
			now := q.s.clock.Now().UnixNano()
			if it.due <= now {
				q.ready.Pop()
				c.inflight = true
				q.mu.Unlock()
				del, err := q.load(ctx, c, it)
				if errors.Is(err, errNotApplied) {
					// Durable in the log, and the database cannot take it yet
					// (it is full): try again once it has applied more.
					q.s.mu.Lock()
					applied := q.s.appliedCh
					q.s.mu.Unlock()
					q.requeue(c)
					if !wait {
						return nil, nil
					}
					select {
					case <-applied:
					case <-q.s.stopped:
					case <-ctx.Done():
						return nil, ctx.Err()
					}
					continue
				}
				if err != nil {
					q.s.log.Error("pending delivery has no readable event; parking it", "sink", q.sink, "event_id", it.id.String(), "err", err)
					st := &settle{q: q, c: c, it: it}
					if terr := st.Term(context.WithoutCancel(ctx), "event record unreadable: "+err.Error()); terr != nil {
						return nil, terr
					}
					continue
				}
				return del, nil
			}
			until = time.Duration(it.due - now)
		}
		changed := q.changed
		q.mu.Unlock()
		if !wait {
			return nil, nil
		}
		if err := q.s.wait(ctx, until, changed); err != nil {
			return nil, err
		}
	}
}

// errNotApplied: the event is durable, and not in the database yet.
var errNotApplied = errors.New("event not applied to the database yet")

// load reads the event and the delivery's last error for a head handed out.
// A first attempt at a recent event needs no read at all; a read waits
// until the database holds what is durable.
func (q *queue) load(ctx context.Context, c *conv, it *item) (*relay.Delivery, error) {
	if it.attempts == 0 {
		if ev, ok := q.s.recent.get(it.id); ok {
			return &relay.Delivery{Event: ev, Sink: q.sink, Since: time.Unix(0, it.since),
				Settler: &settle{q: q, c: c, it: it}}, nil
		}
	}
	// The database must hold the last record about this delivery (its
	// append, its last nak); older ones it holds already.
	q.mu.Lock()
	written := it.written
	q.mu.Unlock()
	for q.s.applied.Load() < written && q.s.applyHealth() == nil {
		q.s.mu.Lock()
		changed := q.s.appliedCh
		q.s.mu.Unlock()
		if q.s.applied.Load() >= written {
			break
		}
		q.s.nudge()
		select {
		case <-changed:
		case <-q.s.stopped:
		}
	}
	caughtUp := q.s.applied.Load() >= written
	var del *relay.Delivery
	err := q.s.db.View(func(tx *bbolt.Tx) error {
		id := it.id.String()
		v := tx.Bucket([]byte(bEvents)).Get([]byte(id))
		if v == nil {
			if !caughtUp {
				return errNotApplied
			}
			return errors.New("event not found")
		}
		ev, _, err := decodeEvent(id, v)
		if err != nil {
			return err
		}
		r, _, err := getDeliv(tx.Bucket([]byte(bDeliv)), id, q.sink)
		if err != nil {
			return err
		}
		lastErr := ""
		if r.State == relay.StatePending {
			lastErr = r.LastErr
		}
		del = &relay.Delivery{
			Event: ev, Sink: q.sink, Attempts: it.attempts, Since: time.Unix(0, it.since),
			LastError: lastErr, Settler: &settle{q: q, c: c, it: it},
		}
		return nil
	})
	return del, err
}

// settle implements relay.Settler for one handed-out head.
type settle struct {
	q    *queue
	c    *conv
	it   *item
	used atomic.Bool
}

var errSettled = errors.New("delivery already settled")

func (st *settle) once() error {
	if !st.used.CompareAndSwap(false, true) {
		return errSettled
	}
	return nil
}

// Ack removes the delivery from the queue and records it delivered; only
// once that is durable may the conversation's next delivery go. The caller
// does not wait for the commit: it moves on to other conversations while the
// writer batches acks into shared fsyncs. If the commit fails (the store is
// full), the record is retried, not the delivery: the conversation waits
// until it lands, and only if the process stops first is the delivery sent
// again (at least once).
func (st *settle) Ack(ctx context.Context) error {
	if err := st.once(); err != nil {
		return err
	}
	q, it := st.q, st.it
	now := q.s.clock.Now().UnixNano()
	r, _ := json.Marshal(deliveryRecord{State: relay.StateDelivered, Attempts: it.attempts + 1,
		Since: it.since, Updated: now})
	var o ops
	o.del(bQueues, q.sink, u64(it.seq)).put(bDeliv, "", delivKey(it.id.String(), q.sink), r)
	advance := func() { q.advance(st.c) }
	err := q.s.writeAsync(ctx, record(&o), advance, func(err error) {
		q.s.log.Error("could not record a delivery as done; retrying the record (the conversation waits for it)",
			"sink", q.sink, "event_id", it.id.String(), "err", err)
		q.s.recordLater(record(&o), advance)
	})
	if err != nil {
		q.requeue(st.c)
	}
	return err
}

// Nak records a failed attempt and schedules the next one after delay.
func (st *settle) Nak(ctx context.Context, delay time.Duration, lastErr string) error {
	if err := st.once(); err != nil {
		return err
	}
	q, it := st.q, st.it
	now := q.s.clock.Now().UnixNano()
	due := now + int64(delay)
	attempts := it.attempts + 1
	r, _ := json.Marshal(deliveryRecord{State: relay.StatePending, Attempts: attempts,
		Since: it.since, Due: due, LastErr: lastErr, Updated: now})
	var o ops
	o.put(bDeliv, "", delivKey(it.id.String(), q.sink), r)
	var written uint64
	err := q.s.write(ctx, record(&o), func() { written = q.s.intake.next - 1 })
	// Even when the record could not be written, wait in memory: a store
	// that cannot write must not turn a backoff into a busy loop.
	q.mu.Lock()
	it.attempts, it.due = attempts, due
	if err == nil {
		it.written = written
	}
	q.mu.Unlock()
	q.requeue(st.c)
	return err
}

// Term moves the delivery to the dead letters. If the store cannot write
// (it is full), the dead letter is recorded later, as a failed ack is: the
// delivery stays in flight meanwhile, so that it is not sent again.
func (st *settle) Term(ctx context.Context, reason string) error {
	if err := st.once(); err != nil {
		return err
	}
	q, it := st.q, st.it
	now := q.s.clock.Now().UnixNano()
	var o ops
	q.park(&o, it, it.attempts+1, reason, now)
	deferred, err := q.s.writeOrRecordLater(ctx, record(&o), func() {
		q.mu.Lock()
		q.dead++
		q.mu.Unlock()
		q.advance(st.c)
	})
	switch {
	case deferred:
		q.s.log.Error("could not record a dead letter; retrying the record (the conversation waits for it)",
			"sink", q.sink, "event_id", it.id.String(), "err", err)
		return nil
	case err != nil:
		q.requeue(st.c)
	}
	return err
}

// Release hands the delivery back untried.
func (st *settle) Release(context.Context) error {
	if err := st.once(); err != nil {
		return err
	}
	st.q.requeue(st.c)
	return nil
}

// park adds the operations that move it to the dead letters to o.
func (q *queue) park(o *ops, it *item, attempts int, reason string, now int64) {
	r, _ := json.Marshal(deliveryRecord{State: relay.StateDead, Attempts: attempts, Since: it.since,
		LastErr: reason, Updated: now, Parked: now})
	o.del(bQueues, q.sink, u64(it.seq)).
		put(bDead, q.sink, timeKey(now, []byte(it.id.String())), nil).
		put(bDeliv, "", delivKey(it.id.String(), q.sink), r)
}

// advance drops the settled head and lets the conversation's next go. It
// runs on the logger (the after of an ack or a dead letter): the waiters
// hear of it once for the whole group.
func (q *queue) advance(c *conv) {
	q.mu.Lock()
	c.items[0] = nil
	c.items = c.items[1:]
	c.inflight = false
	q.depth--
	if len(c.items) == 0 {
		delete(q.convs, c.key)
	} else {
		q.ready.Push(c)
	}
	q.mu.Unlock()
	q.s.wakeAfterGroup(q)
}

// wake tells q's waiters that it changed.
func (q *queue) wake() {
	q.mu.Lock()
	q.notifyLocked()
	q.mu.Unlock()
}

// requeue puts a conversation whose head is no longer in flight back in
// the ready heap.
func (q *queue) requeue(c *conv) {
	q.mu.Lock()
	defer q.mu.Unlock()
	c.inflight = false
	if !c.In() && len(c.items) > 0 {
		q.ready.Push(c)
	}
	q.notifyLocked()
}

// parkAll moves every pending delivery that is not in flight to the dead
// letters (used for sinks that are no longer configured).
func (q *queue) parkAll(ctx context.Context, reason string) (int, error) {
	q.mu.Lock()
	var convs []*conv
	n := 0
	for _, c := range q.convs {
		if !c.inflight {
			convs = append(convs, c)
			n += len(c.items)
		}
	}
	q.mu.Unlock()
	if n == 0 {
		return 0, nil
	}
	now := q.s.clock.Now().UnixNano()
	var o ops
	for _, c := range convs {
		for _, it := range c.items {
			q.park(&o, it, it.attempts, reason, now)
		}
	}
	err := q.s.write(ctx, record(&o), func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		for _, c := range convs {
			q.ready.Remove(c)
			delete(q.convs, c.key)
			q.depth -= len(c.items)
			q.dead += len(c.items)
		}
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

func (q *queue) stats() relay.QueueStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := relay.QueueStats{Sink: q.sink, Depth: q.depth, Dead: q.dead}
	var oldest int64
	for _, c := range q.convs {
		if len(c.items) > 0 && (oldest == 0 || c.items[0].received < oldest) {
			oldest = c.items[0].received
		}
	}
	if oldest != 0 {
		st.Oldest = time.Unix(0, oldest)
	}
	return st
}

// byDue orders the ready heap: conversations by their head's due time,
// then by queue position (acceptance order).
func byDue(a, b *conv) bool {
	x, y := a.items[0], b.items[0]
	if x.due != y.due {
		return x.due < y.due
	}
	return x.seq < y.seq
}
