package nats

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chatrelay/chatrelay/relay"
)

// maxReason bounds the reason kept with a dead letter (headers are capped
// at 64 KiB).
const maxReason = 4 << 10

// park writes the dead letter of ev on sink: a copy of the event with why,
// when and after how many attempts, on the dead-letter stream. A later
// park of the same delivery replaces it (MaxMsgsPerSubject 1). Then it
// records the delivery as dead, so that a copy of it that comes out of the
// queue later (a repeat, or the message itself when terminating it
// failed) is dropped without being sent; the dead letter is what Lookup
// and queuedBefore read, so a record that cannot be written is only
// logged.
func (s *Store) park(ctx context.Context, sink string, p int, ev *relay.Event, attempts int, since time.Time, reason string) error {
	enc := encodeSink(sink)
	m := natsgo.NewMsg(s.l.deadSubject(enc, ev.ID))
	m.Data = ev.Body
	eventHeaders(m.Header, ev, ev.ReceivedAt)
	m.Header.Set(hdrSink, escape(sink))
	m.Header.Set(hdrPart, strconv.Itoa(p))
	m.Header.Set(hdrAttempts, strconv.Itoa(attempts))
	m.Header.Set(hdrSince, nanos(since))
	now := time.Now()
	m.Header.Set(hdrParked, nanos(now))
	reason, _ = relay.TruncateBytes(reason, maxReason)
	m.Header.Set(hdrReason, escape(reason))
	if _, err := s.js.PublishMsg(ctx, m, jetstream.WithExpectStream(s.l.dead)); err != nil {
		return classify(err)
	}
	if err := s.putState(ctx, enc, ev.ID, deliveryState{State: relay.StateDead, Attempts: attempts,
		Since: since.UnixNano(), LastErr: reason, Updated: now.UnixNano()}); err != nil {
		s.log.Warn("parked, but could not record it; a repeat of this delivery would not be recognised",
			"sink", sink, "event_id", ev.ID, "err", err)
	}
	return nil
}

// deadLetterOf reads a dead letter's headers.
func deadLetterOf(h natsgo.Header) relay.DeadLetter {
	meta := metaOf(h)
	sink := ""
	if len(meta.Sinks) > 0 {
		sink = meta.Sinks[0]
	}
	attempts, err := strconv.Atoi(h.Get(hdrAttempts))
	if err != nil {
		attempts = 0 // written by chatrelay; a dead letter parked by hand may lack it
	}
	return relay.DeadLetter{
		ID:             relay.DeadLetterID(meta.ID, sink),
		EventID:        meta.ID,
		Sink:           sink,
		ConversationID: meta.Conv,
		Topic:          meta.Topic,
		Attempts:       attempts,
		ReceivedAt:     meta.Received,
		ParkedAt:       parseNanos(h.Get(hdrParked)),
		Reason:         unescape(h.Get(hdrReason)),
	}
}

// ListDead implements relay.DeadLetters: the dead-letter stream in order,
// which is the order they were parked in.
func (s *Store) ListDead(ctx context.Context, sink string, limit int) ([]relay.DeadLetter, error) {
	filter := s.l.deadAll()
	if sink != "" {
		filter = s.l.deadSinkFilter(encodeSink(sink))
	}
	var out []relay.DeadLetter
	err := s.scan(ctx, s.l.dead, filter, func(m stored) (bool, error) {
		out = append(out, deadLetterOf(m.Header))
		return limit <= 0 || len(out) < limit, nil
	})
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	return out, nil
}

// getDead reads the dead letter with id, or reports relay.ErrNotFound.
func (s *Store) getDead(ctx context.Context, id string) (*jetstream.RawStreamMsg, string, error) {
	eventID, sink, ok := splitDeadID(id)
	if !ok || !validID(eventID) {
		return nil, "", relay.ErrNotFound
	}
	m, err := s.dead.GetLastMsgForSubject(ctx, s.l.deadSubject(encodeSink(sink), eventID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, "", relay.ErrNotFound
	}
	if err != nil {
		return nil, "", classify(err)
	}
	return m, sink, nil
}

// splitDeadID splits "<event id>.<sink>". Event ids contain no dot.
func splitDeadID(id string) (eventID, sink string, ok bool) {
	eventID, sink, ok = strings.Cut(id, ".")
	return eventID, sink, ok && eventID != "" && sink != ""
}

// GetDead implements relay.DeadLetters.
func (s *Store) GetDead(ctx context.Context, id string) (relay.DeadLetter, *relay.Event, error) {
	m, _, err := s.getDead(ctx, id)
	if err != nil {
		return relay.DeadLetter{}, nil, err
	}
	ev, _ := eventOf(m.Header, m.Data)
	return deadLetterOf(m.Header), ev, nil
}

// Requeue implements relay.DeadLetters. A requeued delivery goes to the end
// of its partition of the sink's queue, with a fresh retry.max_age; then
// its dead letter is deleted. Dead letters of sinks that are not
// configured (after Reconcile) are skipped.
func (s *Store) Requeue(ctx context.Context, ids []string) (int, error) {
	n := 0
	for _, id := range ids {
		ok, err := s.requeue(ctx, id)
		if err != nil {
			return n, fmt.Errorf("requeue %s: %w", id, err)
		}
		if ok {
			n++
		}
	}
	return n, nil
}

func (s *Store) requeue(ctx context.Context, id string) (bool, error) {
	m, sink, err := s.getDead(ctx, id)
	if errors.Is(err, relay.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !s.isConfigured(sink) {
		return false, nil
	}
	ev, meta := eventOf(m.Header, m.Data)
	enc := encodeSink(sink)
	now := time.Now()
	lastErr := "replayed; before: " + unescape(m.Header.Get(hdrReason))
	// The record first: once queued, the delivery may be tried, and its
	// record read, at once.
	if err := s.putState(ctx, enc, ev.ID, deliveryState{State: relay.StatePending, Since: now.UnixNano(),
		LastErr: lastErr, Updated: now.UnixNano()}); err != nil {
		return false, err
	}
	p := s.l.partitionHeader(m.Header, ev)
	// The id names this dead letter, so requeueing it twice queues it once.
	msgID := "rq." + ev.ID + "." + enc + "." + strconv.FormatUint(m.Sequence, 10)
	if _, err := s.enqueue(ctx, sink, p, meta, m.Data, now, lastErr, msgID, false); err != nil {
		return false, err
	}
	if err := s.dead.DeleteMsg(ctx, m.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, classify(err)
	}
	return true, nil
}

// Purge implements relay.DeadLetters. The record comes first: a dead
// letter gone without one would look like a delivery never queued
// (queuedBefore) to the repair of a half-done Append.
func (s *Store) Purge(ctx context.Context, ids []string) (int, error) {
	n := 0
	for _, id := range ids {
		m, sink, err := s.getDead(ctx, id)
		if errors.Is(err, relay.ErrNotFound) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("purge %s: %w", id, err)
		}
		dl := deadLetterOf(m.Header)
		now := time.Now()
		if err := s.putState(ctx, encodeSink(sink), dl.EventID, deliveryState{State: relay.StatePurged,
			Attempts: dl.Attempts, LastErr: dl.Reason, Updated: now.UnixNano()}); err != nil {
			return n, fmt.Errorf("purge %s: record it: %w", id, err)
		}
		if err := s.dead.DeleteMsg(ctx, m.Sequence); err != nil {
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			return n, fmt.Errorf("purge %s: %w", id, classify(err))
		}
		n++
	}
	return n, nil
}

// RequeueAll implements relay.DeadLetters.
func (s *Store) RequeueAll(ctx context.Context, sink string) (int, error) {
	ids, err := s.deadIDs(ctx, sink)
	if err != nil {
		return 0, err
	}
	return s.Requeue(ctx, ids)
}

// PurgeAll implements relay.DeadLetters.
func (s *Store) PurgeAll(ctx context.Context, sink string) (int, error) {
	ids, err := s.deadIDs(ctx, sink)
	if err != nil {
		return 0, err
	}
	return s.Purge(ctx, ids)
}

func (s *Store) deadIDs(ctx context.Context, sink string) ([]string, error) {
	dead, err := s.ListDead(ctx, sink, 0)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(dead))
	for i, dl := range dead {
		ids[i] = dl.ID
	}
	return ids, nil
}

func (s *Store) isConfigured(sink string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.configured == nil || s.configured[sink]
}

// Reconcile implements relay.Store: every pending delivery of a sink not in
// sinks moves to the dead letters with reason "sink removed".
//
// Replicas should share one config. A replica still running an older
// config may queue deliveries for a removed sink after this ran; the next
// Reconcile (any replica's next start) parks them.
func (s *Store) Reconcile(ctx context.Context, sinks []string) (int, error) {
	s.mu.Lock()
	s.configured = make(map[string]bool, len(sinks))
	for _, name := range sinks {
		s.configured[name] = true
	}
	s.mu.Unlock()
	known, err := s.knownSinks(ctx)
	if err != nil {
		return 0, fmt.Errorf("reconcile: %w", err)
	}
	moved := 0
	for _, sink := range known {
		if slices.Contains(sinks, sink) {
			continue
		}
		enc := encodeSink(sink)
		before := moved
		err := s.scan(ctx, s.l.queue, s.l.queueSinkFilter(enc), func(m stored) (bool, error) {
			ev, _ := eventOf(m.Header, m.Data)
			st, _, err := s.getState(ctx, enc, ev.ID)
			if err != nil {
				return false, err
			}
			since := parseNanos(m.Header.Get(hdrSince))
			if st.Since != 0 {
				since = time.Unix(0, st.Since).UTC()
			}
			if err := s.park(ctx, sink, s.l.partitionHeader(m.Header, ev), ev, st.Attempts, since, "sink removed"); err != nil {
				return false, err
			}
			if err := s.queue.DeleteMsg(ctx, m.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return false, classify(err)
			}
			moved++
			return true, nil
		})
		if err != nil {
			return moved, fmt.Errorf("reconcile: park deliveries of removed sink %q: %w", sink, err)
		}
		if moved > before {
			s.log.Info("moved the pending deliveries of a removed sink to the dead letters", "sink", sink, "count", moved-before)
		}
	}
	return moved, nil
}
