package bolt

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

// Bucket names. Nested buckets under bQueues and bDead are named after sinks.
const (
	bMeta   = "meta"
	bEvents = "events"     // event id → event record
	bDeliv  = "deliveries" // event id \x00 sink → deliveryRecord, once a delivery was tried or settled
	bQueues = "queues"     // /<sink>: seq(8) → queueEntry
	bDead   = "dead"       // /<sink>: parked-at(8) + event id → nil
	bKV     = "kv"         // namespace \x00 key → value
	bUsage  = "usage"      // minute(8) kind name → counters (console.go)
)

const schemaVersion = 1 // no release yet: formats may still change

// eventMeta is what is stored next to the raw body.
type eventMeta struct {
	Topic    string   `json:"topic"`
	Received int64    `json:"received"` // unix nanoseconds
	Conv     string   `json:"conv"`     // conversation id as sent
	Key      string   `json:"key"`      // ordering key
	Sinks    []string `json:"sinks"`
	Hash     []byte   `json:"hash"` // dedupe key, from which the in-memory index is rebuilt
}

// appendRecord builds the intake record of an append in o: the event's
// record (version byte, uvarint meta length, meta JSON, body) and one queue
// entry per sink, in one allocation. The queue entries' sequence numbers
// are left at 0: the logger, which numbers each sink's queue in log order,
// writes them at seqAt[i] (big-endian, 8 bytes) for sinks[i].
func (o *ops) appendRecord(ev *relay.Event, sinks []string, hash, entry []byte) (seqAt []int, err error) {
	meta, err := json.Marshal(eventMeta{
		Topic: ev.Topic, Received: ev.ReceivedAt.UnixNano(), Conv: ev.ConversationID,
		Key: ev.OrderingKey(), Sinks: sinks, Hash: hash,
	})
	if err != nil {
		return nil, err
	}
	n := 1 + uvarintLen(len(meta)) + len(meta) + len(ev.Body)
	size := 2 + 1 + 1 + len(ev.ID) + uvarintLen(n) + n
	for _, sink := range sinks {
		size += 2 + uvarintLen(len(sink)) + len(sink) + 1 + 8 + uvarintLen(len(entry)) + len(entry)
	}
	o.b = make([]byte, 0, size)
	o.key(opPut, bEvents, "", []byte(ev.ID))
	o.b = binary.AppendUvarint(o.b, uint64(n))
	o.b = append(o.b, 1)
	o.b = binary.AppendUvarint(o.b, uint64(len(meta)))
	o.b = append(o.b, meta...)
	o.b = append(o.b, ev.Body...)
	seqAt = make([]int, len(sinks))
	for i, sink := range sinks {
		seqAt[i] = o.key(opPutQueue, bQueues, sink, make([]byte, 8))
		o.b = binary.AppendUvarint(o.b, uint64(len(entry)))
		o.b = append(o.b, entry...)
	}
	return seqAt, nil
}

func uvarintLen(n int) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], uint64(n))
}

// decodeEventMeta reads only the meta of a stored event. v may be bbolt
// memory: the result holds no reference to it.
func decodeEventMeta(v []byte) (eventMeta, []byte, error) {
	var m eventMeta
	if len(v) < 2 || v[0] != 1 {
		return m, nil, errors.New("bad event record")
	}
	n, k := binary.Uvarint(v[1:])
	if k <= 0 || uint64(len(v)-1-k) < n {
		return m, nil, errors.New("bad event record length")
	}
	metaEnd := 1 + k + int(n)
	if err := json.Unmarshal(v[1+k:metaEnd], &m); err != nil {
		return m, nil, fmt.Errorf("bad event meta: %w", err)
	}
	return m, v[metaEnd:], nil
}

// decodeEvent rebuilds an Event from its record. The body is copied out of
// bbolt's memory.
func decodeEvent(id string, v []byte) (*relay.Event, eventMeta, error) {
	m, body, err := decodeEventMeta(v)
	if err != nil {
		return nil, m, err
	}
	body = bytes.Clone(body)
	ev, err := relay.DecodeEvent(body)
	if err != nil {
		// Accepted bodies are JSON objects; keep the event usable anyway.
		ev = &relay.Event{Body: body}
	}
	ev.ID, ev.Topic, ev.ReceivedAt = id, m.Topic, time.Unix(0, m.Received).UTC()
	return ev, m, nil
}

// deliveryRecord is where one delivery stands.
type deliveryRecord struct {
	State    string `json:"state"`
	Attempts int    `json:"attempts"`      // failed attempts so far (pending, dead), or attempts made (delivered)
	Since    int64  `json:"since"`         // start of retry.max_age
	Due      int64  `json:"due,omitempty"` // next attempt, while pending
	LastErr  string `json:"last_error,omitempty"`
	Updated  int64  `json:"updated"`
	Parked   int64  `json:"parked,omitempty"` // while dead
}

func delivKey(eventID, sink string) []byte {
	return []byte(eventID + "\x00" + sink)
}

func getDeliv(b bucketGetter, eventID, sink string) (deliveryRecord, bool, error) {
	var r deliveryRecord
	v := b.Get(delivKey(eventID, sink))
	if v == nil {
		return r, false, nil
	}
	if err := json.Unmarshal(v, &r); err != nil {
		return r, false, fmt.Errorf("%w: delivery %s/%s: %w", errUnreadable, eventID, sink, err)
	}
	return r, true, nil
}

type bucketGetter interface{ Get([]byte) []byte }

// queueEntry is one pending delivery in a sink's queue.
type queueEntry struct {
	EventID  string `json:"id"`
	Key      string `json:"key"`      // ordering key
	Received int64  `json:"received"` // acceptance time, for the oldest-pending metric
	Since    int64  `json:"since"`    // start of retry.max_age: acceptance or replay
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func timeKey(t int64, suffix []byte) []byte {
	k := make([]byte, 8, 8+len(suffix))
	binary.BigEndian.PutUint64(k, uint64(t))
	return append(k, suffix...)
}

// splitDeadID splits "<event id>.<sink>". Event ids contain no dot.
func splitDeadID(id string) (eventID, sink string, ok bool) {
	eventID, sink, ok = strings.Cut(id, ".")
	return eventID, sink, ok && eventID != "" && sink != ""
}
