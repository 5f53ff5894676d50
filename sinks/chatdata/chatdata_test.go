package chatdata_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/chatdata"
	"github.com/chatrelay/chatrelay/sinks/chatdata/chatdatatest"
)

const (
	conv = "5b1f0c36-3f4e-4a9b-9d0e-2f6c8a1b7e10"
	bot  = "654aee418bc9a33b0e50d0ad"
)

// replyEvent is the agent reply of PROTOCOLS.md's sample live-chat request,
// as the Inbox stores it.
func replyEvent(t testing.TB, text string) *relay.Event {
	t.Helper()
	ev, err := relay.NewReplyEvent(conv, bot, relay.Reply{
		Text: text, AgentID: "U0123AGENT", AgentName: "Alex", AgentAvatar: "https://avatars.slack-edge.com/alex_72.png",
		Sink: "support-slack", Platform: "slack", Channel: "C0123456789", Thread: "1765000000.000100", MessageID: "1765000000.000200",
	})
	if err != nil {
		t.Fatal(err)
	}
	ev.ID, ev.ReceivedAt = "01900000-0000-7000-8000-0000000000aa", time.Unix(1_765_000_000, 0).UTC()
	return ev
}

const sampleText = "Hi Sam, I'm Alex from billing. I've refunded the renewal; you'll see it in 3-5 days."

func newSink(t *testing.T, base, key string, deps relay.SinkDeps) *chatdata.Sink {
	t.Helper()
	s, err := chatdata.New(chatdata.Config{APIKey: relay.Secret(key), APIURL: base}, deps)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	const key = "sk-0123456789abcdef0123456789abcdef"
	relaytest.Conformance(t, relaytest.Target{
		Event:   replyEvent(t, sampleText),
		Policy:  relay.HTTPPolicy{Broken: []int{http.StatusUnauthorized, http.StatusForbidden}},
		Secrets: []string{key},
		// Chat Data's error answer, echoing the key as a careless API
		// might: it must not reach an error or a log.
		ErrorBody: func(status int) (string, string) {
			return "application/json", `{"status":"error","message":"request with Bearer ` + key + ` failed"}`
		},
		SuccessBody: func() (string, string) { return "application/json", `{"status":"success"}` },
		New: func(t *testing.T, base string, deps relay.SinkDeps) relay.Sink {
			return newSink(t, base, key, deps)
		},
	})
}

// TestSendsTheDocumentedRequest: the body is the live-chat request of
// PROTOCOLS.md §1.5 (testdata/live-chat-request.json, from
// ../shared/payloads/chatdata), with the key as a Bearer token.
func TestSendsTheDocumentedRequest(t *testing.T) {
	t.Parallel()
	api := chatdatatest.NewServer(t)
	s := newSink(t, api.URL, api.Key, relay.SinkDeps{UserAgent: "chatrelay/test"})
	// Spaces around the text are not the agent's message.
	if err := s.Send(t.Context(), replyEvent(t, "\n  "+sampleText+"  ")); err != nil {
		t.Fatal(err)
	}
	reqs := api.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	r := reqs[0]
	if r.Method != "POST" || r.Path != chatdatatest.LiveChatPath || r.Key != api.Key || r.UserAgent != "chatrelay/test" || r.Status != 200 {
		t.Fatalf("request %s %s key ok %v UA %q answered %d", r.Method, r.Path, r.Key == api.Key, r.UserAgent, r.Status)
	}
	want, err := os.ReadFile("testdata/live-chat-request.json")
	if err != nil {
		t.Fatal(err)
	}
	var got, exp any
	if err := json.Unmarshal(r.Body, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(want, &exp); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, exp) {
		t.Fatalf("body %s\nwant %s", r.Body, want)
	}
	msgs := api.Messages(conv)
	if len(msgs) != 1 || msgs[0].Text != sampleText || msgs[0].Name != "Alex" || msgs[0].Role != "human" {
		t.Fatalf("the visitor sees %+v", msgs)
	}
}

// TestOptionalFieldsLeftOut: without a name or avatar the request leaves
// them out (Chat Data then shows the chatbot owner's).
func TestOptionalFieldsLeftOut(t *testing.T) {
	t.Parallel()
	api := chatdatatest.NewServer(t)
	s := newSink(t, api.URL+"/", api.Key, relay.SinkDeps{}) // a trailing slash is no second one
	ev, err := relay.NewReplyEvent(conv, bot, relay.Reply{Text: "ok", Sink: "s", Thread: "t", MessageID: "m"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	if err := json.Unmarshal(api.Requests()[0].Body, &body); err != nil {
		t.Fatal(err)
	}
	if _, ok := body["name"]; ok {
		t.Errorf("name sent: %v", body)
	}
	if _, ok := body["avatar"]; ok {
		t.Errorf("avatar sent: %v", body)
	}
}

// TestClassifiesAnswers: Chat Data's answers and what the dispatcher does
// with each (PROTOCOLS.md §1.5).
func TestClassifiesAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		opts     []chatdatatest.Option
		script   []chatdatatest.Response
		badKey   bool
		class    relay.Class
		after    time.Duration
		reason   relay.Reason
		contains string
		ok       bool
	}{
		{name: "success", ok: true},
		{name: "success with an empty body", opts: []chatdatatest.Option{chatdatatest.WithSuccessBody("")}, ok: true},
		{name: "success with text", opts: []chatdatatest.Option{chatdatatest.WithSuccessBody("OK")}, ok: true},
		{name: "success with another JSON", opts: []chatdatatest.Option{chatdatatest.WithSuccessBody(`{"id":"m1"}`)}, ok: true},
		{name: `{"status":"error"} under 200`, script: []chatdatatest.Response{{Error: "Chatbot is paused"}},
			class: relay.ClassPermanent, reason: relay.ReasonClientError, contains: "Chatbot is paused"},
		{name: "bad key: 401", badKey: true, class: relay.ClassBroken, reason: relay.ReasonAuth, contains: "HTTP 401"},
		{name: "403", script: []chatdatatest.Response{{Status: 403, Error: "Plan does not include the API"}},
			class: relay.ClassBroken, reason: relay.ReasonAuth, contains: "Plan does not include the API"},
		{name: "unknown conversation: 404", opts: []chatdatatest.Option{chatdatatest.WithConversations("another")},
			class: relay.ClassPermanent, reason: relay.ReasonClientError, contains: "Conversation not found"},
		{name: "400", script: []chatdatatest.Response{{Status: 400, Error: "message is required"}},
			class: relay.ClassPermanent, reason: relay.ReasonClientError, contains: "message is required"},
		{name: "429 with Retry-After", script: []chatdatatest.Response{{Status: 429, RetryAfter: "3", Error: "Too many requests"}},
			class: relay.ClassRateLimited, after: 3 * time.Second, reason: relay.ReasonRateLimited},
		{name: "429 without Retry-After", script: []chatdatatest.Response{{Status: 429, Error: "Too many requests"}},
			class: relay.ClassRetryable, reason: relay.ReasonRateLimited},
		{name: "500", script: []chatdatatest.Response{{Status: 500, Error: "Internal error"}},
			class: relay.ClassRetryable, reason: relay.ReasonServerError, contains: "Internal error"},
		{name: "502 HTML page", script: []chatdatatest.Response{{Status: 502, Body: "<html>Bad gateway</html>"}},
			class: relay.ClassRetryable, reason: relay.ReasonServerError, contains: "Bad gateway"},
		{name: "503 with Retry-After", script: []chatdatatest.Response{{Status: 503, RetryAfter: "20"}},
			class: relay.ClassRateLimited, after: 20 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			api := chatdatatest.NewServer(t, tc.opts...)
			api.Script(tc.script...)
			key := api.Key
			if tc.badKey {
				key = "sk-revoked-0000000000000000"
			}
			logger, logs := relaytest.NewLogger()
			s := newSink(t, api.URL, key, relay.SinkDeps{Logger: logger, Clock: clockwork.NewRealClock()})
			err := s.Send(t.Context(), replyEvent(t, sampleText))
			relaytest.AssertNoSecret(t, "log", logs.String(), key, api.Key)
			if tc.ok {
				if err != nil {
					t.Fatalf("Send = %v, want success", err)
				}
				if len(api.Messages(conv)) != 1 {
					t.Fatal("not appended")
				}
				return
			}
			if err == nil {
				t.Fatal("Send succeeded")
			}
			relaytest.AssertNoSecret(t, "error", err.Error(), key, api.Key)
			class, after := relay.Classify(err)
			if class != tc.class || after != tc.after {
				t.Fatalf("class %s after %s (%v), want %s after %s", class, after, err, tc.class, tc.after)
			}
			if tc.reason != "" && relay.ReasonOf(err) != tc.reason {
				t.Fatalf("reason %s, want %s", relay.ReasonOf(err), tc.reason)
			}
			if !strings.Contains(err.Error(), tc.contains) {
				t.Fatalf("error %q does not say %q", err, tc.contains)
			}
			if relay.Unreachable(err) {
				t.Fatal("an answer from Chat Data counted as unreachable")
			}
		})
	}
}

// TestNetworkErrorsAreRetried: no answer at all is retryable, and counts
// toward marking the destination down (SPEC §9).
func TestNetworkErrorsAreRetried(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	s := newSink(t, "http://"+addr, "sk-0123456789abcdef", relay.SinkDeps{})
	err = s.Send(t.Context(), replyEvent(t, sampleText))
	if c, _ := relay.Classify(err); err == nil || c != relay.ClassRetryable || !relay.Unreachable(err) {
		t.Fatalf("Send = %v (class %v, unreachable %v), want retryable and unreachable", err, c, relay.Unreachable(err))
	}
}

// TestOnlyAgentReplies: any other event is permanent at once, and nothing
// is posted: the chatdata destination is not a mirror.
func TestOnlyAgentReplies(t *testing.T) {
	t.Parallel()
	api := chatdatatest.NewServer(t)
	s := newSink(t, api.URL, api.Key, relay.SinkDeps{})
	chat := relaytest.SampleEvent(t)
	blank := replyEvent(t, sampleText)
	blank.Reply = &relay.Reply{Text: "   ", Sink: "s", Thread: "t", MessageID: "m"}
	noConv := replyEvent(t, sampleText)
	noConv.ConversationID = ""
	for name, ev := range map[string]*relay.Event{"chat": chat, "blank text": blank, "no conversation": noConv} {
		err := s.Send(t.Context(), ev)
		if c, _ := relay.Classify(err); err == nil || c != relay.ClassPermanent {
			t.Errorf("%s: Send = %v, want permanent", name, err)
		}
	}
	if n := len(api.Requests()); n != 0 {
		t.Fatalf("%d requests posted", n)
	}
}

func TestProbe(t *testing.T) {
	t.Parallel()
	api := chatdatatest.NewServer(t)
	if err := newSink(t, api.URL, api.Key, relay.SinkDeps{}).Probe(t.Context()); err != nil {
		t.Fatalf("Probe with the right key: %v", err)
	}
	if r := api.Requests(); len(r) != 1 || r[0].Method != "GET" || r[0].Path != chatdatatest.CurrentPlanPath {
		t.Fatalf("Probe requested %+v, want GET %s", r, chatdatatest.CurrentPlanPath)
	}
	const revoked = "sk-revoked-0000000000000000"
	err := newSink(t, api.URL, revoked, relay.SinkDeps{}).Probe(t.Context())
	if c, _ := relay.Classify(err); err == nil || c != relay.ClassBroken || !strings.Contains(err.Error(), "chatdata.api_key") {
		t.Fatalf("Probe with a revoked key: %v, want broken naming chatdata.api_key", err)
	}
	relaytest.AssertNoSecret(t, "error", err.Error(), revoked)
	// A base URL with no Chat Data API under it.
	err = newSink(t, api.URL+"/v1", api.Key, relay.SinkDeps{}).Probe(t.Context())
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("Probe of a wrong api_url: %v, want the 404", err)
	}
	if len(api.Messages(conv)) != 0 {
		t.Fatal("Probe posted a message")
	}
}

// TestCanceledSendReturns: a send Chat Data does not answer ends with its
// context.
func TestCanceledSendReturns(t *testing.T) {
	t.Parallel()
	api := chatdatatest.NewServer(t)
	hold := make(chan struct{})
	defer close(hold)
	api.Script(chatdatatest.Response{Hold: hold})
	s := newSink(t, api.URL, api.Key, relay.SinkDeps{})
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- s.Send(ctx, replyEvent(t, sampleText)) }()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Send = %v, want canceled", err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  chatdata.Config
		keys []string // the keys the problems name, in order
	}{
		{"ok", chatdata.Config{APIKey: "sk-1234567890"}, nil},
		{"ok with a proxy", chatdata.Config{APIKey: "sk-1234567890", APIURL: "http://127.0.0.1:9999/chatdata/", Timeout: time.Second}, nil},
		{"no key", chatdata.Config{}, []string{"api_key"}},
		{"key with a newline", chatdata.Config{APIKey: "sk-1234567890\n"}, []string{"api_key"}},
		{"not a URL", chatdata.Config{APIKey: "sk-1234567890", APIURL: "api.chat-data.com"}, []string{"api_url"}},
		{"ftp", chatdata.Config{APIKey: "sk-1234567890", APIURL: "ftp://api.chat-data.com"}, []string{"api_url"}},
		{"query", chatdata.Config{APIKey: "sk-1234567890", APIURL: "https://api.chat-data.com/?x=1"}, []string{"api_url"}},
		{"everything", chatdata.Config{APIURL: ":", Timeout: -1}, []string{"api_key", "api_url", "timeout"}},
	}
	for _, tc := range tests {
		err := tc.cfg.Validate()
		var keys []string
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				k, _, _ := strings.Cut(line, ": ")
				keys = append(keys, k)
			}
			relaytest.AssertNoSecret(t, "error", err.Error(), tc.cfg.APIKey.Reveal())
		}
		if !reflect.DeepEqual(keys, tc.keys) {
			t.Errorf("%s: problems %v (%v), want %v", tc.name, keys, err, tc.keys)
		}
		if _, err := chatdata.New(tc.cfg, relay.SinkDeps{}); (err == nil) != (tc.keys == nil) {
			t.Errorf("%s: New = %v", tc.name, err)
		}
	}
}

// TestEchoedKeyScrubbed: an error page that echoes the request's
// Authorization header does not put the key in the error (stored as the
// dead letter's reason).
func TestEchoedKeyScrubbed(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte("bad request; headers: Authorization=" + r.Header.Get("Authorization")))
	}))
	defer srv.Close()
	const key = "sk-echoed-0123456789abcdef"
	err := newSink(t, srv.URL, key, relay.SinkDeps{}).Send(t.Context(), replyEvent(t, sampleText))
	if err == nil {
		t.Fatal("Send succeeded")
	}
	relaytest.AssertNoSecret(t, "error", err.Error(), key)
	if !strings.Contains(err.Error(), "[redacted]") {
		t.Fatalf("error %q: the echo was not scrubbed in place", err)
	}
}
