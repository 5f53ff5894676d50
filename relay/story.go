package relay

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// What every sink shows for the same thing, in the same words (SPEC §6:
// "the reader gets the story, at a glance"). Sinks add their platform's
// emphasis around these words, never other words.
const (
	// NoAnswer stands where a chat turn's answer is empty.
	NoAnswer = "The bot gave no answer."
	// EscalationLine opens a live-chat escalation.
	EscalationLine = "A visitor asked to talk to a person."
	// LowConfidence flags an answer whose score is under ScoreFair.
	LowConfidence = "low confidence"
	// NoLeadFields stands for a lead that carried no field.
	NoLeadFields = "The lead carried no fields."
	// NoConversation stands for an escalation that carried no message.
	NoConversation = "The event carried no conversation."
	// NoFields stands for an event that carried nothing to show.
	NoFields = "The event carried no fields."
)

// Score thresholds: an answer scored at least ScoreGood is shown as
// confident (green), at least ScoreFair as fair (amber), below it as low
// confidence (red).
const (
	ScoreGood = 0.8
	ScoreFair = 0.5
)

// Confidence is an answer's score at a glance.
type Confidence int

// The confidence levels.
const (
	ConfidenceNone Confidence = iota // no score
	ConfidenceLow                    // under ScoreFair
	ConfidenceFair                   // ScoreFair to ScoreGood
	ConfidenceGood                   // ScoreGood and above
)

// Confidence returns the level of the event's answer score.
func (e *Event) Confidence() Confidence {
	v, ok := e.Score()
	switch {
	case !ok:
		return ConfidenceNone
	case v >= ScoreGood:
		return ConfidenceGood
	case v >= ScoreFair:
		return ConfidenceFair
	}
	return ConfidenceLow
}

// ScoreText is the score as every sink writes it: "0.85", or "0.12 (low
// confidence)" under ScoreFair; "" without a score.
func (e *Event) ScoreText() string {
	v, ok := e.Score()
	if !ok {
		return ""
	}
	s := fmt.Sprintf("%.2f", v)
	if e.Confidence() == ConfidenceLow {
		s += " (" + LowConfidence + ")"
	}
	return s
}

// Speaker names who wrote a message with role, as the channel shows it:
// the chatbot's visitor, the bot, or a human agent.
func Speaker(role string) string {
	switch strings.ToLower(strings.TrimSpace(role)) {
	case "user", "visitor", "customer":
		return "Visitor"
	case "assistant", "bot", "ai", "chatbot":
		return "Bot"
	case "human", "agent", "operator":
		return "Agent"
	case "":
		return "Message"
	}
	return Label(role)
}

// UserTyped reports whether a message with role was typed by the
// chatbot's visitor: such text is shown literally, never as markup.
func UserTyped(role string) bool { return Speaker(role) == "Visitor" }

// Transcript returns the conversation so far, newest last: the event's
// messages and then its answer, those with text, at most max of them
// (the latest), and how many earlier ones were left out.
func (e *Event) Transcript(max int) (earlier int, turns []Message) {
	all := make([]Message, 0, len(e.Messages)+1)
	for _, m := range e.Messages {
		if strings.TrimSpace(m.Content) != "" {
			all = append(all, m)
		}
	}
	if e.Answer != nil && strings.TrimSpace(e.Answer.Content) != "" {
		all = append(all, *e.Answer)
	}
	if max < 0 {
		max = 0
	}
	if len(all) <= max {
		return 0, all
	}
	return len(all) - max, all[len(all)-max:]
}

// EarlierMessages is the line that stands for n messages left out of a
// transcript.
func EarlierMessages(n int) string {
	if n == 1 {
		return "1 earlier message"
	}
	return fmt.Sprintf("%d earlier messages", n)
}

// acronyms are words of field keys shown in capitals.
var acronyms = map[string]string{"id": "ID", "uuid": "UUID", "ip": "IP", "url": "URL", "sso": "SSO", "crm": "CRM"}

// maxLabel bounds a label, in runes.
const maxLabel = 100

// Label turns a field key into a label: "first_name" → "First name",
// "firstName" → "First name", "uuid" → "UUID", "chatbot_id" →
// "Chatbot ID". An empty key is "(unnamed)".
func Label(key string) string {
	key = strings.ToValidUTF8(key, "\uFFFD")
	var words []string
	for _, w := range strings.FieldsFunc(key, func(r rune) bool {
		return r == '_' || r == '-' || r == '.' || unicode.IsSpace(r) || unicode.IsControl(r)
	}) {
		words = append(words, splitCamel(w)...)
	}
	for i, w := range words {
		lw := strings.ToLower(w)
		switch a, ok := acronyms[lw]; {
		case ok:
			words[i] = a
		case i > 0 && w != strings.ToUpper(w):
			words[i] = lw // "firstName" → "first name"; "SKU" stays
		}
	}
	out := strings.Join(words, " ")
	if out == "" {
		return "(unnamed)"
	}
	r, size := utf8.DecodeRuneInString(out)
	out = string(unicode.ToUpper(r)) + out[size:]
	out, _ = Truncate(out, maxLabel)
	return out
}

// splitCamel splits "firstName" into "first" and "Name"; runs of capitals
// ("SKU", "orderID") stay whole.
func splitCamel(w string) []string {
	var out []string
	start := 0
	prev := rune(0)
	for i, r := range w {
		if i > 0 && unicode.IsUpper(r) && unicode.IsLower(prev) {
			out = append(out, w[start:i])
			start = i
		}
		prev = r
	}
	return append(out, w[start:])
}

// FieldKind says where a lead field goes in the reading order: who the
// visitor is, how to reach them, what they said, anything else, then
// ids.
type FieldKind int

// The kinds, in reading order.
const (
	KindWho FieldKind = iota
	KindContact
	KindSaid
	KindOther
	KindID
)

// LeadFieldKind classifies a lead field by its key.
func LeadFieldKind(key string) FieldKind {
	k := strings.ToLower(strings.Join(strings.FieldsFunc(key, func(r rune) bool {
		return r == '_' || r == '-' || r == '.' || unicode.IsSpace(r)
	}), "_"))
	switch k {
	case "name", "full_name", "fullname", "first_name", "firstname", "last_name", "lastname",
		"company", "company_name", "organization", "organisation", "job_title", "title", "role":
		return KindWho
	case "email", "e_mail", "mail", "email_address", "phone", "phone_number", "telephone", "tel", "mobile",
		"whatsapp", "website", "url", "linkedin":
		return KindContact
	case "message", "comment", "comments", "note", "notes", "question", "inquiry", "enquiry",
		"description", "details", "request":
		return KindSaid
	case "uuid", "id", "lead_id", "external_id":
		return KindID
	}
	if strings.HasSuffix(k, "_id") || strings.HasSuffix(k, "_uuid") {
		return KindID
	}
	return KindOther
}

// ReadingOrder returns the lead's fields in the order a reader wants them
// (who, how to reach, what they said, the rest, ids), each kind in the
// event's order.
func ReadingOrder(lead []Field) []Field {
	out := slices.Clone(lead)
	slices.SortStableFunc(out, func(a, b Field) int { return int(LeadFieldKind(a.Key)) - int(LeadFieldKind(b.Key)) })
	return out
}

// Readable limits: nesting shown as labels, and lines per field.
const (
	maxReadableDepth = 6
	maxReadableLines = 200
)

// Readable returns a nested field's value (an object or an array, see
// Field.Nested) as "label: value" lines: an object's members labelled
// by their keys (deeper ones as "Outer › Inner"), an array of plain
// values joined by ", ", an array of objects item by item ("Items 1 ›
// Name"). Empty values are left out. For a plain field it returns nil.
func Readable(f Field) []Field {
	if !f.Nested {
		return nil
	}
	var out []Field
	readable([]byte(f.Value), "", 0, &out)
	return out
}

// JoinedValue is a field's value on one line, for places that show one
// value: a plain value as it is, an array of plain values joined by ", ",
// other nested values as their "label: value" lines joined by "; ".
func JoinedValue(f Field) string {
	if !f.Nested {
		return f.Value
	}
	lines := Readable(f)
	if len(lines) == 1 && lines[0].Key == "" {
		return lines[0].Value
	}
	parts := make([]string, len(lines))
	for i, l := range lines {
		parts[i] = l.Key + ": " + l.Value
		if l.Key == "" {
			parts[i] = l.Value
		}
	}
	return strings.Join(parts, "; ")
}

func readable(raw []byte, prefix string, depth int, out *[]Field) {
	if len(*out) >= maxReadableLines {
		return
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return
	}
	add := func(v string) {
		if strings.TrimSpace(v) != "" {
			*out = append(*out, Field{Key: prefix, Value: v})
		}
	}
	join := func(label string) string {
		if prefix == "" {
			return label
		}
		return prefix + " › " + label
	}
	switch {
	case depth >= maxReadableDepth:
		add(textOf(raw))
	case raw[0] == '{':
		fields, err := validFields(raw)
		if err != nil {
			return
		}
		for _, m := range fields {
			readable(m.raw, join(Label(m.key)), depth+1, out)
		}
	case raw[0] == '[':
		items, _ := validItems(raw)
		var plain []string
		allPlain := true
		for _, it := range items {
			it = bytes.TrimSpace(it)
			if len(it) > 0 && (it[0] == '{' || it[0] == '[') {
				allPlain = false
				break
			}
			if s := scalarString(it); strings.TrimSpace(s) != "" {
				plain = append(plain, s)
			}
		}
		if allPlain {
			add(strings.Join(plain, ", "))
			return
		}
		for i, it := range items {
			readable(it, join(fmt.Sprint(i+1)), depth+1, out)
		}
	default:
		add(scalarString(raw))
	}
}

// Contact is what kind of address a value is.
type Contact int

// The kinds of contact a value can be.
const (
	NotContact Contact = iota
	ContactEmail
	ContactPhone
	ContactURL
)

var (
	emailForm = regexp.MustCompile(`^[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}$`)
	phoneForm = regexp.MustCompile(`^\+?[0-9 ()./\-]+$`)
	urlForm   = regexp.MustCompile(`^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[^\s<>|"` + "`" + `]*)?$`)
)

// phoneKeys are keys whose values are phone numbers even without a
// leading "+".
var phoneKeys = []string{"phone", "phone_number", "phonenumber", "telephone", "tel", "mobile", "cell", "whatsapp"}

// ContactOf reports whether v (trimmed), the value of a field named key,
// is an e-mail address, a phone number or a web address, and the link that
// opens it: "mailto:…", "tel:+15550100" (digits only, with the + if
// given), or the URL. A number is a phone number when it starts with "+"
// or its key says so (a date is not). Only plain ASCII forms count, so
// that the link holds nothing a platform could read as markup.
func ContactOf(key, v string) (Contact, string) {
	v = strings.TrimSpace(v)
	if v == "" || len(v) > 320 {
		return NotContact, ""
	}
	switch {
	case emailForm.MatchString(v):
		return ContactEmail, "mailto:" + v
	case urlForm.MatchString(v):
		return ContactURL, v
	case phoneForm.MatchString(v) && (strings.HasPrefix(v, "+") || slices.Contains(phoneKeys, strings.ToLower(strings.TrimSpace(key)))):
		digits := strings.Map(func(r rune) rune {
			if r >= '0' && r <= '9' {
				return r
			}
			return -1
		}, v)
		if len(digits) < 6 || len(digits) > 15 {
			return NotContact, ""
		}
		if strings.HasPrefix(v, "+") {
			digits = "+" + digits
		}
		return ContactPhone, "tel:" + digits
	}
	return NotContact, ""
}

// OtherFields is what an event of a topic the relay does not know shows in
// its body: its fields in the order sent, without those every platform
// shows elsewhere (the topic in the title; the chatbot and conversation
// with the ids) and without the visitor's IP address, which no message
// shows.
func (e *Event) OtherFields() []Field {
	out := make([]Field, 0, len(e.Fields))
	for _, f := range e.Fields {
		switch f.Key {
		case "event", "chatbot_id", "conversation_id", "client_ip":
			continue
		}
		out = append(out, f)
	}
	return out
}
