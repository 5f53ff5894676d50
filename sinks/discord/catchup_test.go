package discord_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/discord"
	"github.com/chatrelay/chatrelay/sinks/discord/discordtest"
)

// caughtUp is a slog handler that hands every catch-up's line (the last
// thing a catch-up does) to a channel, so that a test waits for the
// catch-up to end without polling.
type caughtUp struct {
	slog.Handler
	lines chan slog.Record
}

func (h caughtUp) Handle(ctx context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "discord catch-up") {
		h.lines <- r.Clone()
	}
	return h.Handler.Handle(ctx, r)
}

func (h caughtUp) WithAttrs(as []slog.Attr) slog.Handler {
	return caughtUp{Handler: h.Handler.WithAttrs(as), lines: h.lines}
}

func (h caughtUp) WithGroup(name string) slog.Handler {
	return caughtUp{Handler: h.Handler.WithGroup(name), lines: h.lines}
}

// catchUpRig is a relay that is started and stopped (a process: its
// bolt store reopened from disk each time) in front of one fake Discord
// (REST and gateway) that lives on: one conversation mirrored into a
// thread and escalated on a two-way sink.
type catchUpRig struct {
	dir   string
	rest  *discordtest.Server
	gw    *discordtest.Gateway
	clock clockwork.Clock
	lines chan slog.Record

	channel string
	thread  string
	conv    *relay.Event

	// The running relay's parts.
	w    *twoWay
	stop func()
}

func newCatchUpRig(t *testing.T, clock clockwork.Clock) *catchUpRig {
	t.Helper()
	r := &catchUpRig{dir: t.TempDir(), clock: clock, lines: make(chan slog.Record, 16),
		rest: discordtest.NewServer(t, discordtest.WithRateLimit(0, 0))}
	r.channel = r.rest.AddChannel(discordgo.ChannelTypeGuildText)
	r.gw = discordtest.NewGateway(t, discordtest.WithREST(r.rest))
	r.start(t)
	r.caughtUp(t) // the first session's: nothing to read yet
	w := r.w
	w.conv = eventFile(t, "chat.json", relay.TopicChat)
	if err := w.sink.Send(t.Context(), w.conv); err != nil {
		t.Fatal(err)
	}
	threads := r.rest.Threads(r.channel)
	if len(threads) != 1 {
		t.Fatalf("threads %v", threads)
	}
	r.thread, r.conv, w.thread = threads[0], w.conv, threads[0]
	if err := w.sink.Send(t.Context(), w.escalationIn(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.halt() })
	return r
}

// start starts the relay: its store from disk, the sink, the inbox and
// the gateway, whose session is a new one (READY).
func (r *catchUpRig) start(t *testing.T) {
	t.Helper()
	store, err := bolt.Open(r.dir, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	base, logs := relaytest.NewLogger()
	logger := slog.New(caughtUp{Handler: base.Handler(), lines: r.lines})
	w := &twoWay{rest: r.rest, gw: r.gw, store: store, logs: logs, channel: r.channel, thread: r.thread, conv: r.conv,
		metrics: relay.NewMetrics(prometheus.NewRegistry())}
	w.sink, err = discord.New(discord.Config{Name: "chat", Token: relay.Secret(r.gw.Token()), ChannelID: r.channel,
		APIURL: r.gw.URL() + "/api/v10", Mention: "<@&1310000000000000444>", Reply: &relay.ReplyConfig{}},
		relay.SinkDeps{KV: store.KV("chat"), Logger: logger, Clock: r.clock})
	if err != nil {
		t.Fatal(err)
	}
	if w.convs, err = relay.NewConversations(store.KV(relay.ConversationsNamespace), nil); err != nil {
		t.Fatal(err)
	}
	if w.inbox, err = relay.NewInbox(relay.InboxConfig{
		Store: store, Router: relay.NewRouter([]string{"chat", destination}, nil, relay.ReplyDestinations(destination)),
		Threads: relay.StoreThreads{KV: store.KV}, Rules: map[string]relay.ReplyRule{"chat": {}},
		Metrics: w.metrics, Logger: logger, Conversations: w.convs,
	}); err != nil {
		t.Fatal(err)
	}
	g, err := w.sink.Gateway(discord.GatewayDeps{Inbox: w.inbox, States: w.convs, Backoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	w.queue = store.Queue(destination)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := g.Run(ctx); err != nil {
			t.Errorf("gateway Run: %v", err)
		}
	})
	r.w = w
	r.stop = func() {
		cancel()
		wg.Wait()
		if err := store.Close(); err != nil {
			t.Errorf("close the store: %v", err)
		}
	}
}

// halt stops the relay (once).
func (r *catchUpRig) halt() {
	if r.stop != nil {
		r.stop()
		r.stop = nil
	}
}

// restart stops the relay, lets offline write what agents write while
// it is stopped, and starts it again; it returns the new session's
// catch-up line.
func (r *catchUpRig) restart(t *testing.T, offline func()) slog.Record {
	t.Helper()
	r.halt()
	if offline != nil {
		offline()
	}
	r.start(t)
	return r.caughtUp(t)
}

// caughtUp waits for the next catch-up's line.
func (r *catchUpRig) caughtUp(t *testing.T) slog.Record {
	t.Helper()
	select {
	case rec := <-r.lines:
		return rec
	case <-within(t).Done():
		t.Fatal("no catch-up after the session started")
	}
	return slog.Record{}
}

// counts reads a catch-up line's figures.
func counts(rec slog.Record) (threads, messages, replies int64) {
	rec.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "threads":
			threads = a.Value.Int64()
		case "messages":
			messages = a.Value.Int64()
		case "replies":
			replies = a.Value.Int64()
		}
		return true
	})
	return threads, messages, replies
}

// historyReads counts the reads of thread's history, by status.
func (r *catchUpRig) historyReads(thread string) map[int]int {
	out := map[int]int{}
	for _, q := range r.rest.Requests() {
		if q.Method == "GET" && q.Path == "/channels/"+thread+"/messages" {
			out[q.Status]++
		}
	}
	return out
}

// TestCatchUpOfflineReply: a reply written while the relay was stopped
// is stored once after the restart, under its message id (so that the ✅
// goes on it); a second new session does not take it again; a note
// written offline stays a note.
func TestCatchUpOfflineReply(t *testing.T) {
	t.Parallel()
	r := newCatchUpRig(t, nil)
	var reply, note discordtest.Message
	rec := r.restart(t, func() {
		note = r.rest.Write(r.thread, dana, "a note for the team, written offline")
		reply = r.rest.Write(r.thread, dana, "reply: refunded while you were away")
	})
	if th, msgs, taken := counts(rec); th != 1 || msgs != 2 || taken != 1 {
		t.Fatalf("catch-up read %d threads, %d messages, took %d replies; want 1, 2, 1", th, msgs, taken)
	}
	got := r.w.next(t)
	if got.Text != "refunded while you were away" || got.MessageID != reply.ID || got.Thread != r.thread || got.AgentID != dana.ID ||
		got.AgentName != "Dana K" {
		t.Fatalf("reply %+v", got)
	}
	r.w.none(t)
	if n := r.w.count(relay.ReplyIgnored); n != 1 {
		t.Errorf("note %s: ignored %v times, want 1", note.ID, n)
	}
	// ✅ on the agent's message once Chat Data took it (the follow-up the
	// relay then queues, sent by the sink).
	if err := r.w.sink.Send(t.Context(), r.w.followup(t, relay.Followup{Kind: relay.FollowupDelivered, Reply: got})); err != nil {
		t.Fatal(err)
	}
	if rs := r.rest.Reactions(); len(rs) != 1 || rs[0] != (discordtest.Reaction{ChannelID: r.thread, MessageID: reply.ID, Emoji: "✅"}) {
		t.Fatalf("reactions %+v", rs)
	}
	// Another new session: nothing new, nothing taken again.
	rec = r.restart(t, nil)
	if th, msgs, taken := counts(rec); th != 1 || msgs != 0 || taken != 0 {
		t.Fatalf("second catch-up read %d threads, %d messages, took %d; want 1, 0, 0", th, msgs, taken)
	}
	r.w.none(t)
}

// TestCatchUpAfterLiveReply: a reply seen live is not sent twice after a
// new session: its thread's cursor is past it; and were the cursor lost,
// the Inbox's dedupe by message id still stores it once.
func TestCatchUpAfterLiveReply(t *testing.T) {
	t.Parallel()
	r := newCatchUpRig(t, nil)
	ctx := within(t)
	id, err := r.gw.Say(ctx, r.thread, dana, "", "reply: seen live")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.w.next(t); got.MessageID != id {
		t.Fatalf("live reply %+v", got)
	}
	rec := r.restart(t, nil)
	if _, msgs, taken := counts(rec); msgs != 0 || taken != 0 {
		t.Fatalf("catch-up found %d messages, took %d; want none past the live reply", msgs, taken)
	}
	r.w.none(t)
	// The cursor lost (a store written before it was kept): read again,
	// a duplicate.
	rec = r.restart(t, func() {
		store, err := bolt.Open(r.dir, bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		if err := store.KV("chat").Put(ctx, "catchup:cursor:"+r.thread, r.thread); err != nil {
			t.Fatal(err)
		}
	})
	if _, msgs, taken := counts(rec); msgs != 1 || taken != 0 {
		t.Fatalf("catch-up found %d messages, took %d; want 1, 0", msgs, taken)
	}
	r.w.none(t)
	if n := r.w.count(relay.ReplyDuplicate); n != 1 {
		t.Fatalf("duplicates %v, want 1", n)
	}
}

// TestCatchUpOrder: two replies written offline are stored in the order
// they were written (Discord lists them newest first).
func TestCatchUpOrder(t *testing.T) {
	t.Parallel()
	r := newCatchUpRig(t, nil)
	var first, second discordtest.Message
	r.restart(t, func() {
		first = r.rest.Write(r.thread, dana, "reply: one")
		second = r.rest.Write(r.thread, sam, "reply: two")
	})
	if a, b := r.w.next(t), r.w.next(t); a.MessageID != first.ID || b.MessageID != second.ID || a.Text != "one" || b.Text != "two" {
		t.Fatalf("replies out of order: %+v then %+v", a, b)
	}
	r.w.none(t)
}

// TestCatchUpPages: more messages than one history page holds are all
// read, in order.
func TestCatchUpPages(t *testing.T) {
	t.Parallel()
	r := newCatchUpRig(t, nil)
	const n = 150
	var ids []string
	rec := r.restart(t, func() {
		for i := range n {
			ids = append(ids, r.rest.Write(r.thread, dana, "reply: part "+string(rune('a'+i%26))).ID)
		}
	})
	if _, msgs, taken := counts(rec); msgs != n || taken != n {
		t.Fatalf("catch-up found %d, took %d; want %d", msgs, taken, n)
	}
	for i := range n {
		if got := r.w.next(t); got.MessageID != ids[i] {
			t.Fatalf("reply %d is message %s, want %s", i, got.MessageID, ids[i])
		}
	}
	if reads := r.historyReads(r.thread); reads[200] != 2 {
		t.Fatalf("history reads %v, want two pages", reads)
	}
}

// TestCatchUpResolved: the thread of a conversation resolved meanwhile is
// not read.
func TestCatchUpResolved(t *testing.T) {
	t.Parallel()
	r := newCatchUpRig(t, nil)
	if _, won, err := r.w.convs.Resolve(t.Context(), r.conv.ConversationID, relay.Agent{ID: dana.ID, Name: "Dana"}); err != nil || !won {
		t.Fatalf("resolve: %v, %v", won, err)
	}
	before := r.historyReads(r.thread)[200]
	r.halt()
	r.rest.Write(r.thread, dana, "reply: after it was resolved")
	r.start(t)
	rec := r.caughtUp(t)
	if th, msgs, _ := counts(rec); th != 0 || msgs != 0 {
		t.Fatalf("catch-up read %d threads, %d messages; want none", th, msgs)
	}
	if after := r.historyReads(r.thread)[200]; after != before {
		t.Fatalf("a resolved conversation's thread was read (%d reads, %d before)", after, before)
	}
	r.w.none(t)
}

// TestCatchUpRateLimited: a 429 on the history read is waited out as
// Discord says (retry_after, on the sink's clock) before reading again.
func TestCatchUpRateLimited(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClock()
	r := newCatchUpRig(t, clock)
	ctx := within(t)
	r.halt()
	reply := r.rest.Write(r.thread, dana, "reply: despite the limit")
	r.rest.Script("GET /channels/"+r.thread+"/messages", discordtest.Reply{Status: 429, RetryAfter: 7.5})
	r.start(t)
	// The 429 came; the catch-up now waits 7.5 s on the clock.
	relaytest.Eventually(t, 20*time.Second, "the 429 answered", func() bool { return r.historyReads(r.thread)[429] == 1 })
	if err := clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(7499 * time.Millisecond)
	if reads := r.historyReads(r.thread); reads[429] != 1 || reads[200] != 0 {
		t.Fatalf("read again before retry_after passed: %v", reads)
	}
	// Past it (twice over, should the wait have begun after the first
	// step).
	clock.Advance(7500 * time.Millisecond)
	if got := r.w.next(t); got.MessageID != reply.ID {
		t.Fatalf("reply %+v", got)
	}
	r.caughtUp(t)
}
