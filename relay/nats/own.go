package nats

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chatrelay/chatrelay/relay"
)

// Exclusive sinks: one replica at a time sends to each (package doc,
// "Exclusive sinks").
//
// Why the old owner has stopped before a new one starts: the owner hands
// out until ownFor (2L) after it sent its last successful renewal R, and
// its pull requests expire then on the server too. A contender first sees
// R's revision after R reached the server, so after the owner sent it,
// and takes over only once that revision went unchanged for staleAfter
// (3L) on its own clock: at least L after the owner stopped. Both spans
// are measured from one causal event on each replica's own monotonic
// clock, so clock offsets between machines do not matter.

var _ relay.Owner = (*Store)(nil)

// ownerKeyPrefix starts the key of an exclusive sink's ownership lease.
// Replica leases are one-token keys (uuids), so the two never mix.
const ownerKeyPrefix = "sink."

func ownerKey(enc string) string { return ownerKeyPrefix + enc }

// ownFor is how long after sending its last successful renewal the owner
// may hand out.
func (s *Store) ownFor() time.Duration { return 2 * s.leaseEvery() }

// claim is this replica's view of one exclusive sink's ownership lease.
// Only the owners loop touches it, and Close once the loop is gone.
type claim struct {
	key     string
	rev     uint64    // our lease's last revision; after a lapse, renews it if nobody wrote the key since
	seenRev uint64    // another owner's revision, as last seen
	seenAt  time.Time // when seenRev was first seen, by this replica's clock
}

// ownerRecord is an ownership lease's value.
type ownerRecord struct {
	Replica string `json:"replica"`
	Host    string `json:"host"`
}

// owners renews the ownership leases this replica holds and claims those
// of exclusive sinks it consumes when they are free or stale.
func (s *Store) owners() {
	defer s.wg.Done()
	// A deletion (an owner that closed) is claimed at once rather than at
	// the next tick: every write to an ownership key passes through the
	// bucket's subject. A core subscription into a channel starts no
	// goroutine and is restored on reconnect; a hint it drops (or a write
	// the stream refused) costs at most a tick.
	hints := make(chan *natsgo.Msg, 256)
	if sub, err := s.nc.ChanSubscribe(kvPrefix(s.l.replicas)+ownerKeyPrefix+">", hints); err == nil {
		defer func() {
			if err := sub.Unsubscribe(); err != nil && s.nc.IsConnected() {
				s.log.Debug("could not stop watching sink ownership", "err", err)
			}
		}()
	} else {
		s.log.Debug("cannot watch sink ownership; claiming once per renewal only", "err", err)
	}
	t := time.NewTicker(s.leaseEvery())
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-s.claimNow:
		case m := <-hints:
			if op := kvOperation(m.Header); op != "DEL" && op != "PURGE" {
				continue
			}
		}
		for _, q := range s.queueList() {
			if q.claim != nil {
				s.claimStep(q)
			}
		}
	}
}

// claimStep renews this replica's ownership of q's sink, or tries to take
// it.
func (s *Store) claimStep(q *queue) {
	c := q.claim
	ctx, cancel := s.opCtx()
	defer cancel()
	if q.owning() {
		sent := time.Now()
		rev, err := s.replicas.Update(ctx, c.key, s.ownerValue, c.rev)
		switch {
		case err == nil:
			c.rev = rev
			q.extendTerm(sent.Add(s.ownFor()))
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			c.rev = 0
			q.endTerm()
			s.log.Warn("lost the sink's ownership to another replica; handed back what was waiting", "sink", q.sink)
		case q.lapsed(time.Now()):
			q.endTerm()
			s.log.Warn("could not renew the sink's ownership in time; handed back what was waiting",
				"sink", q.sink, "err", err)
		}
		return
	}
	e, err := s.replicas.Get(ctx, c.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		sent := time.Now()
		if rev, err := s.replicas.Create(ctx, c.key, s.ownerValue); err == nil {
			c.rev = rev
			q.startTerm(sent.Add(s.ownFor()))
			s.log.Info("this replica now sends to the sink", "sink", q.sink)
		}
		return
	}
	if err != nil {
		return
	}
	now := time.Now()
	switch {
	case e.Revision() == c.rev:
		// Our own lease, lapsed, and nobody wrote the key since.
	case e.Revision() != c.seenRev:
		c.seenRev, c.seenAt = e.Revision(), now
		return
	case now.Sub(c.seenAt) < s.staleAfter():
		return
	}
	sent := time.Now()
	rev, err := s.replicas.Update(ctx, c.key, s.ownerValue, e.Revision())
	if err != nil {
		return
	}
	stale := e.Revision() != c.rev
	c.rev = rev
	q.startTerm(sent.Add(s.ownFor()))
	if !stale {
		s.log.Info("this replica sends to the sink again", "sink", q.sink)
		return
	}
	var prev ownerRecord
	if err := json.Unmarshal(e.Value(), &prev); err != nil {
		prev = ownerRecord{Replica: "unknown (unreadable ownership record)"}
	}
	s.log.Warn("took the sink over from a replica that stopped renewing its ownership",
		"sink", q.sink, "replica", prev.Replica, "host", prev.Host, "unchanged_for", now.Sub(c.seenAt).Round(time.Millisecond))
}

// releaseOwnership deletes the ownership leases this replica holds, so
// other replicas take the sinks over at once. Close calls it once nothing
// is held any more.
func (s *Store) releaseOwnership(qs []*queue) {
	for _, q := range qs {
		if q.claim == nil || q.claim.rev == 0 {
			continue
		}
		ctx, cancel := s.opCtx()
		err := s.replicas.Delete(ctx, q.claim.key, jetstream.LastRevision(q.claim.rev))
		cancel()
		if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			s.log.Debug("could not release the sink's ownership; another replica takes it over once it is stale",
				"sink", q.sink, "err", err)
		}
	}
}

// owning reports whether the queue has a term (live or lapsed).
func (q *queue) owning() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.term != nil
}

// lapsed reports whether the queue's term may no longer hand out.
func (q *queue) lapsed(now time.Time) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.term != nil && !q.term.live(now)
}

// startTerm lets the queue pull and hand out until until.
func (q *queue) startTerm(until time.Time) {
	t := newTerm(q.s.ctx, q.s.opts.Partitions, until)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.term != nil {
		q.term.cancel()
	}
	q.term = t
	q.notifyLocked()
}

// extendTerm moves the end of the current term.
func (q *queue) extendTerm(until time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.term == nil {
		return
	}
	if !q.term.live(time.Now()) {
		q.notifyLocked() // it lapsed meanwhile: Next and the pullers look again
	}
	q.term.until = until
}

// endTerm stops the queue's pulls and hands back, untried, the heads
// waiting in ready. Deliveries already handed out stay with their holder,
// who settles them as usual.
func (q *queue) endTerm() {
	q.mu.Lock()
	t := q.term
	q.term = nil
	var back []*held
	for q.ready.Len() > 0 {
		back = append(back, q.ready.Pop())
	}
	q.notifyLocked()
	q.mu.Unlock()
	if t != nil {
		t.cancel()
	}
	for _, h := range back {
		q.drop(h, h.msg.Nak)
	}
}

// Own implements relay.Owner: it waits for a term of sink's queue (for an
// exclusive sink, this replica holding its ownership lease; for a shared
// one, at once) and returns a context that ends with the term: when the
// lease is lost or lapses unrenewed (the owners loop ends the term within
// a renewal period), or the store closes.
func (s *Store) Own(ctx context.Context, sink string) (context.Context, context.CancelFunc, error) {
	q := s.Queue(sink).(*queue)
	for {
		q.mu.Lock()
		t, changed := q.term, q.changed
		live := t != nil && t.live(time.Now())
		q.mu.Unlock()
		switch {
		case s.ctx.Err() != nil:
			return nil, nil, relay.ErrClosed
		case ctx.Err() != nil:
			return nil, nil, ctx.Err()
		case live:
			held, cancel := context.WithCancel(ctx)
			stop := context.AfterFunc(t.ctx, cancel)
			return held, func() { stop(); cancel() }, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
		case <-s.ctx.Done():
		}
	}
}
