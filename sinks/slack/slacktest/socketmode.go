package slacktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// SocketMode is a fake of Slack's Socket Mode (https://api.slack.com/apis/
// socket-mode), on httptest: apps.connections.open, called with the app's
// app-level token (xapp-…), hands out a single-use ws:// URL to a WebSocket
// server in the test, which greets each connection with hello, pings it as
// Slack does, sends the envelopes the test gives it (events_api,
// interactive), records the acks the client sends back and checks that
// each names an envelope it sent, once; Disconnect asks the client to
// reconnect, as Slack does every few hours.
type SocketMode struct {
	// URL is the server's base URL; APIURL is what slack-go's OptionAPIURL
	// takes.
	URL string
	// AppToken is the app-level token apps.connections.open accepts.
	AppToken string
	// AppID is the app's id, in hello and in each envelope's payload.
	AppID string

	t         testing.TB
	srv       *httptest.Server
	upgrader  websocket.Upgrader
	pingEvery time.Duration

	mu       sync.Mutex
	tickets  map[string]bool // handed out, not yet used
	conns    []*smConn       // every connection made, in order
	sent     map[string]Envelope
	order    []string // envelope ids, as sent
	acks     []Ack
	changed  chan struct{} // closed and replaced whenever conns or acks change
	opens    int
	seq      int
	closed   bool
	handlers sync.WaitGroup
}

// Envelope is one message the fake sent over a connection.
type Envelope struct {
	EnvelopeID             string          `json:"envelope_id"`
	Type                   string          `json:"type"`
	Payload                json.RawMessage `json:"payload"`
	AcceptsResponsePayload bool            `json:"accepts_response_payload"`
	RetryAttempt           int             `json:"retry_attempt"`
	RetryReason            string          `json:"retry_reason"`
}

// Ack is one acknowledgement the client sent.
type Ack struct {
	EnvelopeID string          `json:"envelope_id"`
	Payload    json.RawMessage `json:"payload,omitempty"`
	Conn       int             // the connection it came over (0: the first)
}

// smConn is one WebSocket connection of a client.
type smConn struct {
	n    int
	ws   *websocket.Conn
	wmu  sync.Mutex // gorilla connections take one writer at a time
	done chan struct{}
}

func (c *smConn) write(msgType int, data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.ws.WriteMessage(msgType, data)
}

// SocketModeOption configures a SocketMode.
type SocketModeOption func(*SocketMode)

// WithPingEvery sets how often the fake pings each connection (default
// 5 s; Slack's clients give up after 30 s without one).
func WithPingEvery(d time.Duration) SocketModeOption {
	return func(s *SocketMode) { s.pingEvery = d }
}

// NewSocketMode starts a fake Socket Mode, closed (its connections too)
// when the test ends.
func NewSocketMode(t testing.TB, opts ...SocketModeOption) *SocketMode {
	t.Helper()
	s := &SocketMode{
		t: t, AppToken: "xapp-1-A0FAKE-" + randomHex(8), AppID: "A0FAKE",
		pingEvery: 5 * time.Second,
		upgrader:  websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }},
		tickets:   map[string]bool{}, sent: map[string]Envelope{}, changed: make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/apps.connections.open", s.serveOpen)
	mux.HandleFunc("GET /link/", s.serveLink)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("slacktest: unexpected Socket Mode request %s %s", r.Method, r.URL.Path)
		http.NotFound(w, r)
	})
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL
	t.Cleanup(s.close)
	return s
}

// APIURL is the Web API's base URL, with the trailing slash slack-go
// needs.
func (s *SocketMode) APIURL() string { return s.URL + "/api/" }

// close ends every connection and waits for their goroutines: the
// httptest server does not track connections it handed over.
func (s *SocketMode) close() {
	s.mu.Lock()
	s.closed = true
	conns := append([]*smConn(nil), s.conns...)
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.ws.Close()
	}
	s.srv.Close()
	s.handlers.Wait()
}

// notifyLocked wakes everyone waiting for a change.
func (s *SocketMode) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// waitFor waits until cond (called with s.mu held) holds, or ctx ends.
func (s *SocketMode) waitFor(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		if cond() {
			s.mu.Unlock()
			return nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// serveOpen is apps.connections.open: a Web API method, so errors are
// HTTP 200 with "ok":false.
func (s *SocketMode) serveOpen(w http.ResponseWriter, r *http.Request) {
	answer := func(v any) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = json.NewEncoder(w).Encode(v)
	}
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	switch {
	case token == "":
		answer(map[string]any{"ok": false, "error": "not_authed"})
		return
	case !strings.HasPrefix(token, "xapp-"):
		answer(map[string]any{"ok": false, "error": "not_allowed_token_type"})
		return
	case token != s.AppToken:
		answer(map[string]any{"ok": false, "error": "invalid_auth"})
		return
	}
	ticket := randomHex(12)
	s.mu.Lock()
	s.tickets[ticket] = true
	s.opens++
	s.mu.Unlock()
	answer(map[string]any{"ok": true, "url": "ws" + strings.TrimPrefix(s.URL, "http") + "/link/?ticket=" + ticket + "&app_id=" + s.AppID})
}

// Opens counts the calls of apps.connections.open that got a URL.
func (s *SocketMode) Opens() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opens
}

// serveLink is the WebSocket endpoint: one connection per ticket.
func (s *SocketMode) serveLink(w http.ResponseWriter, r *http.Request) {
	ticket := r.URL.Query().Get("ticket")
	s.mu.Lock()
	valid := s.tickets[ticket] && !s.closed
	delete(s.tickets, ticket)
	s.mu.Unlock()
	if !valid {
		http.Error(w, "invalid or used ticket", http.StatusUnauthorized)
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ws.Close()
		return
	}
	c := &smConn{n: len(s.conns), ws: ws, done: make(chan struct{})}
	s.conns = append(s.conns, c)
	s.handlers.Add(2)
	s.mu.Unlock()

	hello, _ := json.Marshal(map[string]any{
		"type": "hello", "num_connections": 1,
		"debug_info":      map[string]any{"host": "slacktest", "build_number": 1, "approximate_connection_time": 18060},
		"connection_info": map[string]any{"app_id": s.AppID},
	})
	if err := c.write(websocket.TextMessage, hello); err != nil {
		s.t.Errorf("slacktest: write hello: %v", err)
	}
	s.mu.Lock()
	s.notifyLocked() // connected and greeted: envelopes may go out
	s.mu.Unlock()
	go s.ping(c)
	go s.read(c)
}

// ping pings the connection as Slack does, until it closes.
func (s *SocketMode) ping(c *smConn) {
	defer s.handlers.Done()
	tick := time.NewTicker(s.pingEvery)
	defer tick.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-tick.C:
			if c.write(websocket.PingMessage, []byte("slacktest")) != nil {
				return
			}
		}
	}
}

// read records the client's acks until the connection closes.
func (s *SocketMode) read(c *smConn) {
	defer s.handlers.Done()
	defer close(c.done)
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			_ = c.ws.Close()
			return
		}
		var ack Ack
		if err := json.Unmarshal(data, &ack); err != nil || ack.EnvelopeID == "" {
			s.t.Errorf("slacktest: the client sent something that is not an ack: %.200q", data)
			continue
		}
		ack.Conn = c.n
		s.mu.Lock()
		_, known := s.sent[ack.EnvelopeID]
		twice := false
		for _, a := range s.acks {
			twice = twice || a.EnvelopeID == ack.EnvelopeID
		}
		if len(data) >= 20<<10 {
			s.t.Errorf("slacktest: ack of %s is %d bytes; Slack drops acks of 20 KB or more", ack.EnvelopeID, len(data))
		}
		switch {
		case !known:
			s.t.Errorf("slacktest: ack of envelope %q, which was never sent", ack.EnvelopeID)
		case twice:
			s.t.Errorf("slacktest: envelope %q acked twice", ack.EnvelopeID)
		}
		s.acks = append(s.acks, ack)
		s.notifyLocked()
		s.mu.Unlock()
	}
}

// WaitConnected waits until n connections have been made (the first is
// 1), each greeted with hello.
func (s *SocketMode) WaitConnected(ctx context.Context, n int) error {
	return s.waitFor(ctx, func() bool { return len(s.conns) >= n })
}

// Connections counts the connections made so far.
func (s *SocketMode) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// ErrNotConnected is returned by Send when no client is connected.
var ErrNotConnected = errors.New("slacktest: no Socket Mode connection is open")

// Send sends an envelope of type typ carrying payload over the newest
// open connection, waiting (until ctx ends) for a client to connect, and
// returns it with its envelope id.
func (s *SocketMode) Send(ctx context.Context, typ string, payload json.RawMessage) (Envelope, error) {
	return s.send(ctx, Envelope{Type: typ, Payload: payload, AcceptsResponsePayload: typ == "interactive"})
}

// SendEvent sends an Events API payload (an event_callback, as Slack POSTs
// it over HTTP) as an events_api envelope.
func (s *SocketMode) SendEvent(ctx context.Context, payload json.RawMessage) (Envelope, error) {
	return s.Send(ctx, "events_api", payload)
}

// SendInteractive sends an interactivity payload (a block_actions
// callback) as an interactive envelope.
func (s *SocketMode) SendInteractive(ctx context.Context, payload json.RawMessage) (Envelope, error) {
	return s.Send(ctx, "interactive", payload)
}

// Retry sends an envelope again as Slack does when it was not acked in
// time: a new envelope id, the same payload, retry_attempt one more and
// retry_reason "timeout".
func (s *SocketMode) Retry(ctx context.Context, e Envelope) (Envelope, error) {
	e.EnvelopeID, e.RetryAttempt, e.RetryReason = "", e.RetryAttempt+1, "timeout"
	return s.send(ctx, e)
}

func (s *SocketMode) send(ctx context.Context, e Envelope) (Envelope, error) {
	var c *smConn
	err := s.waitFor(ctx, func() bool {
		for i := len(s.conns) - 1; i >= 0; i-- {
			select {
			case <-s.conns[i].done:
				continue
			default:
			}
			c = s.conns[i]
			return true
		}
		return false
	})
	if err != nil {
		return Envelope{}, fmt.Errorf("%w: %w", ErrNotConnected, err)
	}
	s.mu.Lock()
	s.seq++
	if e.EnvelopeID == "" {
		e.EnvelopeID = fmt.Sprintf("env-%04d-%s", s.seq, randomHex(4))
	}
	s.sent[e.EnvelopeID] = e
	s.order = append(s.order, e.EnvelopeID)
	s.mu.Unlock()
	data, err := json.Marshal(e)
	if err != nil {
		return Envelope{}, err
	}
	if err := c.write(websocket.TextMessage, data); err != nil {
		return Envelope{}, fmt.Errorf("slacktest: send envelope: %w", err)
	}
	return e, nil
}

// WaitAck waits for the client's ack of an envelope.
func (s *SocketMode) WaitAck(ctx context.Context, envelopeID string) (Ack, error) {
	var got Ack
	err := s.waitFor(ctx, func() bool {
		for _, a := range s.acks {
			if a.EnvelopeID == envelopeID {
				got = a
				return true
			}
		}
		return false
	})
	return got, err
}

// Acks returns every ack received so far, in order.
func (s *SocketMode) Acks() []Ack {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Ack(nil), s.acks...)
}

// Unacked returns the envelopes sent and not acked, in the order sent.
func (s *SocketMode) Unacked() []Envelope {
	s.mu.Lock()
	defer s.mu.Unlock()
	acked := map[string]bool{}
	for _, a := range s.acks {
		acked[a.EnvelopeID] = true
	}
	var out []Envelope
	for _, id := range s.order {
		if !acked[id] {
			out = append(out, s.sent[id])
		}
	}
	return out
}

// Disconnect asks the client on the newest connection to reconnect, as
// Slack does (reason "refresh_requested" every few hours, "warning" before
// it): the client opens a new connection through apps.connections.open
// and leaves the old one.
func (s *SocketMode) Disconnect(reason string) error {
	s.mu.Lock()
	var c *smConn
	if len(s.conns) > 0 {
		c = s.conns[len(s.conns)-1]
	}
	s.mu.Unlock()
	if c == nil {
		return ErrNotConnected
	}
	msg, _ := json.Marshal(map[string]any{"type": "disconnect", "reason": reason,
		"debug_info": map[string]any{"host": "slacktest"}})
	return c.write(websocket.TextMessage, msg)
}

// Drop closes the newest connection without a word, as a network failure
// would.
func (s *SocketMode) Drop() {
	s.mu.Lock()
	var c *smConn
	if len(s.conns) > 0 {
		c = s.conns[len(s.conns)-1]
	}
	s.mu.Unlock()
	if c != nil {
		_ = c.ws.Close()
	}
}
