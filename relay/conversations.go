package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
)

// ConversationsNamespace is the store's key/value namespace of the
// conversations' state (Store.KV): no sink can have the name, so no
// sink's books share it.
const ConversationsNamespace = "@conversations"

// ConversationState is who has a conversation in hand (SPEC §10): the
// escalation that asked for a person, who claimed it, who resolved it, and
// when it was re-paged. It is kept in the store, so that every replica and
// the next clicker see the same.
type ConversationState struct {
	// Escalation is the id of the live-chat-escalation event that asked
	// for a person last, EscalatedAt when it was first posted.
	Escalation  string    `json:"escalation,omitempty"`
	EscalatedAt time.Time `json:"escalated_at,omitzero"`
	// ClaimedBy is the agent's name as the platform shows it; ClaimedByID
	// the platform's id of the agent.
	ClaimedBy   string    `json:"claimed_by,omitempty"`
	ClaimedByID string    `json:"claimed_by_id,omitempty"`
	ClaimedAt   time.Time `json:"claimed_at,omitzero"`
	// ResolvedBy, ResolvedByID and ResolvedAt are the same for Resolve.
	ResolvedBy   string    `json:"resolved_by,omitempty"`
	ResolvedByID string    `json:"resolved_by_id,omitempty"`
	ResolvedAt   time.Time `json:"resolved_at,omitzero"`
	// RepagedAt is when the escalation was last posted again because
	// nobody had claimed it.
	RepagedAt time.Time `json:"repaged_at,omitzero"`
}

// Claimed reports whether an agent has the conversation.
func (s ConversationState) Claimed() bool { return !s.ClaimedAt.IsZero() }

// Resolved reports whether the conversation was resolved.
func (s ConversationState) Resolved() bool { return !s.ResolvedAt.IsZero() }

// Agent is who clicked: the platform's id of the agent and the name it
// shows (display name, else real name).
type Agent struct {
	ID   string
	Name string
}

// shown is the agent's name as the thread shows it: the name, else the id.
func (a Agent) shown() string {
	if n := trimmedName(a.Name); n != "" {
		return n
	}
	return a.ID
}

// Conversations keeps the conversations' state in a store's key/value
// facility that can compare and set (Swapper), so that two agents who
// click at once, on one replica or two, cannot both win: the second sees
// the first one's claim. It also keeps, per sink, the escalations to post
// again if nobody claims them (Repager). It is safe for concurrent use.
type Conversations struct {
	kv    Swapper
	clock clockwork.Clock
	// scheduled is signalled (without blocking) when an escalation is
	// scheduled for a re-page: the Repager looks again.
	scheduled chan struct{}
}

// ErrNoSwap is returned by NewConversations for a store whose key/value
// facility cannot compare and set.
var ErrNoSwap = errors.New("the store's key/value facility cannot compare and set (relay.Swapper)")

// NewConversations keeps the conversations' state in kv, the store's
// ConversationsNamespace.
func NewConversations(kv KV, clock clockwork.Clock) (*Conversations, error) {
	sw, ok := kv.(Swapper)
	if !ok {
		return nil, ErrNoSwap
	}
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	return &Conversations{kv: sw, clock: clock, scheduled: make(chan struct{}, 1)}, nil
}

func stateKey(conv string) string    { return "state:" + conv }
func scheduleKey(sink string) string { return "repage:" + sink }

// State returns a conversation's state, and false when nothing was
// recorded for it.
func (c *Conversations) State(ctx context.Context, conv string) (ConversationState, bool, error) {
	st, raw, err := c.read(ctx, conv)
	return st, raw != "", err
}

func (c *Conversations) read(ctx context.Context, conv string) (ConversationState, string, error) {
	raw, ok, err := c.kv.Get(ctx, stateKey(conv))
	if err != nil {
		return ConversationState{}, "", fmt.Errorf("read the state of conversation %s: %w", conv, err)
	}
	var st ConversationState
	if ok && json.Unmarshal([]byte(raw), &st) != nil {
		// Unreadable (written by a later version?): start afresh rather
		// than refuse every click.
		st = ConversationState{}
	}
	if !ok {
		raw = ""
	}
	return st, raw, nil
}

// maxSwaps bounds the attempts of one update: each lost race means another
// write won, so a bound this high is never met but by a bug.
const maxSwaps = 100

// errSwapsExhausted: an update lost maxSwaps races in a row.
var errSwapsExhausted = errors.New("the state kept changing under the update")

// update applies change to a conversation's state and writes it with a
// compare-and-set, again on a lost race until it wins or change says
// there is nothing to write (false). It returns the state as it then
// stands and whether this update wrote it.
func (c *Conversations) update(ctx context.Context, conv string, change func(*ConversationState) bool) (ConversationState, bool, error) {
	if conv == "" {
		return ConversationState{}, false, errors.New("no conversation id")
	}
	for range maxSwaps {
		st, raw, err := c.read(ctx, conv)
		if err != nil {
			return ConversationState{}, false, err
		}
		if !change(&st) {
			return st, false, nil
		}
		v, err := json.Marshal(st)
		if err != nil {
			return ConversationState{}, false, fmt.Errorf("encode the state of conversation %s: %w", conv, err)
		}
		ok, err := c.kv.Swap(ctx, stateKey(conv), raw, string(v))
		if err != nil {
			return ConversationState{}, false, fmt.Errorf("record the state of conversation %s: %w", conv, err)
		}
		if ok {
			return st, true, nil
		}
		if err := ctx.Err(); err != nil {
			return ConversationState{}, false, err
		}
	}
	return ConversationState{}, false, fmt.Errorf("record the state of conversation %s: %w", conv, errSwapsExhausted)
}

// Claim records that agent has the conversation, unless another agent
// claimed it first or it was resolved. won is true when the claim is
// agent's (a second click of the same agent wins again); st is the state
// as it stands, the winner's claim when it lost.
func (c *Conversations) Claim(ctx context.Context, conv string, agent Agent) (st ConversationState, won bool, err error) {
	now := c.clock.Now()
	mine := false
	st, _, err = c.update(ctx, conv, func(s *ConversationState) bool {
		switch {
		case s.Resolved():
			mine = false
			return false
		case s.Claimed():
			mine = s.ClaimedByID == agent.ID
			return false
		}
		s.ClaimedBy, s.ClaimedByID, s.ClaimedAt = agent.shown(), agent.ID, now
		mine = true
		return true
	})
	return st, mine && err == nil, err
}

// Resolve records that agent resolved the conversation, unless it was
// resolved already. won is as for Claim.
func (c *Conversations) Resolve(ctx context.Context, conv string, agent Agent) (st ConversationState, won bool, err error) {
	now := c.clock.Now()
	mine := false
	st, _, err = c.update(ctx, conv, func(s *ConversationState) bool {
		if s.Resolved() {
			mine = s.ResolvedByID == agent.ID
			return false
		}
		s.ResolvedBy, s.ResolvedByID, s.ResolvedAt = agent.shown(), agent.ID, now
		mine = true
		return true
	})
	return st, mine && err == nil, err
}

// Escalated records that escalation ev was posted to sink: the
// conversation waits for a person (a conversation resolved before opens
// again; one an agent has stays theirs). With repageAfter > 0 it is
// scheduled to be posted again on sink if nobody claims it by then.
func (c *Conversations) Escalated(ctx context.Context, sink string, ev *Event, repageAfter time.Duration) error {
	now := c.clock.Now()
	st, _, err := c.update(ctx, ev.ConversationID, func(s *ConversationState) bool {
		if s.Escalation == ev.ID {
			return false // posted to another sink already
		}
		if s.Resolved() {
			*s = ConversationState{}
		}
		s.Escalation, s.EscalatedAt, s.RepagedAt = ev.ID, now, time.Time{}
		return true
	})
	if err != nil || repageAfter <= 0 || st.Claimed() || st.Resolved() {
		return err
	}
	entry := Repage{Conversation: ev.ConversationID, Chatbot: ev.ChatbotID, Escalation: ev.ID, Due: now.Add(repageAfter)}
	if err := c.changeSchedule(ctx, sink, func(list []Repage) ([]Repage, bool) {
		if slices.ContainsFunc(list, func(r Repage) bool { return r.Escalation == ev.ID }) {
			return list, false
		}
		return append(list, entry), true
	}); err != nil {
		return err
	}
	select {
	case c.scheduled <- struct{}{}:
	default:
	}
	return nil
}

// Repage is an escalation to post again on a sink if it is still
// unclaimed at Due.
type Repage struct {
	Conversation string    `json:"conversation"`
	Chatbot      string    `json:"chatbot,omitempty"`
	Escalation   string    `json:"escalation"`
	Due          time.Time `json:"due"`
}

// Scheduled returns the escalations scheduled for a re-page on sink, in
// the order they were scheduled.
func (c *Conversations) Scheduled(ctx context.Context, sink string) ([]Repage, error) {
	list, _, err := c.schedule(ctx, sink)
	return list, err
}

func (c *Conversations) schedule(ctx context.Context, sink string) ([]Repage, string, error) {
	raw, ok, err := c.kv.Get(ctx, scheduleKey(sink))
	if err != nil {
		return nil, "", fmt.Errorf("read the re-page schedule of %s: %w", sink, err)
	}
	if !ok {
		return nil, "", nil
	}
	var list []Repage
	if json.Unmarshal([]byte(raw), &list) != nil {
		list = nil // unreadable: nothing can be re-paged from it
	}
	return list, raw, nil
}

// Unschedule drops the re-page of escalation on sink (it was posted again,
// claimed, or superseded).
func (c *Conversations) Unschedule(ctx context.Context, sink, escalation string) error {
	return c.changeSchedule(ctx, sink, func(list []Repage) ([]Repage, bool) {
		out := slices.DeleteFunc(slices.Clone(list), func(r Repage) bool { return r.Escalation == escalation })
		return out, len(out) != len(list)
	})
}

// changeSchedule applies change to sink's schedule with a compare-and-set,
// again on a lost race.
func (c *Conversations) changeSchedule(ctx context.Context, sink string, change func([]Repage) ([]Repage, bool)) error {
	for range maxSwaps {
		list, raw, err := c.schedule(ctx, sink)
		if err != nil {
			return err
		}
		list, changed := change(list)
		if !changed {
			return nil
		}
		v, err := json.Marshal(list)
		if err != nil {
			return fmt.Errorf("encode the re-page schedule of %s: %w", sink, err)
		}
		ok, err := c.kv.Swap(ctx, scheduleKey(sink), raw, string(v))
		if err != nil {
			return fmt.Errorf("record the re-page schedule of %s: %w", sink, err)
		}
		if ok {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return fmt.Errorf("record the re-page schedule of %s: %w", sink, errSwapsExhausted)
}

// Repaged records that the conversation's escalation was posted again.
func (c *Conversations) Repaged(ctx context.Context, conv, escalation string) error {
	now := c.clock.Now()
	_, _, err := c.update(ctx, conv, func(s *ConversationState) bool {
		if s.Escalation != escalation {
			return false
		}
		s.RepagedAt = now
		return true
	})
	return err
}

// trimmedName is a name as shown: its words joined by single spaces.
func trimmedName(name string) string { return strings.Join(strings.Fields(name), " ") }
