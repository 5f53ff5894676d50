package relay

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// TopicAgentReply is the topic of an agent's answer written in a thread the
// relay created (Slack, Discord), on its way to the visitor through Chat
// Data's live-chat API (SPEC §10). The relay makes these events itself, from
// what a platform adapter hands to an Inbox; Chat Data never sends one, and
// the receiver refuses the topic on POST /webhook.
const TopicAgentReply = "agent-reply"

// Reply is what an agent-reply event carries besides its conversation and
// chatbot: who answered, what the visitor is to read, and where the answer
// was written (for the dedupe key, and for the feedback the relay gives in
// the thread: a reaction once Chat Data accepted it, a note if it was
// dead-lettered).
type Reply struct {
	// Text is what the visitor reads: plain text, the platform's markup
	// already made readable (<@U…> → @Name), the reply prefix stripped.
	Text string `json:"text"`
	// AgentID is the agent's user id on the platform: for logs, never a
	// metric label.
	AgentID string `json:"agent_id,omitempty"`
	// AgentName and AgentAvatar (an image URL) are shown to the visitor;
	// empty: Chat Data shows the chatbot owner's.
	AgentName   string `json:"agent_name,omitempty"`
	AgentAvatar string `json:"agent_avatar,omitempty"`
	// Sink is the configured name of the sink whose thread the answer was
	// written in; Platform its kind ("slack", "discord").
	Sink     string `json:"sink"`
	Platform string `json:"platform,omitempty"`
	// Channel is where the agent's message is (a Slack channel id, a
	// Discord thread's channel id), Thread the relay's thread it is in (a
	// Slack root ts, a Discord thread id) and MessageID the message itself
	// (a Slack ts, a Discord message id): the platform's own identity of
	// the answer, from which the dedupe key is made.
	Channel   string `json:"channel,omitempty"`
	Thread    string `json:"thread"`
	MessageID string `json:"message_id"`
}

// replyBody is the stored body of an agent-reply event: a JSON object that
// DecodeEvent reads back, and that a webhook sink routed the topic sends
// as it is.
type replyBody struct {
	Event          string `json:"event"`
	ChatbotID      string `json:"chatbot_id"`
	ConversationID string `json:"conversation_id"`
	Reply          Reply  `json:"reply"`
}

// Errors NewReplyEvent returns.
var (
	ErrReplyIncomplete = errors.New("agent reply incomplete")
)

// NewReplyEvent makes the agent-reply event of r in a conversation of a
// chatbot: its body, topic and parsed view. The caller (an Inbox) sets the
// id and the time of acceptance, as the receiver does for Chat Data's
// events.
func NewReplyEvent(conversationID, chatbotID string, r Reply) (*Event, error) {
	switch {
	case conversationID == "":
		return nil, fmt.Errorf("%w: no conversation id", ErrReplyIncomplete)
	case chatbotID == "":
		return nil, fmt.Errorf("%w: no chatbot id", ErrReplyIncomplete)
	case r.Sink == "" || r.Thread == "" || r.MessageID == "":
		return nil, fmt.Errorf("%w: the sink, thread and message id make its identity; one is missing", ErrReplyIncomplete)
	case strings.TrimSpace(r.Text) == "":
		return nil, fmt.Errorf("%w: no text", ErrReplyIncomplete)
	}
	if !validAvatar(r.AgentAvatar) {
		r.AgentAvatar = ""
	}
	body, err := json.Marshal(replyBody{Event: TopicAgentReply, ChatbotID: chatbotID, ConversationID: conversationID, Reply: r})
	if err != nil {
		return nil, fmt.Errorf("encode agent reply: %w", err)
	}
	ev, err := DecodeEvent(body)
	if err != nil {
		return nil, fmt.Errorf("decode agent reply: %w", err)
	}
	return ev, nil
}

// AgentReply returns the agent's answer of an agent-reply event, or nil
// for any other event (a Chat Data body that happens to hold a "reply"
// member is no agent reply).
func (e *Event) AgentReply() *Reply {
	if e.Topic != TopicAgentReply {
		return nil
	}
	return e.Reply
}

// Replied says who answered the visitor, in the words every platform
// shows above an agent reply routed to it: "Agent Dana replied:", or "An
// agent replied:" without a name. The name is as the platform gave it:
// each sink makes it literal.
func (r *Reply) Replied() string {
	name := strings.Join(strings.Fields(r.AgentName), " ")
	if name == "" {
		return "An agent replied:"
	}
	return "Agent " + name + " replied:"
}

// validAvatar reports whether u can be shown as an avatar: an absolute
// http(s) URL.
func validAvatar(u string) bool {
	if u == "" || len(u) > 2048 {
		return false
	}
	p, err := url.Parse(u)
	return err == nil && (p.Scheme == "https" || p.Scheme == "http") && p.Host != ""
}

// decodeReply reads the "reply" member of an agent-reply body; nil when it
// is not an object or lacks the identity of the answer.
func decodeReply(raw json.RawMessage) *Reply {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil
	}
	var r Reply
	if err := json.Unmarshal(raw, &r); err != nil || r.Sink == "" || r.MessageID == "" {
		return nil
	}
	return &r
}

// DedupeKey is the key under which the store finds a repeat of e. For an
// agent reply it is the platform's identity of the answer (sink, channel,
// message id): Slack's retries and a gateway's redeliveries of one message
// are one reply, even when what the adapter made of them differs (a
// display name looked up again). A follow-up's is its sink and key. For
// everything else it is DedupeKey of the raw body.
func (e *Event) DedupeKey() [32]byte {
	if e.Topic == TopicFollowup && e.Followup != nil {
		return followupKey(e.Followup)
	}
	if r := e.AgentReply(); r != nil {
		h := sha256.New()
		for _, part := range []string{TopicAgentReply, r.Sink, r.Channel, r.MessageID} {
			// Length-prefixed, so that no two tuples write the same bytes.
			fmt.Fprintf(h, "%d:%s;", len(part), part)
		}
		var k [32]byte
		h.Sum(k[:0])
		return k
	}
	return DedupeKey(e.Body)
}

// ReplyMode says which thread messages go to the visitor.
type ReplyMode string

const (
	// ReplyPrefix (the default): only messages starting with the prefix,
	// which is stripped; everything else is an internal note.
	ReplyPrefix ReplyMode = "prefix"
	// ReplyAll: every human message, except those starting with "note:"
	// (a leading prefix is stripped all the same).
	ReplyAll ReplyMode = "all"
)

// DefaultReplyPrefix is the prefix of a thread message meant for the
// visitor when the config names none.
const DefaultReplyPrefix = "reply:"

// NotePrefix marks an internal note in ReplyAll mode.
const NotePrefix = "note:"

// ReplyRule decides which of a thread's messages go to the visitor, and
// what of them: the same rule on every platform.
type ReplyRule struct {
	Mode   ReplyMode // "" means ReplyPrefix
	Prefix string    // "" means DefaultReplyPrefix
}

// Validate checks the rule; its errors start with the key they are about
// ("mode: …"), for the sink's config to prefix.
func (r ReplyRule) Validate() error {
	var errs []error
	switch r.Mode {
	case "", ReplyPrefix, ReplyAll:
	default:
		errs = append(errs, fmt.Errorf("mode: %q is not a mode; use prefix (only messages starting with the prefix reach the visitor) or all", string(r.Mode)))
	}
	if r.Prefix != "" && strings.TrimSpace(r.Prefix) == "" {
		errs = append(errs, errors.New(`prefix: only spaces; write one like "reply:"`))
	}
	return errors.Join(errs...)
}

// Hint tells agents, under an escalation, how to answer the visitor from
// the thread: the same words on every platform.
func (r ReplyRule) Hint() string {
	if r.Mode == ReplyAll {
		return "Every message in this thread goes to the visitor, except those starting with \"" + NotePrefix + "\"."
	}
	return "To answer the visitor, start a message in this thread with \"" + r.prefix() + "\"; other messages stay internal notes."
}

// prefix is the prefix a reply starts with, DefaultReplyPrefix when none
// is set (Validate refuses a blank one).
func (r ReplyRule) prefix() string {
	if p := strings.TrimSpace(r.Prefix); p != "" {
		return p
	}
	return DefaultReplyPrefix
}

// Visitor returns what of a thread message goes to the visitor, and false
// when nothing does (a note, or a message that is empty once the prefix is
// stripped). Prefixes are matched without regard to case, after leading
// spaces and invisible characters; control characters (but line breaks
// and tabs) are dropped wherever they are.
func (r ReplyRule) Visitor(text string) (string, bool) {
	text = strings.TrimLeftFunc(shown(text), invisible)
	rest, prefixed := cutPrefixFold(text, r.prefix())
	switch {
	case prefixed:
		text = rest
	case r.Mode == ReplyAll:
		if _, note := cutPrefixFold(text, NotePrefix); note {
			return "", false
		}
	default:
		return "", false
	}
	text = strings.TrimFunc(text, invisible)
	return text, text != ""
}

// shown is text without the control characters a visitor's chat cannot
// show (all but line breaks and tabs; a CR before a line break goes too):
// they reach nobody, and a NUL or an escape sequence before "note:" must
// not make a note go to the visitor.
func shown(text string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) && r != '\n' && r != '\t' {
			return -1
		}
		return r
	}, text)
}

// invisible reports whether r shows nothing at the ends of a message:
// spaces and format characters (zero-width space, BOM, direction marks),
// which would otherwise hide a prefix or "note:" from the rule while the
// agent sees it first in the message.
func invisible(r rune) bool { return unicode.IsSpace(r) || unicode.Is(unicode.Cf, r) }

// cutPrefixFold is strings.CutPrefix under Unicode case folding, as
// strings.EqualFold compares.
func cutPrefixFold(s, prefix string) (string, bool) {
	i := 0
	for n := utf8.RuneCountInString(prefix); n > 0 && i < len(s); n-- {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	if !strings.EqualFold(s[:i], prefix) {
		return s, false
	}
	return s[i:], true
}
