package nats

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chatrelay/chatrelay/relay"
)

// findEvent reads an event's message from the events stream.
func (s *Store) findEvent(ctx context.Context, id string) (*jetstream.RawStreamMsg, error) {
	if !validID(id) {
		return nil, relay.ErrNotFound
	}
	m, err := s.events.GetMsg(ctx, 0, jetstream.WithGetMsgSubject(s.l.eventByID(id)))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, relay.ErrNotFound
	}
	if err != nil {
		return nil, classify(err)
	}
	return m, nil
}

// Lookup implements relay.Store. Each routed sink's delivery is, in this
// order: pending while it is in the sink's queue; dead while it has a dead
// letter; what the state bucket recorded (delivered, purged); else pending
// (not queued yet: see deliveryStatus).
func (s *Store) Lookup(ctx context.Context, id string) (*relay.EventRecord, error) {
	m, err := s.findEvent(ctx, id)
	if err != nil {
		return nil, err
	}
	ev, meta := eventOf(m.Header, m.Data)
	rec := &relay.EventRecord{Event: ev}
	p, ok := s.l.eventPartition(m.Subject)
	if !ok {
		p = s.l.partitionOf(ev.OrderingKey())
	}
	for _, sink := range meta.Sinks {
		ds, err := s.deliveryStatus(ctx, sink, p, id, m.Time)
		if err != nil {
			return nil, fmt.Errorf("lookup %s: sink %q: %w", id, sink, err)
		}
		rec.Deliveries = append(rec.Deliveries, ds)
	}
	return rec, nil
}

func (s *Store) deliveryStatus(ctx context.Context, sink string, p int, id string, appended time.Time) (relay.DeliveryStatus, error) {
	enc := encodeSink(sink)
	ds := relay.DeliveryStatus{Sink: sink}
	st, hasState, err := s.getState(ctx, enc, id)
	if err != nil {
		return ds, err
	}
	if hasState {
		ds.Attempts, ds.LastError, ds.UpdatedAt = st.Attempts, st.LastErr, time.Unix(0, st.Updated).UTC()
	}
	pendingFrom := func(t time.Time) relay.DeliveryStatus {
		ds.State = relay.StatePending
		if !hasState || st.State != relay.StatePending {
			ds.Attempts, ds.LastError, ds.UpdatedAt = 0, "", t
		}
		return ds
	}
	qm, err := s.queue.GetMsg(ctx, 0, jetstream.WithGetMsgSubject(s.l.queueSubject(enc, p, id)))
	switch {
	case err == nil:
		return pendingFrom(qm.Time.UTC()), nil
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		return ds, classify(err)
	}
	dm, err := s.dead.GetLastMsgForSubject(ctx, s.l.deadSubject(enc, id))
	switch {
	case err == nil:
		dl := deadLetterOf(dm.Header)
		ds.State, ds.Attempts, ds.LastError, ds.UpdatedAt = relay.StateDead, dl.Attempts, dl.Reason, dl.ParkedAt
		return ds, nil
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		return ds, classify(err)
	}
	if hasState && st.State != relay.StatePending {
		ds.State = st.State
		return ds, nil
	}
	// Neither queued nor settled: its Append is under way, or stopped
	// between its two steps (the sender's retry, or a repair, queues it).
	// Only a record says a delivery was made, never its absence.
	return pendingFrom(appended.UTC()), nil
}

// Recent implements relay.Store: the events stream read backwards from the
// newest event, or from the event before.
func (s *Store) Recent(ctx context.Context, before string, limit int) ([]relay.EventSummary, error) {
	if limit <= 0 {
		limit = 50
	}
	info, err := s.events.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("recent: %w", classify(err))
	}
	first, hi := info.State.FirstSeq, info.State.LastSeq
	skipFrom := "" // when before is gone, ids sort by time (uuid v7): skip the newer
	if before != "" {
		m, err := s.findEvent(ctx, before)
		switch {
		case err == nil:
			hi = m.Sequence - 1
		case errors.Is(err, relay.ErrNotFound):
			skipFrom = before
		default:
			return nil, fmt.Errorf("recent: %w", err)
		}
	}
	var out []relay.EventSummary
	for hi >= first && hi > 0 && len(out) < limit {
		lo := first
		if want := uint64(limit - len(out)); hi-first+1 > want {
			lo = hi - want + 1
		}
		// Read the window [lo, hi] forwards (a batch may stop early at its
		// byte limit), then take it newest first.
		var window []stored
		for seq := lo; seq <= hi; {
			msgs, left, err := s.directBatch(ctx, s.l.events, s.l.eventsAll(), seq, int(hi-seq+1))
			if err != nil {
				return nil, fmt.Errorf("recent: %w", err)
			}
			for _, m := range msgs {
				if m.Seq <= hi {
					window = append(window, m)
				}
			}
			if len(msgs) == 0 || left == 0 {
				break
			}
			seq = msgs[len(msgs)-1].Seq + 1
		}
		for i := len(window) - 1; i >= 0 && len(out) < limit; i-- {
			meta := metaOf(window[i].Header)
			if skipFrom != "" && meta.ID >= skipFrom {
				continue
			}
			out = append(out, relay.EventSummary{ID: meta.ID, Topic: meta.Topic, ConversationID: meta.Conv,
				ReceivedAt: meta.Received, Sinks: meta.Sinks})
		}
		hi = lo - 1
	}
	return out, nil
}

// Stats implements relay.Store. The sinks are those with consumers on the
// queue stream (every sink that ever had a delivery), those this replica
// consumes and those configured. Depth counts the sink's queue (waiting
// and in flight); Oldest is the acceptance time of the first delivery in
// queue order; Dead counts its dead letters. Each is one batched direct
// get, answered from the streams' subject index.
func (s *Store) Stats(ctx context.Context) ([]relay.QueueStats, error) {
	sinks := map[string]bool{}
	s.mu.Lock()
	for name := range s.queues {
		sinks[name] = true
	}
	for name := range s.configured {
		sinks[name] = true
	}
	s.mu.Unlock()
	known, err := s.knownSinks(ctx)
	if err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	for _, sink := range known {
		sinks[sink] = true
	}
	out := make([]relay.QueueStats, 0, len(sinks))
	for sink := range sinks {
		enc := encodeSink(sink)
		depth, first, err := s.countFirst(ctx, s.l.queue, s.l.queueSinkFilter(enc))
		if err != nil {
			return nil, fmt.Errorf("stats: sink %q: %w", sink, err)
		}
		dead, _, err := s.countFirst(ctx, s.l.dead, s.l.deadSinkFilter(enc))
		if err != nil {
			return nil, fmt.Errorf("stats: sink %q: %w", sink, err)
		}
		st := relay.QueueStats{Sink: sink, Depth: int(depth), Dead: int(dead)}
		if first != nil {
			st.Oldest = parseNanos(first.Header.Get(hdrReceived))
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b relay.QueueStats) int { return strings.Compare(a.Sink, b.Sink) })
	return out, nil
}

// knownSinks lists every sink that ever had a delivery queued: its
// consumers are created before its first delivery, and never deleted.
func (s *Store) knownSinks(ctx context.Context) ([]string, error) {
	var out []string
	names := s.queue.ConsumerNames(ctx)
	for name := range names.Name() {
		enc, ok := sinkOfConsumer(name)
		if !ok {
			continue
		}
		if sink, ok := decodeSink(enc); ok && !slices.Contains(out, sink) {
			out = append(out, sink)
		}
	}
	if err := names.Err(); err != nil {
		return nil, classify(err)
	}
	return out, nil
}

// KV implements relay.Store on a key/value bucket shared by every replica.
// Its KVs are relay.Swappers.
func (s *Store) KV(namespace string) relay.KV { return &kv{s: s, ns: namespace} }

type kv struct {
	s  *Store
	ns string
}

func (k *kv) Get(ctx context.Context, key string) (string, bool, error) {
	e, err := k.s.kv.Get(ctx, kvKey(k.ns, key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("kv get: %w", classify(err))
	}
	return string(e.Value()), true, nil
}

func (k *kv) Put(ctx context.Context, key, value string) error {
	if _, err := k.s.kv.Put(ctx, kvKey(k.ns, key), []byte(value)); err != nil {
		return fmt.Errorf("kv put: %w", classify(err))
	}
	return nil
}

var _ relay.Swapper = (*kv)(nil)

// Swap implements relay.Swapper with the key's revision: an Update that
// names the revision read (or a Create when the key holds nothing), which
// the server refuses if any replica wrote the key since.
func (k *kv) Swap(ctx context.Context, key, old, value string) (bool, error) {
	full := kvKey(k.ns, key)
	e, err := k.s.kv.Get(ctx, full)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		if old != "" {
			return false, nil
		}
		_, err = k.s.kv.Create(ctx, full, []byte(value))
		if errors.Is(err, jetstream.ErrKeyExists) {
			return false, nil
		}
	case err != nil:
		return false, fmt.Errorf("kv get: %w", classify(err))
	default:
		if string(e.Value()) != old {
			return false, nil
		}
		_, err = k.s.kv.Update(ctx, full, []byte(value), e.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return false, nil
		}
	}
	if err != nil {
		return false, fmt.Errorf("kv swap: %w", classify(err))
	}
	return true, nil
}
