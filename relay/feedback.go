package relay

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
)

// FollowupsConfig configures Followups.
type FollowupsConfig struct {
	Store Appender
	// Conversations keeps the conversations' state; nil records no
	// escalation (nothing is re-paged).
	Conversations *Conversations
	// TwoWay is the reply: section of each sink that takes replies.
	TwoWay map[string]ReplyConfig
	// Destinations name the sinks that deliver agent replies to the
	// visitor (chatdata): how those deliveries end is told in the thread.
	Destinations []string
	// ReplayCommand is the command line that replays a dead letter when
	// given its id (default "chatrelay dlq replay").
	ReplayCommand string
	// StatusCommand is the command line that shows the sinks' state to an
	// operator, named in a held reply's note (default "chatrelay status").
	StatusCommand string
	// HeldAfter is how long an agent reply may wait, failing, before its
	// thread is told it is held, unless its destination is down: then at
	// once (default DefaultHeldAfter).
	HeldAfter time.Duration
	Logger    *slog.Logger
	Clock     clockwork.Clock
}

// Followups turns how deliveries ended into what the two-way sinks show
// (SPEC §10, DESIGN "Turn 2": feedback is a delivery outcome). Given to
// every dispatcher as its Outcomes:
//   - an agent reply that reached Chat Data gets a reaction on the agent's
//     message, one that was dead-lettered a note in its thread (why, and
//     the replay command), both queued as follow-up events for the sink
//     the reply was written in, so that its dispatcher posts them, paced
//     like every post;
//   - one that waits (Waits) because its destination is down, or that will
//     have waited HeldAfter before its next attempt, a note in its thread
//     that it is held, once per reply (until it is replayed);
//   - an escalation posted to a two-way sink is recorded in the
//     conversation's state, and scheduled for a re-page (Repager).
//
// Each follow-up is stored before the delivery that caused it is settled,
// under a key that makes a repeat of it (the delivery sent again after a
// crash) one event. It is safe for concurrent use and starts no goroutine.
type Followups struct {
	cfg FollowupsConfig
}

// DefaultHeldAfter is how long a reply may keep failing before its thread
// is told it is held while Chat Data is up. A reply normally reaches Chat
// Data within a second, and a passing 5xx or a dropped connection is
// retried within seconds (backoff from retry.initial, 1s by default: five
// attempts fit in a minute), so a minute rarely tells of a hiccup that
// heals by itself; and an agent who saw no ✅ for a minute starts to wonder
// whether the visitor has the answer. A destination that is down (a
// refused key, or the breaker tripped) is told at once: it will not heal by
// itself within seconds.
const DefaultHeldAfter = time.Minute

// followupTimeout bounds what Followups does for one outcome: the
// delivery waits for it to be settled.
const followupTimeout = 5 * time.Second

// NewFollowups returns the Followups of cfg.
func NewFollowups(cfg FollowupsConfig) (*Followups, error) {
	if cfg.Store == nil {
		return nil, errors.New("followups: a store is required")
	}
	if cfg.ReplayCommand == "" {
		cfg.ReplayCommand = "chatrelay dlq replay"
	}
	if cfg.StatusCommand == "" {
		cfg.StatusCommand = "chatrelay status"
	}
	if cfg.HeldAfter <= 0 {
		cfg.HeldAfter = DefaultHeldAfter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	return &Followups{cfg: cfg}, nil
}

var (
	_ Outcomes = (*Followups)(nil)
	_ Waits    = (*Followups)(nil)
)

// Waiting implements Waits: an agent reply that waits for Chat Data is
// told in its thread, once, when its destination is down or when its next
// attempt comes HeldAfter or more after it was accepted (or replayed). The
// note is keyed by the reply and its retry.max_age's start, so that every
// retry, every replica and a restart queue it once; a replay that is held
// again is told again.
func (f *Followups) Waiting(ctx context.Context, w Wait) {
	ev := w.Event
	r := ev.AgentReply()
	if r == nil || !slices.Contains(f.cfg.Destinations, w.Sink) {
		return
	}
	if w.Down == "" && (w.Next.IsZero() || w.Next.Sub(w.Since) < f.cfg.HeldAfter) {
		return
	}
	if _, ok := f.cfg.TwoWay[r.Sink]; !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, followupTimeout)
	defer cancel()
	why, until := heldWords(w)
	fu := Followup{Kind: FollowupHeld, Sink: r.Sink, Key: "held:" + ev.ID + ":" + stamp(w.Since), Reply: r,
		Reason: why, Until: until, Status: f.cfg.StatusCommand}
	if err := f.queue(ctx, ev.ConversationID, ev.ChatbotID, fu); err != nil {
		f.cfg.Logger.Warn("agent reply held, but the thread could not be told", "sink", r.Sink, "event_id", ev.ID,
			"conversation_id", ev.ConversationID, "err", err)
	}
}

// heldWords say why a reply waits and when it goes, for the agent: in
// the relay's words, from the failure's class and HTTP status alone (no
// text of the answer, so nothing secret can be in them).
func heldWords(w Wait) (why, until string) {
	status := ""
	var se *StatusError
	if errors.As(w.Err, &se) {
		status = " (HTTP " + strconv.Itoa(se.Status) + ")"
	}
	reason := ReasonOf(w.Err)
	switch {
	case w.Down == DownBroken && reason == ReasonAuth:
		return "Chat Data refuses chatrelay's API key" + status, "once the key is fixed"
	case w.Down == DownBroken:
		return "Chat Data refuses chatrelay's requests" + status, "once an operator fixes chatrelay's configuration"
	case w.Down == DownUnreachable || Unreachable(w.Err):
		return "Chat Data cannot be reached", "as soon as Chat Data answers again"
	case reason == ReasonRateLimited:
		return "Chat Data asks chatrelay to wait" + status, "as soon as Chat Data allows it"
	case status != "":
		return "Chat Data answers with an error" + status, "as soon as Chat Data takes it"
	}
	return "Chat Data did not take it", "as soon as Chat Data takes it"
}

// Outcome implements Outcomes.
func (f *Followups) Outcome(ctx context.Context, o Outcome) {
	ev := o.Event
	switch {
	case ev.Topic == TopicFollowup:
		// Never a follow-up of a follow-up: a reaction that cannot be
		// added is in the dead letters, and nothing more.
	case ev.AgentReply() != nil && slices.Contains(f.cfg.Destinations, o.Sink):
		ctx, cancel := context.WithTimeout(ctx, followupTimeout)
		defer cancel()
		f.replied(ctx, o)
	case ev.Topic == TopicEscalation && !o.Dead && f.cfg.Conversations != nil && ev.ConversationID != "":
		rc, ok := f.cfg.TwoWay[o.Sink]
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(ctx, followupTimeout)
		defer cancel()
		if err := f.cfg.Conversations.Escalated(ctx, o.Sink, ev, rc.RepageAfter); err != nil {
			f.cfg.Logger.Warn("escalation posted, but not recorded in the conversation's state (no re-page for it)",
				"sink", o.Sink, "event_id", ev.ID, "conversation_id", ev.ConversationID, "err", err)
		}
	}
}

// replied queues the outcome of an agent reply's delivery for the sink
// it was written in.
func (f *Followups) replied(ctx context.Context, o Outcome) {
	ev, r := o.Event, o.Event.AgentReply()
	log := f.cfg.Logger.With("sink", r.Sink, "event_id", ev.ID, "conversation_id", ev.ConversationID)
	if _, ok := f.cfg.TwoWay[r.Sink]; !ok {
		log.Debug("agent reply settled; its sink takes replies no more, so it is not told")
		return
	}
	fu := Followup{Kind: FollowupDelivered, Sink: r.Sink, Key: "delivered:" + ev.ID, Reply: r}
	if o.Dead {
		fu.Kind, fu.Key = FollowupDead, "dead:"+ev.ID+":"+stamp(o.Since)
		fu.Reason, fu.Replay = o.Reason, f.cfg.ReplayCommand+" "+o.DeadLetterID
	}
	if err := f.queue(ctx, ev.ConversationID, ev.ChatbotID, fu); err != nil {
		log.Warn("agent reply settled, but the thread could not be told", "kind", fu.Kind, "err", err)
	}
}

// queue stores fu as a follow-up event for its sink alone.
func (f *Followups) queue(ctx context.Context, conv, chatbot string, fu Followup) error {
	return queueFollowup(ctx, f.cfg.Store, f.cfg.Clock, conv, chatbot, fu)
}

// queueFollowup stores fu, as the follow-up event of the conversation conv
// of chatbot, for its sink alone.
func queueFollowup(ctx context.Context, store Appender, clock clockwork.Clock, conv, chatbot string, fu Followup) error {
	ev, err := NewFollowupEvent(conv, chatbot, fu)
	if err != nil {
		return err
	}
	id, err := uuid.NewV7()
	if err != nil {
		id = uuid.New()
	}
	ev.ID, ev.ReceivedAt = id.String(), clock.Now()
	_, err = store.Append(ctx, ev, []string{ev.Followup.Sink})
	return err
}
