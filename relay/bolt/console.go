package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/chatrelay/chatrelay/relay"
)

// The operator's queries (relay.History). Each first waits until the
// database holds every record that is durable (caughtUp), then reads in
// short read transactions of scanChunk records: a long one would hold
// bbolt's mmap lock and stall the writer when the file has to grow.

var _ relay.History = (*Store)(nil)

const scanChunk = 2048

// receivedSlack is how far before a time the scan of Received starts: event
// ids are UUIDv7, so the events bucket is in the order of the ids' clock,
// which may run a little apart from Event.ReceivedAt (taken from the
// store's clock just before the id).
const receivedSlack = time.Minute

// historyView runs fn in a read transaction.
func (s *Store) historyView(fn func(*bbolt.Tx) error) error { return s.db.View(fn) }

// scanEvents calls fn with the id and stored record of each event from key
// from on (the first event when nil), in key order, until fn answers false.
// v is bbolt memory, valid only during the call.
func (s *Store) scanEvents(ctx context.Context, from []byte, fn func(k, v []byte) (bool, error)) error {
	var next []byte
	if from != nil {
		next = bytes.Clone(from)
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		done := false
		err := s.historyView(func(tx *bbolt.Tx) error {
			c := tx.Bucket([]byte(bEvents)).Cursor()
			var k, v []byte
			if next == nil {
				k, v = c.First()
			} else {
				k, v = c.Seek(next)
			}
			for n := 0; ; n++ {
				if k == nil {
					done = true
					return nil
				}
				if n == scanChunk {
					next = bytes.Clone(k)
					return nil
				}
				more, err := fn(k, v)
				if err != nil {
					return err
				}
				if !more {
					done = true
					return nil
				}
				k, v = c.Next()
			}
		})
		if err != nil || done {
			return err
		}
	}
}

// metaBytes returns the JSON meta of a stored event without decoding it.
func metaBytes(v []byte) []byte {
	if len(v) < 2 || v[0] != 1 {
		return nil
	}
	n, k := binary.Uvarint(v[1:])
	if k <= 0 || uint64(len(v)-1-k) < n {
		return nil
	}
	return v[1+k : 1+k+int(n)]
}

// Conversation implements relay.History. Events are not indexed by
// conversation: the events bucket is scanned, and only records whose meta
// holds the conversation id as written are decoded.
func (s *Store) Conversation(ctx context.Context, id string, limit int) ([]relay.EventRecord, int, error) {
	if id == "" {
		return nil, 0, nil
	}
	if err := s.caughtUp(ctx); err != nil {
		return nil, 0, err
	}
	quoted, err := json.Marshal(id)
	if err != nil {
		return nil, 0, err
	}
	needle := append([]byte(`"conv":`), quoted...)
	var ids []string
	total := 0
	err = s.scanEvents(ctx, nil, func(k, v []byte) (bool, error) {
		if !bytes.Contains(metaBytes(v), needle) {
			return true, nil
		}
		m, _, err := decodeEventMeta(v)
		if err != nil || m.Conv != id {
			return true, nil // a damaged record is not this conversation's
		}
		total++
		ids = append(ids, string(k))
		if limit > 0 && len(ids) > limit {
			ids = ids[1:]
		}
		return true, nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("conversation %q: %w", id, err)
	}
	out := make([]relay.EventRecord, 0, len(ids))
	for _, eid := range ids {
		rec, err := s.Lookup(ctx, eid)
		if err != nil {
			if errors.Is(err, relay.ErrNotFound) { // pruned since the scan
				total--
				continue
			}
			return nil, 0, fmt.Errorf("conversation %q: %w", id, err)
		}
		out = append(out, *rec)
	}
	return out, total, nil
}

// FindDead implements relay.History: each sink's dead letters are keyed by
// when they were parked, so a time bound is a seek.
func (s *Store) FindDead(ctx context.Context, f relay.DeadFilter, offset, limit int) (relay.DeadPage, error) {
	if err := s.caughtUp(ctx); err != nil {
		return relay.DeadPage{}, err
	}
	var matched []relay.DeadLetter
	err := s.historyView(func(tx *bbolt.Tx) error {
		dead := tx.Bucket([]byte(bDead))
		return dead.ForEachBucket(func(name []byte) error {
			if f.Sink != "" && string(name) != f.Sink {
				return nil
			}
			c := dead.Bucket(name).Cursor()
			var k []byte
			if f.Since.IsZero() {
				k, _ = c.First()
			} else {
				k, _ = c.Seek(timeKey(f.Since.UnixNano(), nil))
			}
			for ; k != nil; k, _ = c.Next() {
				if err := ctx.Err(); err != nil {
					return err
				}
				if len(k) < 8 {
					continue
				}
				if !f.Until.IsZero() && int64(beU64(k)) >= f.Until.UnixNano() {
					break
				}
				dl, err := s.deadLetter(tx, string(k[8:]), string(name))
				if errors.Is(err, relay.ErrNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				if f.Match(dl) {
					matched = append(matched, dl)
				}
			}
			return nil
		})
	})
	if err != nil {
		return relay.DeadPage{}, fmt.Errorf("dead letters: %w", err)
	}
	return relay.PageOf(matched, offset, limit), nil
}

// Received implements relay.History. The scan starts at the first id of
// receivedSlack before since (UUIDv7 ids begin with their time in
// milliseconds) and skips what was received earlier.
func (s *Store) Received(ctx context.Context, since time.Time, fn func(*relay.Event) (bool, error)) error {
	if err := s.caughtUp(ctx); err != nil {
		return err
	}
	var from []byte
	if !since.IsZero() {
		from = uuidV7Prefix(since.Add(-receivedSlack))
	}
	from0 := since.UnixNano()
	return s.scanEvents(ctx, from, func(k, v []byte) (bool, error) {
		m, _, err := decodeEventMeta(v)
		if err != nil || (!since.IsZero() && m.Received < from0) {
			return true, nil
		}
		ev, _, err := decodeEvent(string(k), v)
		if err != nil {
			return true, nil
		}
		return fn(ev)
	})
}

// uuidV7Prefix is the start of the textual UUIDv7 of time t: its 48-bit
// millisecond timestamp as 12 hex digits, a dash after the eighth.
func uuidV7Prefix(t time.Time) []byte {
	ms := uint64(max(t.UnixMilli(), 0)) & (1<<48 - 1)
	return fmt.Appendf(nil, "%08x-%04x", ms>>16, ms&0xffff)
}
