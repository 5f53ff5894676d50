package nats

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"net/url"
	"strconv"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/chatrelay/chatrelay/relay"
)

// layout is every name the store uses on the server, derived from
// Options.Name and Options.Partitions.
type layout struct {
	events, queue, dead string // stream names
	kv, state, replicas string // key/value bucket names
	subj                string // subject prefix
	partitions          int
}

func newLayout(name string, partitions int) layout {
	return layout{
		events:     name + "_EVENTS",
		queue:      name + "_QUEUE",
		dead:       name + "_DEAD",
		kv:         name + "_KV",
		state:      name + "_STATE",
		replicas:   name + "_REPLICAS",
		subj:       strings.ToLower(name),
		partitions: partitions,
	}
}

// partitionOf maps an ordering key to its partition: FNV-1a modulo the
// partition count, so every replica computes the same one.
func (l layout) partitionOf(key string) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(l.partitions))
}

func part(p int) string { return fmt.Sprintf("%03d", p) }

// eventPartition reads the partition from an event's subject; Append chose
// it, and everything after follows that choice.
func (l layout) eventPartition(subject string) (int, bool) {
	rest, ok := strings.CutPrefix(subject, l.subj+".ev.")
	if !ok {
		return 0, false
	}
	tok, _, _ := strings.Cut(rest, ".")
	p, err := strconv.Atoi(tok)
	return p, err == nil && p >= 0 && p < l.partitions
}

// partitionHeader reads the partition a queue message or dead letter
// carries, else computes it from the event.
func (l layout) partitionHeader(h natsgo.Header, ev *relay.Event) int {
	if p, err := strconv.Atoi(h.Get(hdrPart)); err == nil && p >= 0 && p < l.partitions {
		return p
	}
	return l.partitionOf(ev.OrderingKey())
}

// Subjects. Event ids and encoded sink names are single subject tokens.
func (l layout) eventSubject(p int, id string) string { return l.subj + ".ev." + part(p) + "." + id }
func (l layout) eventByID(id string) string           { return l.subj + ".ev.*." + id }
func (l layout) eventsAll() string                    { return l.subj + ".ev.>" }
func (l layout) queueSubject(enc string, p int, id string) string {
	return l.subj + ".q." + enc + "." + part(p) + "." + id
}
func (l layout) queueFilter(enc string, p int) string {
	return l.subj + ".q." + enc + "." + part(p) + ".*"
}
func (l layout) queueSinkFilter(enc string) string { return l.subj + ".q." + enc + ".>" }
func (l layout) queueAll() string                  { return l.subj + ".q.>" }
func (l layout) deadSubject(enc, id string) string { return l.subj + ".dead." + enc + "." + id }
func (l layout) deadSinkFilter(enc string) string  { return l.subj + ".dead." + enc + ".*" }
func (l layout) deadAll() string                   { return l.subj + ".dead.>" }

// queueConsumer names the durable consumer of one sink's partition.
func queueConsumer(enc string, p int) string { return "q_" + enc + "_" + part(p) }

// sinkOfConsumer returns the encoded sink of a queue consumer's name.
func sinkOfConsumer(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "q_")
	if !ok {
		return "", false
	}
	i := strings.LastIndexByte(rest, '_')
	if i <= 0 {
		return "", false
	}
	return rest[:i], true
}

// encodeSink turns a sink name into a subject token, consumer-name part and
// key/value key part: names of lower-case letters, digits and '-' stay as
// they are, anything else becomes '_' and the name's bytes in hex. '_' is
// outside the first alphabet, so the mapping is one-to-one.
func encodeSink(name string) string {
	plain := name != ""
	for i := 0; i < len(name) && plain; i++ {
		c := name[i]
		plain = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
	}
	if plain {
		return name
	}
	return "_" + hex.EncodeToString([]byte(name))
}

func decodeSink(enc string) (string, bool) {
	if h, ok := strings.CutPrefix(enc, "_"); ok {
		b, err := hex.DecodeString(h)
		return string(b), err == nil
	}
	return enc, enc != ""
}

// validID reports whether an event id can be a subject token and a
// key/value key: letters, digits, '-' and '_' (uuids are).
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func stateKey(enc, eventID string) string { return enc + "." + eventID }

// kvKey namespaces a sink's key/value key. Both parts are base64url, which
// only uses characters key/value keys allow; the letters keep them
// non-empty.
func kvKey(namespace, key string) string {
	return "n" + base64.RawURLEncoding.EncodeToString([]byte(namespace)) +
		".k" + base64.RawURLEncoding.EncodeToString([]byte(key))
}

// Message headers. Free-form values (topic, sink, conversation, reason) are
// query-escaped, so no byte of them can break the header block.
const (
	hdrID       = "Chatrelay-Id"
	hdrTopic    = "Chatrelay-Topic"
	hdrReceived = "Chatrelay-Received" // unix nanoseconds
	hdrConv     = "Chatrelay-Conversation"
	hdrSink     = "Chatrelay-Sink" // events: one value per routed sink; dead letters: the sink
	hdrSince    = "Chatrelay-Since"
	hdrAttempts = "Chatrelay-Attempts"
	hdrParked   = "Chatrelay-Parked"
	hdrReason   = "Chatrelay-Reason"
	hdrLastErr  = "Chatrelay-Last-Error" // a replayed delivery's history
	hdrPart     = "Chatrelay-Partition"
	hdrReplica  = "Chatrelay-Replica" // the instance that appended the event
	hdrRepeat   = "Chatrelay-Repeat"  // a delivery queued again by a repair: it may have been settled before
	hdrUsage    = "Chatrelay-Usage"   // a chat event's usage figures (console.go)
)

func escape(s string) string { return url.QueryEscape(s) }

func unescape(s string) string {
	v, err := url.QueryUnescape(s)
	if err != nil {
		return s
	}
	return v
}

func nanos(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) }

func parseNanos(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// eventHeaders describes an event on the message that carries its body.
func eventHeaders(h natsgo.Header, ev *relay.Event, received time.Time) {
	h.Set(hdrID, ev.ID)
	h.Set(hdrTopic, escape(ev.Topic))
	h.Set(hdrReceived, nanos(received))
	if ev.ConversationID != "" {
		h.Set(hdrConv, escape(ev.ConversationID))
	}
}

// eventMeta is what the headers of an event, queue or dead-letter message
// say about its event.
type eventMeta struct {
	ID       string
	Topic    string
	Received time.Time
	Conv     string
	Sinks    []string
}

func metaOf(h natsgo.Header) eventMeta {
	m := eventMeta{
		ID:       h.Get(hdrID),
		Topic:    unescape(h.Get(hdrTopic)),
		Received: parseNanos(h.Get(hdrReceived)),
		Conv:     unescape(h.Get(hdrConv)),
	}
	for _, s := range h.Values(hdrSink) {
		m.Sinks = append(m.Sinks, unescape(s))
	}
	return m
}

// eventOf rebuilds an Event from a stored body and its headers.
func eventOf(h natsgo.Header, body []byte) (*relay.Event, eventMeta) {
	m := metaOf(h)
	ev, err := relay.DecodeEvent(body)
	if err != nil {
		// Accepted bodies are JSON objects; keep the event usable anyway.
		ev = &relay.Event{Body: body}
	}
	ev.ID, ev.Topic, ev.ReceivedAt = m.ID, m.Topic, m.Received
	return ev, m
}
