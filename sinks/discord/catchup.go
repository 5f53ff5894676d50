package discord

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

// Catch-up: Discord keeps no messages for a bot while it holds no gateway
// session (chatrelay stopped, or a handover between replicas in
// progress), and a new session (READY, not a RESUME, which replays what
// was missed) starts from now. So when a new session starts, the gateway
// reads, through the REST API, what was written meanwhile in the threads
// of the conversations still waiting for a person, and hands it to the
// same path as a live message (Gateway.message), oldest first; the
// Inbox's dedupe by message id makes a message seen twice harmless.
//
// Which threads: those where the sink posted an escalation (watched, in
// the sink's books), within the last catchUpFor, catchUpThreads at most
// (the most recent), and not resolved since (relay.Conversations). Where
// in each: after the last message the relay took from it (its cursor,
// advanced whenever a reply from it was stored), else from the thread's
// start (a thread's id is older than every message in it).
//
// Books keys (the sink's namespace of the store):
//
//	catchup:watch            [{"conversation":"…","chatbot":"…","at":"…"}]  conversations to catch up on
//	catchup:cursor:<thread>  <message id>                                  the newest message taken

// Bounds of a catch-up.
const (
	// catchUpFor is how long after its escalation a conversation's thread
	// is caught up on: as long as the store's default dedupe window, so
	// that anything read twice is still recognised.
	catchUpFor = 24 * time.Hour
	// catchUpThreads is how many threads (the most recently escalated) a
	// catch-up reads at most.
	catchUpThreads = 100
	// historyPage is the messages one history request returns at most
	// (Discord's maximum).
	historyPage = 100
	// historyTries bounds the attempts of one history request that
	// Discord answers with 429.
	historyTries = 5
	// catchUpMaxWait is the longest wait a catch-up accepts from
	// Discord's rate limits before reading on.
	catchUpMaxWait = time.Minute
)

const (
	watchKey     = "catchup:watch"
	cursorPrefix = "catchup:cursor:"
)

// States tells a conversation's state (relay.Conversations).
type States interface {
	State(ctx context.Context, conv string) (relay.ConversationState, bool, error)
}

// watched is a conversation whose thread is to be caught up on.
type watched struct {
	Conversation string    `json:"conversation"`
	Chatbot      string    `json:"chatbot,omitempty"`
	At           time.Time `json:"at"` // when its escalation was posted
}

// watch records, as the sink posts escalation ev, that its conversation's
// thread is to be caught up on (the thread is looked up at the catch-up:
// the escalation may be what opens it). It is best effort: a failure is
// logged, and costs only the catch-up of that thread.
func (s *Sink) watch(ctx context.Context, ev *relay.Event) {
	if !s.twoWay() || ev.Topic != relay.TopicEscalation || ev.ConversationID == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordWatchFor)
	defer cancel()
	now := s.clock.Now()
	err := s.changeKV(ctx, watchKey, func(old string) (string, bool) {
		list := readWatch(old)
		list = slices.DeleteFunc(list, func(w watched) bool {
			return w.Conversation == ev.ConversationID || now.Sub(w.At) > catchUpFor
		})
		list = append(list, watched{Conversation: ev.ConversationID, Chatbot: ev.ChatbotID, At: now})
		slices.SortStableFunc(list, func(a, b watched) int { return a.At.Compare(b.At) })
		if len(list) > catchUpThreads {
			list = list[len(list)-catchUpThreads:]
		}
		b, err := json.Marshal(list)
		return string(b), err == nil
	})
	if err != nil {
		s.log.WarnContext(ctx, "escalation posted, but its thread is not caught up on after a restart",
			"event_id", ev.ID, "conversation_id", ev.ConversationID, "err", err)
	}
}

// recordWatchFor bounds the write of the watch list after a post.
const recordWatchFor = 5 * time.Second

func readWatch(v string) []watched {
	var list []watched
	if v != "" && json.Unmarshal([]byte(v), &list) != nil {
		return nil // unreadable: started afresh
	}
	return list
}

// changeKV sets key to what change makes of its value, with a
// compare-and-set where the store has one (the dispatcher and the gateway
// may write at once), else with a plain write. change returns false for
// nothing to write.
func (s *Sink) changeKV(ctx context.Context, key string, change func(old string) (string, bool)) error {
	sw, swaps := s.kv.(relay.Swapper)
	for range 20 {
		old, _, err := s.kv.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("read %s: %w", key, err)
		}
		v, ok := change(old)
		if !ok || v == old {
			return nil
		}
		if !swaps {
			return s.kv.Put(ctx, key, v)
		}
		done, err := sw.Swap(ctx, key, old, v)
		if err != nil {
			return fmt.Errorf("write %s: %w", key, err)
		}
		if done {
			return nil
		}
	}
	return fmt.Errorf("write %s: it kept changing under the write", key)
}

// later reports whether message id a is newer than b (snowflakes: longer
// is larger, else by digits).
func later(a, b string) bool {
	return cmp.Or(cmp.Compare(len(a), len(b)), cmp.Compare(a, b)) > 0
}

// advance moves thread's cursor to id, unless it is past it already.
func (s *Sink) advance(ctx context.Context, thread, id string) error {
	return s.changeKV(ctx, cursorPrefix+thread, func(old string) (string, bool) {
		return id, old == "" || later(id, old)
	})
}

// cursors wraps the Inbox so that each reply stored (or found stored)
// advances its thread's cursor, and a catch-up counts what it took.
type cursors struct {
	Inbox
	s *Sink
}

// tallyKey carries a catch-up's tally in the context of the messages it
// hands to Gateway.message.
type tallyKey struct{}

type tally struct{ taken int }

func (c cursors) Accept(ctx context.Context, m relay.ThreadMessage) (relay.Intake, error) {
	in, err := c.Inbox.Accept(ctx, m)
	if err != nil || m.Edit || m.Bot {
		return in, err
	}
	if t, ok := ctx.Value(tallyKey{}).(*tally); ok && in.Result == relay.ReplyAccepted {
		t.taken++
	}
	if in.Result == relay.ReplyAccepted || in.Result == relay.ReplyDuplicate {
		if aerr := c.s.advance(ctx, m.Thread, m.MessageID); aerr != nil {
			// Only a later catch-up reads it again (a duplicate).
			c.s.log.DebugContext(ctx, "reply stored, but its thread's catch-up cursor not advanced", "thread", m.Thread, "err", aerr)
		}
	}
	return in, nil
}

// catchUps runs a catch-up each time ready says a new session started,
// until ctx ends (the session's hold: ownership lost, or Run ended). It
// runs beside the session's workers, so live messages are never held up
// behind it; a message arriving live while a catch-up reads the same
// thread may go before an older one the catch-up finds (the catch-up
// takes a second or so after READY).
func (g *Gateway) catchUps(ctx context.Context, ready <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-ready:
			g.catchUp(ctx)
		}
	}
}

// catchUp reads the watched threads once and hands what was written in
// them since their cursor to the Inbox.
func (g *Gateway) catchUp(ctx context.Context) {
	s := g.s
	raw, _, err := s.kv.Get(ctx, watchKey)
	if err != nil {
		g.log.Warn("catch-up: cannot read the threads to catch up on; replies written while no session was open are not read", "err", err)
		return
	}
	now := s.clock.Now()
	list := slices.DeleteFunc(readWatch(raw), func(w watched) bool { return now.Sub(w.At) > catchUpFor })
	if len(list) > catchUpThreads {
		list = list[len(list)-catchUpThreads:]
	}
	guild := ""
	if len(list) > 0 {
		ch, err := s.readChannel(ctx, nil)
		if err != nil {
			g.log.Warn("catch-up: cannot read the channel; replies written while no session was open are not read", "err", err)
			return
		}
		guild = ch.GuildID
	}
	t := &tally{}
	ctx = context.WithValue(ctx, tallyKey{}, t)
	threads, found := 0, 0
	for i := len(list) - 1; i >= 0 && ctx.Err() == nil; i-- { // the most recent first
		w := list[i]
		if g.deps.States != nil {
			st, ok, err := g.deps.States.State(ctx, w.Conversation)
			if err != nil {
				g.log.Warn("catch-up: cannot read a conversation's state; its thread is read all the same", "conversation_id", w.Conversation, "err", err)
			} else if ok && st.Resolved() {
				continue
			}
		}
		thread, err := s.books.Thread(ctx, s.destID(), relay.ThreadConversation{ConversationID: w.Conversation, ChatbotID: w.Chatbot})
		if err != nil {
			g.log.Warn("catch-up: cannot find a conversation's thread", "conversation_id", w.Conversation, "err", err)
			continue
		}
		if validID(thread) == "" {
			continue // the escalation was not posted after all
		}
		threads++
		n, err := g.catchUpThread(ctx, guild, thread)
		found += n
		if err != nil && ctx.Err() == nil {
			g.log.Warn("catch-up: cannot read a thread's messages", "thread", thread, "conversation_id", w.Conversation, "err", s.scrub.Error(err))
		}
	}
	if ctx.Err() != nil {
		return
	}
	g.log.Info("discord catch-up: read the threads of open conversations for messages written while no session was open",
		"threads", threads, "messages", found, "replies", t.taken)
}

// restMessage is a message as the REST API returns it: the gateway's
// fields, without the guild (a thread's messages are in the channel's).
type restMessage = gwMessage

// catchUpThread hands the messages of thread after its cursor to the
// Inbox, oldest first, page by page, and returns how many it read.
func (g *Gateway) catchUpThread(ctx context.Context, guild, thread string) (int, error) {
	s := g.s
	after, _, err := s.kv.Get(ctx, cursorPrefix+thread)
	if err != nil {
		return 0, fmt.Errorf("read its cursor: %w", err)
	}
	if after == "" {
		after = thread
	}
	found := 0
	var hold time.Time
	for ctx.Err() == nil {
		if wait := hold.Sub(s.clock.Now()); wait > 0 {
			if err := g.sleep(ctx, min(wait, catchUpMaxWait)); err != nil {
				return found, nil
			}
		}
		page, until, err := g.history(ctx, thread, after)
		if err != nil {
			return found, err
		}
		hold = until
		slices.SortFunc(page, func(a, b restMessage) int {
			return cmp.Or(cmp.Compare(len(a.ID), len(b.ID)), cmp.Compare(a.ID, b.ID))
		})
		for _, m := range page {
			if ctx.Err() != nil {
				return found, nil
			}
			if validID(m.ID) == "" || !later(m.ID, after) {
				continue
			}
			found++
			m.ChannelID, m.GuildID = thread, guild
			raw, err := json.Marshal(m)
			if err != nil {
				return found, err
			}
			g.message(ctx, inbound{typ: "MESSAGE_CREATE", raw: raw})
			after = m.ID
		}
		if len(page) < historyPage {
			break
		}
	}
	if found > 0 && ctx.Err() == nil {
		// Notes and others' messages too: not read again.
		if err := s.advance(ctx, thread, after); err != nil {
			return found, fmt.Errorf("advance its cursor: %w", err)
		}
	}
	return found, nil
}

// history reads one page of thread's messages after message after,
// waiting as Discord asks when it answers 429 (catchUpMaxWait at most:
// a longer wait, a global limit, ends the thread's catch-up rather than
// stall the others). hold is when the thread's bucket refills, if
// Discord said it is empty: the next page waits for it.
func (g *Gateway) history(ctx context.Context, thread, after string) (page []restMessage, hold time.Time, err error) {
	s := g.s
	u := s.route("channels", thread, "messages")
	u.RawQuery = url.Values{"after": {after}, "limit": {strconv.Itoa(historyPage)}}.Encode()
	for try := 1; ; try++ {
		page = page[:0]
		var rep relay.Report
		err := s.do(ctx, &rep, call{op: "read thread messages", method: http.MethodGet, url: u, in: inThread}, &page)
		if err == nil {
			return page, rep.HoldUntil, nil
		}
		class, wait := relay.Classify(err)
		if class != relay.ClassRateLimited || try >= historyTries || wait > catchUpMaxWait {
			return nil, time.Time{}, err
		}
		g.log.Debug("catch-up: Discord asks to wait before reading more", "thread", thread, "retry_after", wait)
		if err := g.sleep(ctx, wait); err != nil {
			return nil, time.Time{}, err
		}
	}
}
