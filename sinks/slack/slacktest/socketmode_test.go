package slacktest_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	slackapi "github.com/slack-go/slack"
	"github.com/slack-go/slack/slackevents"
	"github.com/slack-go/slack/socketmode"

	"github.com/chatrelay/chatrelay/sinks/slack/slacktest"
)

// payload reads one of Slack's sample requests (../testdata/slack-*.json,
// from ../shared/payloads/slack).
func payload(t *testing.T, name string) json.RawMessage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "slack-"+name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// received is what the client's consumer saw: a thread message or a click.
type received struct {
	envelope string
	message  *slackevents.MessageEvent
	click    *slackapi.InteractionCallback
}

// runClient runs slack-go's Socket Mode client against the fake, as the
// relay's Slack adapter will: every event is acked after it was handled.
// It returns what the client received, RunContext's result once it
// returns, and a function that stops the client and waits for it.
func runClient(t *testing.T, fake *slacktest.SocketMode, appToken string) (<-chan received, <-chan error, func()) {
	t.Helper()
	api := slackapi.New("xoxb-unused", slackapi.OptionAppLevelToken(appToken), slackapi.OptionAPIURL(fake.APIURL()),
		slackapi.OptionHTTPClient(&http.Client{Timeout: 5 * time.Second}))
	client := socketmode.New(api, socketmode.OptionDialer(&websocket.Dialer{HandshakeTimeout: 5 * time.Second}))
	ctx, cancel := context.WithCancel(t.Context())
	got := make(chan received, 16)
	runErr := make(chan error, 1)
	consumed := make(chan struct{})
	go func() { runErr <- client.RunContext(ctx) }()
	go func() {
		defer close(consumed)
		for {
			select {
			case <-ctx.Done():
				return
			case evt := <-client.Events:
				switch evt.Type {
				case socketmode.EventTypeEventsAPI:
					api := evt.Data.(slackevents.EventsAPIEvent)
					msg, _ := api.InnerEvent.Data.(*slackevents.MessageEvent)
					got <- received{envelope: evt.Request.EnvelopeID, message: msg}
					if err := client.Ack(*evt.Request); err != nil {
						t.Errorf("ack: %v", err)
					}
				case socketmode.EventTypeInteractive:
					cb := evt.Data.(slackapi.InteractionCallback)
					got <- received{envelope: evt.Request.EnvelopeID, click: &cb}
					// Interactive envelopes take a response payload.
					if err := client.Ack(*evt.Request, map[string]any{"text": "claimed"}); err != nil {
						t.Errorf("ack: %v", err)
					}
				}
			}
		}
	}()
	result := make(chan error, 1)
	go func() {
		err := <-runErr
		result <- err
		cancel()
	}()
	return got, result, func() {
		cancel()
		<-consumed
	}
}

func wait[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("nothing received in 10 s")
	}
	panic("unreachable")
}

// TestSocketModeWithSlackGo: slack-go's Socket Mode client, pointed at the
// fake, connects with its app-level token, receives a thread reply and a
// button click, acks each, and reconnects when asked to.
func TestSocketModeWithSlackGo(t *testing.T) {
	t.Parallel()
	fake := slacktest.NewSocketMode(t, slacktest.WithPingEvery(50*time.Millisecond))
	got, result, stop := runClient(t, fake, fake.AppToken)
	defer stop()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	env, err := fake.SendEvent(ctx, payload(t, "event-thread-reply"))
	if err != nil {
		t.Fatal(err)
	}
	r := wait(t, got)
	if r.envelope != env.EnvelopeID || r.message == nil {
		t.Fatalf("client received %+v for envelope %s", r, env.EnvelopeID)
	}
	if m := r.message; m.ThreadTimeStamp != "1765000000.000100" || m.TimeStamp != "1765000000.000200" ||
		m.User != "U0123AGENT" || m.Channel != "C0123456789" || m.BotID != "" || m.SubType != "" {
		t.Fatalf("thread reply read as %+v", m)
	}
	if ack, err := fake.WaitAck(ctx, env.EnvelopeID); err != nil || ack.Conn != 0 {
		t.Fatalf("ack %+v, %v", ack, err)
	}

	click, err := fake.SendInteractive(ctx, payload(t, "block-actions-claim"))
	if err != nil {
		t.Fatal(err)
	}
	r = wait(t, got)
	if r.click == nil || r.click.Type != slackapi.InteractionTypeBlockActions || len(r.click.ActionCallback.BlockActions) != 1 ||
		r.click.User.ID != "U0123AGENT" || r.click.Container.MessageTs != "1765000000.000100" {
		t.Fatalf("click read as %+v", r.click)
	}
	ack, err := fake.WaitAck(ctx, click.EnvelopeID)
	if err != nil || string(ack.Payload) != `{"text":"claimed"}` {
		t.Fatalf("click ack %+v (%s), %v", ack, ack.Payload, err)
	}

	// Slack asks for a reconnection: the client opens a second connection
	// and events flow over it.
	if err := fake.Disconnect("refresh_requested"); err != nil {
		t.Fatal(err)
	}
	if err := fake.WaitConnected(ctx, 2); err != nil {
		t.Fatal(err)
	}
	retried, err := fake.Retry(ctx, env) // Slack's retry of the first event
	if err != nil {
		t.Fatal(err)
	}
	r = wait(t, got)
	if r.envelope != retried.EnvelopeID || retried.RetryAttempt != 1 || r.message == nil {
		t.Fatalf("retry: received %+v, sent %+v", r, retried)
	}
	if ack, err := fake.WaitAck(ctx, retried.EnvelopeID); err != nil || ack.Conn != 1 {
		t.Fatalf("ack over the new connection: %+v, %v", ack, err)
	}
	if n := fake.Opens(); n != 2 {
		t.Fatalf("apps.connections.open called %d times, want 2", n)
	}
	if u := fake.Unacked(); len(u) != 0 {
		t.Fatalf("unacked: %+v", u)
	}
	stop()
	if err := wait(t, result); !errors.Is(err, context.Canceled) {
		t.Fatalf("RunContext = %v, want canceled", err)
	}
}

// TestSocketModeRefusesOtherTokens: a revoked app-level token gets
// invalid_auth, which ends the client's run (it does not retry forever).
func TestSocketModeRefusesOtherTokens(t *testing.T) {
	t.Parallel()
	fake := slacktest.NewSocketMode(t)
	_, result, stop := runClient(t, fake, "xapp-1-A0FAKE-revoked")
	defer stop()
	// RunContext returns by itself on invalid_auth.
	if err := wait(t, result); err == nil || err.Error() != "invalid_auth" {
		t.Fatalf("RunContext = %v, want invalid_auth", err)
	}
	if fake.Connections() != 0 || fake.Opens() != 0 {
		t.Fatal("a connection was opened with a revoked token")
	}
}

// TestSocketModeNeedsATicket: only a URL apps.connections.open handed out
// opens a connection, once; with no client connected nothing can be sent.
func TestSocketModeNeedsATicket(t *testing.T) {
	t.Parallel()
	fake := slacktest.NewSocketMode(t)
	ws, _, err := websocket.DefaultDialer.DialContext(t.Context(), "ws"+fake.URL[len("http"):]+"/link/?ticket=forged", nil)
	if err == nil {
		ws.Close()
		t.Fatal("a WebSocket without a ticket from apps.connections.open was accepted")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := fake.SendEvent(ctx, payload(t, "event-thread-reply")); !errors.Is(err, slacktest.ErrNotConnected) {
		t.Fatalf("Send with no client: %v, want ErrNotConnected", err)
	}
}

// TestSocketModeUnacked: an envelope the client reads and does not ack is
// reported, and a URL serves one connection only.
func TestSocketModeUnacked(t *testing.T) {
	t.Parallel()
	fake := slacktest.NewSocketMode(t)
	req, _ := http.NewRequestWithContext(t.Context(), "POST", fake.APIURL()+"apps.connections.open", nil)
	req.Header.Set("Authorization", "Bearer "+fake.AppToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var open struct {
		OK  bool   `json:"ok"`
		URL string `json:"url"`
	}
	err = json.NewDecoder(resp.Body).Decode(&open)
	resp.Body.Close()
	if err != nil || !open.OK {
		t.Fatalf("apps.connections.open: %+v %v", open, err)
	}
	ws, _, err := websocket.DefaultDialer.DialContext(t.Context(), open.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	var hello struct{ Type string }
	if err := ws.ReadJSON(&hello); err != nil || hello.Type != "hello" {
		t.Fatalf("first message %+v, %v; want hello", hello, err)
	}
	if again, _, err := websocket.DefaultDialer.DialContext(t.Context(), open.URL, nil); err == nil {
		again.Close()
		t.Fatal("the same URL opened a second connection")
	}
	env, err := fake.SendEvent(t.Context(), payload(t, "event-thread-reply"))
	if err != nil {
		t.Fatal(err)
	}
	var got slacktest.Envelope
	if err := ws.ReadJSON(&got); err != nil || got.EnvelopeID != env.EnvelopeID || got.Type != "events_api" {
		t.Fatalf("read %+v, %v", got, err)
	}
	if u := fake.Unacked(); len(u) != 1 || u[0].EnvelopeID != env.EnvelopeID {
		t.Fatalf("unacked %+v, want the envelope sent", u)
	}
}
