package slack_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/chatdata"
	"github.com/chatrelay/chatrelay/sinks/chatdata/chatdatatest"
	"github.com/chatrelay/chatrelay/sinks/slack"
	"github.com/chatrelay/chatrelay/sinks/slack/slacktest"
)

// The two-way rig runs a Slack sink's way in and out with the real parts:
// the fake Slack (Web API; Socket Mode when asked), the fake Chat Data
// API, the embedded store in a temporary directory, a dispatcher for the
// Slack sink and one for the chatdata destination (with the follow-ups),
// the inbox, and the Slack sources (POST /slack/events on an httptest
// server, or a Socket Mode connection). Tests sign and send what Slack
// would, and wait for what the fakes were answered.

const (
	mention   = "<!subteam^S0123ABC>"
	dana, sam = "U0DANA", "U0SAM"
)

// answered is one answer a fake gave the relay: the method (Slack) or
// path (Chat Data), and its status.
type answered struct {
	method string
	status int
}

// watch is a transport that reports every answer the relay received
// (and, when sent is set, every request as it leaves).
type watch struct {
	answers chan answered
	sent    func(*http.Request)
}

func (w watch) RoundTrip(r *http.Request) (*http.Response, error) {
	if w.sent != nil {
		w.sent(r)
	}
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil && w.answers != nil {
		w.answers <- answered{method: r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:], status: resp.StatusCode}
	}
	return resp, err
}

type rigOptions struct {
	socket      *slacktest.SocketMode // events over Socket Mode, not HTTP
	repageAfter time.Duration
	clock       *clockwork.FakeClock // the conversations' and the repager's; nil: real
	store       relay.Appender       // what the inbox stores into (nil: the store)
	// toChatData, when set, is told of each request to Chat Data as it
	// leaves (and the answers are not reported on apiIn).
	toChatData func(*http.Request)
	// apiKey, when set, is the key the relay sends Chat Data instead of
	// the fake's own (which it refuses: 401).
	apiKey string
	// maxAge is the dispatchers' retry.max_age (0: an hour).
	maxAge time.Duration
}

type rig struct {
	t       testing.TB
	slack   *slacktest.Server
	api     *chatdatatest.Server
	store   *bolt.Store
	sink    *slack.Sink
	conv    *relay.Conversations
	metrics *relay.Metrics
	logs    *relaytest.LogBuffer
	events  string // the URL of POST /slack/events
	slackIn chan answered
	apiIn   chan answered
}

func newRig(t testing.TB, o rigOptions) *rig {
	t.Helper()
	r := &rig{t: t, slackIn: make(chan answered, 256), apiIn: make(chan answered, 256)}
	var slackOpts []slacktest.Option
	if o.socket != nil {
		slackOpts = append(slackOpts, slacktest.WithSocketMode(o.socket))
	}
	r.slack = slacktest.NewServer(t, slackOpts...)
	r.slack.AddUser(slacktest.User{ID: dana, Name: "dana", RealName: "Dana Scully", DisplayName: "Dana", Image72: "https://avatars.example.com/dana_72.png"})
	r.slack.AddUser(slacktest.User{ID: sam, Name: "sam", RealName: "Sam Lee"})
	r.api = chatdatatest.NewServer(t)
	store, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.store = store
	r.metrics = relay.NewMetrics(prometheus.NewRegistry())
	logger, logs := relaytest.NewLogger()
	r.logs = logs
	var clock clockwork.Clock = clockwork.NewRealClock()
	if o.clock != nil {
		clock = o.clock
	}

	reply := &slack.ReplyConfig{ReplyConfig: relay.ReplyConfig{RepageAfter: o.repageAfter}, SigningSecret: signingSecret}
	if o.socket != nil {
		reply = &slack.ReplyConfig{ReplyConfig: relay.ReplyConfig{RepageAfter: o.repageAfter}, AppToken: relay.Secret(o.socket.AppToken)}
	}
	r.sink, err = slack.New(slack.Config{Name: sinkName, Token: relay.Secret(r.slack.Token), Channel: channel, APIURL: r.slack.APIURL(),
		Mention: mention, Reply: reply}, relay.SinkDeps{KV: store.KV(sinkName), Transport: watch{answers: r.slackIn}, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	apiWatch := watch{answers: r.apiIn}
	if o.toChatData != nil {
		apiWatch = watch{sent: o.toChatData}
	}
	key := r.api.Key
	if o.apiKey != "" {
		key = o.apiKey
	}
	maxAge := time.Hour
	if o.maxAge > 0 {
		maxAge = o.maxAge
	}
	cd, err := chatdata.New(chatdata.Config{APIKey: relay.Secret(key), APIURL: r.api.URL},
		relay.SinkDeps{Transport: apiWatch, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	r.conv, err = relay.NewConversations(store.KV(relay.ConversationsNamespace), clock)
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := r.sink.Replies()
	appender := o.store
	if appender == nil {
		appender = store
	}
	inbox, err := relay.NewInbox(relay.InboxConfig{
		Store: appender, Router: relay.NewRouter([]string{sinkName, chatdata.Name}, nil, relay.ReplyDestinations(chatdata.Name)),
		Threads: relay.StoreThreads{KV: store.KV}, Rules: map[string]relay.ReplyRule{sinkName: rc.Rule()},
		Metrics: r.metrics, Logger: logger, Conversations: r.conv,
	})
	if err != nil {
		t.Fatal(err)
	}
	followups, err := relay.NewFollowups(relay.FollowupsConfig{Store: store, Conversations: r.conv, Logger: logger,
		TwoWay: map[string]relay.ReplyConfig{sinkName: rc}, Destinations: []string{chatdata.Name}, ReplayCommand: "chatrelay dlq replay"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	run := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(ctx); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		})
	}
	for _, s := range []relay.Sink{r.sink, cd} {
		d, err := relay.NewDispatcher(relay.DispatcherConfig{Sink: s, Queue: store.Queue(s.Name()), PaceEvery: -1,
			Retry:   relay.RetryPolicy{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, MaxAge: maxAge},
			Metrics: r.metrics, Logger: logger, Outcomes: followups, Concurrency: 4})
		if err != nil {
			t.Fatal(err)
		}
		run(s.Name(), d.Run)
	}
	repager, err := relay.NewRepager(relay.RepagerConfig{Conversations: r.conv, Store: store, Clock: clock, Logger: logger,
		After: map[string]time.Duration{sinkName: o.repageAfter}, Poll: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	run("repager", repager.Run)
	sources, err := slack.Sources([]relay.Sink{r.sink}, relay.SourceDeps{Inbox: inbox, Logger: logger})
	if err != nil || len(sources) != 1 {
		t.Fatalf("sources %v, %v", sources, err)
	}
	if h := sources[0].Handlers()[slack.EventsPath]; h != nil {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		r.events = srv.URL + slack.EventsPath
	}
	run("source", sources[0].Run)
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if err := store.Close(); err != nil {
			t.Error(err)
		}
		relaytest.AssertNoSecret(t, "logs", logs.String(), r.slack.Token, key, signingSecret)
	})
	return r
}

// wait waits for the next answer on ch to method (others are skipped).
func (r *rig) wait(ch chan answered, method string) answered {
	r.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case a := <-ch:
			if a.method == method {
				return a
			}
		case <-timeout:
			r.t.Fatalf("no answer to %s within 30 s; the log:\n%s", method, r.logs.String())
		}
	}
}

// escalate mirrors an escalation of conversation conv into the channel
// and returns the message's ts: the conversation's thread.
func (r *rig) escalate(conv string) string {
	r.t.Helper()
	body, err := os.ReadFile(filepath.Join("testdata", "live-chat-escalation.json"))
	if err != nil {
		r.t.Fatal(err)
	}
	body = []byte(strings.Replace(string(body), "5b0c7c1e-2d2f-4a36-9d8e-0f7d2c1a9b11", conv, 1))
	ev := decode(r.t, body, relay.TopicEscalation, conv)
	ev.ID = uuid.Must(uuid.NewV7()).String()
	if _, err := r.store.Append(r.t.Context(), ev, []string{sinkName}); err != nil {
		r.t.Fatal(err)
	}
	if a := r.wait(r.slackIn, "chat.postMessage"); a.status != 200 {
		r.t.Fatalf("escalation posted: %+v", a)
	}
	msgs := r.slack.Messages()
	root := msgs[len(msgs)-1]
	// Recorded (the conversation's state) before the delivery is settled:
	// once the thread is known, so is the escalation.
	relaytest.Eventually(r.t, 10*time.Second, "the escalation recorded", func() bool {
		st, ok, err := r.conv.State(r.t.Context(), conv)
		return err == nil && ok && st.Escalation == ev.ID
	})
	return root.TS
}

// send POSTs body to /slack/events, signed with secret now (unless the
// header already says otherwise), and returns the status.
func (r *rig) send(body, contentType string, header http.Header) int {
	r.t.Helper()
	req, _ := http.NewRequestWithContext(r.t.Context(), http.MethodPost, r.events, strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	now := time.Now()
	req.Header.Set(slack.HeaderTimestamp, fmt.Sprint(now.Unix()))
	req.Header.Set(slack.HeaderSignature, slack.Sign(signingSecret, now, []byte(body)))
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// message is the Events API payload of a message in thread (ts ts, by
// user); extra fields are merged into the event.
func message(thread, ts, user, text string, extra map[string]any) string {
	ev := map[string]any{"type": "message", "channel": channel, "channel_type": "channel", "user": user, "text": text,
		"ts": ts, "event_ts": ts}
	if thread != "" {
		ev["thread_ts"] = thread
	}
	for k, v := range extra {
		ev[k] = v
	}
	b, _ := json.Marshal(map[string]any{"token": "unused", "team_id": "T0123ABCD", "api_app_id": "A0123ABCD",
		"type": "event_callback", "event_id": "Ev" + ts, "event_time": 1765000000, "event": ev})
	return string(b)
}

// click is the interactivity form of a button clicked by user on the
// message ts, whose blocks Slack sends along.
func (r *rig) click(action, user, ts, conv string) string {
	m, ok := r.slack.Message(channel, ts)
	if !ok {
		r.t.Fatalf("no message %s to click on", ts)
	}
	p, _ := json.Marshal(map[string]any{
		"type": "block_actions", "user": map[string]any{"id": user, "username": strings.ToLower(user), "name": strings.ToLower(user)},
		"api_app_id": "A0123ABCD", "container": map[string]any{"type": "message", "message_ts": ts, "channel_id": channel},
		"channel": map[string]any{"id": channel}, "message": map[string]any{"type": "message", "ts": ts, "text": m.Text, "blocks": m.Blocks},
		"actions": []map[string]any{{"type": "button", "action_id": action, "block_id": "chatrelay_status", "value": conv,
			"action_ts": "1765000010.000300"}},
	})
	return url.Values{"payload": {string(p)}}.Encode()
}

func (r *rig) replies(result string) float64 {
	return testutil.ToFloat64(r.metrics.AgentReplies.WithLabelValues(sinkName, result))
}

const form = "application/x-www-form-urlencoded"

// TestReplyFromTheThread: an agent answers in the escalation's thread
// with the prefix; Slack sends the event twice (its retry) and Chat Data
// answers the first attempt 500: the visitor gets the reply once, under
// the agent's Slack name and avatar, as plain text (mentions named, link
// readable), and the agent's message gets a ✅.
func TestReplyFromTheThread(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	conv := "conv-reply"
	thread := r.escalate(conv)
	r.api.Script(chatdatatest.Response{Status: 500, Error: "Internal error"})

	body := message(thread, "1765000000.000200", dana,
		"reply: Hi Sam, <@"+sam+"> from billing refunded it; see <https://example.com/refunds|our refund page> *today*.", nil)
	if code := r.send(body, "application/json", nil); code != 200 {
		t.Fatalf("event: %d", code)
	}
	if code := r.send(body, "application/json; charset=utf-8", http.Header{slack.HeaderRetryNum: {"1"}, slack.HeaderRetryReason: {"http_timeout"}}); code != 200 {
		t.Fatalf("Slack's retry: %d", code)
	}
	if a := r.wait(r.apiIn, "live-chat"); a.status != 500 {
		t.Fatalf("first attempt answered %d, want the scripted 500", a.status)
	}
	if a := r.wait(r.apiIn, "live-chat"); a.status != 200 {
		t.Fatalf("second attempt answered %d", a.status)
	}
	if a := r.wait(r.slackIn, "reactions.add"); a.status != 200 {
		t.Fatalf("reactions.add: %+v", a)
	}
	got := r.api.Messages(conv)
	if len(got) != 1 {
		t.Fatalf("the visitor got %d messages: %+v", len(got), got)
	}
	want := chatdatatest.Message{ChatbotID: "654aee418bc9a33b0e50d0ad", ConversationID: conv, Role: "human", Name: "Dana",
		Avatar: "https://avatars.example.com/dana_72.png",
		Text:   "Hi Sam, @Sam Lee from billing refunded it; see our refund page (https://example.com/refunds) today."}
	if got[0] != want {
		t.Fatalf("the visitor got\n%+v\nwant\n%+v", got[0], want)
	}
	if re := r.slack.Reactions(); len(re) != 1 || re[0] != (slacktest.Reaction{Channel: channel, TS: "1765000000.000200", Name: "white_check_mark"}) {
		t.Fatalf("reactions %+v", re)
	}
	for _, m := range r.slack.Messages() {
		if strings.Contains(m.Text, relay.NotDeliveredYet) {
			t.Errorf("a reply delivered at its second try was told held: %q", m.Text)
		}
	}
	if n := r.replies(relay.ReplyAccepted); n != 1 {
		t.Errorf("accepted %v", n)
	}
	if n := r.replies(relay.ReplyDuplicate); n != 1 {
		t.Errorf("duplicate %v", n)
	}
	if strings.Contains(r.logs.String(), "refunded it") {
		t.Error("the reply's text reached the log")
	}
}

// TestWhatIsNotAReply: notes, bot messages (the relay's own too), edits,
// deletions, messages in threads the relay did not make and at the top
// level are answered 200 and counted as ignored; a bad signature gets 401
// and is counted; an unsigned or stale request too; url_verification is
// answered. Chat Data gets nothing.
func TestWhatIsNotAReply(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	thread := r.escalate("conv-ignored")
	ignored := []string{
		message(thread, "1765000000.000301", dana, "checking with billing first", nil),
		message(thread, "1765000000.000302", "", "reply: I am a bot", map[string]any{"bot_id": "B0123", "subtype": "bot_message"}),
		message(thread, "1765000000.000303", "U0RELAY", "reply: the relay's own post", map[string]any{"bot_id": "B0FAKE"}),
		message(thread, "1765000000.000304", dana, "reply: edited", map[string]any{"subtype": "message_changed",
			"message": map[string]any{"ts": "1765000000.000201", "thread_ts": thread, "text": "reply: edited"}}),
		message(thread, "1765000000.000305", "", "", map[string]any{"subtype": "message_deleted"}),
		message("1765000999.000100", "1765000000.000306", dana, "reply: in someone else's thread", nil),
		message("", "1765000000.000307", dana, "reply: at the top level", nil),
		message(thread, "1765000000.000308", dana, "reply:   ", nil),
	}
	for i, body := range ignored {
		if code := r.send(body, "application/json", nil); code != 200 {
			t.Fatalf("ignored[%d]: %d, want 200", i, code)
		}
	}
	if n := r.replies(relay.ReplyIgnored); n != float64(len(ignored)) {
		t.Errorf("ignored %v, want %d", n, len(ignored))
	}
	good := message(thread, "1765000000.000309", dana, "reply: real", nil)
	stale := time.Now().Add(-10 * time.Minute)
	for name, h := range map[string]http.Header{
		"wrong secret": {slack.HeaderSignature: {slack.Sign("another-secret", time.Now(), []byte(good))}},
		"unsigned":     {slack.HeaderSignature: {""}},
		"stale":        {slack.HeaderTimestamp: {fmt.Sprint(stale.Unix())}, slack.HeaderSignature: {slack.Sign(signingSecret, stale, []byte(good))}},
	} {
		if code := r.send(good, "application/json", h); code != 401 {
			t.Errorf("%s: %d, want 401", name, code)
		}
	}
	if n := r.replies(relay.ReplyRejectedSignature); n != 3 {
		t.Errorf("rejected_signature %v, want 3", n)
	}
	if code := r.send(`{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}`,
		"application/json", nil); code != 200 {
		t.Errorf("url_verification: %d", code)
	}
	if n := r.replies(relay.ReplyAccepted); n != 0 {
		t.Fatalf("accepted %v", n)
	}
	rec, err := r.store.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range rec {
		if q.Sink == chatdata.Name && q.Depth != 0 {
			t.Fatalf("chatdata has %d pending", q.Depth)
		}
	}
	if n := len(r.api.Requests()); n != 0 {
		t.Fatalf("Chat Data got %d requests", n)
	}
	// A reply in a thread that is none of the relay's is ignored before
	// its author is looked up.
	for _, req := range r.slack.Requests() {
		if req.Method == "users.info" {
			t.Fatalf("users.info asked for a message that was ignored: %+v", req)
		}
	}
}

// TestQuickRepliesKeepTheirOrder: two replies written one right after the
// other reach the visitor in that order.
func TestQuickRepliesKeepTheirOrder(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	thread := r.escalate("conv-order")
	texts := []string{"first", "second", "third"}
	for i, text := range texts {
		if code := r.send(message(thread, fmt.Sprintf("1765000000.00040%d", i), dana, "reply: "+text, nil), "application/json", nil); code != 200 {
			t.Fatalf("%s: %d", text, code)
		}
	}
	for range texts {
		r.wait(r.apiIn, "live-chat")
	}
	got := r.api.Messages("conv-order")
	if len(got) != len(texts) {
		t.Fatalf("%d messages", len(got))
	}
	for i, m := range got {
		if m.Text != texts[i] {
			t.Fatalf("message %d is %q, want %q (order kept)", i, m.Text, texts[i])
		}
	}
}

// TestDeadLetteredReplyIsToldInTheThread: Chat Data refuses a reply for
// good (404: an unknown conversation); it is dead-lettered, and the thread
// says that it did not reach the visitor, why, and how to send it again.
func TestDeadLetteredReplyIsToldInTheThread(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	thread := r.escalate("conv-gone")
	r.api.Script(chatdatatest.Response{Status: 404, Error: "Conversation not found"})
	if code := r.send(message(thread, "1765000000.000500", dana, "reply: are you there?", nil), "application/json", nil); code != 200 {
		t.Fatal(code)
	}
	if a := r.wait(r.apiIn, "live-chat"); a.status != 404 {
		t.Fatalf("Chat Data answered %d", a.status)
	}
	if a := r.wait(r.slackIn, "chat.postMessage"); a.status != 200 {
		t.Fatalf("note: %+v", a)
	}
	var dead []relay.DeadLetter
	relaytest.Eventually(t, 10*time.Second, "the dead letter", func() bool {
		dead, _ = r.store.ListDead(t.Context(), chatdata.Name, 0)
		return len(dead) == 1
	})
	msgs := r.slack.Messages()
	note := msgs[len(msgs)-1]
	if note.ThreadTS != thread || note.Broadcast {
		t.Fatalf("note posted in %q (broadcast %v), want the thread %s", note.ThreadTS, note.Broadcast, thread)
	}
	for _, want := range []string{relay.NotDelivered, "HTTP 404", "Conversation not found", "chatrelay dlq replay " + dead[0].ID} {
		if !strings.Contains(note.Text, want) {
			t.Errorf("the note %q does not say %q", note.Text, want)
		}
	}
	if len(r.slack.Reactions()) != 0 {
		t.Error("a dead-lettered reply got a reaction")
	}
}

// TestReplyDeadLetteredOn401: Chat Data refuses the relay's key (401, a
// bad or revoked key): the destination is broken, so the reply is kept and
// retried (the key may be fixed) until retry.max_age, the thread told once
// that it is held, then dead-lettered; the thread says it did not reach
// the visitor, that the key was refused,
// and how to replay it, and names no secret.
func TestReplyDeadLetteredOn401(t *testing.T) {
	t.Parallel()
	const badKey = "sk-revoked-0123456789abcdef"
	r := newRig(t, rigOptions{apiKey: badKey, maxAge: 200 * time.Millisecond})
	thread := r.escalate("conv-bad-key")
	if code := r.send(message(thread, "1765000000.000550", dana, "reply: your refund is on its way", nil), "application/json", nil); code != 200 {
		t.Fatal(code)
	}
	if a := r.wait(r.apiIn, "live-chat"); a.status != 401 {
		t.Fatalf("Chat Data answered %d, want 401", a.status)
	}
	var dead []relay.DeadLetter
	relaytest.Eventually(t, 10*time.Second, "the dead letter", func() bool {
		dead, _ = r.store.ListDead(t.Context(), chatdata.Name, 0)
		return len(dead) == 1
	})
	if !strings.Contains(dead[0].Reason, "retry.max_age") || !strings.Contains(dead[0].Reason, "401") {
		t.Errorf("dead letter's reason %q, want retry.max_age after a 401", dead[0].Reason)
	}
	// First held (told once, at the first 401), then dead-lettered.
	var notes []slacktest.Message
	relaytest.Eventually(t, 10*time.Second, "the dead-letter note", func() bool {
		notes = nil
		for _, m := range r.slack.Messages() {
			if m.ThreadTS == thread && (strings.Contains(m.Text, relay.NotDeliveredYet) || strings.Contains(m.Text, relay.NotDelivered)) {
				notes = append(notes, m)
			}
		}
		return len(notes) > 0 && strings.Contains(notes[len(notes)-1].Text, relay.NotDelivered)
	})
	if len(notes) != 2 || !strings.Contains(notes[0].Text, relay.NotDeliveredYet+": Chat Data refuses chatrelay's API key (HTTP 401)") {
		t.Fatalf("the thread's notes %+v, want one held note, then the dead-letter note", notes)
	}
	note := notes[1]
	if note.ThreadTS != thread || note.Broadcast {
		t.Fatalf("note posted in %q (broadcast %v), want the thread %s", note.ThreadTS, note.Broadcast, thread)
	}
	for _, want := range []string{relay.NotDelivered, "HTTP 401", "chatrelay dlq replay " + dead[0].ID} {
		if !strings.Contains(note.Text, want) {
			t.Errorf("the note %q does not say %q", note.Text, want)
		}
	}
	t.Logf("the thread note: %s", note.Text)
	relaytest.AssertNoSecret(t, "the thread note", note.Text+string(note.Blocks), badKey, r.api.Key)
	if len(r.api.Messages("conv-bad-key")) != 0 || len(r.slack.Reactions()) != 0 {
		t.Error("a refused reply reached the visitor or got a ✅")
	}
}

// TestHeldReplyIsToldOnce: Chat Data refuses the relay's key (401) six
// times, then takes it (the key fixed): the reply is kept and retried, the
// thread says once, under the agent's message, that it is not delivered
// yet and why, without a secret; then the ✅ comes, and no dead-letter
// note.
func TestHeldReplyIsToldOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	thread := r.escalate("conv-held")
	const refusals = 6
	for range refusals {
		r.api.Script(chatdatatest.Response{Status: 401, Error: "Unauthorized: invalid API key"})
	}
	if code := r.send(message(thread, "1765000000.000560", dana, "reply: your refund is on its way", nil), "application/json", nil); code != 200 {
		t.Fatal(code)
	}
	if a := r.wait(r.slackIn, "reactions.add"); a.status != 200 {
		t.Fatalf("reactions.add: %+v", a)
	}
	// What the reply's delivery queued was posted before its ✅ (the
	// conversation's order): the thread is complete.
	var held []slacktest.Message
	for _, m := range r.slack.Messages() {
		if m.ThreadTS == thread && strings.Contains(m.Text, relay.NotDeliveredYet) {
			held = append(held, m)
		}
		if strings.Contains(m.Text, relay.NotDelivered) {
			t.Errorf("a dead-letter note for a reply that was delivered: %q", m.Text)
		}
	}
	if len(held) != 1 {
		t.Fatalf("%d held notes in the thread, want 1 despite %d refusals: %+v", len(held), refusals, held)
	}
	want := ":hourglass_flowing_sand: Not delivered yet: Chat Data refuses chatrelay's API key (HTTP 401). It is kept and sent " +
		"once the key is fixed; you will see ✅ when the visitor has it. An operator sees why in `chatrelay status`."
	if held[0].Text != want || held[0].Broadcast {
		t.Errorf("the note says %q (broadcast %v), want %q in the thread", held[0].Text, held[0].Broadcast, want)
	}
	relaytest.AssertNoSecret(t, "the held note", held[0].Text+string(held[0].Blocks), r.api.Key)
	if n := len(r.api.Requests()); n != refusals+1 {
		t.Errorf("Chat Data got %d requests, want %d", n, refusals+1)
	}
	if got := r.api.Messages("conv-held"); len(got) != 1 || got[0].Text != "your refund is on its way" {
		t.Errorf("the visitor got %+v", got)
	}
	if re := r.slack.Reactions(); len(re) != 1 || re[0].TS != "1765000000.000560" {
		t.Errorf("reactions %+v", re)
	}
}

// TestClaimAndResolveRace: two agents click Claim at once: one has the
// conversation, and the escalation message shows it (only Resolve left);
// both then click Resolve at once: one resolves it, and the message shows
// who (no button left). The state is in the store.
func TestClaimAndResolveRace(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	conv := "conv-claim"
	root := r.escalate(conv)
	m, _ := r.slack.Message(channel, root)
	if !strings.Contains(string(m.Blocks), `"action_id":"chatrelay_claim"`) || !strings.Contains(string(m.Blocks), `"action_id":"chatrelay_resolve"`) {
		t.Fatalf("the escalation has no Claim and Resolve buttons: %s", m.Blocks)
	}
	race := func(action string) {
		t.Helper()
		bodies := []string{r.click(action, dana, root, conv), r.click(action, sam, root, conv)}
		var wg sync.WaitGroup
		for _, b := range bodies {
			wg.Go(func() {
				if code := r.send(b, form, nil); code != 200 {
					t.Errorf("%s click: %d", action, code)
				}
			})
		}
		wg.Wait()
	}
	race("chatrelay_claim")
	r.wait(r.slackIn, "chat.update")
	st, _, err := r.conv.State(t.Context(), conv)
	if err != nil || !st.Claimed() {
		t.Fatalf("after the claims: %+v, %v", st, err)
	}
	claimer := st.ClaimedBy
	if claimer != "Dana" && claimer != "Sam Lee" {
		t.Fatalf("claimed by %q", claimer)
	}
	relaytest.Eventually(t, 10*time.Second, "the message to show the claim", func() bool {
		m, _ := r.slack.Message(channel, root)
		return strings.Contains(string(m.Blocks), "🙋 Claimed by "+claimer)
	})
	m, _ = r.slack.Message(channel, root)
	if strings.Contains(string(m.Blocks), "chatrelay_claim") || !strings.Contains(string(m.Blocks), "chatrelay_resolve") ||
		!strings.Contains(string(m.Blocks), relay.EscalationLine) {
		t.Fatalf("claimed message: Claim gone, Resolve kept, the escalation kept; got %s", m.Blocks)
	}

	race("chatrelay_resolve")
	relaytest.Eventually(t, 10*time.Second, "the message to show the resolution", func() bool {
		m, _ := r.slack.Message(channel, root)
		return strings.Contains(string(m.Blocks), "✅ Resolved by ")
	})
	st, _, _ = r.conv.State(t.Context(), conv)
	m, _ = r.slack.Message(channel, root)
	if !strings.Contains(string(m.Blocks), "✅ Resolved by "+st.ResolvedBy) || strings.Contains(string(m.Blocks), `"type":"actions"`) {
		t.Fatalf("resolved message: %s (state %+v)", m.Blocks, st)
	}
	// A late click of Claim changes nothing and leaves the message as it is.
	if code := r.send(r.click("chatrelay_claim", dana, root, conv), form, nil); code != 200 {
		t.Fatal(code)
	}
	if after, _, _ := r.conv.State(t.Context(), conv); after != st {
		t.Fatalf("a late claim changed the state: %+v", after)
	}
}

// TestUnclaimedEscalationIsPostedAgain: nobody claims the escalation
// within repage_after (a fake clock): it is posted again in its thread,
// shown in the channel, with the mention and the buttons; a claimed one
// is not.
func TestUnclaimedEscalationIsPostedAgain(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClock()
	r := newRig(t, rigOptions{repageAfter: 10 * time.Minute, clock: clock})
	root := r.escalate("conv-waiting")
	claimedRoot := r.escalate("conv-taken")
	if code := r.send(r.click("chatrelay_claim", sam, claimedRoot, "conv-taken"), form, nil); code != 200 {
		t.Fatal(code)
	}
	r.wait(r.slackIn, "chat.update")
	clock.Advance(10 * time.Minute)
	if a := r.wait(r.slackIn, "chat.postMessage"); a.status != 200 {
		t.Fatalf("re-page: %+v", a)
	}
	msgs := r.slack.Messages()
	again := msgs[len(msgs)-1]
	if again.ThreadTS != root || !again.Broadcast {
		t.Fatalf("re-page in %q (broadcast %v), want the thread %s shown in the channel", again.ThreadTS, again.Broadcast, root)
	}
	for _, want := range []string{mention, "Still unclaimed after 10m", "chatrelay_claim", "conv-waiting"} {
		if !strings.Contains(again.Text+string(again.Blocks), want) {
			t.Errorf("the re-page lacks %q: %s %s", want, again.Text, again.Blocks)
		}
	}
	relaytest.Eventually(t, 10*time.Second, "the conversation marked re-paged", func() bool {
		st, _, err := r.conv.State(t.Context(), "conv-waiting")
		return err == nil && st.RepagedAt.Equal(clock.Now())
	})
	for _, m := range r.slack.Messages() {
		if m.ThreadTS == claimedRoot && strings.Contains(m.Text, "Still unclaimed") {
			t.Fatal("a claimed escalation was posted again")
		}
	}
}

// failingAppender fails the inbox's first n appends, as a store that
// cannot write would, and says so on failed.
type failingAppender struct {
	relay.Appender
	mu     sync.Mutex
	n      int
	failed chan struct{}
}

func (f *failingAppender) Append(ctx context.Context, ev *relay.Event, sinks []string) (relay.Accepted, error) {
	f.mu.Lock()
	fail := f.n > 0
	f.n--
	f.mu.Unlock()
	if fail {
		f.failed <- struct{}{}
		return relay.Accepted{}, relay.ErrUnavailable
	}
	return f.Appender.Append(ctx, ev, sinks)
}

// TestSocketMode: over Socket Mode an envelope is acknowledged only once
// what it carries is stored: one the store could not take is left
// unacknowledged, Slack sends it again, and the visitor gets the reply
// once; a click comes the same way.
func TestSocketMode(t *testing.T) {
	t.Parallel()
	sm := slacktest.NewSocketMode(t, slacktest.WithPingEvery(50*time.Millisecond))
	appender := &failingAppender{n: 1, failed: make(chan struct{}, 1)}
	r := newRig(t, rigOptions{socket: sm, store: appender})
	appender.Appender = r.store
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conv := "conv-socket"
	thread := r.escalate(conv)
	if err := sm.WaitConnected(ctx, 1); err != nil {
		t.Fatal(err)
	}
	first, err := sm.SendEvent(ctx, json.RawMessage(message(thread, "1765000000.000700", dana, "reply: over the socket", nil)))
	if err != nil {
		t.Fatal(err)
	}
	<-appender.failed
	// A note, taken (ignored) and acknowledged after the first was
	// handled: the envelopes are handled one at a time, in order.
	note, err := sm.SendEvent(ctx, json.RawMessage(message(thread, "1765000000.000701", dana, "internal note", nil)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sm.WaitAck(ctx, note.EnvelopeID); err != nil {
		t.Fatal(err)
	}
	if u := sm.Unacked(); len(u) != 1 || u[0].EnvelopeID != first.EnvelopeID {
		t.Fatalf("unacknowledged %+v, want the envelope the store could not take", u)
	}
	retry, err := sm.Retry(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sm.WaitAck(ctx, retry.EnvelopeID); err != nil {
		t.Fatal(err)
	}
	if a := r.wait(r.apiIn, "live-chat"); a.status != 200 {
		t.Fatalf("Chat Data answered %d", a.status)
	}
	if got := r.api.Messages(conv); len(got) != 1 || got[0].Text != "over the socket" || got[0].Name != "Dana" {
		t.Fatalf("the visitor got %+v", got)
	}
	// Slack's retry of an envelope already taken: acknowledged, taken once.
	again, err := sm.Retry(ctx, retry)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sm.WaitAck(ctx, again.EnvelopeID); err != nil {
		t.Fatal(err)
	}
	if n := r.replies(relay.ReplyDuplicate); n != 1 {
		t.Fatalf("duplicates %v, want 1", n)
	}

	p, _ := url.ParseQuery(r.click("chatrelay_claim", sam, thread, conv))
	click, err := sm.SendInteractive(ctx, json.RawMessage(p.Get("payload")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sm.WaitAck(ctx, click.EnvelopeID); err != nil {
		t.Fatal(err)
	}
	r.wait(r.slackIn, "chat.update")
	if m, _ := r.slack.Message(channel, thread); !strings.Contains(string(m.Blocks), "🙋 Claimed by Sam Lee") {
		t.Fatalf("after the click: %s", m.Blocks)
	}
	if len(r.api.Messages(conv)) != 1 {
		t.Fatal("the visitor got the reply twice")
	}
}

// formDoc is a Web API request's form as a JSON document for a golden
// file: the token left out, blocks decoded.
func formDoc(t *testing.T, body []byte) []byte {
	t.Helper()
	form, err := url.ParseQuery(string(body))
	if err != nil {
		t.Fatal(err)
	}
	doc := map[string]any{}
	for k, v := range form {
		switch k {
		case "token":
		case "blocks":
			var blocks any
			if err := json.Unmarshal([]byte(v[0]), &blocks); err != nil {
				t.Fatal(err)
			}
			doc[k] = blocks
		default:
			doc[k] = v[0]
		}
	}
	b, _ := json.Marshal(doc)
	return b
}

// TestGoldenTwoWay: what a two-way sink sends Slack: the escalation with
// its buttons, and each follow-up (the reaction, the note of a reply held
// because Chat Data refuses the key, the note of a reply that did not
// reach the visitor, the status after a claim and a resolution,
// the re-page).
func TestGoldenTwoWay(t *testing.T) {
	t.Parallel()
	srv := slacktest.NewServer(t)
	sink, err := slack.New(slack.Config{Name: sinkName, Token: relay.Secret(srv.Token), Channel: channel, APIURL: srv.APIURL(),
		Mention: mention, Reply: &slack.ReplyConfig{SigningSecret: signingSecret}}, relay.SinkDeps{UserAgent: "chatrelay/test"})
	if err != nil {
		t.Fatal(err)
	}
	esc := event(t, "live-chat-escalation.json", relay.TopicEscalation)
	conv := esc.ConversationID
	reply := relay.Reply{Text: "Hi", AgentID: dana, AgentName: "Dana", Sink: sinkName, Platform: "slack", Channel: channel,
		Thread: "1700000000.000001", MessageID: "1765000000.000200"}
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	claimed := relay.ConversationState{Escalation: esc.ID, ClaimedBy: "Dana <Support> & co", ClaimedByID: dana, ClaimedAt: at}
	resolved := claimed
	resolved.ResolvedBy, resolved.ResolvedByID, resolved.ResolvedAt = "Sam Lee", sam, at.Add(time.Hour)
	var escBlocks json.RawMessage
	followup := func(fu relay.Followup) *relay.Event {
		fu.Sink, fu.Key = sinkName, fu.Kind
		ev, err := relay.NewFollowupEvent(conv, esc.ChatbotID, fu)
		if err != nil {
			t.Fatal(err)
		}
		ev.ID = "01900000-0000-7000-8000-00000000f011"
		return ev
	}
	steps := []struct {
		name   string
		ev     func() *relay.Event
		method string
	}{
		{"two-way-escalation", func() *relay.Event { return esc }, "chat.postMessage"},
		{"followup-reaction", func() *relay.Event { return followup(relay.Followup{Kind: relay.FollowupDelivered, Reply: &reply}) }, "reactions.add"},
		{"followup-held", func() *relay.Event {
			return followup(relay.Followup{Kind: relay.FollowupHeld, Reply: &reply, Reason: "Chat Data refuses chatrelay's API key (HTTP 401)",
				Until: "once the key is fixed", Status: "chatrelay --config /etc/chatrelay.yaml status"})
		}, "chat.postMessage"},
		{"followup-note", func() *relay.Event {
			return followup(relay.Followup{Kind: relay.FollowupDead, Reply: &reply,
				Reason: "chatdata: live-chat: HTTP 404: Conversation not found <b>", Replay: "chatrelay dlq replay e1.chatdata"})
		}, "chat.postMessage"},
		{"followup-claimed", func() *relay.Event {
			return followup(relay.Followup{Kind: relay.FollowupStatus, State: &claimed, Channel: channel, MessageID: "1700000000.000001", Message: escBlocks})
		}, "chat.update"},
		{"followup-resolved", func() *relay.Event {
			m, _ := srv.Message(channel, "1700000000.000001")
			msg, _ := json.Marshal(map[string]any{"text": m.Text, "blocks": m.Blocks})
			return followup(relay.Followup{Kind: relay.FollowupStatus, State: &resolved, Channel: channel, MessageID: "1700000000.000001", Message: msg})
		}, "chat.update"},
		{"followup-repage", func() *relay.Event {
			return followup(relay.Followup{Kind: relay.FollowupRepage, State: &relay.ConversationState{Escalation: esc.ID},
				Escalation: esc.ID, Waited: 10 * time.Minute})
		}, "chat.postMessage"},
	}
	for _, st := range steps {
		skip := len(srv.Requests())
		if err := sink.Send(t.Context(), st.ev()); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		reqs := srv.Requests()[skip:]
		if len(reqs) != 1 || reqs[0].Method != st.method || reqs[0].Error != "" {
			t.Fatalf("%s: requests %+v, want one %s", st.name, reqs, st.method)
		}
		if st.name == "two-way-escalation" {
			escBlocks, _ = json.Marshal(map[string]any{"text": reqs[0].Text, "blocks": reqs[0].Blocks})
		}
		doc := formDoc(t, reqs[0].Body)
		assertMentions(t, [][]byte{doc}, mention)
		compareGolden(t, st.name, canonical(t, [][]byte{doc}))
	}
}

// TestProbeScopes: check-config --probe reads the bot token's scopes
// (auth.test's X-OAuth-Scopes) and names those a two-way sink lacks; a
// Socket Mode sink's app-level token is tried with apps.connections.open.
func TestProbeScopes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		scopes  []string
		channel string
		twoWay  bool
		missing []string // "" entries: passes
	}{
		{"two-way, every scope", slacktest.ReplyScopes, channel, true, nil},
		{"mirror only needs chat:write", []string{"chat:write"}, channel, false, nil},
		{"mirror without chat:write", []string{"users:read"}, channel, false, []string{"chat:write"}},
		{"two-way lacks reactions and history", []string{"chat:write", "users:read"}, channel, true,
			[]string{"reactions:write", "channels:history (public channel) or groups:history (private channel)"}},
		{"private channel needs groups:history", []string{"chat:write", "reactions:write", "users:read", "channels:history"}, "G0123ABCD", true,
			[]string{"groups:history"}},
		{"public channel, private history only", []string{"chat:write", "reactions:write", "users:read", "groups:history"}, channel, true, nil},
		{"no header (a proxy): not judged", nil, channel, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := slacktest.NewServer(t, slacktest.WithScopes(tc.scopes...))
			cfg := slack.Config{Name: sinkName, Token: relay.Secret(srv.Token), Channel: tc.channel, APIURL: srv.APIURL()}
			if tc.twoWay {
				cfg.Reply = &slack.ReplyConfig{SigningSecret: signingSecret}
			}
			s, err := slack.New(cfg, relay.SinkDeps{})
			if err != nil {
				t.Fatal(err)
			}
			err = s.Probe(t.Context())
			if len(tc.missing) == 0 {
				if err != nil {
					t.Fatalf("probe: %v", err)
				}
				return
			}
			if class, _ := relay.Classify(err); class != relay.ClassBroken {
				t.Fatalf("probe: %v, want a broken destination", err)
			}
			for _, m := range tc.missing {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("%v does not name %s", err, m)
				}
			}
			relaytest.AssertNoSecret(t, "error", err.Error(), srv.Token)
		})
	}
	t.Run("app token", func(t *testing.T) {
		t.Parallel()
		sm := slacktest.NewSocketMode(t)
		srv := slacktest.NewServer(t, slacktest.WithSocketMode(sm))
		for token, ok := range map[string]bool{sm.AppToken: true, "xapp-1-A0FAKE-revoked": false} {
			s, err := slack.New(slack.Config{Name: sinkName, Token: relay.Secret(srv.Token), Channel: channel, APIURL: srv.APIURL(),
				Reply: &slack.ReplyConfig{AppToken: relay.Secret(token)}}, relay.SinkDeps{})
			if err != nil {
				t.Fatal(err)
			}
			err = s.Probe(t.Context())
			if (err == nil) != ok || (err != nil && (!strings.Contains(err.Error(), "reply.app_token") || strings.Contains(err.Error(), token))) {
				t.Errorf("app token %v: probe %v", ok, err)
			}
		}
		if sm.Connections() != 0 {
			t.Error("the probe opened a connection")
		}
	})
}

// TestAgentsLookedUpOnce: users.info is asked once per agent, however
// many replies the agent writes (within the hour), and not at all for a
// note.
func TestAgentsLookedUpOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	thread := r.escalate("conv-people")
	for i, text := range []string{"reply: one", "reply: two <@" + dana + ">", "a note about <@" + sam + ">"} {
		if code := r.send(message(thread, fmt.Sprintf("1765000000.00080%d", i), dana, text, nil), "application/json", nil); code != 200 {
			t.Fatal(code)
		}
	}
	lookups := 0
	for _, req := range r.slack.Requests() {
		if req.Method == "users.info" {
			lookups++
		}
	}
	if lookups != 1 {
		t.Fatalf("users.info asked %d times, want once", lookups)
	}
}

// TestReplyInAnotherChannelIsIgnored: a thread is the relay's only in the
// channel the relay posted it to. A message signed by the app but written
// in another channel the bot is in (a Slack Connect channel, another
// team's), whose thread_ts is the relay's thread's, is not a reply: it
// never reaches the visitor and gets no ✅ in that other channel.
func TestReplyInAnotherChannelIsIgnored(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{})
	thread := r.escalate("conv-elsewhere")
	body := message(thread, "1765000000.000401", dana, "reply: from a channel the relay does not post to",
		map[string]any{"channel": "C0OTHER0001"})
	if code := r.send(body, "application/json", nil); code != 200 {
		t.Fatalf("status %d, want 200 (answered as received)", code)
	}
	if n := r.replies(relay.ReplyAccepted); n != 0 {
		t.Fatalf("accepted %v, want 0: a message in another channel went to the visitor", n)
	}
	if n := r.replies(relay.ReplyIgnored); n != 1 {
		t.Errorf("ignored %v, want 1", n)
	}
	rec, err := r.store.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range rec {
		if q.Sink == chatdata.Name && q.Depth != 0 {
			t.Fatalf("chatdata has %d pending", q.Depth)
		}
	}
}
