package relay

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// TopicFollowup is the topic of what the relay posts to a two-way sink
// besides Chat Data's events (SPEC §10): an agent reply's outcome in the
// thread it was written in, a conversation's new status on the message
// whose button was clicked, an unclaimed escalation posted again. The
// relay makes these events itself and queues each for one sink, so that
// they go through that sink's dispatcher, paced, retried and in the
// conversation's order like every post; the receiver refuses the topic on
// POST /webhook, and routes never send it anywhere.
const TopicFollowup = "followup"

// Kinds of follow-up.
const (
	// FollowupDelivered: Chat Data accepted the agent's reply; the sink
	// marks the agent's message (a ✅ reaction).
	FollowupDelivered = "reply-delivered"
	// FollowupDead: the reply was dead-lettered; the sink says so in its
	// thread, with why and the command that sends it again.
	FollowupDead = "reply-dead"
	// FollowupHeld: the reply waits, kept and retried, because Chat Data
	// refuses the relay's key, cannot be reached or keeps failing; the
	// sink says so once in its thread, in reply to the agent's message
	// (the ✅ still follows once it is delivered).
	FollowupHeld = "reply-held"
	// FollowupStatus: a Claim or Resolve click changed the conversation's
	// status; the sink shows it on the message clicked.
	FollowupStatus = "status"
	// FollowupRepage: an escalation nobody claimed within the sink's
	// repage_after; the sink posts it again with its mention.
	FollowupRepage = "repage"
)

// Followup is what a follow-up event carries.
type Followup struct {
	Kind string `json:"kind"`
	// Sink is the sink it is for: the only one it is queued for.
	Sink string `json:"sink"`
	// Key is its identity on Sink (the store's dedupe key), so that a
	// repeat of what caused it (a crash between a send and its record,
	// two replicas re-paging) queues it once.
	Key string `json:"key"`

	// Reply is the agent's answer (FollowupDelivered, FollowupDead): where
	// it was written, who wrote it.
	Reply *Reply `json:"reply,omitempty"`
	// Reason is why the reply was dead-lettered, scrubbed of every
	// configured secret; Replay the command that sends it again.
	// (FollowupHeld: Reason is why it waits, in the relay's words, Until
	// when it goes, and Status the command that shows the destination's
	// state to an operator.)
	Reason string `json:"reason,omitempty"`
	Replay string `json:"replay,omitempty"`
	Until  string `json:"until,omitempty"`
	Status string `json:"status,omitempty"`

	// State is the conversation's status (FollowupStatus, FollowupRepage).
	State *ConversationState `json:"state,omitempty"`
	// Channel and MessageID are the message that was clicked
	// (FollowupStatus); Message its content as the platform gave it with
	// the click (for Slack, its text and blocks), for the sink to show the
	// status in.
	Channel   string          `json:"channel,omitempty"`
	MessageID string          `json:"message_id,omitempty"`
	Message   json.RawMessage `json:"message,omitempty"`

	// Escalation is the id of the escalation posted again
	// (FollowupRepage), Waited how long nobody claimed it.
	Escalation string        `json:"escalation,omitempty"`
	Waited     time.Duration `json:"waited,omitempty"`
}

// followupBody is the stored body of a follow-up event.
type followupBody struct {
	Event          string   `json:"event"`
	ChatbotID      string   `json:"chatbot_id,omitempty"`
	ConversationID string   `json:"conversation_id,omitempty"`
	Followup       Followup `json:"followup"`
}

// NewFollowupEvent makes the follow-up event of f in a conversation: its
// body, topic and parsed view. The caller sets the id and the time, and
// queues it for f.Sink alone.
func NewFollowupEvent(conversationID, chatbotID string, f Followup) (*Event, error) {
	switch {
	case f.Sink == "" || f.Key == "":
		return nil, errors.New("follow-up without a sink or a key")
	case f.Kind == "":
		return nil, errors.New("follow-up without a kind")
	}
	body, err := json.Marshal(followupBody{Event: TopicFollowup, ChatbotID: chatbotID, ConversationID: conversationID, Followup: f})
	if err != nil {
		return nil, fmt.Errorf("encode follow-up: %w", err)
	}
	ev, err := DecodeEvent(body)
	if err != nil {
		return nil, fmt.Errorf("decode follow-up: %w", err)
	}
	return ev, nil
}

// decodeFollowup reads the "followup" member of a follow-up body; nil when
// it is not one.
func decodeFollowup(raw json.RawMessage) *Followup {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil
	}
	var f Followup
	if err := json.Unmarshal(raw, &f); err != nil || f.Sink == "" || f.Kind == "" || f.Key == "" {
		return nil
	}
	return &f
}

// followupKey is the dedupe key of a follow-up: its sink and identity.
func followupKey(f *Followup) [32]byte {
	h := sha256.New()
	for _, part := range []string{TopicFollowup, f.Sink, f.Key} {
		fmt.Fprintf(h, "%d:%s;", len(part), part)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// stamp is a time as a key's part.
func stamp(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) }

// statusKey is the identity of a status follow-up: the message it edits
// and the status it shows (two clicks that leave the same status edit
// once).
func statusKey(channel, messageID string, st ConversationState) string {
	return strings.Join([]string{"status", channel, messageID, st.ClaimedByID, stamp(st.ClaimedAt),
		st.ResolvedByID, stamp(st.ResolvedAt)}, ":")
}

// What every two-way sink shows for the same thing, in the same words.
const (
	// NotDelivered opens the note of a reply that was dead-lettered.
	NotDelivered = "This reply did not reach the visitor"
	// NotDeliveredYet opens the note of a reply that is held.
	NotDeliveredYet = "Not delivered yet"
	// OperatorSees ends it, before the status command.
	OperatorSees = "An operator sees why in"
	// StillUnclaimed opens a re-page.
	StillUnclaimed = "Still unclaimed"
	// VisitorWaiting follows it.
	VisitorWaiting = "a visitor is waiting for a person."
	// ClaimButton and ResolveButton are the buttons' labels.
	ClaimButton   = "Claim"
	ResolveButton = "Resolve"
	// ClaimedBy and ResolvedBy start a conversation's status (Status),
	// before the agent's name: a sink finds its status line by them.
	ClaimedBy  = "🙋 Claimed by "
	ResolvedBy = "✅ Resolved by "
)

// Status is the conversation's status as the message clicked shows it:
// "✅ Resolved by Sam", "🙋 Claimed by Dana", or "" while it is open.
func (s ConversationState) Status() string {
	switch {
	case s.Resolved():
		return ResolvedBy + s.ResolvedBy
	case s.Claimed():
		return ClaimedBy + s.ClaimedBy
	}
	return ""
}

// Note is the thread's note of a dead-lettered reply: that it did not
// reach the visitor, why, and how to send it again.
func (f *Followup) Note() string {
	var b strings.Builder
	b.WriteString(NotDelivered)
	if r := strings.TrimSpace(f.Reason); r != "" {
		b.WriteString(": ")
		b.WriteString(r)
	}
	if !strings.HasSuffix(b.String(), ".") {
		b.WriteString(".")
	}
	if f.Replay != "" {
		b.WriteString(" To send it again: ")
		b.WriteString(f.Replay)
	}
	return b.String()
}

// HeldLine is what the thread's note of a held reply says, but for the
// command an operator runs (OperatorSees): "Not delivered yet: Chat Data
// refuses chatrelay's API key (HTTP 401). It is kept and sent once the key
// is fixed; you will see ✅ when the visitor has it."
func (f *Followup) HeldLine() string {
	var b strings.Builder
	b.WriteString(NotDeliveredYet)
	if r := strings.TrimSpace(f.Reason); r != "" {
		b.WriteString(": ")
		b.WriteString(strings.TrimSuffix(r, "."))
	}
	b.WriteString(". It is kept and sent ")
	if u := strings.TrimSpace(f.Until); u != "" {
		b.WriteString(u)
	} else {
		b.WriteString("as soon as Chat Data takes it")
	}
	b.WriteString("; you will see ✅ when the visitor has it.")
	return b.String()
}

// RepageLine is what a re-page says: "Still unclaimed after 10m: a visitor
// is waiting for a person."
func (f *Followup) RepageLine() string {
	if f.Waited <= 0 {
		return StillUnclaimed + ": " + VisitorWaiting
	}
	return StillUnclaimed + " after " + shortDuration(f.Waited) + ": " + VisitorWaiting
}

// shortDuration writes d without trailing zero units: 10m, 1h30m, 45s.
func shortDuration(d time.Duration) string {
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
