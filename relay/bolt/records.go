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

// encodeEvent lays out: version byte, uvarint meta length, meta JSON, body.
func encodeEvent(ev *relay.Event, sinks []string, hash []byte) ([]byte, error) {
	meta, err := json.Marshal(eventMeta{
		Topic: ev.Topic, Received: ev.ReceivedAt.UnixNano(), Conv: ev.ConversationID,
		Key: ev.OrderingKey(), Sinks: sinks, Hash: hash,
	})
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 0, 1+binary.MaxVarintLen64+len(meta)+len(ev.Body))
	buf = append(buf, 1)
	buf = binary.AppendUvarint(buf, uint64(len(meta)))
	buf = append(buf, meta...)
	buf = append(buf, ev.Body...)
	return buf, nil
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
	return eventOf(id, m, bytes.Clone(body)), m, nil
}

// eventOf rebuilds an Event from its meta and body (not bbolt memory).
func eventOf(id string, m eventMeta, body []byte) *relay.Event {
	ev, err := relay.DecodeEvent(body)
	if err != nil {
		// Accepted bodies are JSON objects; keep the event usable anyway.
		ev = &relay.Event{Body: body}
	}
	ev.ID, ev.Topic, ev.ReceivedAt = id, m.Topic, time.Unix(0, m.Received).UTC()
	return ev
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
