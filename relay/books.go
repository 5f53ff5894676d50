package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Books are what the relay remembers for a sink that posts into threads or
// posts one event as several messages, in the store's key/value facility
// (KV, namespaced to the sink), so that every replica and every restart
// sees them:
//
//	thread:<dest>:<conversation>  {"thread":"…"}                            the conversation's thread
//	conversation:<thread>         {"conversation":"…","chatbot":"…","dest":"…"}  and back, for replies
//	part:<dest>:<event id>        {"posted":2,…}                            how far a turn of several messages got
//
// <dest> names where the sink posts (a channel's ID; for a webhook an id or
// a hash of its URL, never the URL), so that a sink pointed elsewhere
// starts afresh there. A thread's id (a Slack ts, a Discord id) is the
// sink's alone, whatever its channel, so the way back needs no <dest>.
//
// Before the relay kept them, each sink wrote its own; those records are
// still read, and a thread found there is recorded anew (both ways) on
// first use:
//
//	thread:<dest>:<conversation>  <thread>                            (Discord)
//	thread:<conversation>         {"channel":"<dest>","ts":"<thread>"} (Slack)
//	part:<dest>:<event id>        {"posted":2,"root":"…"}               (Slack's root was the turn's thread)
type Books struct {
	kv   KV
	sink string
	log  *slog.Logger
}

// NewBooks returns the books of sink, kept in kv (the sink's namespace of
// the store; an in-memory KV keeps them for the process only).
func NewBooks(kv KV, sink string, logger *slog.Logger) *Books {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Books{kv: kv, sink: sink, log: logger}
}

// recordTimeout bounds the writes that record what was just posted. They
// run even when the send's context has just ended: the message is out, so
// the record must be too, or a retry would post it again (or open a second
// thread).
const recordTimeout = 5 * time.Second

func threadKey(dest, conv string) string   { return "thread:" + dest + ":" + conv }
func conversationKey(thread string) string { return "conversation:" + thread }
func partKey(dest, eventID string) string  { return "part:" + dest + ":" + eventID }

// conversationRecord is the value under conversation:<thread>.
type conversationRecord struct {
	Conversation string `json:"conversation"`
	Chatbot      string `json:"chatbot,omitempty"`
	Dest         string `json:"dest"`
}

// ConversationOf is the conversation ev belongs to.
func ConversationOf(ev *Event) ThreadConversation {
	return ThreadConversation{ConversationID: ev.ConversationID, ChatbotID: ev.ChatbotID}
}

// threadRecord is the value under thread:<dest>:<conversation>.
type threadRecord struct {
	Thread string `json:"thread"`
}

// Thread returns the thread of conversation conv on dest, or "". A thread
// recorded before the relay kept the books is recorded anew, with conv's
// chatbot.
func (b *Books) Thread(ctx context.Context, dest string, conv ThreadConversation) (string, error) {
	v, ok, err := b.kv.Get(ctx, threadKey(dest, conv.ConversationID))
	if err != nil {
		return "", fmt.Errorf("sink %q: read the conversation's thread: %w", b.sink, err)
	}
	if ok {
		var rec threadRecord
		if strings.HasPrefix(v, "{") {
			if err := json.Unmarshal([]byte(v), &rec); err != nil {
				b.log.WarnContext(ctx, "unreadable thread record; the conversation gets a new thread", "conversation_id", conv.ConversationID)
			}
			return rec.Thread, nil
		}
		if v != "" { // a thread id alone: recorded before the relay kept the books
			b.adopt(ctx, dest, conv, v)
		}
		return v, nil
	}
	v, ok, err = b.kv.Get(ctx, "thread:"+conv.ConversationID)
	if err != nil || !ok {
		return "", err
	}
	var old struct {
		Channel string `json:"channel"`
		TS      string `json:"ts"`
	}
	if json.Unmarshal([]byte(v), &old) != nil || old.Channel != dest || old.TS == "" {
		return "", nil // another channel's (the config changed), or unreadable
	}
	b.adopt(ctx, dest, conv, old.TS)
	return old.TS, nil
}

// adopt records a thread found in a record of chatrelay before the relay
// kept the books, both ways. It is best effort: the thread is used
// either way, and a failure is tried again on the next read.
func (b *Books) adopt(ctx context.Context, dest string, conv ThreadConversation, thread string) {
	if err := b.SetThread(ctx, dest, conv, thread); err != nil {
		b.log.WarnContext(ctx, "could not record an earlier thread anew", "conversation_id", conv.ConversationID, "err", err)
	}
}

// SetThread records that conversation conv continues in thread on dest,
// and that thread belongs to conv. It is called right after a post and
// writes even when ctx has just ended (within recordTimeout).
func (b *Books) SetThread(ctx context.Context, dest string, conv ThreadConversation, thread string) error {
	v, err := json.Marshal(threadRecord{Thread: thread})
	if err != nil {
		return fmt.Errorf("sink %q: record the conversation's thread: %w", b.sink, err)
	}
	back, err := json.Marshal(conversationRecord{Conversation: conv.ConversationID, Chatbot: conv.ChatbotID, Dest: dest})
	if err != nil {
		return fmt.Errorf("sink %q: record the conversation's thread: %w", b.sink, err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	// The way back first: a thread is never found for a conversation
	// whose replies could not be traced back to it.
	if err := b.kv.Put(ctx, conversationKey(thread), string(back)); err != nil {
		return fmt.Errorf("sink %q: posted, but could not record the conversation's thread (a retry may open another): %w", b.sink, err)
	}
	if err := b.kv.Put(ctx, threadKey(dest, conv.ConversationID), string(v)); err != nil {
		return fmt.Errorf("sink %q: posted, but could not record the conversation's thread (a retry may open another): %w", b.sink, err)
	}
	return nil
}

// Lookup returns the conversation that thread, a thread this sink's posts
// opened, belongs to: the way back from a reply posted in a thread to the
// conversation it answers. ok is false for a thread the relay did not open.
func (b *Books) Lookup(ctx context.Context, thread string) (conv ThreadConversation, ok bool, err error) {
	v, ok, err := b.kv.Get(ctx, conversationKey(thread))
	if err != nil {
		return ThreadConversation{}, false, fmt.Errorf("sink %q: look up a thread: %w", b.sink, err)
	}
	var rec conversationRecord
	if !ok || json.Unmarshal([]byte(v), &rec) != nil || rec.Conversation == "" {
		return ThreadConversation{}, false, nil
	}
	return ThreadConversation{ConversationID: rec.Conversation, ChatbotID: rec.Chatbot}, true, nil
}

// StoreThreads is the ThreadIndex of the sinks whose books are in a
// store: each sink's KV namespace (Store.KV) holds its threads' way back.
type StoreThreads struct {
	KV func(sink string) KV
}

var _ ThreadIndex = StoreThreads{}

// ThreadConversation implements ThreadIndex.
func (t StoreThreads) ThreadConversation(ctx context.Context, sink, thread string) (ThreadConversation, bool, error) {
	return NewBooks(t.KV(sink), sink, nil).Lookup(ctx, thread)
}

// Progress is how far the delivery of a turn that takes several messages
// got, as recorded after each post.
type Progress struct {
	Posted int `json:"posted"` // messages posted, in order
	// Root is a posted message the turn's thread is still to be started
	// on (Turn.Start). A sink whose messages are threads by themselves
	// (Slack) recorded its turn's first message here: it is the thread.
	Root string `json:"root,omitempty"`
	// Thread is the thread the turn's messages go to when its
	// conversation has none (an event without conversation).
	Thread string `json:"thread,omitempty"`
}

// Started reports whether the delivery of event eventID on dest posted
// anything already (it then resumes alone rather than in a packed
// message).
func (b *Books) Started(ctx context.Context, dest, eventID string) (bool, error) {
	_, ok, err := b.kv.Get(ctx, partKey(dest, eventID))
	return ok, err
}

func (b *Books) progress(ctx context.Context, dest, eventID string) (Progress, bool, error) {
	v, ok, err := b.kv.Get(ctx, partKey(dest, eventID))
	if err != nil {
		return Progress{}, false, fmt.Errorf("sink %q: read the turn's progress: %w", b.sink, err)
	}
	if !ok {
		return Progress{}, false, nil
	}
	var p Progress
	if err := json.Unmarshal([]byte(v), &p); err != nil || p.Posted < 0 {
		b.log.WarnContext(ctx, "unreadable progress record; posting the turn from its start", "event_id", eventID)
		return Progress{}, true, nil
	}
	return p, true, nil
}

func (b *Books) setProgress(ctx context.Context, dest, eventID string, p Progress) error {
	v, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("sink %q: record the turn's progress: %w", b.sink, err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := b.kv.Put(ctx, partKey(dest, eventID), string(v)); err != nil {
		return fmt.Errorf("sink %q: posted, but could not record the turn's progress (a retry may post it again): %w", b.sink, err)
	}
	return nil
}

// ErrThreadGone says that a thread (or the message one was to start on)
// was deleted, archived or locked: the turn continues in a new thread.
var ErrThreadGone = errors.New("the thread is gone")

// ThreadGone marks err, an answer to a post into a thread (or to starting
// one), as meaning the thread is gone. The result still classifies as err
// does.
func ThreadGone(err error) error { return &threadGoneError{err: err} }

type threadGoneError struct{ err error }

func (e *threadGoneError) Error() string        { return e.err.Error() }
func (e *threadGoneError) Unwrap() error        { return e.err }
func (e *threadGoneError) Is(target error) bool { return target == ErrThreadGone }

// Turn is one event as a sink posts it: one or more messages, in order,
// into the conversation's thread on the sink's destination. The sink
// renders and posts (Post, Start); the relay keeps the books (Deliver).
type Turn struct {
	Books *Books // the sink's
	Event *Event
	Dest  string // where the sink posts: the books are kept per destination
	Parts int    // messages, at least one
	// Threads is set when conversations have threads on Dest: the
	// conversation's thread is looked up, and a new one recorded.
	Threads bool
	// Post posts message part into thread ("": at the top level of the
	// destination) and says where the turn continues. A sink that posts
	// there without threads returns thread as given. An answer that the
	// thread is gone comes back marked with ThreadGone.
	Post func(ctx context.Context, part int, thread string) (Placed, error)
	// Start starts a thread on root, a message Post placed as Root, and
	// returns the thread; ThreadGone when root was deleted meanwhile. nil
	// for a sink whose posts are threads by themselves (Slack).
	Start func(ctx context.Context, root string) (thread string, err error)
	// Report, if set, gathers what the destination's answers to Post and
	// Start said of its rate limits (Report.Hold).
	Report *Report
}

// Deliver posts t through its books (Books.Deliver) and reports how many
// messages it posted and what the destination said of its rate limits.
func (t *Turn) Deliver(ctx context.Context) (Report, error) {
	posted, err := t.Books.Deliver(ctx, *t)
	rep := Report{Posts: posted}
	if t.Report != nil {
		rep.HoldUntil = t.Report.HoldUntil
	}
	return rep, err
}

// Placed is where a post put the turn.
type Placed struct {
	// Thread is the thread the turn (and the conversation) continues in:
	// the one posted into, or the one the message started.
	Thread string
	// Root is set instead when the message is posted and a thread is yet
	// to be started on it (Turn.Start, which the sink must then have).
	Root string
}

// Deliver posts every message of t that an earlier attempt did not, and
// records after each post what a retry must not repeat: the
// conversation's thread (both ways) and the turn's progress. A thread
// that turns out to be gone is replaced once, by a message posted at top
// level. It returns how many messages this attempt posted.
func (b *Books) Deliver(ctx context.Context, t Turn) (posted int, err error) {
	ev := t.Event
	var conv ThreadConversation
	if t.Threads {
		conv = ConversationOf(ev)
	}
	var prog Progress
	saved := false
	if t.Parts > 1 || t.Start != nil {
		if prog, saved, err = b.progress(ctx, t.Dest, ev.ID); err != nil {
			return 0, err
		}
	}
	if prog.Root != "" && t.Start == nil {
		// Posted, and a message that is a thread by itself.
		prog.Thread, prog.Root = prog.Root, ""
	}
	if prog.Posted >= t.Parts && prog.Root == "" {
		return 0, nil // every message was posted by an earlier attempt
	}
	thread := ""
	if conv.ConversationID != "" {
		if thread, err = b.Thread(ctx, t.Dest, conv); err != nil {
			return 0, err
		}
	}
	if thread == "" {
		thread = prog.Thread // the thread of a turn without conversation
	}
	save := func() error {
		saved, prog.Thread = true, thread
		return b.setProgress(ctx, t.Dest, ev.ID, prog)
	}
	// follow records that the turn continues in th.
	follow := func(th string) error {
		if th == "" || th == thread {
			return nil
		}
		thread = th
		if conv.ConversationID == "" {
			return nil
		}
		return b.SetThread(ctx, t.Dest, conv, th)
	}
	// start starts the turn's thread on prog.Root, which a post placed.
	start := func() error {
		th, err := t.Start(ctx, prog.Root)
		switch {
		case errors.Is(err, ErrThreadGone):
			b.log.InfoContext(ctx, "the message the conversation's thread was to start on was deleted; the next message opens a new thread",
				"event_id", ev.ID, "conversation_id", ev.ConversationID)
			thread = ""
		case err != nil:
			return err
		default:
			if err := follow(th); err != nil {
				return err
			}
		}
		prog.Root = ""
		return nil
	}

	if prog.Root != "" {
		// The last attempt posted the message the thread starts on, but
		// did not start it.
		if err := start(); err != nil {
			return 0, err
		}
		if err := save(); err != nil {
			return 0, err
		}
	}
	restarted := false
	for i := prog.Posted; i < t.Parts; i++ {
		placed, err := t.Post(ctx, i, thread)
		if errors.Is(err, ErrThreadGone) && thread != "" && !restarted {
			// Deleted, or archived and locked: the conversation
			// continues in a new thread, started by this message.
			b.log.InfoContext(ctx, "the conversation's thread is gone; starting a new one", "event_id", ev.ID,
				"conversation_id", ev.ConversationID, "err", err)
			restarted, thread = true, ""
			i--
			continue
		}
		if err != nil {
			return posted, err
		}
		posted++
		b.log.DebugContext(ctx, "posted", "event_id", ev.ID, "part", i+1, "parts", t.Parts)
		if placed.Root != "" {
			prog.Posted, prog.Root = i+1, placed.Root
			if err := save(); err != nil {
				return posted, err
			}
			if err := start(); err != nil {
				return posted, err
			}
		} else if err := follow(placed.Thread); err != nil {
			return posted, err
		}
		prog.Posted = i + 1
		// Record progress when a later message could fail, and once done
		// when progress was recorded, so that no attempt repeats one.
		if i+1 < t.Parts || saved {
			if err := save(); err != nil {
				return posted, err
			}
		}
	}
	return posted, nil
}
