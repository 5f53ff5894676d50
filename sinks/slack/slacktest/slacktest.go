// Package slacktest is a fake Slack for tests, on httptest: an incoming
// webhook and the Web API methods chatrelay calls (chat.postMessage,
// chat.update, reactions.add, users.info, auth.test with the token's
// scopes in X-OAuth-Scopes, and apps.connections.open for a SocketMode).
// It answers as Slack does (a webhook's plain-text errors,
// "ok":false with HTTP 200 from the Web API, 429 with Retry-After), checks
// Slack's Block Kit limits, can hold a channel to one message per second,
// and can be scripted to fail. Every request is recorded.
package slacktest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jonboulle/clockwork"
	"golang.org/x/time/rate"
)

// Slack's limits, as the fake enforces them.
const (
	MaxBlocks          = 50
	MaxSectionText     = 3000
	MaxSectionFields   = 10
	MaxFieldText       = 2000
	MaxHeaderText      = 150
	MaxContextElements = 10
	// MaxBlocksText is where the fake answers msg_blocks_too_long: the sum
	// of the text in a message's blocks (Slack's bound is undocumented;
	// it was seen at about 11,300).
	MaxBlocksText = 12000
	// MaxText is where Slack starts truncating a message's text.
	MaxText = 40000
)

// Request is one request the fake received, and what it answered.
type Request struct {
	Method   string // "webhook", or the Web API method: "chat.postMessage", "auth.test", …
	Token    string // Web API: the form's token, or the Bearer token
	Channel  string
	Text     string
	Blocks   json.RawMessage
	ThreadTS string
	// ReplyBroadcast is reply_broadcast as sent: "true" asks Slack to
	// show a reply in the channel too.
	ReplyBroadcast string
	UnfurlLinks    string // "true", "false" or "" when not sent
	UnfurlMedia    string
	// TS is the message a chat.update or reactions.add names (ts,
	// timestamp); Name a reaction's name; User the user users.info is
	// asked about.
	TS        string
	Name      string
	User      string
	UserAgent string
	Body      []byte // the raw body
	Status    int    // the HTTP status answered
	Error     string // the Slack error code answered; "" on success
}

// Message is a message the fake accepted: what the channel shows.
type Message struct {
	Channel  string // "" for the webhook's channel
	TS       string
	ThreadTS string // the thread it was posted in; "" at top level
	// Broadcast is set for a reply also shown in the channel
	// (reply_broadcast).
	Broadcast bool
	Text      string
	Blocks    json.RawMessage
}

// Response scripts the answer to one request. The zero Response lets the
// fake answer as usual.
type Response struct {
	// Status is the HTTP status (default: 200 from the Web API; 400 from a
	// webhook when Error is set, else 200).
	Status int
	// Error is a Slack error code: "ok":false from the Web API, the
	// plain-text body from a webhook.
	Error string
	// RetryAfter, if set, is sent as the Retry-After header.
	RetryAfter string
	// Body, if set, is the whole body, sent as it is.
	Body string
}

// Server is a fake Slack.
type Server struct {
	// URL is the server's base URL.
	URL string
	// Token is the bot token the Web API accepts.
	Token string

	t           testing.TB
	srv         *httptest.Server
	webhookPath string
	clock       clockwork.Clock
	every       time.Duration
	burst       int
	// deletedRoot is the error code a reply to a deleted or unknown
	// thread root gets; "" posts it at top level.
	deletedRoot string

	mux    *http.ServeMux
	scopes []string

	mu        sync.Mutex
	script    []Response
	requests  []Request
	messages  []Message
	limiters  map[string]*rate.Limiter
	deleted   map[string]bool
	reactions []Reaction
	users     map[string]User
	seq       int
}

// Reaction is a reaction the fake accepted.
type Reaction struct {
	Channel string
	TS      string
	Name    string
}

// User is a member of the fake workspace, as users.info describes it.
type User struct {
	ID          string
	Name        string // the handle
	RealName    string
	DisplayName string // profile.display_name; Slack shows it first
	Image72     string // profile.image_72
	Bot         bool
}

// ReplyScopes are the scopes a token has unless WithScopes says
// otherwise: what two-way live chat needs.
var ReplyScopes = []string{"chat:write", "reactions:write", "users:read", "channels:history", "groups:history"}

// Option configures a Server.
type Option func(*Server)

// WithRateLimit holds each channel (and the webhook) to one message every
// every, with bursts of burst; past it the fake answers 429 with
// Retry-After in whole seconds, as Slack does.
func WithRateLimit(every time.Duration, burst int) Option {
	return func(s *Server) { s.every, s.burst = every, max(burst, 1) }
}

// WithScopes sets the scopes of the bot token, sent in X-OAuth-Scopes
// with every Web API answer as Slack does (default ReplyScopes); none at
// all sends no header.
func WithScopes(scopes ...string) Option {
	return func(s *Server) { s.scopes = scopes }
}

// WithSocketMode serves sm's apps.connections.open among the Web API
// methods, as Slack does: a Socket Mode client pointed at the server's
// APIURL opens its connection there.
func WithSocketMode(sm *SocketMode) Option {
	return func(s *Server) { s.mux.HandleFunc("POST /api/apps.connections.open", sm.serveOpen) }
}

// WithClock sets the clock the rate limit runs on.
func WithClock(c clockwork.Clock) Option {
	return func(s *Server) { s.clock = c }
}

// WithDeletedRootAnswer makes chat.postMessage refuse a reply whose
// thread_ts names a deleted or unknown message with "ok":false and code,
// as Slack has been reported to answer (thread_not_found,
// invalid_thread_ts). Without it the reply is posted at top level, as
// Slack does in other reports.
func WithDeletedRootAnswer(code string) Option {
	return func(s *Server) { s.deletedRoot = code }
}

// NewServer starts a fake Slack, closed when the test ends.
func NewServer(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{
		t:           t,
		Token:       "xoxb-1-slacktest-" + randomHex(8),
		webhookPath: "/services/T0FAKE/B0FAKE/" + randomHex(12),
		clock:       clockwork.NewRealClock(),
		limiters:    map[string]*rate.Limiter{},
		deleted:     map[string]bool{},
	}
	s.mux = http.NewServeMux()
	s.scopes = ReplyScopes
	s.users = map[string]User{}
	for _, o := range opts {
		o(s)
	}
	mux := s.mux
	mux.HandleFunc("/services/", s.serveWebhook)
	mux.HandleFunc("/api/chat.postMessage", s.servePostMessage)
	mux.HandleFunc("/api/chat.update", s.serveUpdate)
	mux.HandleFunc("/api/reactions.add", s.serveReactionsAdd)
	mux.HandleFunc("/api/users.info", s.serveUsersInfo)
	mux.HandleFunc("/api/auth.test", s.serveAuthTest)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("slacktest: unexpected request %s %s", r.Method, r.URL.Path)
		http.NotFound(w, r)
	})
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// WebhookURL is the incoming webhook's URL. Its path is the secret.
func (s *Server) WebhookURL() string { return s.URL + s.webhookPath }

// WebhookPath is the incoming webhook's path, which carries its token.
func (s *Server) WebhookPath() string { return s.webhookPath }

// APIURL is the Web API's base URL, with the trailing slash slack-go
// needs.
func (s *Server) APIURL() string { return s.URL + "/api/" }

// Script queues answers for the next requests, of any method, in order.
func (s *Server) Script(rs ...Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = append(s.script, rs...)
}

// Requests returns every request so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Messages returns every message accepted so far, in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// DeleteMessage deletes a message: a reply sent to its thread afterwards
// is posted at top level, as Slack does in some reports, or refused (see
// WithDeletedRootAnswer).
func (s *Server) DeleteMessage(channel, ts string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleted[channel+"/"+ts] = true
}

// next pops the scripted answer, if any.
func (s *Server) next() (Response, bool) {
	if len(s.script) == 0 {
		return Response{}, false
	}
	r := s.script[0]
	s.script = s.script[1:]
	return r, r != Response{}
}

// limited reports whether key is over its rate, and for how long.
func (s *Server) limited(key string) (string, bool) {
	if s.every <= 0 {
		return "", false
	}
	lim, ok := s.limiters[key]
	if !ok {
		lim = rate.NewLimiter(rate.Every(s.every), s.burst)
		s.limiters[key] = lim
	}
	now := s.clock.Now()
	if lim.AllowN(now, 1) {
		return "", false
	}
	r := lim.ReserveN(now, 1)
	wait := r.DelayFrom(now)
	r.CancelAt(now)
	return fmt.Sprint(max(1, int(math.Ceil(wait.Seconds())))), true
}

func (s *Server) serveWebhook(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	req := Request{Method: "webhook", Body: body, UserAgent: r.UserAgent()}
	var msg struct {
		Text        string          `json:"text"`
		Blocks      json.RawMessage `json:"blocks"`
		ThreadTS    string          `json:"thread_ts"`
		UnfurlLinks *bool           `json:"unfurl_links"`
		UnfurlMedia *bool           `json:"unfurl_media"`
	}
	jsonErr := json.Unmarshal(body, &msg)
	req.Text, req.Blocks, req.ThreadTS = msg.Text, msg.Blocks, msg.ThreadTS
	req.UnfurlLinks, req.UnfurlMedia = boolString(msg.UnfurlLinks), boolString(msg.UnfurlMedia)

	s.mu.Lock()
	defer s.mu.Unlock()
	answer := func(status int, code, retryAfter, raw string) {
		req.Status, req.Error = status, code
		s.requests = append(s.requests, req)
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		if raw == "" {
			raw = code
		}
		_, _ = io.WriteString(w, raw)
	}
	if sr, ok := s.next(); ok {
		status := sr.Status
		if status == 0 {
			status = http.StatusOK
			if sr.Error != "" {
				status = http.StatusBadRequest
			}
		}
		raw := sr.Body
		if raw == "" && sr.Error == "" {
			raw = "ok"
		}
		answer(status, sr.Error, sr.RetryAfter, raw)
		return
	}
	switch {
	case r.Method != http.MethodPost:
		s.t.Errorf("slacktest: webhook called with %s", r.Method)
		answer(http.StatusMethodNotAllowed, "invalid_payload", "", "")
		return
	case r.URL.Path != s.webhookPath:
		answer(http.StatusNotFound, "no_service", "", "")
		return
	case jsonErr != nil:
		answer(http.StatusBadRequest, "invalid_payload", "", "")
		return
	}
	if ra, over := s.limited("webhook"); over {
		answer(http.StatusTooManyRequests, "rate_limited", ra, "")
		return
	}
	if code := check(msg.Text, msg.Blocks); code != "" {
		answer(http.StatusBadRequest, code, "", "")
		return
	}
	s.seq++
	s.messages = append(s.messages, Message{TS: s.ts(), Text: msg.Text, Blocks: msg.Blocks})
	answer(http.StatusOK, "", "", "ok")
}

func boolString(b *bool) string {
	if b == nil {
		return ""
	}
	return fmt.Sprint(*b)
}

// apiRequest reads a Web API request: form-encoded (as slack-go sends
// chat.postMessage) or JSON.
func apiRequest(r *http.Request, method string) Request {
	req := Request{Method: method, UserAgent: r.UserAgent()}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	req.Body = body
	req.Token = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var m struct {
			Channel     string          `json:"channel"`
			Text        string          `json:"text"`
			Blocks      json.RawMessage `json:"blocks"`
			ThreadTS    string          `json:"thread_ts"`
			Broadcast   *bool           `json:"reply_broadcast"`
			UnfurlLinks *bool           `json:"unfurl_links"`
			UnfurlMedia *bool           `json:"unfurl_media"`
		}
		_ = json.Unmarshal(body, &m)
		req.Channel, req.Text, req.Blocks, req.ThreadTS = m.Channel, m.Text, m.Blocks, m.ThreadTS
		req.ReplyBroadcast = boolString(m.Broadcast)
		req.UnfurlLinks, req.UnfurlMedia = boolString(m.UnfurlLinks), boolString(m.UnfurlMedia)
		return req
	}
	r.Body = io.NopCloser(strings.NewReader(string(body)))
	if err := r.ParseForm(); err != nil {
		return req
	}
	if tok := r.PostForm.Get("token"); tok != "" {
		req.Token = tok
	}
	req.Channel, req.Text, req.ThreadTS = r.PostForm.Get("channel"), r.PostForm.Get("text"), r.PostForm.Get("thread_ts")
	req.TS, req.Name, req.User = r.PostForm.Get("ts"), r.PostForm.Get("name"), r.PostForm.Get("user")
	if ts := r.PostForm.Get("timestamp"); ts != "" {
		req.TS = ts
	}
	req.ReplyBroadcast = r.PostForm.Get("reply_broadcast")
	if b := r.PostForm.Get("blocks"); b != "" {
		req.Blocks = json.RawMessage(b)
	}
	req.UnfurlLinks, req.UnfurlMedia = r.PostForm.Get("unfurl_links"), r.PostForm.Get("unfurl_media")
	return req
}

// answerAPI writes a Web API answer and records req.
func (s *Server) answerAPI(w http.ResponseWriter, req Request, status int, code, retryAfter string, body any) {
	req.Status, req.Error = status, code
	s.requests = append(s.requests, req)
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	if len(s.scopes) > 0 && req.Token == s.Token {
		w.Header().Set("X-OAuth-Scopes", strings.Join(s.scopes, ","))
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	switch b := body.(type) {
	case string:
		_, _ = io.WriteString(w, b)
	case nil:
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": code})
	default:
		_ = json.NewEncoder(w).Encode(b)
	}
}

// scripted answers with the next scripted Response, if there is one.
func (s *Server) scripted(w http.ResponseWriter, req Request) bool {
	sr, ok := s.next()
	if !ok {
		return false
	}
	status := sr.Status
	if status == 0 {
		status = http.StatusOK
	}
	var body any
	switch {
	case sr.Body != "":
		body = sr.Body
	case sr.Error == "" && status == http.StatusOK:
		body = map[string]any{"ok": true}
	}
	s.answerAPI(w, req, status, sr.Error, sr.RetryAfter, body)
	return true
}

func (s *Server) servePostMessage(w http.ResponseWriter, r *http.Request) {
	req := apiRequest(r, "chat.postMessage")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.scripted(w, req) {
		return
	}
	fail := func(code string) { s.answerAPI(w, req, http.StatusOK, code, "", nil) }
	switch {
	case r.Method != http.MethodPost:
		s.t.Errorf("slacktest: chat.postMessage called with %s", r.Method)
		fail("invalid_request")
		return
	case req.Token == "":
		fail("not_authed")
		return
	case req.Token != s.Token:
		fail("invalid_auth")
		return
	case req.Channel == "":
		fail("channel_not_found")
		return
	}
	if ra, over := s.limited("channel:" + req.Channel); over {
		s.answerAPI(w, req, http.StatusTooManyRequests, "ratelimited", ra, nil)
		return
	}
	if code := check(req.Text, req.Blocks); code != "" {
		fail(code)
		return
	}
	thread := ""
	if req.ThreadTS != "" {
		switch {
		case s.exists(req.Channel, req.ThreadTS):
			thread = req.ThreadTS
		case s.deletedRoot != "":
			fail(s.deletedRoot)
			return
		}
	}
	s.seq++
	m := Message{Channel: req.Channel, TS: s.ts(), ThreadTS: thread, Text: req.Text, Blocks: req.Blocks,
		Broadcast: thread != "" && req.ReplyBroadcast == "true"}
	s.messages = append(s.messages, m)
	msg := map[string]any{"type": "message", "text": m.Text, "ts": m.TS}
	if thread != "" {
		msg["thread_ts"] = thread
	}
	s.answerAPI(w, req, http.StatusOK, "", "", map[string]any{"ok": true, "channel": m.Channel, "ts": m.TS, "message": msg})
}

// exists reports whether ts is a top-level message of channel that was not
// deleted.
func (s *Server) exists(channel, ts string) bool {
	if s.deleted[channel+"/"+ts] {
		return false
	}
	for _, m := range s.messages {
		if m.Channel == channel && m.TS == ts && m.ThreadTS == "" {
			return true
		}
	}
	return false
}

func (s *Server) serveAuthTest(w http.ResponseWriter, r *http.Request) {
	req := apiRequest(r, "auth.test")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.scripted(w, req) {
		return
	}
	switch {
	case req.Token == "":
		s.answerAPI(w, req, http.StatusOK, "not_authed", "", nil)
	case req.Token != s.Token:
		s.answerAPI(w, req, http.StatusOK, "invalid_auth", "", nil)
	default:
		s.answerAPI(w, req, http.StatusOK, "", "", map[string]any{
			"ok": true, "url": "https://slacktest.slack.com/", "team": "Slacktest",
			"user": "chatrelay", "team_id": "T0FAKE", "user_id": "U0FAKE", "bot_id": "B0FAKE",
		})
	}
}

func (s *Server) ts() string { return fmt.Sprintf("1700000000.%06d", s.seq) }

// check applies Slack's limits to a message, returning the error code
// Slack would answer, or "".
func check(text string, raw json.RawMessage) string {
	if utf8.RuneCountInString(text) > MaxText {
		return "msg_too_long"
	}
	if len(raw) == 0 || string(raw) == "null" {
		if strings.TrimSpace(text) == "" {
			return "no_text"
		}
		return ""
	}
	var blocks []struct {
		Type     string            `json:"type"`
		Text     *textObject       `json:"text"`
		Fields   []textObject      `json:"fields"`
		Elements []json.RawMessage `json:"elements"`
	}
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return "invalid_blocks_format"
	}
	if len(blocks) > MaxBlocks {
		return "invalid_blocks"
	}
	if len(blocks) == 0 && strings.TrimSpace(text) == "" {
		return "no_text"
	}
	total := 0
	count := func(t textObject) int {
		n := utf8.RuneCountInString(t.Text)
		total += n
		return n
	}
	for _, b := range blocks {
		switch b.Type {
		case "header":
			if b.Text == nil || b.Text.Type != "plain_text" {
				return "invalid_blocks"
			}
			if n := count(*b.Text); n == 0 || n > MaxHeaderText {
				return "invalid_blocks"
			}
		case "section":
			if b.Text == nil && len(b.Fields) == 0 {
				return "invalid_blocks"
			}
			if b.Text != nil {
				if n := count(*b.Text); n == 0 || n > MaxSectionText || !b.Text.valid() {
					return "invalid_blocks"
				}
			}
			if len(b.Fields) > MaxSectionFields {
				return "invalid_blocks"
			}
			for _, f := range b.Fields {
				if n := count(f); n == 0 || n > MaxFieldText || !f.valid() {
					return "invalid_blocks"
				}
			}
		case "context":
			if len(b.Elements) == 0 || len(b.Elements) > MaxContextElements {
				return "invalid_blocks"
			}
			for _, e := range b.Elements {
				var t textObject
				if json.Unmarshal(e, &t) != nil || !t.valid() {
					return "invalid_blocks"
				}
				if n := count(t); n == 0 || n > MaxSectionText {
					return "invalid_blocks"
				}
			}
		case "divider":
		case "actions":
			if code := checkActions(b.Elements); code != "" {
				return code
			}
		default:
			return "invalid_blocks"
		}
	}
	if total > MaxBlocksText {
		return "msg_blocks_too_long"
	}
	return ""
}

type textObject struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

func (t textObject) valid() bool { return t.Type == "mrkdwn" || t.Type == "plain_text" }

// authorized answers not_authed or invalid_auth for a request without the
// bot token, and reports whether it had it.
func (s *Server) authorized(w http.ResponseWriter, req Request) bool {
	switch {
	case req.Token == "":
		s.answerAPI(w, req, http.StatusOK, "not_authed", "", nil)
	case req.Token != s.Token:
		s.answerAPI(w, req, http.StatusOK, "invalid_auth", "", nil)
	default:
		return true
	}
	return false
}

// needs answers missing_scope when the token lacks scope.
func (s *Server) needs(w http.ResponseWriter, req Request, scope string) bool {
	for _, have := range s.scopes {
		if have == scope {
			return true
		}
	}
	s.answerAPI(w, req, http.StatusOK, "missing_scope", "", map[string]any{"ok": false, "error": "missing_scope",
		"needed": scope, "provided": strings.Join(s.scopes, ",")})
	return false
}

// find returns the index of the message ts of channel (top level or in a
// thread), or -1.
func (s *Server) find(channel, ts string) int {
	if s.deleted[channel+"/"+ts] {
		return -1
	}
	for i, m := range s.messages {
		if m.Channel == channel && m.TS == ts {
			return i
		}
	}
	return -1
}

// serveUpdate is chat.update: it replaces the text and blocks of a
// message the bot posted.
func (s *Server) serveUpdate(w http.ResponseWriter, r *http.Request) {
	req := apiRequest(r, "chat.update")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.scripted(w, req) || !s.authorized(w, req) {
		return
	}
	fail := func(code string) { s.answerAPI(w, req, http.StatusOK, code, "", nil) }
	i := s.find(req.Channel, req.TS)
	switch {
	case req.Channel == "":
		fail("channel_not_found")
		return
	case i < 0:
		fail("message_not_found")
		return
	}
	if code := check(req.Text, req.Blocks); code != "" {
		fail(code)
		return
	}
	s.messages[i].Text, s.messages[i].Blocks = req.Text, req.Blocks
	s.answerAPI(w, req, http.StatusOK, "", "", map[string]any{"ok": true, "channel": req.Channel, "ts": req.TS, "text": req.Text})
}

// serveReactionsAdd is reactions.add: any message that was not deleted
// takes a reaction once.
func (s *Server) serveReactionsAdd(w http.ResponseWriter, r *http.Request) {
	req := apiRequest(r, "reactions.add")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.scripted(w, req) || !s.authorized(w, req) || !s.needs(w, req, "reactions:write") {
		return
	}
	fail := func(code string) { s.answerAPI(w, req, http.StatusOK, code, "", nil) }
	switch {
	case req.Channel == "":
		fail("channel_not_found")
		return
	case req.TS == "" || s.deleted[req.Channel+"/"+req.TS]:
		fail("message_not_found")
		return
	case req.Name == "":
		fail("invalid_name")
		return
	}
	for _, x := range s.reactions {
		if x == (Reaction{req.Channel, req.TS, req.Name}) {
			fail("already_reacted")
			return
		}
	}
	s.reactions = append(s.reactions, Reaction{req.Channel, req.TS, req.Name})
	s.answerAPI(w, req, http.StatusOK, "", "", map[string]any{"ok": true})
}

// Reactions returns the reactions added so far, in order.
func (s *Server) Reactions() []Reaction {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Reaction(nil), s.reactions...)
}

// AddUser makes u a member of the workspace, for users.info.
func (s *Server) AddUser(u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[u.ID] = u
}

// serveUsersInfo is users.info.
func (s *Server) serveUsersInfo(w http.ResponseWriter, r *http.Request) {
	req := apiRequest(r, "users.info")
	if req.User == "" {
		req.User = r.URL.Query().Get("user")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.scripted(w, req) || !s.authorized(w, req) || !s.needs(w, req, "users:read") {
		return
	}
	u, ok := s.users[req.User]
	if !ok {
		s.answerAPI(w, req, http.StatusOK, "user_not_found", "", nil)
		return
	}
	s.answerAPI(w, req, http.StatusOK, "", "", map[string]any{"ok": true, "user": map[string]any{
		"id": u.ID, "name": u.Name, "real_name": u.RealName, "is_bot": u.Bot,
		"profile": map[string]any{"display_name": u.DisplayName, "real_name": u.RealName, "image_72": u.Image72},
	}})
}

// Message returns the message ts of channel as it now stands.
func (s *Server) Message(channel, ts string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := s.find(channel, ts); i >= 0 {
		return s.messages[i], true
	}
	return Message{}, false
}

// Limits of an actions block and its buttons
// (https://docs.slack.dev/reference/block-kit/blocks/actions-block,
// …/block-elements/button-element).
const (
	MaxActionElements = 25
	MaxButtonText     = 75
	MaxActionID       = 255
	MaxButtonValue    = 2000
)

// checkActions checks an actions block's elements: buttons only, here.
func checkActions(elements []json.RawMessage) string {
	if len(elements) == 0 || len(elements) > MaxActionElements {
		return "invalid_blocks"
	}
	ids := map[string]bool{}
	for _, e := range elements {
		var b struct {
			Type     string     `json:"type"`
			Text     textObject `json:"text"`
			ActionID string     `json:"action_id"`
			Value    string     `json:"value"`
			Style    string     `json:"style"`
		}
		if json.Unmarshal(e, &b) != nil || b.Type != "button" || b.Text.Type != "plain_text" {
			return "invalid_blocks"
		}
		if n := utf8.RuneCountInString(b.Text.Text); n == 0 || n > MaxButtonText || len(b.ActionID) > MaxActionID ||
			len(b.Value) > MaxButtonValue || ids[b.ActionID] || (b.Style != "" && b.Style != "primary" && b.Style != "danger") {
			return "invalid_blocks"
		}
		if b.ActionID != "" {
			ids[b.ActionID] = true
		}
	}
	return ""
}
