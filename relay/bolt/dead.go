package bolt

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	bbolt "go.etcd.io/bbolt"

	"github.com/chatrelay/chatrelay/relay"
)

// ListDead implements relay.DeadLetters.
func (s *Store) ListDead(ctx context.Context, sink string, limit int) ([]relay.DeadLetter, error) {
	if err := s.caughtUp(ctx); err != nil {
		return nil, err
	}
	var out []relay.DeadLetter
	err := s.db.View(func(tx *bbolt.Tx) error {
		dead := tx.Bucket([]byte(bDead))
		return dead.ForEachBucket(func(name []byte) error {
			if sink != "" && string(name) != sink {
				return nil
			}
			return dead.Bucket(name).ForEach(func(k, _ []byte) error {
				dl, err := s.deadLetter(tx, string(k[8:]), string(name))
				if err != nil {
					return err
				}
				out = append(out, dl)
				return nil
			})
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b relay.DeadLetter) int { return a.ParkedAt.Compare(b.ParkedAt) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (s *Store) deadLetter(tx *bbolt.Tx, eventID, sink string) (relay.DeadLetter, error) {
	dl := relay.DeadLetter{ID: relay.DeadLetterID(eventID, sink), EventID: eventID, Sink: sink}
	r, ok, err := getDeliv(tx.Bucket([]byte(bDeliv)), eventID, sink)
	if err != nil {
		return dl, err
	}
	if !ok || r.State != relay.StateDead {
		return dl, relay.ErrNotFound
	}
	dl.Attempts, dl.Reason, dl.ParkedAt = r.Attempts, r.LastErr, time.Unix(0, r.Parked).UTC()
	if v := tx.Bucket([]byte(bEvents)).Get([]byte(eventID)); v != nil {
		if m, _, err := decodeEventMeta(v); err == nil {
			dl.Topic, dl.ConversationID, dl.ReceivedAt = m.Topic, m.Conv, time.Unix(0, m.Received).UTC()
		}
	}
	return dl, nil
}

// GetDead implements relay.DeadLetters.
func (s *Store) GetDead(ctx context.Context, id string) (relay.DeadLetter, *relay.Event, error) {
	if err := s.caughtUp(ctx); err != nil {
		return relay.DeadLetter{}, nil, err
	}
	eventID, sink, ok := splitDeadID(id)
	if !ok {
		return relay.DeadLetter{}, nil, relay.ErrNotFound
	}
	var dl relay.DeadLetter
	var ev *relay.Event
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		if dl, err = s.deadLetter(tx, eventID, sink); err != nil {
			return err
		}
		v := tx.Bucket([]byte(bEvents)).Get([]byte(eventID))
		if v == nil {
			return relay.ErrNotFound
		}
		ev, _, err = decodeEvent(eventID, v)
		return err
	})
	return dl, ev, err
}

// Requeue implements relay.DeadLetters.
func (s *Store) Requeue(ctx context.Context, ids []string) (int, error) {
	return s.reviveOrPurge(ctx, ids, true)
}

// Purge implements relay.DeadLetters.
func (s *Store) Purge(ctx context.Context, ids []string) (int, error) {
	return s.reviveOrPurge(ctx, ids, false)
}

// RequeueAll implements relay.DeadLetters.
func (s *Store) RequeueAll(ctx context.Context, sink string) (int, error) {
	if err := s.caughtUp(ctx); err != nil {
		return 0, err
	}
	ids, err := s.deadIDs(sink)
	if err != nil {
		return 0, err
	}
	return s.reviveOrPurge(ctx, ids, true)
}

// PurgeAll implements relay.DeadLetters.
func (s *Store) PurgeAll(ctx context.Context, sink string) (int, error) {
	if err := s.caughtUp(ctx); err != nil {
		return 0, err
	}
	ids, err := s.deadIDs(sink)
	if err != nil {
		return 0, err
	}
	return s.reviveOrPurge(ctx, ids, false)
}

func (s *Store) deadIDs(sink string) ([]string, error) {
	var ids []string
	err := s.db.View(func(tx *bbolt.Tx) error {
		dead := tx.Bucket([]byte(bDead))
		return dead.ForEachBucket(func(name []byte) error {
			if sink != "" && string(name) != sink {
				return nil
			}
			return dead.Bucket(name).ForEach(func(k, _ []byte) error {
				ids = append(ids, relay.DeadLetterID(string(k[8:]), string(name)))
				return nil
			})
		})
	})
	return ids, err
}

// reviveOrPurge requeues (revive) or deletes dead letters, in chunks so that
// one record stays small. Replayed deliveries go to the end of their
// conversation's queue with a fresh retry.max_age. The dead letters are read
// once the database holds every durable record, and one replay or purge
// runs at a time, so that nothing changes them between the read and the
// record.
func (s *Store) reviveOrPurge(ctx context.Context, ids []string, revive bool) (int, error) {
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	if err := s.caughtUp(ctx); err != nil {
		return 0, err
	}
	const chunk = 1000
	total := 0
	for start := 0; start < len(ids); start += chunk {
		part := ids[start:min(start+chunk, len(ids))]
		type found struct {
			eventID, sink string
			r             deliveryRecord
			m             eventMeta
		}
		var dls []found
		err := s.db.View(func(tx *bbolt.Tx) error {
			deliv := tx.Bucket([]byte(bDeliv))
			for _, id := range part {
				eventID, sink, ok := splitDeadID(id)
				if _, err := uuid.Parse(eventID); !ok || err != nil {
					continue
				}
				if revive && !s.isConfigured(sink) {
					continue
				}
				r, ok, err := getDeliv(deliv, eventID, sink)
				if err != nil {
					return err
				}
				if !ok || r.State != relay.StateDead {
					continue
				}
				f := found{eventID: eventID, sink: sink, r: r}
				if revive {
					v := tx.Bucket([]byte(bEvents)).Get([]byte(eventID))
					if v == nil {
						continue // nothing to send any more; it stays listed, and purge removes it
					}
					if f.m, _, err = decodeEventMeta(v); err != nil {
						return err
					}
				}
				dls = append(dls, f)
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("dead letters: %w", err)
		}
		if len(dls) == 0 {
			continue
		}
		now := s.clock.Now().UnixNano()
		var items []queued
		var o ops
		err = s.write(ctx, func() ([]byte, bool) {
			items, o.b = items[:0], o.b[:0]
			for _, f := range dls {
				o.del(bDead, f.sink, timeKey(f.r.Parked, []byte(f.eventID)))
				if !revive {
					rec, _ := json.Marshal(deliveryRecord{State: relay.StatePurged, Attempts: f.r.Attempts,
						Since: f.r.Since, LastErr: f.r.LastErr, Updated: now})
					o.put(bDeliv, "", delivKey(f.eventID, f.sink), rec)
					continue
				}
				s.seqs[f.sink]++
				seq := s.seqs[f.sink]
				entry, _ := json.Marshal(queueEntry{EventID: f.eventID, Key: f.m.Key, Received: f.m.Received, Since: now})
				rec, _ := json.Marshal(deliveryRecord{State: relay.StatePending, Since: now, Due: now,
					LastErr: "replayed; before: " + f.r.LastErr, Updated: now})
				o.putQueue(f.sink, seq, entry).put(bDeliv, "", delivKey(f.eventID, f.sink), rec)
				items = append(items, queued{sink: f.sink, key: f.m.Key, it: &item{seq: seq, id: uuid.MustParse(f.eventID),
					received: f.m.Received, since: now, due: now}})
			}
			return o.b, true
		}, func() {
			for _, f := range dls {
				q := s.queue(f.sink)
				q.mu.Lock()
				q.dead--
				q.mu.Unlock()
			}
			for _, q := range items {
				q.it.written = s.intake.next - 1
				s.queue(q.sink).add(q.key, q.it)
			}
		})
		if err != nil {
			return total, fmt.Errorf("dead letters: %w", err)
		}
		total += len(dls)
	}
	return total, nil
}

func (s *Store) isConfigured(sink string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.configured == nil || s.configured[sink]
}

// prune deletes what retention and the dedupe window no longer need: dedupe
// entries older than the window, and events older than retention whose
// deliveries are all delivered or purged. Each run does a bounded amount of
// work so the writer is never held for long.
func (s *Store) prune() {
	const budget = 5000
	now := s.clock.Now().UnixNano()
	dedupeCut := now - int64(s.opts.DedupeWindow)
	retainCut := now - int64(s.opts.Retention)
	type forget struct {
		k   dedupeKey
		id  uuid.UUID
		cut int64
	}
	var forgets []forget // applied once the transaction commits
	var events int
	var next, dnext []byte
	err := s.db.Update(func(tx *bbolt.Tx) error {
		forgets, events, next, dnext = forgets[:0], 0, nil, s.dedupeFrom
		// Dedupe entries past the window, found through the events (their
		// keys are in acceptance order). Entries behind the scan position
		// were handled; it resumes there. The index is in memory: nothing
		// to write.
		dc := tx.Bucket([]byte(bEvents)).Cursor()
		k, v := seekFrom(dc, s.dedupeFrom)
		for n := 0; k != nil && n < budget; k, v = dc.Next() {
			n++
			m, _, err := decodeEventMeta(v)
			if err != nil {
				continue
			}
			if m.Received >= dedupeCut {
				break
			}
			dnext = bytes.Clone(k)
			if id, err := uuid.ParseBytes(k); err == nil {
				forgets = append(forgets, forget{keyOf(m.Hash), id, dedupeCut})
			}
		}

		evb := tx.Bucket([]byte(bEvents))
		deliv := tx.Bucket([]byte(bDeliv))
		ec := evb.Cursor()
		k, v = seekFrom(ec, s.pruneFrom)
		var doomed [][]byte
		for scanned := 0; k != nil && scanned < budget; k, v = ec.Next() {
			scanned++
			m, _, err := decodeEventMeta(v)
			if err != nil {
				continue // unreadable: kept for an operator to look at
			}
			if m.Received >= retainCut {
				k = nil // everything from here on is younger: start over next time
				break
			}
			done := true
			for _, sink := range m.Sinks {
				r, ok, err := getDeliv(deliv, string(k), sink)
				if err != nil {
					return err
				}
				// No record: never tried yet, so still pending.
				if !ok || (r.State != relay.StateDelivered && r.State != relay.StatePurged) {
					done = false
					break
				}
			}
			if done {
				if id, err := uuid.ParseBytes(k); err == nil {
					forgets = append(forgets, forget{keyOf(m.Hash), id, 0})
				}
				doomed = append(doomed, bytes.Clone(k))
				for _, sink := range m.Sinks {
					if err := deliv.Delete(delivKey(string(k), sink)); err != nil {
						return err
					}
				}
			}
		}
		if k != nil {
			next = bytes.Clone(k)
		}
		// Key/value entries not written for KVRetention.
		kvCut := now - int64(s.opts.KVRetention)
		kvb := tx.Bucket([]byte(bKV))
		var stale [][]byte
		if err := kvb.ForEach(func(k, v []byte) error {
			if len(v) < 8 || int64(beU64(v[:8])) < kvCut {
				stale = append(stale, bytes.Clone(k))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range stale {
			if err := kvb.Delete(k); err != nil {
				return err
			}
		}
		if err := pruneUsage(tx, now-int64(relay.UsageKept+usageMargin), budget); err != nil {
			return err
		}
		for _, id := range doomed {
			if err := evb.Delete(id); err != nil {
				return err
			}
			events++
		}
		return nil
	})
	if err != nil {
		s.setApplyHealth(classifyWriteError(err))
		return
	}
	s.pruneFrom, s.dedupeFrom = next, dnext // only the applier goroutine reads or writes them
	dedupes := 0
	for _, f := range forgets {
		if s.dedupe.forget(f.k, f.id, f.cut) {
			dedupes++
		}
	}
	if dedupes+events > 0 {
		s.log.Debug("pruned store", "dedupe_entries", dedupes, "events", events)
	}
}

// seekFrom positions c at key (or the first key when key is nil).
func seekFrom(c *bbolt.Cursor, key []byte) ([]byte, []byte) {
	if key == nil {
		return c.First()
	}
	return c.Seek(key)
}
