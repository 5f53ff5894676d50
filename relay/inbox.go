package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
)

// ThreadConversation is the conversation a relay thread belongs to, and
// the chatbot that had it (Chat Data's live-chat API needs both).
type ThreadConversation struct {
	ConversationID string
	ChatbotID      string
}

// ThreadIndex finds the conversation of a thread the relay created on a
// sink: the reverse of the conversation → thread map the relay keeps for
// its sinks, in the store, so that every replica finds the same. Only the
// relay's own threads count (SPEC §10): a thread it does not know is not a
// conversation with a visitor.
type ThreadIndex interface {
	// ThreadConversation returns the conversation whose thread on sink is
	// thread (a Slack root ts, a Discord thread id), and false when the
	// relay made no such thread.
	ThreadConversation(ctx context.Context, sink, thread string) (ThreadConversation, bool, error)
}

// ThreadMessage is one message written in a thread, as a platform adapter
// parsed it. The adapter has verified where it came from (Slack's
// signature, the gateway session), says what the platform says about it,
// and has made its text readable (<@U…> → @Name, <url|label> → label
// (url)); the Inbox decides what becomes of it.
type ThreadMessage struct {
	Sink     string // the sink whose channel the message is in
	Platform string // "slack", "discord"
	// Channel, Thread and MessageID are as in Reply.
	Channel   string
	Thread    string
	MessageID string
	// AgentID, AgentName and AgentAvatar are the author as the platform
	// names them (display name, avatar URL), looked up by the adapter.
	AgentID     string
	AgentName   string
	AgentAvatar string
	Text        string
	Bot         bool // written by a bot, the relay included
	Edit        bool // an edit or a deletion, not a new message
}

// Reasons an Intake is ignored, for logs (the metric says "ignored").
const (
	IgnoredBot           = "bot"            // written by a bot or by the relay itself
	IgnoredEdit          = "edit"           // an edit or a deletion
	IgnoredNotTwoWay     = "not_two_way"    // the sink takes no replies (no reply: in its config)
	IgnoredNote          = "note"           // an internal note: not for the visitor by the sink's rule
	IgnoredForeignThread = "foreign_thread" // not in a thread the relay created
	IgnoredIncomplete    = "incomplete"     // the thread's record or the message lacks what a reply needs
	IgnoredNoDestination = "no_destination" // nothing would deliver it: no chatdata destination, no route
)

// Intake is what became of a thread message.
type Intake struct {
	Result string // ReplyAccepted, ReplyDuplicate or ReplyIgnored
	Why    string // why it was ignored (Ignored…)
	ID     string // the agent-reply event's id; a duplicate's is the first one's
}

// InboxConfig configures an Inbox.
type InboxConfig struct {
	Store   Appender
	Router  *Router // agent replies go where it says (see ReplyDestinations)
	Threads ThreadIndex
	// Rules lists the sinks that take replies, with the rule of each; a
	// message from any other sink is ignored.
	Rules   map[string]ReplyRule
	Metrics *Metrics
	Logger  *slog.Logger
	Clock   clockwork.Clock
	// Accepting, shared with the dispatchers, keeps a reply's "accepted"
	// line before its delivery's lines; nil orders nothing.
	Accepting *Accepting
	// Conversations keeps who has each conversation in hand: Claim and
	// Resolve clicks (Click) need it.
	Conversations *Conversations
}

// Inbox takes the thread messages of two-way sinks into the store as
// agent-reply events: the inbound counterpart of the Receiver, which the
// platform adapters (Slack's Events API and Socket Mode, Discord's
// gateway) call once they have verified and parsed a message. It verifies
// nothing itself, and it stores before it answers: an adapter acknowledges
// the platform only after Accept returned without error, so a crash loses
// no reply. It is safe for concurrent use and starts no goroutine.
type Inbox struct {
	cfg InboxConfig
}

// NewInbox returns an inbox.
func NewInbox(cfg InboxConfig) (*Inbox, error) {
	if cfg.Store == nil || cfg.Router == nil || cfg.Threads == nil || cfg.Metrics == nil {
		return nil, errors.New("inbox: store, router, thread index and metrics are required")
	}
	for sink, rule := range cfg.Rules {
		if err := rule.Validate(); err != nil {
			return nil, fmt.Errorf("inbox: sink %q: %w", sink, err)
		}
		cfg.Metrics.InitReplies(sink)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	return &Inbox{cfg: cfg}, nil
}

// Accept decides what becomes of m and, when it is a reply for the
// visitor, stores it durably as an agent-reply event before returning. A
// repeat of a message already taken (same sink, channel and message id,
// within the store's dedupe window) is a duplicate, stored once.
//
// An error means nothing was stored (the store or the thread index could
// not answer): the adapter must not acknowledge the platform, so that it
// sends the message again (Slack: answer 5xx; Socket Mode: no ack), or
// must retry itself where the platform does not redeliver (Discord's
// gateway).
func (in *Inbox) Accept(ctx context.Context, m ThreadMessage) (Intake, error) {
	log := in.cfg.Logger.With("sink", m.Sink, "message_id", m.MessageID)
	ignore := func(why string) (Intake, error) {
		in.count(m.Sink, ReplyIgnored)
		log.Debug("thread message not for the visitor", "reason", why, "agent_id", m.AgentID)
		return Intake{Result: ReplyIgnored, Why: why}, nil
	}
	switch {
	case m.Bot:
		return ignore(IgnoredBot)
	case m.Edit:
		return ignore(IgnoredEdit)
	}
	rule, ok := in.cfg.Rules[m.Sink]
	if !ok {
		return ignore(IgnoredNotTwoWay)
	}
	text, ok := rule.Visitor(m.Text)
	if !ok {
		return ignore(IgnoredNote)
	}
	if m.Thread == "" || m.MessageID == "" {
		log.Warn("thread message without a thread or message id; ignored", "thread", m.Thread)
		return ignore(IgnoredIncomplete)
	}
	conv, ok, err := in.cfg.Threads.ThreadConversation(ctx, m.Sink, m.Thread)
	if err != nil {
		in.count(m.Sink, ReplyUnavailable)
		return Intake{}, fmt.Errorf("inbox: find the conversation of thread %s on %s: %w", m.Thread, m.Sink, err)
	}
	if !ok {
		return ignore(IgnoredForeignThread)
	}
	ev, err := NewReplyEvent(conv.ConversationID, conv.ChatbotID, Reply{
		Text: text, AgentID: m.AgentID, AgentName: m.AgentName, AgentAvatar: m.AgentAvatar,
		Sink: m.Sink, Platform: m.Platform, Channel: m.Channel, Thread: m.Thread, MessageID: m.MessageID,
	})
	if err != nil {
		log.Warn("agent reply cannot be sent to the visitor; ignored", "conversation_id", conv.ConversationID, "err", err)
		return ignore(IgnoredIncomplete)
	}
	id, err := uuid.NewV7()
	if err != nil {
		id = uuid.New()
	}
	ev.ID, ev.ReceivedAt = id.String(), in.cfg.Clock.Now()
	sinks := in.cfg.Router.Route(ev)
	if len(sinks) == 0 {
		log.Warn("agent reply has no destination (no chatdata: section, no route for agent-reply); ignored",
			"conversation_id", conv.ConversationID)
		return ignore(IgnoredNoDestination)
	}

	logged := in.cfg.Accepting.Begin(ev.ID)
	defer logged()
	acc, err := in.cfg.Store.Append(ctx, ev, sinks)
	if err != nil {
		in.count(m.Sink, ReplyUnavailable)
		return Intake{}, fmt.Errorf("inbox: store agent reply: %w", err)
	}
	attrs := []any{"event_id", acc.ID, "conversation_id", conv.ConversationID, "agent_id", m.AgentID}
	if acc.Duplicate {
		in.count(m.Sink, ReplyDuplicate)
		log.Info("agent reply seen before; stored once", attrs...)
		return Intake{Result: ReplyDuplicate, ID: acc.ID}, nil
	}
	in.count(m.Sink, ReplyAccepted)
	log.Info("agent reply accepted", append(attrs, "sinks", sinks)...)
	logged()
	return Intake{Result: ReplyAccepted, ID: acc.ID}, nil
}

// Ignore counts a thread message the adapter itself found not to be a
// reply (why: an Ignored… reason), as Accept counts those it ignores. For
// what the adapter can tell and the inbox cannot: that a Slack message is
// in a channel other than the sink's, where no thread is the relay's.
func (in *Inbox) Ignore(m ThreadMessage, why string) Intake {
	in.count(m.Sink, ReplyIgnored)
	in.cfg.Logger.Debug("thread message not for the visitor", "sink", m.Sink, "message_id", m.MessageID,
		"reason", why, "agent_id", m.AgentID, "channel", m.Channel)
	return Intake{Result: ReplyIgnored, Why: why}
}

// InRelayThread reports whether thread is one the relay opened for a
// conversation on sink: an adapter asks before work worth sparing for a
// message Accept would ignore as in a foreign thread (looking its author
// up on the platform). An error means the store could not tell.
func (in *Inbox) InRelayThread(ctx context.Context, sink, thread string) (bool, error) {
	if thread == "" {
		return false, nil
	}
	_, ok, err := in.cfg.Threads.ThreadConversation(ctx, sink, thread)
	return ok, err
}

// RejectedSignature counts a request refused because its signature did
// not hold, under sink (the two-way sink the endpoint serves).
func (in *Inbox) RejectedSignature(sink string) { in.count(sink, ReplyRejectedSignature) }

func (in *Inbox) count(sink, result string) {
	in.cfg.Metrics.AgentReplies.WithLabelValues(sink, result).Inc()
}

// Buttons' actions.
const (
	ActionClaim   = "claim"
	ActionResolve = "resolve"
)

// Click is a Claim or Resolve button clicked on a message the relay
// posted, as a platform adapter parsed it once it verified where it came
// from (as for a ThreadMessage).
type Click struct {
	Sink     string // the sink whose message it is
	Platform string
	Action   string // ActionClaim or ActionResolve
	// ConversationID is the conversation the button is for: the relay
	// put it in the button. ChatbotID is its chatbot, when the button
	// carries it too: the status follow-up then names it, as every event
	// of the conversation does.
	ConversationID string
	ChatbotID      string
	Agent          Agent
	// Channel and MessageID are the message clicked, which shows the
	// status; Message its content as the platform sent it with the click
	// (for Slack, its text and blocks), from which the sink redraws it.
	Channel   string
	MessageID string
	Message   json.RawMessage
}

// Clicked is what became of a click.
type Clicked struct {
	// State is the conversation's status as it now stands: the clicker's
	// claim, or the one of whoever came first.
	State ConversationState
	// Won is true when the click changed the status (or the clicker had
	// it already).
	Won bool
}

// Errors Click returns for a click it cannot take (the adapter answers
// the platform 2xx all the same: sending it again changes nothing).
var ErrNotAClick = errors.New("not a click the relay takes")

// Click records a Claim or Resolve: the conversation's state changes
// with a compare-and-set, so that of two agents clicking at once one
// wins and the other is shown the winner; then the message clicked is to
// show the status, queued as a follow-up for the sink (its dispatcher
// edits the message). It returns once both are durable; an error wrapping
// ErrNotAClick means the click is not one to take (another error: do not
// acknowledge the platform, as for Accept).
func (in *Inbox) Click(ctx context.Context, c Click) (Clicked, error) {
	log := in.cfg.Logger.With("sink", c.Sink, "conversation_id", c.ConversationID, "agent_id", c.Agent.ID)
	if _, ok := in.cfg.Rules[c.Sink]; !ok || in.cfg.Conversations == nil {
		return Clicked{}, fmt.Errorf("%w: sink %q takes no replies", ErrNotAClick, c.Sink)
	}
	if c.ConversationID == "" || c.Agent.ID == "" {
		return Clicked{}, fmt.Errorf("%w: no conversation or no agent", ErrNotAClick)
	}
	var st ConversationState
	var won bool
	var err error
	switch c.Action {
	case ActionClaim:
		st, won, err = in.cfg.Conversations.Claim(ctx, c.ConversationID, c.Agent)
	case ActionResolve:
		st, won, err = in.cfg.Conversations.Resolve(ctx, c.ConversationID, c.Agent)
	default:
		return Clicked{}, fmt.Errorf("%w: action %q", ErrNotAClick, c.Action)
	}
	if err != nil {
		return Clicked{}, fmt.Errorf("inbox: %s: %w", c.Action, err)
	}
	if c.MessageID != "" {
		fu := Followup{Kind: FollowupStatus, Sink: c.Sink, Key: statusKey(c.Channel, c.MessageID, st), State: &st,
			Channel: c.Channel, MessageID: c.MessageID, Message: c.Message}
		if err := queueFollowup(ctx, in.cfg.Store, in.cfg.Clock, c.ConversationID, c.ChatbotID, fu); err != nil {
			return Clicked{}, fmt.Errorf("inbox: %s recorded, but the message could not be queued to show it: %w", c.Action, err)
		}
	}
	if won {
		log.Info("conversation status changed", "action", c.Action, "status", st.Status())
	} else {
		log.Info("click came second; the message shows the status as it stands", "action", c.Action, "status", st.Status())
	}
	return Clicked{State: st, Won: won}, nil
}
