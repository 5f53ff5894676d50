package relay

import (
	"context"
	"errors"
	"log/slog"
	"slices"
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
	Logger        *slog.Logger
	Clock         clockwork.Clock
}

// Followups turns how deliveries ended into what the two-way sinks show
// (SPEC §10, DESIGN "Turn 2": feedback is a delivery outcome). Given to
// every dispatcher as its Outcomes:
//   - an agent reply that reached Chat Data gets a reaction on the agent's
//     message, one that was dead-lettered a note in its thread (why, and
//     the replay command), both queued as follow-up events for the sink
//     the reply was written in, so that its dispatcher posts them, paced
//     like every post;
//   - an escalation posted to a two-way sink is recorded in the
//     conversation's state, and scheduled for a re-page (Repager).
//
// Each follow-up is stored before the delivery that caused it is settled,
// under a key that makes a repeat of it (the delivery sent again after a
// crash) one event. It is safe for concurrent use and starts no goroutine.
type Followups struct {
	cfg FollowupsConfig
}

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
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	return &Followups{cfg: cfg}, nil
}

var _ Outcomes = (*Followups)(nil)

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
	ev, err := NewFollowupEvent(conv, chatbot, fu)
	if err != nil {
		return err
	}
	return appendFollowup(ctx, f.cfg.Store, f.cfg.Clock, ev)
}

// appendFollowup stores ev, a follow-up event, for its sink alone.
func appendFollowup(ctx context.Context, store Appender, clock clockwork.Clock, ev *Event) error {
	id, err := uuid.NewV7()
	if err != nil {
		id = uuid.New()
	}
	ev.ID, ev.ReceivedAt = id.String(), clock.Now()
	_, err = store.Append(ctx, ev, []string{ev.Followup.Sink})
	return err
}
