package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
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

// historyView runs fn in a read transaction.
func (s *Store) historyView(fn func(*bbolt.Tx) error) error { return s.db.View(fn) }

// scanEvents calls fn with the id and stored record of each event from key
// from on (the first event when nil), in key order, until fn answers false.
// v is bbolt memory, valid only during the call.
func (s *Store) scanEvents(ctx context.Context, from []byte, fn func(k, v []byte) (bool, error)) error {
	return s.scan(ctx, bEvents, from, fn)
}

// scan is scanEvents over any top-level bucket.
func (s *Store) scan(ctx context.Context, bucket string, from []byte, fn func(k, v []byte) (bool, error)) error {
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
			c := tx.Bucket([]byte(bucket)).Cursor()
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

// The usage figures (relay.History.Usage) are counters in the usage bucket,
// per minute: for each topic, the events; for each chatbot, the chat events'
// conversations started, credits, scored answers and low-confidence ones.
// Append's record adds its event's share to them (opAdd), so they are
// written in the same durable write as the event and applied with it, once
// (a replay applies only the records the database does not hold). A
// minute's counters are a handful of keys however many events it had.
//
// Key: the minute (unix minutes, 8 bytes big-endian), a kind byte and the
// topic or chatbot (relay.LabelOf). Value: the counters, each a float64
// big-endian.

const (
	usageTopic byte = 't' // counters: events
	usageBot   byte = 'b' // counters: conversations, credits, answers, low
	// usageMargin is how much longer than relay.UsageKept the counters
	// are kept: a day's figures are whole however the clocks run.
	usageMargin = time.Hour
)

func unixMinute(t time.Time) int64 { return t.Truncate(time.Minute).Unix() / 60 }

func usageKey(minute int64, kind byte, name string) []byte {
	k := make([]byte, 0, 9+len(name))
	k = binary.BigEndian.AppendUint64(k, uint64(max(minute, 0)))
	return append(append(k, kind), name...)
}

func encodeCounters(c ...float64) []byte {
	b := make([]byte, 0, 8*len(c))
	for _, f := range c {
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(f))
	}
	return b
}

// counter returns counter i of a stored value (0 when it has none).
func counter(v []byte, i int) float64 {
	if len(v) < 8*(i+1) {
		return 0
	}
	return math.Float64frombits(binary.BigEndian.Uint64(v[8*i:]))
}

// addCounters returns the counters of cur plus those of delta. A stored
// value that is no whole number of counters (damage) counts as zeros, so
// that the record adding to it (an event's) still applies.
func addCounters(cur, delta []byte) []byte {
	if len(cur)%8 != 0 {
		cur = nil
	}
	n := max(len(cur), len(delta)) / 8
	out := make([]float64, n)
	for i := range out {
		out[i] = counter(cur, i) + counter(delta, i)
	}
	return encodeCounters(out...)
}

// usageOps are the operations that add ev to its minute's usage figures:
// the minute of ev.ReceivedAt (of now when it has none).
func usageOps(ev *relay.Event, now time.Time) ops {
	at := ev.ReceivedAt
	if at.IsZero() {
		at = now
	}
	minute := unixMinute(at)
	var o ops
	o.op(opAdd, bUsage, "", usageKey(minute, usageTopic, relay.LabelOf(ev.Topic)), encodeCounters(1))
	if u := relay.UsageOf(ev); u.Counted {
		var c relay.UsageCount
		c.Add(u)
		o.op(opAdd, bUsage, "", usageKey(minute, usageBot, relay.LabelOf(u.Chatbot)),
			encodeCounters(float64(c.Conversations), c.Credits, float64(c.Answers), float64(c.Low)))
	}
	return o
}

// Usage implements relay.History: the usage bucket from since's minute on.
func (s *Store) Usage(ctx context.Context, since time.Time) ([]relay.UsageMinute, error) {
	if err := s.caughtUp(ctx); err != nil {
		return nil, err
	}
	var from []byte
	if !since.IsZero() {
		from = usageKey(unixMinute(since), 0, "")
	}
	var out []relay.UsageMinute
	err := s.scan(ctx, bUsage, from, func(k, v []byte) (bool, error) {
		if len(k) < 9 {
			return true, nil // not a usage key: skipped
		}
		minute := int64(binary.BigEndian.Uint64(k))
		if len(out) == 0 || unixMinute(out[len(out)-1].Start) != minute {
			out = append(out, *relay.NewUsageMinute(time.Unix(minute*60, 0)))
		}
		m := &out[len(out)-1]
		name := string(k[9:])
		switch k[8] {
		case usageTopic:
			m.Topics[name] += int(counter(v, 0))
		case usageBot:
			m.AddBot(name, relay.UsageCount{Conversations: int(counter(v, 0)), Credits: counter(v, 1),
				Answers: int(counter(v, 2)), Low: int(counter(v, 3))})
		}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("usage figures: %w", err)
	}
	return out, nil
}

// pruneUsage deletes up to budget usage counters of minutes before cut
// (unix nanoseconds), in tx.
func pruneUsage(tx *bbolt.Tx, cut int64, budget int) error {
	b := tx.Bucket([]byte(bUsage))
	end := usageKey(unixMinute(time.Unix(0, cut)), 0, "")
	var old [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil && len(old) < budget && bytes.Compare(k, end) < 0; k, _ = c.Next() {
		old = append(old, bytes.Clone(k))
	}
	for _, k := range old {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
