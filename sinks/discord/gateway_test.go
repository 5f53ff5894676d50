package discord_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/discord"
	"github.com/chatrelay/chatrelay/sinks/discord/discordtest"
)

// destination is where agent replies go in these tests (the chatdata
// destination's name in a real config).
const destination = "chatdata"

// twoWay is a bot-mode sink with replies, its fakes and its store: one
// conversation mirrored into a thread, a gateway running.
type twoWay struct {
	inbox   *relay.Inbox
	convs   *relay.Conversations
	rest    *discordtest.Server
	gw      *discordtest.Gateway
	sink    *discord.Sink
	store   *bolt.Store
	metrics *relay.Metrics
	logs    *relaytest.LogBuffer
	channel string
	thread  string
	conv    *relay.Event // the mirrored turn
	queue   relay.Queue  // the destination's
}

// appender fails the first n appends (a store that cannot write).
type appender struct {
	relay.Appender
	fail atomic.Int32
}

func (a *appender) Append(ctx context.Context, ev *relay.Event, sinks []string) (relay.Accepted, error) {
	if a.fail.Add(-1) >= 0 {
		return relay.Accepted{}, fmt.Errorf("disk trouble: %w", relay.ErrUnavailable)
	}
	return a.Appender.Append(ctx, ev, sinks)
}

type twoWayOptions struct {
	failAppends int32
	owner       relay.Owner
	rule        relay.ReplyRule
}

func newTwoWay(t *testing.T, o twoWayOptions) *twoWay {
	t.Helper()
	w := &twoWay{rest: discordtest.NewServer(t, discordtest.WithRateLimit(0, 0))}
	w.channel = w.rest.AddChannel(discordgo.ChannelTypeGuildText)
	w.gw = discordtest.NewGateway(t, discordtest.WithREST(w.rest))
	store, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	w.store = store
	w.metrics = relay.NewMetrics(prometheus.NewRegistry())
	logger, logs := relaytest.NewLogger()
	w.logs = logs
	w.sink, err = discord.New(discord.Config{Name: "chat", Token: relay.Secret(w.gw.Token()), ChannelID: w.channel,
		APIURL: w.gw.URL() + "/api/v10", Mention: "<@&1310000000000000444>", Reply: &relay.ReplyConfig{}},
		relay.SinkDeps{KV: store.KV("chat"), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	// The conversation is mirrored: its thread is the relay's.
	w.conv = eventFile(t, "chat.json", relay.TopicChat)
	if err := w.sink.Send(t.Context(), w.conv); err != nil {
		t.Fatal(err)
	}
	threads := w.rest.Threads(w.channel)
	if len(threads) != 1 {
		t.Fatalf("threads %v", threads)
	}
	w.thread = threads[0]

	app := relay.Appender(store)
	if o.failAppends > 0 {
		a := &appender{Appender: store}
		a.fail.Store(o.failAppends)
		app = a
	}
	w.convs, err = relay.NewConversations(store.KV(relay.ConversationsNamespace), nil)
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := relay.NewInbox(relay.InboxConfig{
		Store: app, Router: relay.NewRouter([]string{"chat", destination}, nil, relay.ReplyDestinations(destination)),
		Threads: relay.StoreThreads{KV: store.KV}, Rules: map[string]relay.ReplyRule{"chat": o.rule},
		Metrics: w.metrics, Logger: logger, Conversations: w.convs,
	})
	if err != nil {
		t.Fatal(err)
	}
	w.inbox = inbox
	g, err := w.sink.Gateway(discord.GatewayDeps{Inbox: inbox, Owner: o.owner, Backoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
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
	t.Cleanup(func() { cancel(); wg.Wait() })
	return w
}

// next waits for the destination's next agent reply and acks it.
func (w *twoWay) next(t *testing.T) *relay.Reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	d, err := w.queue.Next(ctx)
	if err != nil {
		t.Fatalf("no agent reply stored: %v", err)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	r := d.Event.AgentReply()
	if r == nil {
		t.Fatalf("stored %s, not an agent reply", d.Event.Topic)
	}
	if d.Event.ConversationID != w.conv.ConversationID || d.Event.ChatbotID != w.conv.ChatbotID {
		t.Fatalf("reply for conversation %s/%s, want %s/%s", d.Event.ChatbotID, d.Event.ConversationID, w.conv.ChatbotID, w.conv.ConversationID)
	}
	return r
}

// none checks that nothing more was stored for the destination.
func (w *twoWay) none(t *testing.T) {
	t.Helper()
	d, err := w.queue.TryNext(t.Context())
	if err != nil || d != nil {
		t.Fatalf("unexpected delivery %+v, %v", d, err)
	}
}

func (w *twoWay) count(result string) float64 {
	return testutil.ToFloat64(w.metrics.AgentReplies.WithLabelValues("chat", result))
}

func within(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var (
	dana = discordgo.User{ID: "1310000000000000777", Username: "dana.k", GlobalName: "Dana K", Avatar: "a1b2c3"}
	sam  = discordgo.User{ID: "1310000000000000778", Username: "sam"}
)

// TestGatewayReplyDeliveredOnce: a prefixed message in the relay's thread
// is stored once as an agent reply for the thread's conversation, under
// the member's nickname and avatar, its markup plain; the same message
// dispatched again (a redelivery) is a duplicate; the gateway identified
// with the intents two-way needs.
func TestGatewayReplyDeliveredOnce(t *testing.T) {
	t.Parallel()
	w := newTwoWay(t, twoWayOptions{})
	ctx := within(t)
	w.rest.AddMember(sam, "Sammy", "")
	msg := discordtest.MessageCreate("1310000000000000601", w.thread, discordtest.GuildID, dana, "Dana (Billing)",
		"reply: Hi! **Refunded** today, see [policy](https://example.com/r) or ask <@"+sam.ID+">")
	msg["member"] = map[string]any{"nick": "Dana (Billing)", "avatar": "g1h2", "roles": []string{}}
	if _, err := w.gw.Dispatch(ctx, "MESSAGE_CREATE", msg); err != nil {
		t.Fatal(err)
	}
	r := w.next(t)
	want := relay.Reply{Text: "Hi! Refunded today, see policy (https://example.com/r) or ask @Sammy", AgentID: dana.ID,
		AgentName: "Dana (Billing)", AgentAvatar: "https://cdn.discordapp.com/guilds/" + discordtest.GuildID + "/users/" + dana.ID + "/avatars/g1h2.png?size=128",
		Sink: "chat", Platform: "discord", Channel: w.thread, Thread: w.thread, MessageID: "1310000000000000601"}
	if *r != want {
		t.Fatalf("reply\n got %+v\nwant %+v", *r, want)
	}
	// Discord sends it again (a replay after RESUME): one reply.
	if _, err := w.gw.Dispatch(ctx, "MESSAGE_CREATE", msg); err != nil {
		t.Fatal(err)
	}
	if _, err := w.gw.Say(ctx, w.thread, dana, "", "reply: and one more"); err != nil {
		t.Fatal(err)
	}
	if r := w.next(t); r.Text != "and one more" || r.AgentName != "Dana K" {
		t.Fatalf("second reply %+v", r)
	}
	w.none(t)
	// Counted once the store answered: right after the reply is seen.
	relaytest.Eventually(t, 20*time.Second, "2 accepted and 1 duplicate counted", func() bool {
		return w.count(relay.ReplyAccepted) == 2 && w.count(relay.ReplyDuplicate) == 1
	})
	ids, err := w.gw.WaitIdentified(ctx, 1)
	if err != nil || ids[0].Intents != discord.Intents {
		t.Fatalf("IDENTIFY %+v, %v", ids, err)
	}
}

// TestGatewayIgnores: notes, the relay's own posts, other bots, edits,
// deletions and messages in threads the relay did not make are not for
// the visitor, and are counted so; system messages are skipped.
func TestGatewayIgnores(t *testing.T) {
	t.Parallel()
	w := newTwoWay(t, twoWayOptions{})
	ctx := within(t)
	other := w.rest.AddChannel(discordgo.ChannelTypeGuildText)
	bot := discordgo.User{ID: "1310000000000000555", Username: "otherbot", Bot: true}
	steps := []struct {
		typ  string
		data map[string]any
	}{
		{"MESSAGE_CREATE", discordtest.MessageCreate("1310000000000000701", w.thread, discordtest.GuildID, dana, "", "a note for the team")},
		{"MESSAGE_CREATE", discordtest.MessageCreate("1310000000000000702", w.thread, discordtest.GuildID, bot, "", "reply: a bot's")},
		{"MESSAGE_UPDATE", discordtest.MessageCreate("1310000000000000701", w.thread, discordtest.GuildID, dana, "", "reply: edited")},
		{"MESSAGE_DELETE", map[string]any{"id": "1310000000000000701", "channel_id": w.thread, "guild_id": discordtest.GuildID}},
		{"MESSAGE_CREATE", discordtest.MessageCreate("1310000000000000703", other, discordtest.GuildID, dana, "", "reply: elsewhere")},
	}
	system := discordtest.MessageCreate("1310000000000000704", w.thread, discordtest.GuildID, dana, "", "reply: pinned")
	system["type"] = 6
	for _, s := range steps {
		if _, err := w.gw.Dispatch(ctx, s.typ, s.data); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.gw.Dispatch(ctx, "MESSAGE_CREATE", system); err != nil {
		t.Fatal(err)
	}
	// The relay's own post in the thread comes back as a bot message.
	if err := w.sink.Send(ctx, withID(eventFile(t, "chat.json", relay.TopicChat), 2)); err != nil {
		t.Fatal(err)
	}
	// Messages are taken in order: once this one is stored, every one
	// before it was decided.
	if _, err := w.gw.Say(ctx, w.thread, dana, "", "reply: the answer"); err != nil {
		t.Fatal(err)
	}
	if r := w.next(t); r.Text != "the answer" {
		t.Fatalf("reply %+v", r)
	}
	w.none(t)
	if got := w.count(relay.ReplyIgnored); got != 6 {
		t.Fatalf("ignored %v, want 6 (note, bot, edit, deletion, foreign thread, the relay's own post)", got)
	}
}

// TestGatewayKeepsOrder: two replies written in quick succession reach
// the destination's queue in the order they were written, and the second
// is handed out only once the first is settled.
func TestGatewayKeepsOrder(t *testing.T) {
	t.Parallel()
	w := newTwoWay(t, twoWayOptions{})
	ctx := within(t)
	for _, text := range []string{"reply: first", "reply: second", "reply: third"} {
		if _, err := w.gw.Say(ctx, w.thread, dana, "", text); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"first", "second", "third"} {
		if r := w.next(t); r.Text != want {
			t.Fatalf("got %q, want %q", r.Text, want)
		}
	}
}

// TestGatewayRetriesTheStore: a store that cannot take a reply at first
// is asked again until it does; the reply is not lost.
func TestGatewayRetriesTheStore(t *testing.T) {
	t.Parallel()
	w := newTwoWay(t, twoWayOptions{failAppends: 3})
	ctx := within(t)
	if _, err := w.gw.Say(ctx, w.thread, dana, "", "reply: do not lose me"); err != nil {
		t.Fatal(err)
	}
	if r := w.next(t); r.Text != "do not lose me" {
		t.Fatalf("reply %+v", r)
	}
	if got := w.count(relay.ReplyUnavailable); got != 3 {
		t.Fatalf("unavailable %v, want 3", got)
	}
	relaytest.Eventually(t, 20*time.Second, "the recovery logged", func() bool {
		return strings.Contains(w.logs.String(), "stored after retrying")
	})
}

// TestGatewayResumes: Discord asks the bot to reconnect (op 7); the
// gateway resumes its session, and a reply written meanwhile is replayed
// and stored, once, as is one written after.
func TestGatewayResumes(t *testing.T) {
	t.Parallel()
	w := newTwoWay(t, twoWayOptions{})
	ctx := within(t)
	if _, err := w.gw.Say(ctx, w.thread, dana, "", "reply: before"); err != nil {
		t.Fatal(err)
	}
	if r := w.next(t); r.Text != "before" {
		t.Fatalf("reply %+v", r)
	}
	if err := w.gw.Reconnect(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.gw.Say(ctx, w.thread, dana, "", "reply: while away"); err != nil {
		t.Fatal(err)
	}
	resumes, err := w.gw.WaitResumed(ctx, 1)
	if err != nil || !resumes[0].Valid {
		t.Fatalf("RESUME %+v, %v", resumes, err)
	}
	if _, err := w.gw.Say(ctx, w.thread, dana, "", "reply: after"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"while away", "after"} {
		if r := w.next(t); r.Text != want {
			t.Fatalf("got %q, want %q", r.Text, want)
		}
	}
	w.none(t)
	if ids, _ := w.gw.WaitIdentified(ctx, 1); len(ids) != 1 {
		t.Fatalf("%d IDENTIFYs: a resumed session identifies once", len(ids))
	}
}

// TestGatewayHeldOnlyWhileOwned: the session opens only once the replica
// owns the sink, closes when it no longer does, and opens anew (a new
// IDENTIFY) when it owns it again.
func TestGatewayHeldOnlyWhileOwned(t *testing.T) {
	t.Parallel()
	terms := make(chan context.Context)
	ended := make(chan struct{}, 4)
	w := newTwoWay(t, twoWayOptions{owner: termOwner{terms: terms, ended: ended}})
	ctx := within(t)
	if n := w.gw.Connections(); n != 0 {
		t.Fatalf("%d connections before the replica owns the sink", n)
	}
	term, endTerm := context.WithCancel(ctx)
	terms <- term
	if _, err := w.gw.Say(ctx, w.thread, dana, "", "reply: one"); err != nil {
		t.Fatal(err)
	}
	if r := w.next(t); r.Text != "one" {
		t.Fatalf("reply %+v", r)
	}
	endTerm()
	<-ended
	if err := w.gw.WaitDisconnected(ctx); err != nil {
		t.Fatal(err)
	}
	term2, endTerm2 := context.WithCancel(ctx)
	defer endTerm2()
	terms <- term2
	if _, err := w.gw.WaitIdentified(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := w.gw.Say(ctx, w.thread, dana, "", "reply: two"); err != nil {
		t.Fatal(err)
	}
	if r := w.next(t); r.Text != "two" {
		t.Fatalf("reply %+v", r)
	}
}

// TestGatewayRefusedToken: a token the gateway refuses is logged naming
// the fix, and retried only at the longest backoff, not in a loop.
func TestGatewayRefusedToken(t *testing.T) {
	t.Parallel()
	rest := discordtest.NewServer(t)
	channel := rest.AddChannel(discordgo.ChannelTypeGuildText)
	gw := discordtest.NewGateway(t) // its own token: the sink's is refused
	logger, logs := relaytest.NewLogger()
	store, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	sink, err := discord.New(discord.Config{Name: "chat", Token: relay.Secret(rest.Token()), ChannelID: channel,
		APIURL: gw.URL() + "/api/v10"}, relay.SinkDeps{KV: store.KV("chat"), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := relay.NewInbox(relay.InboxConfig{Store: store, Router: relay.NewRouter([]string{"chat"}, nil),
		Threads: relay.StoreThreads{KV: store.KV}, Metrics: relay.NewMetrics(prometheus.NewRegistry())})
	if err != nil {
		t.Fatal(err)
	}
	g, err := sink.Gateway(discord.GatewayDeps{Inbox: inbox, Backoff: time.Millisecond, MaxBackoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	relaytest.Eventually(t, 20*time.Second, "the refusal logged", func() bool {
		return strings.Contains(logs.String(), "refuses the bot token")
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ids, _ := gw.WaitIdentified(t.Context(), 1); len(ids) != 1 {
		t.Fatalf("%d IDENTIFYs: a refused token is not retried at once", len(ids))
	}
	relaytest.AssertNoSecret(t, "logs", logs.String(), rest.Token())
}

// TestGatewayNeedsBotMode: a webhook sink has no gateway.
func TestGatewayNeedsBotMode(t *testing.T) {
	t.Parallel()
	rest := discordtest.NewServer(t)
	sink, err := discord.New(discord.Config{Name: "hook", WebhookURL: relay.Secret(rest.AddWebhook(rest.AddChannel(discordgo.ChannelTypeGuildText)))},
		relay.SinkDeps{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Gateway(discord.GatewayDeps{Inbox: nopInbox{}}); err == nil || !strings.Contains(err.Error(), "bot mode") {
		t.Fatalf("Gateway of a webhook sink: %v", err)
	}
}

// termOwner owns the sink for each term sent on terms, signalling ended
// when one ends.
type termOwner struct {
	terms <-chan context.Context
	ended chan<- struct{}
}

func (o termOwner) Own(ctx context.Context, _ string) (context.Context, context.CancelFunc, error) {
	select {
	case term := <-o.terms:
		held, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(term, func() { cancel(); o.ended <- struct{}{} })
		return held, func() { stop(); cancel() }, nil
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

type nopInbox struct{}

func (nopInbox) Click(context.Context, relay.Click) (relay.Clicked, error) {
	return relay.Clicked{}, errors.New("unused")
}

func (nopInbox) Accept(context.Context, relay.ThreadMessage) (relay.Intake, error) {
	return relay.Intake{}, errors.New("unused")
}

// TestGatewayLookupsBounded: the gateway sees every message of the guild,
// and a message's mentions may name anything. Names are looked up only
// for a message that goes to the visitor, and at most maxLookups of them:
// a member writing a hundred unknown mentions anywhere cannot make the bot
// spend its REST rate limit (which its deliveries share) nor hold up the
// messages queued behind theirs.
func TestGatewayLookupsBounded(t *testing.T) {
	t.Parallel()
	w := newTwoWay(t, twoWayOptions{})
	ctx := within(t)
	other := w.rest.AddChannel(discordgo.ChannelTypeGuildText)
	var flood strings.Builder
	for i := range 100 {
		fmt.Fprintf(&flood, "<#13100000000009%05d> <@13100000000008%05d> <@&13100000000007%05d> ", i, i, i)
	}
	lookups := func() int {
		n := 0
		for _, r := range w.rest.Requests() {
			if r.Method == http.MethodGet && (strings.Contains(r.Path, "/members/") || strings.HasSuffix(r.Path, "/roles") ||
				strings.HasPrefix(r.Path, "/channels/13100000000009")) {
				n++
			}
		}
		return n
	}
	// A note in the relay's thread and a message elsewhere: not for the
	// visitor, so nothing is looked up.
	for i, ch := range []string{w.thread, other} {
		msg := discordtest.MessageCreate(fmt.Sprintf("131000000000000090%d", i), ch, discordtest.GuildID, dana, "", flood.String())
		if _, err := w.gw.Dispatch(ctx, "MESSAGE_CREATE", msg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.gw.Say(ctx, w.thread, dana, "", "reply: "+flood.String()); err != nil {
		t.Fatal(err)
	}
	r := w.next(t)
	if got := lookups(); got > discord.MaxLookups {
		t.Fatalf("%d lookups for three messages of 300 unknown mentions each, want at most %d (for the reply alone)", got, discord.MaxLookups)
	}
	if !strings.Contains(r.Text, "#") || !strings.Contains(r.Text, "@") {
		t.Errorf("the reply's mentions are gone: %q", r.Text)
	}
}
