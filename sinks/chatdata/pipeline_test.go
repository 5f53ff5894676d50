package chatdata_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/chatdata"
	"github.com/chatrelay/chatrelay/sinks/chatdata/chatdatatest"
)

// answered is a transport that reports the status of every answer the
// sink received, in order.
type answered struct {
	statuses chan int
}

func (a answered) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil {
		a.statuses <- resp.StatusCode
	}
	return resp, err
}

type threads map[string]relay.ThreadConversation

func (x threads) ThreadConversation(_ context.Context, sink, thread string) (relay.ThreadConversation, bool, error) {
	c, ok := x[sink+"/"+thread]
	return c, ok, nil
}

// TestRepliesReachTheVisitorInOrder runs the way of an agent's answer from
// the inbox to Chat Data through the real store and dispatcher: two quick
// replies of one conversation arrive in the order they were written, once
// each, although Chat Data answered the first attempt 500 and the platform
// sent the first message twice.
func TestRepliesReachTheVisitorInOrder(t *testing.T) {
	t.Parallel()
	api := chatdatatest.NewServer(t)
	api.Script(chatdatatest.Response{Status: 500, Error: "Internal error"})
	statuses := make(chan int, 16)

	store, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	clock := clockwork.NewRealClock()
	logger, logs := relaytest.NewLogger()
	metrics := relay.NewMetrics(prometheus.NewRegistry())
	sink, err := chatdata.New(chatdata.Config{APIKey: relay.Secret(api.Key), APIURL: api.URL},
		relay.SinkDeps{Logger: logger, Clock: clock, Transport: answered{statuses}})
	if err != nil {
		t.Fatal(err)
	}
	router := relay.NewRouter([]string{"support-slack", chatdata.Name}, nil, relay.ReplyDestinations(chatdata.Name))
	accepting := relay.NewAccepting()
	inbox, err := relay.NewInbox(relay.InboxConfig{
		Store: store, Router: router, Metrics: metrics, Logger: logger, Clock: clock, Accepting: accepting,
		Threads: threads{"support-slack/1765000000.000100": {ConversationID: conv, ChatbotID: bot}},
		Rules:   map[string]relay.ReplyRule{"support-slack": {}},
	})
	if err != nil {
		t.Fatal(err)
	}
	d, err := relay.NewDispatcher(relay.DispatcherConfig{
		Sink: sink, Queue: store.Queue(chatdata.Name),
		// Short waits, so that the retry comes soon; the test waits for
		// what was answered, never for a time.
		Retry:       relay.RetryPolicy{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, MaxAge: time.Hour},
		Concurrency: 4, Metrics: metrics, Logger: logger, Clock: clock, Accepting: accepting, Stats: store,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	msg := func(id, text string) relay.ThreadMessage {
		return relay.ThreadMessage{Sink: "support-slack", Platform: "slack", Channel: "C0123456789",
			Thread: "1765000000.000100", MessageID: id, AgentID: "U0123AGENT", AgentName: "Alex", Text: text}
	}
	for _, m := range []relay.ThreadMessage{
		msg("1765000000.000200", "reply: first"),
		msg("1765000000.000200", "reply: first"), // Slack's retry (X-Slack-Retry-Num: 1)
		msg("1765000000.000300", "reply: second"),
	} {
		if _, err := inbox.Accept(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}

	var got []int
	for len(got) < 3 {
		select {
		case s := <-statuses:
			got = append(got, s)
		case <-time.After(30 * time.Second):
			t.Fatalf("Chat Data answered %v; want three answers (500, then 200 twice)", got)
		}
	}
	if !slices.Equal(got, []int{500, 200, 200}) {
		t.Fatalf("answers %v, want [500 200 200]", got)
	}
	var texts []string
	for _, m := range api.Messages(conv) {
		texts = append(texts, m.Text)
	}
	if !slices.Equal(texts, []string{"first", "second"}) {
		t.Fatalf("the visitor sees %q, want [first second]", texts)
	}
	if n := testutil.ToFloat64(metrics.AgentReplies.WithLabelValues("support-slack", relay.ReplyDuplicate)); n != 1 {
		t.Fatalf("duplicates counted %v, want 1", n)
	}
	relaytest.AssertNoSecret(t, "log", logs.String(), api.Key)
}
