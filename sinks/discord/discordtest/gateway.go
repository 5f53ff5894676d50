package discordtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"
)

// Gateway is a fake of Discord's gateway (https://discord.com/developers/
// docs/events/gateway), on httptest: GET /gateway and /gateway/bot give a
// ws:// URL to a WebSocket server in the test that speaks the gateway's
// protocol as a bot sees it: op 10 HELLO, op 2 IDENTIFY (the bot token and
// the intents checked and recorded) answered by READY, op 1 heartbeats
// answered by op 11, dispatches (op 0 with a sequence) that the test
// sends (MESSAGE_CREATE, INTERACTION_CREATE), op 7 RECONNECT on demand and
// op 6 RESUME answered by the dispatches the client missed and RESUMED. It
// also takes the interaction callbacks (POST /interactions/{id}/{token}/
// callback) with which a bot answers a click within 3 s.
//
// Point discordgo at it without touching its globals (PROTOCOLS.md §1.6):
// give the Session Gateway.HTTPClient() (every discord.com request goes to
// the fake, REST calls the gateway does not serve to the REST fake given
// with WithREST) and Gateway.Dialer() (every WebSocket goes to the fake).
type Gateway struct {
	t         testing.TB
	srv       *httptest.Server
	upgrader  websocket.Upgrader
	token     string
	heartbeat time.Duration
	rest      *Server
	proxy     *httputil.ReverseProxy

	// BotID and AppID are the bot user's and the application's ids, as
	// READY gives them.
	BotID, AppID string

	mu         sync.Mutex
	conns      []*gwConn
	sessions   map[string]*gwSession
	identifies []Identify
	resumes    []Resume
	heartbeats int
	live       int // identified or resumed connections open now
	maxLive    int // the most there ever were at once
	responses  []InteractionResponse
	followups  []Followup
	sentAt     map[string]time.Time // interaction id → dispatched at
	clicked    map[string]clickedOn // interaction token → the message clicked
	seqID      uint64
	changed    chan struct{}
	closed     bool
	handlers   sync.WaitGroup
}

// Identify is an op 2 IDENTIFY the fake received.
type Identify struct {
	Token   string
	Intents discordgo.Intent
	Conn    int
}

// Resume is an op 6 RESUME the fake received.
type Resume struct {
	SessionID string
	Seq       int64
	Conn      int
	Valid     bool // the session was known: the missed dispatches were replayed
}

// InteractionResponse is an interaction callback a bot sent.
type InteractionResponse struct {
	InteractionID string
	Token         string
	Response      discordgo.InteractionResponse
	// Late is set when it came more than 3 s after the interaction was
	// dispatched: Discord would have shown the user "This interaction
	// failed".
	Late bool
}

// Followup is what a bot sent with an interaction's token after its
// callback: a follow-up message (POST /webhooks/{app}/{token}) or an edit
// of the message the interaction was on (PATCH …/messages/@original).
type Followup struct {
	InteractionID string
	Edit          bool // an edit of the original message, not a new message
	Content       string
	Flags         int // 64: ephemeral, shown to the clicker only
	Components    json.RawMessage
}

// clickedOn is the interaction a token was given with.
type clickedOn struct {
	id, channel, message string
}

// gwSession is a gateway session: what it was sent, for RESUME.
type gwSession struct {
	id   string
	seq  int64
	sent []gatewayPayload // every dispatch, in order
	conn *gwConn          // the live connection, nil while the client is away
}

// gwConn is one WebSocket connection.
type gwConn struct {
	n       int
	ws      *websocket.Conn
	wmu     sync.Mutex
	session *gwSession // once identified or resumed
	live    bool       // counted in Gateway.live
	done    chan struct{}
}

func (c *gwConn) write(p gatewayPayload) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// gatewayPayload is the gateway's frame.
type gatewayPayload struct {
	Op   int             `json:"op"`
	Data json.RawMessage `json:"d"`
	Seq  *int64          `json:"s,omitempty"`
	Type string          `json:"t,omitempty"`
}

// Gateway opcodes (https://discord.com/developers/docs/topics/opcodes-and-status-codes).
const (
	opDispatch       = 0
	opHeartbeat      = 1
	opIdentify       = 2
	opResume         = 6
	opReconnect      = 7
	opInvalidSession = 9
	opHello          = 10
	opHeartbeatAck   = 11
)

// closeAuthenticationFailed is the close code for a bad token.
const closeAuthenticationFailed = 4004

// GatewayOption configures a Gateway.
type GatewayOption func(*Gateway)

// WithHeartbeat sets the heartbeat interval HELLO gives (default 41.25 s,
// Discord's).
func WithHeartbeat(d time.Duration) GatewayOption { return func(g *Gateway) { g.heartbeat = d } }

// WithREST sends the REST calls the gateway does not serve (channels,
// messages, reactions) to a REST fake; its bot token is the one both
// accept. Without it they are answered 404.
func WithREST(s *Server) GatewayOption { return func(g *Gateway) { g.rest = s } }

// NewGateway starts a fake gateway, closed (its connections too) when the
// test ends.
func NewGateway(t testing.TB, opts ...GatewayOption) *Gateway {
	t.Helper()
	g := &Gateway{
		t: t, token: randomToken(), heartbeat: 41250 * time.Millisecond,
		upgrader: websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }},
		BotID:    BotID, AppID: AppID,
		sessions: map[string]*gwSession{}, sentAt: map[string]time.Time{}, clicked: map[string]clickedOn{},
		changed: make(chan struct{}),
	}
	for _, o := range opts {
		o(g)
	}
	if g.rest != nil {
		g.token = g.rest.Token()
		u, _ := url.Parse(g.rest.URL())
		g.proxy = httputil.NewSingleHostReverseProxy(u)
		// What the bot posts comes back to it as a dispatch, as on Discord.
		g.rest.mu.Lock()
		g.rest.onPost = append(g.rest.onPost, g.echo)
		g.rest.mu.Unlock()
	}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.close)
	return g
}

// Token is the bot token the gateway accepts (discordgo.New takes "Bot "
// and it).
func (g *Gateway) Token() string { return g.token }

// URL is the fake's base URL.
func (g *Gateway) URL() string { return g.srv.URL }

// HTTPClient is the http.Client to give a discordgo Session: every request
// to discord.com goes to the fake.
func (g *Gateway) HTTPClient() *http.Client {
	u, _ := url.Parse(g.srv.URL)
	return &http.Client{Timeout: 5 * time.Second, Transport: toFake{u}}
}

// toFake sends every request to the fake's host.
type toFake struct{ u *url.URL }

func (t toFake) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host, r.Host = t.u.Scheme, t.u.Host, t.u.Host
	return http.DefaultTransport.RoundTrip(r)
}

// Dialer is the websocket.Dialer to give a discordgo Session: every
// connection goes to the fake, whatever host the URL names.
func (g *Gateway) Dialer() *websocket.Dialer {
	addr := g.srv.Listener.Addr().String()
	return &websocket.Dialer{
		HandshakeTimeout: 5 * time.Second,
		NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

// close ends every connection and waits for their goroutines.
func (g *Gateway) close() {
	g.mu.Lock()
	g.closed = true
	conns := append([]*gwConn(nil), g.conns...)
	g.mu.Unlock()
	for _, c := range conns {
		_ = c.ws.Close()
	}
	g.srv.Close()
	g.handlers.Wait()
}

func (g *Gateway) notifyLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}

func (g *Gateway) waitFor(ctx context.Context, cond func() bool) error {
	for {
		g.mu.Lock()
		if cond() {
			g.mu.Unlock()
			return nil
		}
		ch := g.changed
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

var (
	gatewayPath     = regexp.MustCompile(`^/api(?:/v[0-9]+)?/gateway(/bot)?$`)
	interactionPath = regexp.MustCompile(`^/api(?:/v[0-9]+)?/interactions/([0-9]+)/([^/]+)/callback$`)
	followupPath    = regexp.MustCompile(`^/api(?:/v[0-9]+)?/webhooks/([0-9]+)/([^/]+)(/messages/@original)?$`)
)

func (g *Gateway) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case websocket.IsWebSocketUpgrade(r):
		g.serveWebSocket(w, r)
	case r.Method == http.MethodGet && gatewayPath.MatchString(r.URL.Path):
		g.serveGatewayURL(w, r, gatewayPath.FindStringSubmatch(r.URL.Path)[1] != "")
	case r.Method == http.MethodPost && interactionPath.MatchString(r.URL.Path):
		m := interactionPath.FindStringSubmatch(r.URL.Path)
		g.serveCallback(w, r, m[1], m[2])
	case followupPath.MatchString(r.URL.Path) && followupPath.FindStringSubmatch(r.URL.Path)[1] == g.AppID:
		m := followupPath.FindStringSubmatch(r.URL.Path)
		g.serveFollowup(w, r, m[2], m[3] != "")
	case g.proxy != nil:
		g.proxy.ServeHTTP(w, r)
	default:
		writeJSON(w, http.StatusNotFound, map[string]any{"code": 0, "message": "404: Not Found"})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// serveGatewayURL answers GET /gateway (no authentication) and
// /gateway/bot (a bot token, with the sharding advice).
func (g *Gateway) serveGatewayURL(w http.ResponseWriter, r *http.Request, bot bool) {
	wsURL := "ws" + strings.TrimPrefix(g.srv.URL, "http")
	if !bot {
		writeJSON(w, http.StatusOK, map[string]any{"url": wsURL})
		return
	}
	if r.Header.Get("Authorization") != "Bot "+g.token {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"code": 0, "message": "401: Unauthorized"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"url": wsURL, "shards": 1,
		"session_start_limit": map[string]any{"total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1}})
}

// serveCallback records an interaction response.
func (g *Gateway) serveCallback(w http.ResponseWriter, r *http.Request, id, token string) {
	var resp discordgo.InteractionResponse
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err := json.Unmarshal(body, &resp); err != nil || resp.Type == 0 {
		writeJSON(w, http.StatusBadRequest, map[string]any{"code": discordgo.ErrCodeInvalidFormBody, "message": "Invalid Form Body"})
		return
	}
	g.mu.Lock()
	sent, known := g.sentAt[id]
	answered := false
	for _, x := range g.responses {
		answered = answered || x.InteractionID == id
	}
	switch {
	case !known:
		g.mu.Unlock()
		writeJSON(w, http.StatusNotFound, map[string]any{"code": discordgo.ErrCodeUnknownInteraction, "message": "Unknown interaction"})
		return
	case answered:
		g.mu.Unlock()
		writeJSON(w, http.StatusBadRequest, map[string]any{"code": discordgo.ErrCodeInteractionHasAlreadyBeenAcknowledged,
			"message": "Interaction has already been acknowledged."})
		return
	}
	g.responses = append(g.responses, InteractionResponse{InteractionID: id, Token: token, Response: resp,
		Late: time.Since(sent) > 3*time.Second})
	on := g.clicked[token]
	g.notifyLocked()
	g.mu.Unlock()
	if resp.Type == discordgo.InteractionResponseUpdateMessage && resp.Data != nil {
		g.editOriginal(on, body)
	}
	w.WriteHeader(http.StatusNoContent)
}

// serveFollowup takes a follow-up message or an edit of the original
// message, with an interaction's token, within its 15 minutes.
func (g *Gateway) serveFollowup(w http.ResponseWriter, r *http.Request, token string, original bool) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var msg struct {
		Content    string          `json:"content"`
		Flags      int             `json:"flags"`
		Components json.RawMessage `json:"components"`
	}
	g.mu.Lock()
	on, known := g.clicked[token]
	answered := slices.ContainsFunc(g.responses, func(x InteractionResponse) bool { return x.Token == token })
	g.mu.Unlock()
	switch {
	case !known:
		writeJSON(w, http.StatusUnauthorized, map[string]any{"code": discordgo.ErrCodeInvalidWebhookTokenProvided, "message": "Invalid Webhook Token"})
		return
	case !answered:
		writeJSON(w, http.StatusNotFound, map[string]any{"code": discordgo.ErrCodeUnknownWebhook, "message": "Unknown Webhook"})
		return
	case json.Unmarshal(body, &msg) != nil || (!original && msg.Content == ""):
		writeJSON(w, http.StatusBadRequest, map[string]any{"code": discordgo.ErrCodeInvalidFormBody, "message": "Invalid Form Body"})
		return
	}
	if original && r.Method != http.MethodPatch || !original && r.Method != http.MethodPost {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"code": 0, "message": "405: Method Not Allowed"})
		return
	}
	g.mu.Lock()
	g.followups = append(g.followups, Followup{InteractionID: on.id, Edit: original, Content: msg.Content, Flags: msg.Flags,
		Components: msg.Components})
	g.notifyLocked()
	g.mu.Unlock()
	if original {
		g.editOriginal(on, body)
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": on.message, "channel_id": on.channel, "content": msg.Content})
}

// editOriginal applies an edit of the clicked message to the REST fake's
// copy of it (the bot's own message).
func (g *Gateway) editOriginal(on clickedOn, body []byte) {
	if g.rest == nil || on.message == "" {
		return
	}
	var edit struct {
		Data json.RawMessage `json:"data"` // an UPDATE_MESSAGE callback's
	}
	if json.Unmarshal(body, &edit) == nil && len(edit.Data) > 0 {
		body = edit.Data
	}
	g.rest.mu.Lock()
	defer g.rest.mu.Unlock()
	g.rest.editLocked(Request{Method: http.MethodPatch, Body: body}, on.channel, on.message)
}

// echo dispatches, as Discord does, a message the bot (or a webhook)
// posted: MESSAGE_CREATE with a bot author, in the newest session. With
// no session it is dropped, as Discord keeps nothing for a bot that is
// not connected.
func (g *Gateway) echo(m Message) {
	author := map[string]any{"id": g.BotID, "username": "chatrelay", "bot": true}
	data := map[string]any{"id": m.ID, "channel_id": m.ChannelID, "guild_id": GuildID, "author": author,
		"content": m.Content, "type": 0, "mentions": []any{}, "attachments": []any{}, "embeds": m.Embeds}
	if m.WebhookID != "" {
		data["webhook_id"] = m.WebhookID
		author["id"] = m.WebhookID
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if s := g.newestLocked(); s != nil {
		_ = g.dispatchLocked(s, "MESSAGE_CREATE", raw)
		g.notifyLocked()
	}
}

// newestLocked is the newest session, or nil.
func (g *Gateway) newestLocked() *gwSession {
	var s *gwSession
	for _, c := range g.conns {
		if c.session != nil {
			s = c.session
		}
	}
	return s
}

// serveWebSocket speaks the gateway's protocol on one connection.
func (g *Gateway) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	ws, err := g.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		_ = ws.Close()
		return
	}
	c := &gwConn{n: len(g.conns), ws: ws, done: make(chan struct{})}
	g.conns = append(g.conns, c)
	g.handlers.Add(1)
	g.notifyLocked()
	g.mu.Unlock()
	go g.read(c)
	hello, _ := json.Marshal(map[string]any{"heartbeat_interval": g.heartbeat.Milliseconds()})
	if err := c.write(gatewayPayload{Op: opHello, Data: hello}); err != nil {
		_ = ws.Close()
	}
}

// read handles what the client sends until the connection closes.
func (g *Gateway) read(c *gwConn) {
	defer g.handlers.Done()
	defer func() {
		g.mu.Lock()
		if c.session != nil && c.session.conn == c {
			c.session.conn = nil
		}
		if c.live {
			c.live = false
			g.live--
		}
		close(c.done)
		g.notifyLocked()
		g.mu.Unlock()
		_ = c.ws.Close()
	}()
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		var p gatewayPayload
		if err := json.Unmarshal(data, &p); err != nil {
			g.t.Errorf("discordtest: the client sent something that is not a gateway payload: %.200q", data)
			return
		}
		switch p.Op {
		case opHeartbeat:
			g.mu.Lock()
			g.heartbeats++
			g.notifyLocked()
			g.mu.Unlock()
			if c.write(gatewayPayload{Op: opHeartbeatAck, Data: json.RawMessage("null")}) != nil {
				return
			}
		case opIdentify:
			if !g.identify(c, p.Data) {
				return
			}
		case opResume:
			if !g.resume(c, p.Data) {
				return
			}
		default:
			// Presence and voice updates and the rest: not the bot's
			// concern in chatrelay; ignored as long as they are payloads.
		}
	}
}

// validToken reports whether an IDENTIFY or RESUME token is the bot's
// (discordgo sends it as given to New, with "Bot ").
func (g *Gateway) validToken(tok string) bool {
	return strings.TrimPrefix(tok, "Bot ") == g.token
}

func (g *Gateway) identify(c *gwConn, data json.RawMessage) bool {
	var id struct {
		Token   string           `json:"token"`
		Intents discordgo.Intent `json:"intents"`
	}
	_ = json.Unmarshal(data, &id)
	// The IDENTIFY is recorded with the session it opens, under one lock:
	// whoever WaitIdentified woke up dispatches in the new session, not
	// in the one it replaces.
	g.mu.Lock()
	g.identifies = append(g.identifies, Identify{Token: id.Token, Intents: id.Intents, Conn: c.n})
	if !g.validToken(id.Token) {
		g.notifyLocked()
		g.mu.Unlock()
		g.closeWith(c, closeAuthenticationFailed, "Authentication failed.")
		return false
	}
	g.seqID++
	s := &gwSession{id: fmt.Sprintf("session-%d-%s", g.seqID, randomToken()[3:11]), conn: c}
	g.sessions[s.id] = s
	c.session = s
	g.countLiveLocked(c)
	ready, _ := json.Marshal(map[string]any{
		"v": 10, "session_id": s.id, "resume_gateway_url": "ws" + strings.TrimPrefix(g.srv.URL, "http"),
		"user":        map[string]any{"id": g.BotID, "username": "chatrelay", "discriminator": "0", "bot": true},
		"guilds":      []any{},
		"application": map[string]any{"id": g.AppID, "flags": 0},
	})
	err := g.dispatchLocked(s, "READY", ready)
	g.notifyLocked()
	g.mu.Unlock()
	return err == nil
}

func (g *Gateway) resume(c *gwConn, data json.RawMessage) bool {
	var rs struct {
		Token     string `json:"token"`
		SessionID string `json:"session_id"`
		Seq       int64  `json:"seq"`
	}
	_ = json.Unmarshal(data, &rs)
	if !g.validToken(rs.Token) {
		g.closeWith(c, closeAuthenticationFailed, "Authentication failed.")
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	s, ok := g.sessions[rs.SessionID]
	g.resumes = append(g.resumes, Resume{SessionID: rs.SessionID, Seq: rs.Seq, Conn: c.n, Valid: ok})
	g.notifyLocked()
	if !ok {
		// Not resumable: the client must identify anew.
		return c.write(gatewayPayload{Op: opInvalidSession, Data: json.RawMessage("false")}) == nil
	}
	if old := s.conn; old != nil && old != c && old.live {
		// The session moves to this connection: it is still one.
		old.live = false
		g.live--
	}
	s.conn, c.session = c, s
	g.countLiveLocked(c)
	for _, p := range s.sent {
		if *p.Seq > rs.Seq {
			if c.write(p) != nil {
				return false
			}
		}
	}
	return g.dispatchLocked(s, "RESUMED", json.RawMessage("{}")) == nil
}

// countLiveLocked counts c as a live session's connection.
func (g *Gateway) countLiveLocked(c *gwConn) {
	if c.live {
		return
	}
	c.live = true
	g.live++
	g.maxLive = max(g.maxLive, g.live)
}

// MaxLive is the most sessions that were ever open at once (identified or
// resumed connections): one bot with two sessions receives every message
// twice.
func (g *Gateway) MaxLive() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.maxLive
}

func (g *Gateway) closeWith(c *gwConn, code int, text string) {
	c.wmu.Lock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
	c.wmu.Unlock()
}

// dispatchLocked numbers a dispatch in the session, keeps it for RESUME
// and writes it to the session's live connection, if it has one. It fails
// only when the dispatch cannot be kept.
func (g *Gateway) dispatchLocked(s *gwSession, typ string, data json.RawMessage) error {
	s.seq++
	seq := s.seq
	p := gatewayPayload{Op: opDispatch, Data: data, Seq: &seq, Type: typ}
	s.sent = append(s.sent, p)
	if s.conn == nil {
		return nil // replayed when the client resumes
	}
	if err := s.conn.write(p); err != nil {
		// The connection is closing (the client left it: op 7, a
		// failure): the dispatch waits for the RESUME, as Discord keeps
		// it.
		s.conn = nil
	}
	return nil
}

// ErrNoSession is returned by Dispatch when no client has identified.
var ErrNoSession = errors.New("discordtest: no gateway session")

// Dispatch sends an event (op 0, t = typ) in the newest session, waiting
// until a client has identified (or ctx ends). While the client is away
// (reconnecting) the event is kept and replayed when it resumes, as
// Discord does. It returns the event's sequence number.
func (g *Gateway) Dispatch(ctx context.Context, typ string, data any) (int64, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return 0, err
	}
	var s *gwSession
	if err := g.waitFor(ctx, func() bool {
		s = g.newestLocked()
		return s != nil
	}); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrNoSession, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if typ == "INTERACTION_CREATE" {
		var in struct {
			ID        string `json:"id"`
			Token     string `json:"token"`
			ChannelID string `json:"channel_id"`
			Message   struct {
				ID string `json:"id"`
			} `json:"message"`
		}
		_ = json.Unmarshal(raw, &in)
		g.sentAt[in.ID] = time.Now()
		g.clicked[in.Token] = clickedOn{id: in.ID, channel: in.ChannelID, message: in.Message.ID}
	}
	if err := g.dispatchLocked(s, typ, raw); err != nil {
		return 0, err
	}
	return s.seq, nil
}

// Reconnect sends op 7 RECONNECT on the newest identified connection: the
// client must close it, connect again and RESUME.
func (g *Gateway) Reconnect() error {
	g.mu.Lock()
	var c *gwConn
	for _, x := range g.conns {
		if x.session != nil && x.session.conn == x {
			c = x
		}
	}
	g.mu.Unlock()
	if c == nil {
		return ErrNoSession
	}
	return c.write(gatewayPayload{Op: opReconnect, Data: json.RawMessage("null")})
}

// WaitIdentified waits for n IDENTIFYs (the first is 1).
func (g *Gateway) WaitIdentified(ctx context.Context, n int) ([]Identify, error) {
	var out []Identify
	err := g.waitFor(ctx, func() bool {
		out = append(out[:0], g.identifies...)
		return len(g.identifies) >= n
	})
	return out, err
}

// WaitResumed waits for n RESUMEs.
func (g *Gateway) WaitResumed(ctx context.Context, n int) ([]Resume, error) {
	var out []Resume
	err := g.waitFor(ctx, func() bool {
		out = append(out[:0], g.resumes...)
		return len(g.resumes) >= n
	})
	return out, err
}

// WaitHeartbeats waits until the client has sent n heartbeats.
func (g *Gateway) WaitHeartbeats(ctx context.Context, n int) error {
	return g.waitFor(ctx, func() bool { return g.heartbeats >= n })
}

// WaitInteractionResponse waits for the bot's callback to an interaction.
func (g *Gateway) WaitInteractionResponse(ctx context.Context, interactionID string) (InteractionResponse, error) {
	var got InteractionResponse
	err := g.waitFor(ctx, func() bool {
		for _, r := range g.responses {
			if r.InteractionID == interactionID {
				got = r
				return true
			}
		}
		return false
	})
	return got, err
}

// WaitFollowups waits until the bot has sent n follow-ups or original
// edits (all interactions together) and returns them.
func (g *Gateway) WaitFollowups(ctx context.Context, n int) ([]Followup, error) {
	var out []Followup
	err := g.waitFor(ctx, func() bool {
		out = append(out[:0], g.followups...)
		return len(g.followups) >= n
	})
	return out, err
}

// Responses returns the interaction callbacks so far.
func (g *Gateway) Responses() []InteractionResponse {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.responses)
}

// Say writes a message as a person in a channel or thread: in the REST
// fake (WithREST; so that the bot can react to it) and as a MESSAGE_CREATE
// dispatch, with their member's nickname. It returns the message's id.
func (g *Gateway) Say(ctx context.Context, channelID string, author discordgo.User, nick, content string) (string, error) {
	id := ""
	if g.rest != nil {
		id = g.rest.Write(channelID, author, content).ID
	} else {
		g.mu.Lock()
		g.seqID++
		id = fmt.Sprintf("%d", 1310000000000500000+g.seqID)
		g.mu.Unlock()
	}
	_, err := g.Dispatch(ctx, "MESSAGE_CREATE", MessageCreate(id, channelID, GuildID, author, nick, content))
	return id, err
}

// WaitDisconnected waits until every connection made so far is closed.
func (g *Gateway) WaitDisconnected(ctx context.Context) error {
	return g.waitFor(ctx, func() bool {
		for _, c := range g.conns {
			select {
			case <-c.done:
			default:
				return false
			}
		}
		return true
	})
}

// Connections counts the WebSocket connections made so far.
func (g *Gateway) Connections() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

// MessageCreate is the data of a MESSAGE_CREATE for a message in a thread
// (channel) of a guild, as Discord sends it to a bot with the
// MessageContent intent.
func MessageCreate(id, channelID, guildID string, author discordgo.User, nick, content string) map[string]any {
	return map[string]any{
		"id": id, "channel_id": channelID, "guild_id": guildID,
		"author": map[string]any{"id": author.ID, "username": author.Username, "global_name": author.GlobalName,
			"avatar": author.Avatar, "bot": author.Bot},
		"member":  map[string]any{"nick": nick, "roles": []string{}},
		"content": content, "timestamp": "2026-12-06T10:00:00.000000+00:00",
		"type": 0, "flags": 0, "mentions": []any{}, "mention_roles": []any{}, "attachments": []any{}, "embeds": []any{},
	}
}

// ButtonClick is the data of an INTERACTION_CREATE for a click on a button
// (custom_id) of message messageID in channelID, by user.
func (g *Gateway) ButtonClick(id, channelID, guildID, messageID, customID string, user discordgo.User, nick string) map[string]any {
	return map[string]any{
		"id": id, "application_id": g.AppID, "type": int(discordgo.InteractionMessageComponent),
		"token": "itok-" + id, "version": 1, "channel_id": channelID, "guild_id": guildID,
		"member": map[string]any{"nick": nick, "roles": []string{},
			"user": map[string]any{"id": user.ID, "username": user.Username, "global_name": user.GlobalName, "avatar": user.Avatar}},
		"message": map[string]any{"id": messageID, "channel_id": channelID, "content": "",
			"author": map[string]any{"id": g.BotID, "username": "chatrelay", "bot": true}},
		"data": map[string]any{"custom_id": customID, "component_type": int(discordgo.ButtonComponent)},
	}
}
