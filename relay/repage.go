package relay

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/jonboulle/clockwork"
)

// RepagerConfig configures a Repager.
type RepagerConfig struct {
	Conversations *Conversations
	Store         Appender
	// After is each two-way sink's repage_after; a sink without one (or
	// with 0) is never re-paged.
	After  map[string]time.Duration
	Clock  clockwork.Clock
	Logger *slog.Logger
	// Poll is how often the schedules are read again for what another
	// replica scheduled (default DefaultRepagePoll); what this process
	// schedules is seen at once.
	Poll time.Duration
}

// DefaultRepagePoll is how often a Repager reads the schedules again.
const DefaultRepagePoll = time.Minute

// Repager posts again, with the sink's mention, each escalation nobody
// claimed within its sink's repage_after (SPEC §10). Conversations
// schedules an escalation when it is posted; at its time the Repager
// queues a re-page follow-up for the sink, unless the conversation was
// claimed, resolved or escalated anew meanwhile, and marks the
// conversation re-paged.
//
// Every replica runs one, on the schedules in the shared store: a re-page
// is keyed by its escalation, so two replicas that both find it due queue
// it once (the store's dedupe), and a replica that stops leaves nothing
// behind. Its waits are timers on the injected clock.
type Repager struct {
	cfg   RepagerConfig
	sinks []string // with a repage_after, sorted
}

// NewRepager returns a Repager; Run runs it.
func NewRepager(cfg RepagerConfig) (*Repager, error) {
	if cfg.Conversations == nil || cfg.Store == nil {
		return nil, errors.New("repager: conversations and a store are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultRepagePoll
	}
	r := &Repager{cfg: cfg}
	for _, sink := range slices.Sorted(maps.Keys(cfg.After)) {
		if cfg.After[sink] > 0 {
			r.sinks = append(r.sinks, sink)
		}
	}
	return r, nil
}

// Run re-pages until ctx ends. It returns nil at once when no sink
// re-pages.
func (r *Repager) Run(ctx context.Context) error {
	if len(r.sinks) == 0 {
		return nil
	}
	for {
		next := r.sweep(ctx)
		wait := r.cfg.Poll
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(r.cfg.Clock.Now()), 0))
		}
		t := r.cfg.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.Chan():
		case <-r.cfg.Conversations.scheduled:
			t.Stop()
		}
	}
}

// sweep re-pages what is due on every sink and returns when the next
// scheduled re-page is due (zero: none is scheduled).
func (r *Repager) sweep(ctx context.Context) time.Time {
	var next time.Time
	later := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for _, sink := range r.sinks {
		list, err := r.cfg.Conversations.Scheduled(ctx, sink)
		if err != nil {
			if ctx.Err() == nil {
				r.cfg.Logger.Warn("could not read the re-page schedule; trying again later", "sink", sink, "err", err)
			}
			continue
		}
		now := r.cfg.Clock.Now()
		for _, e := range list {
			if e.Due.After(now) {
				later(e.Due)
				continue
			}
			if err := r.repage(ctx, sink, e); err != nil {
				if ctx.Err() != nil {
					return next
				}
				r.cfg.Logger.Warn("could not re-page an unclaimed escalation; trying again later", "sink", sink,
					"conversation_id", e.Conversation, "event_id", e.Escalation, "err", err)
				later(now.Add(r.cfg.Poll))
			}
		}
	}
	return next
}

// repage queues the re-page of e on sink if its conversation is still
// waiting for a person, and takes it off the schedule.
func (r *Repager) repage(ctx context.Context, sink string, e Repage) error {
	c := r.cfg.Conversations
	st, _, err := c.State(ctx, e.Conversation)
	if err != nil {
		return err
	}
	if st.Escalation == e.Escalation && !st.Claimed() && !st.Resolved() {
		fu := Followup{Kind: FollowupRepage, Sink: sink, Key: "repage:" + e.Escalation, State: &st,
			Escalation: e.Escalation, Waited: r.cfg.After[sink]}
		if err := queueFollowup(ctx, r.cfg.Store, r.cfg.Clock, e.Conversation, e.Chatbot, fu); err != nil {
			return err
		}
		r.cfg.Logger.Info("escalation still unclaimed; posted again with the mention", "sink", sink,
			"conversation_id", e.Conversation, "event_id", e.Escalation, "waited", r.cfg.After[sink])
		if err := c.Repaged(ctx, e.Conversation, e.Escalation); err != nil {
			return err
		}
	}
	return c.Unschedule(ctx, sink, e.Escalation)
}
