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
//	catchup:watch            [{"thread":"…","conversation":"…","at":"…"}]  threads to catch up on
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
)

const (
	watchKey     = "catchup:watch"
	cursorPrefix = "catchup:cursor:"
)

// States tells a conversation's state (relay.Conversations).
type States interface {
	State(ctx context.Context, conv string) (relay.ConversationState, bool, error)
}

// watched is a thread to catch up on.
type watched struct {
	Thread       string    `json:"thread"`
	Conversation string    `json:"conversation"`
	At           time.Time `json:"at"` // when its escalation was posted
}

// watch records, after the sink posted escalation ev, that its
// conversation's thread is to be caught up on. It is best effort: a
// failure is logged, and costs only the catch-up of that thread.
func (s *Sink) watch(ctx context.Context, ev *relay.Event) {
	if !s.twoWay() || ev.Topic != relay.TopicEscalation || ev.ConversationID == "" || !s.threaded() {
		return
	}
	log := s.log.With("event_id", ev.ID, "conversation_id", ev.ConversationID)
	thread, err := s.books.Thread(ctx, s.destID(), relay.ConversationOf(ev))
	if err != nil || validID(thread) == "" {
		if err != nil {
			log.WarnContext(ctx, "escalation posted, but its thread is not caught up on after a restart", "err", err)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordWatchFor)
	defer cancel()
	now := s.clock.Now()
	err = s.changeKV(ctx, watchKey, func(old string) (string, bool) {
		list := readWatch(old)
		list = slices.DeleteFunc(list, func(w watched) bool { return w.Thread == thread || now.Sub(w.At) > catchUpFor })
		list = append(list, watched{Thread: thread, Conversation: ev.ConversationID, At: now})
		slices.SortStableFunc(list, func(a, b watched) int { return a.At.Compare(b.At) })
		if len(list) > catchUpThreads {
			list = list[len(list)-catchUpThreads:]
		}
		b, err := json.Marshal(list)
		return string(b), err == nil
	})
	if err != nil {
		log.WarnContext(ctx, "escalation posted, but its thread is not caught up on after a restart", "err", err)
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
		threads++
		n, err := g.catchUpThread(ctx, guild, w.Thread)
		found += n
		if err != nil && ctx.Err() == nil {
			g.log.Warn("catch-up: cannot read a thread's messages", "thread", w.Thread, "conversation_id", w.Conversation, "err", s.scrub.Error(err))
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
	for ctx.Err() == nil {
		page, err := g.history(ctx, thread, after)
		if err != nil {
			return found, err
		}
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
// waiting as Discord asks when it answers 429 (and when it says the
// bucket is empty).
func (g *Gateway) history(ctx context.Context, thread, after string) ([]restMessage, error) {
	s := g.s
	u := s.route("channels", thread, "messages")
	u.RawQuery = url.Values{"after": {after}, "limit": {strconv.Itoa(historyPage)}}.Encode()
	for try := 1; ; try++ {
		var page []restMessage
		var rep relay.Report
		err := s.do(ctx, &rep, call{op: "read thread messages", method: http.MethodGet, url: u, in: inThread}, &page)
		wait := time.Duration(0)
		if err == nil {
			if !rep.HoldUntil.IsZero() {
				// The bucket is empty: the next request waits for it.
				wait = rep.HoldUntil.Sub(s.clock.Now())
			}
			if wait > 0 {
				if werr := g.sleep(ctx, wait); werr != nil {
					return nil, werr
				}
			}
			return page, nil
		}
		class, after := relay.Classify(err)
		if class != relay.ClassRateLimited || try >= historyTries {
			return nil, err
		}
		g.log.Debug("catch-up: Discord asks to wait before reading more", "thread", thread, "retry_after", after)
		if werr := g.sleep(ctx, after); werr != nil {
			return nil, werr
		}
	}
}

// sleep waits d on the sink's clock, or until ctx ends.
func (g *Gateway) sleep(ctx context.Context, d time.Duration) error {
	t := g.s.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.Chan():
		return nil
	}
}
