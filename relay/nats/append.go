package nats

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/chatrelay/chatrelay/relay"
)

// queueDupWindow is the queue stream's duplicate window: a delivery queued
// again with the same message id within it (a retried request, or a dead
// replica's appends queued again) is dropped.
const queueDupWindow = 10 * time.Minute

// Append implements relay.Store in two steps, and answers only after both:
//
//  1. Publish the event to the events stream, with Nats-Msg-Id = the hex
//     of Event.DedupeKey. The stream answers once it has stored the event
//     (on a quorum of its replicas); a repeat within DedupeWindow is
//     answered "duplicate" with the original's sequence, from which the
//     first event's id is read back.
//  2. Publish one delivery per routed sink to the queue stream, on the
//     sink's subject for the conversation's partition, with message id
//     "<event id>.<sink>".
//
// When step 2 fails the caller gets an error (503) and the sender retries:
// the retry is a duplicate, and Append queues each delivery of the
// original that was never queued (queuedBefore: not in the queue, no
// record, no dead letter), however long after. A delivery queued again
// this way carries hdrRepeat, and is dropped when it comes out if its
// record says it was settled meanwhile (queue.applyState). When the
// process dies between the steps and the sender never retries, another
// replica finds the event through the dead replica's lease (lease.go) and
// queues it the same way. Because a request's deliveries are queued
// before it is answered, a conversation's events accepted one after the
// other queue in that order, whichever replica took them.
func (s *Store) Append(ctx context.Context, ev *relay.Event, sinks []string) (relay.Accepted, error) {
	if s.ctx.Err() != nil {
		return relay.Accepted{}, relay.ErrClosed
	}
	if !validID(ev.ID) {
		return relay.Accepted{}, fmt.Errorf("append: event id %q: only letters, digits, '-' and '_' can be stored on NATS", ev.ID)
	}
	if !s.nc.IsConnected() {
		return relay.Accepted{}, fmt.Errorf("append: %w: not connected to NATS", relay.ErrUnavailable)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opts.Timeout)
		defer cancel()
	}
	received := ev.ReceivedAt
	if received.IsZero() {
		received = time.Now()
	}
	p := s.l.partitionOf(ev.OrderingKey())
	msg := natsgo.NewMsg(s.l.eventSubject(p, ev.ID))
	msg.Data = ev.Body
	eventHeaders(msg.Header, ev, received)
	usageHeader(msg.Header, ev)
	msg.Header.Set(hdrReplica, s.instance)
	for _, sink := range sinks {
		msg.Header.Add(hdrSink, escape(sink))
	}
	key := ev.DedupeKey()
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithMsgID(hex.EncodeToString(key[:])),
		jetstream.WithExpectStream(s.l.events))
	err = classify(err)
	s.noteWrite(err)
	if err != nil {
		return relay.Accepted{}, fmt.Errorf("append: %w", err)
	}
	if ack.Duplicate {
		return s.duplicate(ctx, ack.Sequence)
	}
	meta := metaOf(msg.Header)
	if err := s.enqueueAll(ctx, p, meta, ev.Body); err != nil {
		s.noteWrite(err)
		return relay.Accepted{}, fmt.Errorf("append: queue deliveries: %w", err)
	}
	return relay.Accepted{ID: ev.ID}, nil
}

// duplicate answers a repeated event: the first event's id, after making
// sure each of its deliveries was queued (a first attempt may have failed
// between the two steps of Append).
func (s *Store) duplicate(ctx context.Context, seq uint64) (relay.Accepted, error) {
	first, err := s.events.GetMsg(ctx, seq)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			// The original was removed by hand; it is still a duplicate.
			return relay.Accepted{Duplicate: true}, nil
		}
		return relay.Accepted{}, fmt.Errorf("append: read the original of a duplicate: %w", classify(err))
	}
	meta := metaOf(first.Header)
	if _, err := s.queueMissing(ctx, stored{Seq: first.Sequence, Subject: first.Subject, Time: first.Time,
		Header: first.Header, Data: first.Data}); err != nil {
		return relay.Accepted{}, fmt.Errorf("append: queue the deliveries of a duplicate: %w", err)
	}
	return relay.Accepted{ID: meta.ID, Duplicate: true}, nil
}

// enqueueAll queues the event's delivery to each of its sinks, the sinks in
// parallel.
func (s *Store) enqueueAll(ctx context.Context, p int, meta eventMeta, body []byte) error {
	first := func(ctx context.Context, sink string) error {
		_, err := s.enqueue(ctx, sink, p, meta, body, meta.Received, "", meta.ID+"."+encodeSink(sink), false)
		return err
	}
	if len(meta.Sinks) == 1 {
		return first(ctx, meta.Sinks[0])
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, sink := range meta.Sinks {
		g.Go(func() error { return first(gctx, sink) })
	}
	return g.Wait()
}

// enqueue stores one pending delivery at the end of its partition of the
// sink's queue, and reports whether it was stored (false: the queue stream
// dropped it as a repeat of msgID within queueDupWindow). since starts its
// retry.max_age; lastErr is what a replay says about its past. repeat
// marks a delivery that may have been queued, and settled, before
// (hdrRepeat).
func (s *Store) enqueue(ctx context.Context, sink string, p int, meta eventMeta, body []byte, since time.Time, lastErr, msgID string, repeat bool) (bool, error) {
	enc := encodeSink(sink)
	// The consumers exist before the first delivery, so Stats sees the sink
	// even when no replica consumes it yet.
	if _, err := s.queueConsumers(ctx, enc); err != nil {
		return false, classify(err)
	}
	qm := natsgo.NewMsg(s.l.queueSubject(enc, p, meta.ID))
	qm.Data = body
	qm.Header.Set(hdrID, meta.ID)
	qm.Header.Set(hdrTopic, escape(meta.Topic))
	qm.Header.Set(hdrReceived, nanos(meta.Received))
	if meta.Conv != "" {
		qm.Header.Set(hdrConv, escape(meta.Conv))
	}
	qm.Header.Set(hdrSince, nanos(since))
	qm.Header.Set(hdrPart, strconv.Itoa(p))
	if lastErr != "" {
		qm.Header.Set(hdrLastErr, escape(lastErr))
	}
	if repeat {
		qm.Header.Set(hdrRepeat, "1")
	}
	ack, err := s.js.PublishMsg(ctx, qm, jetstream.WithExpectStream(s.l.queue), jetstream.WithMsgID(msgID))
	if err != nil {
		return false, classify(err)
	}
	return !ack.Duplicate, nil
}

// queueMissing queues each delivery of a stored event that was never
// queued: the repair of an Append that stopped between its two steps (a
// sender's retry, or a dead replica's lease). It returns how many it
// queued. Whatever is queued here is marked as a repeat, so that if the
// delivery was queued after all (a race with the first attempt), the copy
// is dropped once its record shows the first settled.
func (s *Store) queueMissing(ctx context.Context, m stored) (int, error) {
	meta := metaOf(m.Header)
	p, ok := s.l.eventPartition(m.Subject)
	if !ok || !validID(meta.ID) {
		return 0, nil
	}
	n := 0
	for _, sink := range meta.Sinks {
		done, err := s.queuedBefore(ctx, sink, p, meta.ID)
		if err != nil {
			return n, err
		}
		if done {
			continue
		}
		queued, err := s.enqueue(ctx, sink, p, meta, m.Data, meta.Received, "", meta.ID+"."+encodeSink(sink), true)
		if err != nil {
			return n, err
		}
		if queued {
			n++
		}
	}
	return n, nil
}

// queuedBefore reports whether a delivery was ever queued: it is in the
// queue, has a record (attempted, delivered, parked, purged, replayed) or a
// dead letter. In that order, so that no settlement slips between the
// looks: Ack records before it removes the message, Term and Reconcile
// park before they remove it, Purge records before it deletes the dead
// letter, Requeue records before it queues.
func (s *Store) queuedBefore(ctx context.Context, sink string, p int, id string) (bool, error) {
	enc := encodeSink(sink)
	if _, err := s.queue.GetMsg(ctx, 0, jetstream.WithGetMsgSubject(s.l.queueSubject(enc, p, id))); err == nil {
		return true, nil
	} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, classify(err)
	}
	if _, ok, err := s.getState(ctx, enc, id); err != nil || ok {
		return ok, err
	}
	return s.hasDeadLetter(ctx, enc, id)
}

// hasDeadLetter reports whether a delivery has a dead letter.
func (s *Store) hasDeadLetter(ctx context.Context, enc, id string) (bool, error) {
	if _, err := s.dead.GetLastMsgForSubject(ctx, s.l.deadSubject(enc, id)); err == nil {
		return true, nil
	} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, classify(err)
	}
	return false, nil
}
