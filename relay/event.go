package relay

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The topics Chat Data documents. Any other topic is accepted and rendered
// generically.
const (
	TopicChat       = "chat"
	TopicLead       = "lead-submission"
	TopicEscalation = "live-chat-escalation"
)

// TopicLabel folds a topic to a bounded metric label: one of the three known
// topics, or "other".
func TopicLabel(topic string) string {
	switch topic {
	case TopicChat, TopicLead, TopicEscalation:
		return topic
	}
	return "other"
}

// Event is one accepted Chat Data webhook: the raw body exactly as signed, and
// a tolerant parsed view of it that routes and sinks read. Sinks treat an
// Event as read-only.
type Event struct {
	ID         string
	Topic      string
	ReceivedAt time.Time
	Body       []byte // the raw request body, byte for byte

	ChatbotID      string
	ConversationID string
	Source         string
	ClientIP       string
	Messages       []Message // the conversation so far, without the bot's latest answer
	Answer         *Message  // the bot's answer (chat, live-chat-escalation)
	Lead           []Field   // the lead's fields in a stable order (name, email, phone, then as sent)
	Fields         []Field   // every top-level field as sent, for generic rendering
	Reply          *Reply    // the answer of an agent-reply body; read it through AgentReply
	// Followup is what a follow-up event (TopicFollowup, the relay's own)
	// carries; nil for every other event.
	Followup *Followup
}

// Message is one turn of the conversation.
type Message struct {
	Role    string
	Content string
	Score   *float64 // the answer's confidence, when Chat Data sends one
}

// Field is one named value, rendered as text. Nested objects and arrays are
// compact JSON, and Nested is set: Readable shows them as "label: value"
// lines.
type Field struct {
	Key    string
	Value  string
	Nested bool // Value is a JSON object or array
}

// field makes the Field of a member as sent.
func field(key string, raw json.RawMessage) Field {
	raw = bytes.TrimSpace(raw)
	nested := len(raw) > 0 && (raw[0] == '{' || raw[0] == '[')
	return Field{Key: key, Value: textOf(raw), Nested: nested}
}

// Score returns the answer's score, if the event carries one.
func (e *Event) Score() (float64, bool) {
	if e.Answer == nil || e.Answer.Score == nil {
		return 0, false
	}
	return *e.Answer.Score, true
}

// AnswerText returns the bot's answer, or "" when there is none.
func (e *Event) AnswerText() string {
	if e.Answer == nil {
		return ""
	}
	return e.Answer.Content
}

// Question returns the user's last message, or "" when there is none.
func (e *Event) Question() string {
	for i := len(e.Messages) - 1; i >= 0; i-- {
		if strings.EqualFold(e.Messages[i].Role, "user") {
			return e.Messages[i].Content
		}
	}
	return ""
}

// LeadValue returns the lead field named key ("" when absent).
func (e *Event) LeadValue(key string) string {
	for _, f := range e.Lead {
		if f.Key == key {
			return f.Value
		}
	}
	return ""
}

// OrderingKey is the key deliveries are ordered by: the conversation, or the
// event itself when Chat Data sent no conversation id (such an event is a
// conversation of its own).
func (e *Event) OrderingKey() string {
	if e.ConversationID != "" {
		return "c:" + e.ConversationID
	}
	return "e:" + e.ID
}

// DedupeKey is SHA-256 of the raw body: two requests with the same body are
// the same event, whatever topic header they carry. The topic header is not
// covered by Chat Data's signature, so it must not be part of the key: a
// captured body re-sent under another topic would otherwise be a new event
// (SPEC §4).
func DedupeKey(body []byte) [32]byte { return sha256.Sum256(body) }

// ErrNotObject is returned by DecodeEvent when the body is not a JSON object.
var ErrNotObject = errors.New("body is not a JSON object")

// DecodeEvent parses a Chat Data body leniently. Topic is set from the
// body's "event" field when it has one (the receiver prefers the
// x-chat-data-topic header). Only a body that is not a
// JSON object is an error: missing fields stay empty, fields of an unexpected
// type are ignored, and messages, answer or lead sent as JSON-encoded strings
// are decoded.
func DecodeEvent(body []byte) (*Event, error) {
	fields, err := objectFields(body)
	if err != nil {
		return nil, err
	}
	ev := &Event{Body: body, Fields: make([]Field, 0, len(fields))}
	var reply, followup json.RawMessage
	for _, f := range fields {
		ev.Fields = append(ev.Fields, field(f.key, f.raw))
		switch f.key {
		case "event":
			ev.Topic = strings.TrimSpace(scalarString(f.raw))
		case "chatbot_id":
			ev.ChatbotID = scalarString(f.raw)
		case "conversation_id":
			ev.ConversationID = scalarString(f.raw)
		case "source":
			ev.Source = scalarString(f.raw)
		case "client_ip":
			ev.ClientIP = scalarString(f.raw)
		case "messages":
			ev.Messages = decodeMessages(unwrapString(f.raw))
		case "answer":
			ev.Answer = decodeAnswer(f.raw)
		case "lead":
			ev.Lead = decodeLead(unwrapString(f.raw))
		case "reply":
			reply = f.raw
		case "followup":
			followup = f.raw
		}
	}
	switch ev.Topic {
	case TopicAgentReply:
		ev.Reply = decodeReply(reply)
	case TopicFollowup:
		ev.Followup = decodeFollowup(followup)
	}
	return ev, nil
}

// TopicOf returns the event's topic: the x-chat-data-topic header if set,
// else the body's "event" field as DecodeEvent read it (bodyEvent), else
// "chat".
func TopicOf(header, bodyEvent string) string {
	if t := strings.TrimSpace(header); t != "" {
		return t
	}
	if t := strings.TrimSpace(bodyEvent); t != "" {
		return t
	}
	return TopicChat
}

type rawField struct {
	key string
	raw json.RawMessage
}

// objectFields returns the members of a JSON object in the order sent. A
// repeated key keeps its last value, as encoding/json does. It validates the
// whole input first, then walks the top level without decoding values.
func objectFields(data []byte) ([]rawField, error) {
	if !json.Valid(data) {
		return nil, ErrNotObject
	}
	return validFields(data)
}

// validFields is objectFields for JSON already known to be valid: a part
// of a validated body, or a string's content validated when unwrapped.
func validFields(data []byte) ([]rawField, error) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return nil, ErrNotObject
	}
	i = skipSpace(data, i+1)
	out := make([]rawField, 0, 16) // a Chat Data event has about a dozen fields
	for data[i] != '}' {
		end := skipString(data, i)
		key := string(data[i+1 : end-1])
		if bytes.IndexByte(data[i:end], '\\') >= 0 || !utf8.Valid(data[i:end]) {
			if err := json.Unmarshal(data[i:end], &key); err != nil {
				return nil, ErrNotObject // valid JSON always has a readable key: never
			}
		}
		i = skipSpace(data, end)
		i = skipSpace(data, i+1) // the colon
		vend := skipValue(data, i)
		out = append(out, rawField{key: key, raw: data[i:vend]})
		i = skipSpace(data, vend)
		if data[i] == ',' {
			i = skipSpace(data, i+1)
		}
	}
	return lastOfEachKey(out), nil
}

// smallObject is the field count up to which lastOfEachKey compares keys
// pairwise: cheaper than a map for the dozen fields of a Chat Data event,
// and at most smallObject² comparisons.
const smallObject = 32

// lastOfEachKey drops every field whose key comes again later, keeping the
// order of the last occurrences (a repeated key keeps its last value, as
// encoding/json does). Linear in the number of fields: the body is
// untrusted, and a quadratic check made 90,000 keys cost 20 s.
func lastOfEachKey(fields []rawField) []rawField {
	// Filtering in place is safe: out never grows past the field being read.
	out := fields[:0]
	if len(fields) <= smallObject {
		for j, f := range fields {
			if !slices.ContainsFunc(fields[j+1:], func(g rawField) bool { return g.key == f.key }) {
				out = append(out, f)
			}
		}
		return out
	}
	last := make(map[string]int, len(fields))
	for j, f := range fields {
		last[f.key] = j
	}
	if len(last) == len(fields) {
		return fields
	}
	for j, f := range fields {
		if last[f.key] == j {
			out = append(out, f)
		}
	}
	return out
}

// validItems returns the elements of a JSON array known to be valid, or
// false when data is not an array.
func validItems(data []byte) ([]json.RawMessage, bool) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '[' {
		return nil, false
	}
	i = skipSpace(data, i+1)
	var out []json.RawMessage
	for i < len(data) && data[i] != ']' {
		end := skipValue(data, i)
		out = append(out, data[i:end])
		i = skipSpace(data, end)
		if i < len(data) && data[i] == ',' {
			i = skipSpace(data, i+1)
		}
	}
	return out, true
}

// The skip functions walk JSON already known to be valid.

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the string starting at data[i].
func skipString(data []byte, i int) int {
	for j := i + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(data)
}

// skipValue returns the index just past the value starting at data[i].
func skipValue(data []byte, i int) int {
	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				j = skipString(data, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(data)
	}
	j := i
	for ; j < len(data); j++ {
		switch data[j] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return j
		}
	}
	return j
}

// unwrapString returns the JSON inside a JSON string when raw is a string
// holding JSON, else raw itself.
func unwrapString(raw json.RawMessage) json.RawMessage {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return raw
	}
	s = strings.TrimSpace(s)
	if json.Valid([]byte(s)) {
		return json.RawMessage(s)
	}
	return raw
}

// scalarString renders a JSON string, number or bool as text; anything else
// (null, objects, arrays) as "".
func scalarString(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return ""
	}
	switch raw[0] {
	case '"':
		if len(raw) >= 2 && raw[len(raw)-1] == '"' {
			if inner := raw[1 : len(raw)-1]; bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
				return string(inner) // no escapes: the common case, without a decoder
			}
		}
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
		return ""
	case '{', '[', 'n':
		return ""
	}
	return string(raw)
}

// textOf renders any JSON value as text: scalars as themselves, null as "",
// objects and arrays as compact JSON.
func textOf(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && (raw[0] == '{' || raw[0] == '[') {
		var b bytes.Buffer
		if json.Compact(&b, raw) == nil {
			return b.String()
		}
	}
	return scalarString(raw)
}

func decodeMessage(raw json.RawMessage) (Message, bool) {
	fields, err := validFields(raw)
	if err != nil {
		return Message{}, false
	}
	var m Message
	for _, f := range fields {
		switch f.key {
		case "role":
			m.Role = scalarString(f.raw)
		case "content":
			m.Content = contentText(f.raw)
		case "score":
			if v, err := strconv.ParseFloat(scalarString(f.raw), 64); err == nil && !math.IsNaN(v) && !math.IsInf(v, 0) {
				m.Score = &v
			}
		}
	}
	return m, true
}

// contentText reads a message's content: a string, or OpenAI-style parts
// [{"type":"text","text":"…"}], joined by blank lines.
func contentText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '[' {
		return scalarString(raw)
	}
	parts, _ := validItems(raw)
	var texts []string
	for _, p := range parts {
		if s := scalarString(p); s != "" {
			texts = append(texts, s)
			continue
		}
		fields, _ := validFields(p)
		for _, f := range fields {
			if f.key == "text" {
				if s := scalarString(f.raw); s != "" {
					texts = append(texts, s)
				}
			}
		}
	}
	return strings.Join(texts, "\n\n")
}

func decodeMessages(raw json.RawMessage) []Message {
	items, ok := validItems(raw)
	if !ok {
		return nil
	}
	var out []Message
	for _, it := range items {
		if m, ok := decodeMessage(unwrapString(it)); ok {
			out = append(out, m)
		}
	}
	return out
}

// decodeAnswer reads the answer: an object, a JSON-encoded object, or a plain
// string that is the answer's text.
func decodeAnswer(raw json.RawMessage) *Message {
	inner := unwrapString(raw)
	if m, ok := decodeMessage(inner); ok {
		if m.Role == "" {
			m.Role = "assistant"
		}
		return &m
	}
	if s := scalarString(raw); s != "" {
		return &Message{Role: "assistant", Content: s}
	}
	return nil
}

func decodeLead(raw json.RawMessage) []Field {
	fields, err := validFields(raw)
	if err != nil {
		return nil
	}
	// The fields people look for come first; the rest follow as sent.
	first := []string{"name", "email", "phone"}
	out := make([]Field, 0, len(fields))
	for _, key := range first {
		for _, f := range fields {
			if f.key == key {
				out = append(out, field(f.key, f.raw))
			}
		}
	}
	for _, f := range fields {
		if !slices.Contains(first, f.key) {
			out = append(out, field(f.key, f.raw))
		}
	}
	return out
}
