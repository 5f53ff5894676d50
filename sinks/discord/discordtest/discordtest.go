// Package discordtest is a fake of Discord's REST API for tests: channel
// webhooks (execute with wait and thread_id, forum posts with thread_name,
// get), channel messages, threads started from a message, forum posts,
// get channel, and a channel's history (after and limit: newest first, as
// Discord answers). It keeps Discord's message limits (a request that
// breaks one gets 400 with code 50035, as Discord answers), a per-bucket rate limit
// with X-RateLimit-* headers on every answer and a 429 with JSON
// retry_after and Retry-After when a bucket is exceeded, and scripted
// answers (error codes, 429s, 5xx) for the next matching requests.
//
// The fake also holds chatrelay's own rule: every message must carry
// allowed_mentions with an empty parse list ("parse":[]), so that nothing in
// the text can ping anyone; a message without it gets 400 (code 50035).
//
// Handlers never stop the test: a request the fake cannot handle is
// answered with an error status and recorded like any other.
package discordtest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/jonboulle/clockwork"
)

// Discord's limits, as the fake enforces them. Characters are counted in
// UTF-16 units, the stricter of the two readings of Discord's docs.
const (
	MaxContent     = 2000
	MaxEmbeds      = 10
	MaxTitle       = 256
	MaxDescription = 4096
	MaxFields      = 25
	MaxFieldName   = 256
	MaxFieldValue  = 1024
	MaxFooter      = 2048
	MaxAuthorName  = 256
	MaxEmbedsTotal = 6000
	MaxThreadName  = 100
)

// Default rate limit of every bucket: 5 requests per 2 s, what Discord is
// reported to allow a webhook.
const (
	DefaultBucketLimit  = 5
	DefaultBucketWindow = 2 * time.Second
)

// Server is a fake Discord REST API. Its methods are safe for concurrent
// use.
type Server struct {
	srv   *httptest.Server
	t     testing.TB
	clock clockwork.Clock
	token string

	mu       sync.Mutex
	limit    int
	window   time.Duration
	nextID   uint64
	webhooks map[string]*webhook
	channels map[string]*channel
	messages []Message
	requests []Request
	script   []scripted
	buckets  map[string]*bucket
	limited  int

	// Guilds, the bot's application, reactions and edits (guild.go).
	guilds    map[string]*guild
	appFlags  int
	reactions []Reaction
	edits     []Edit
	created   []Message       // posted by the bot or a webhook, not yet told to onPost
	onPost    []func(Message) // the fake gateway's: it dispatches what the bot posts
}

type webhook struct {
	id, token, channel string
}

type channel struct {
	id, parent, name string
	guild            string
	overwrites       []*discordgo.PermissionOverwrite
	typ              discordgo.ChannelType
	archived, locked bool
}

type bucket struct {
	start time.Time
	count int
}

type scripted struct {
	match string
	skip  int // matching requests to let through first
	reply Reply
}

// Reply is a scripted answer. It carries exactly the headers given (no
// Retry-After or X-RateLimit-* of its own), so that tests can leave any of
// them out; the bucket limit's own 429s carry all of them.
type Reply struct {
	Status     int         // HTTP status (default 200)
	Code       int         // Discord error code in the JSON body
	Message    string      // its message
	RetryAfter float64     // seconds, sent as the body's retry_after (429)
	Global     bool        // the body's global flag (429)
	Header     http.Header // extra headers, e.g. Retry-After or X-RateLimit-*
	Body       string      // a raw body instead of the JSON one (an HTML page)
}

// Request is one request the fake received.
type Request struct {
	Method string
	Path   string // after /api or /api/v{N}
	Query  url.Values
	Header http.Header
	Body   []byte
	Status int // the status it was answered with
}

// Message is one message the fake created.
type Message struct {
	ID        string
	ChannelID string // a channel or a thread
	WebhookID string
	Content   string
	Embeds    []*discordgo.MessageEmbed
	// Components is the message's components (buttons), as last sent
	// (posted or edited), raw.
	Components json.RawMessage
	// Author is the person who wrote it (Write); "" for the bot's and
	// webhooks' messages.
	Author string
	// user is the author as Write was given it (the history shows it).
	user *discordgo.User
	// AllowedMentions is the request's allowed_mentions, as sent.
	AllowedMentions discordgo.MessageAllowedMentions
	Payload         []byte // the request body
}

// Option configures a Server.
type Option func(*Server)

// WithClock gives the fake a clock for its rate-limit buckets (default:
// the real clock).
func WithClock(c clockwork.Clock) Option { return func(s *Server) { s.clock = c } }

// WithRateLimit sets every bucket's limit: limit requests per window. A
// limit of 0 turns rate limiting off (headers are still sent).
func WithRateLimit(limit int, window time.Duration) Option {
	return func(s *Server) { s.limit, s.window = limit, window }
}

// NewServer starts a fake Discord API, closed when the test ends.
func NewServer(t testing.TB, opts ...Option) *Server {
	s := &Server{
		t:        t,
		clock:    clockwork.NewRealClock(),
		token:    randomToken(),
		limit:    DefaultBucketLimit,
		window:   DefaultBucketWindow,
		nextID:   1_300_000_000_000_000_000,
		webhooks: make(map[string]*webhook),
		channels: make(map[string]*channel),
		buckets:  make(map[string]*bucket),
		guilds:   make(map[string]*guild),
		appFlags: AppFlagMessageContent,
	}
	for _, o := range opts {
		o(s)
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

// URL is the server's base URL (no trailing slash).
func (s *Server) URL() string { return s.srv.URL }

// APIURL is the base of the API routes, as a bot's api_url.
func (s *Server) APIURL() string { return s.srv.URL + "/api/v10" }

// Token is the bot token the fake accepts.
func (s *Server) Token() string { return s.token }

// AddChannel creates a channel of type typ and returns its id.
func (s *Server) AddChannel(typ discordgo.ChannelType) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.newIDLocked()
	s.channels[id] = &channel{id: id, typ: typ, name: "channel-" + id[len(id)-4:], guild: GuildID}
	s.guildLocked(GuildID)
	return id
}

// AddWebhook creates a webhook in channel and returns its URL.
func (s *Server) AddWebhook(channelID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := &webhook{id: s.newIDLocked(), token: randomToken(), channel: channelID}
	s.webhooks[w.id] = w
	return s.srv.URL + "/api/webhooks/" + w.id + "/" + w.token
}

// Script answers the next requests whose "METHOD /path" (path after the
// API prefix) starts with match ("" matches every request) with replies, in
// order, instead of handling them.
func (s *Server) Script(match string, replies ...Reply) { s.ScriptAfter(match, 0, replies...) }

// ScriptAfter is Script, but lets skip matching requests be handled as
// usual first (to fail the third part of a long answer, say).
func (s *Server) ScriptAfter(match string, skip int, replies ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, r := range replies {
		sc := scripted{match: match, reply: r}
		if i == 0 {
			sc.skip = skip
		}
		s.script = append(s.script, sc)
	}
}

// SetThread archives or locks a thread, or (deleted) removes it.
func (s *Server) SetThread(id string, archived, locked, deleted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if deleted {
		delete(s.channels, id)
		return
	}
	if ch := s.channels[id]; ch != nil {
		ch.archived, ch.locked = archived, locked
	}
}

// DeleteMessage deletes message id, as a moderator would: a thread can no
// longer be started on it (404, code 10008 Unknown Message). A thread
// already started on it stays.
func (s *Server) DeleteMessage(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.messages = slices.DeleteFunc(s.messages, func(m Message) bool { return m.ID == id })
}

// Requests returns every request so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Messages returns the messages created in channel (a channel or thread
// id), in order; "" returns every message.
func (s *Server) Messages(channelID string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for _, m := range s.messages {
		if channelID == "" || m.ChannelID == channelID {
			out = append(out, m)
		}
	}
	return out
}

// Threads returns the ids of the threads whose parent is channelID.
func (s *Server) Threads(channelID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for id, ch := range s.channels {
		if ch.parent == channelID {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// RateLimited is how many requests the fake refused because their bucket
// was exhausted.
func (s *Server) RateLimited() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limited
}

func (s *Server) newIDLocked() string {
	s.nextID++
	return strconv.FormatUint(s.nextID, 10)
}

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return "tok" + hex.EncodeToString(b)
}

// answer is what a handler decided.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func jsonAnswer(status int, v any) answer {
	b, _ := json.Marshal(v)
	return answer{status: status, body: b}
}

func apiError(status, code int, msg string) answer {
	return jsonAnswer(status, map[string]any{"code": code, "message": msg})
}

func formError(errs []string) answer {
	return jsonAnswer(http.StatusBadRequest, map[string]any{
		"code": discordgo.ErrCodeInvalidFormBody, "message": "Invalid Form Body",
		"errors": map[string]any{"_errors": errs},
	})
}

var apiPrefix = regexp.MustCompile(`^/api(?:/v[0-9]+)?`)

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 32<<20))
	path := apiPrefix.ReplaceAllString(r.URL.Path, "")
	req := Request{Method: r.Method, Path: path, Query: r.URL.Query(), Header: r.Header.Clone(), Body: body}

	s.mu.Lock()
	a := s.handleLocked(req)
	req.Status = a.status
	s.requests = append(s.requests, req)
	created, hooks := s.created, slices.Clone(s.onPost)
	s.created = nil
	s.mu.Unlock()
	for _, m := range created {
		for _, h := range hooks {
			h(m)
		}
	}

	for k, vs := range a.header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	if a.body != nil && w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(a.status)
	if _, err := w.Write(a.body); err != nil && r.Context().Err() == nil {
		s.t.Logf("discordtest: write answer: %v", err)
	}
}

func (s *Server) handleLocked(req Request) answer {
	key := req.Method + " " + req.Path
	for i, sc := range s.script {
		if !strings.HasPrefix(key, sc.match) {
			continue
		}
		if sc.skip > 0 {
			s.script[i].skip--
			break
		}
		s.script = slices.Delete(s.script, i, i+1)
		return scriptedAnswer(sc.reply)
	}
	parts := strings.Split(strings.Trim(req.Path, "/"), "/")
	route, bucketKey := "", ""
	switch {
	case len(parts) == 3 && parts[0] == "webhooks" && req.Method == http.MethodPost:
		route, bucketKey = "execute", "webhook:"+parts[1]
	case len(parts) == 3 && parts[0] == "webhooks" && req.Method == http.MethodGet:
		route, bucketKey = "get webhook", "webhook-get:"+parts[1]
	case len(parts) == 2 && parts[0] == "channels" && req.Method == http.MethodGet:
		route, bucketKey = "get channel", "channel-get:"+parts[1]
	case len(parts) == 3 && parts[0] == "channels" && parts[2] == "messages" && req.Method == http.MethodGet:
		route, bucketKey = "list messages", "messages-get:"+parts[1]
	case len(parts) == 3 && parts[0] == "channels" && parts[2] == "messages" && req.Method == http.MethodPost:
		route, bucketKey = "post message", "messages:"+parts[1]
	case len(parts) == 5 && parts[0] == "channels" && parts[2] == "messages" && parts[4] == "threads" && req.Method == http.MethodPost:
		route, bucketKey = "start thread", "threads:"+parts[1]
	case len(parts) == 3 && parts[0] == "channels" && parts[2] == "threads" && req.Method == http.MethodPost:
		route, bucketKey = "forum post", "threads:"+parts[1]
	case len(parts) == 4 && parts[0] == "channels" && parts[2] == "messages" && req.Method == http.MethodGet:
		route, bucketKey = "get message", "message-get:"+parts[1]
	case len(parts) == 4 && parts[0] == "channels" && parts[2] == "messages" && req.Method == http.MethodPatch:
		route, bucketKey = "edit message", "messages:"+parts[1]
	case len(parts) == 7 && parts[0] == "channels" && parts[2] == "messages" && parts[4] == "reactions" && parts[6] == "@me" &&
		req.Method == http.MethodPut:
		route, bucketKey = "add reaction", "reactions:"+parts[1]
	case len(parts) == 4 && parts[0] == "guilds" && parts[2] == "members" && req.Method == http.MethodGet:
		route, bucketKey = "get member", "members:"+parts[1]
	case len(parts) == 3 && parts[0] == "guilds" && parts[2] == "roles" && req.Method == http.MethodGet:
		route, bucketKey = "get roles", "roles:"+parts[1]
	case len(parts) == 2 && parts[0] == "guilds" && req.Method == http.MethodGet:
		route, bucketKey = "get guild", "guild:"+parts[1]
	case len(parts) == 2 && parts[0] == "applications" && parts[1] == "@me" && req.Method == http.MethodGet:
		route, bucketKey = "get application", "application"
	case len(parts) == 2 && parts[0] == "users" && parts[1] == "@me" && req.Method == http.MethodGet:
		route, bucketKey = "get user", "user"
	default:
		return apiError(http.StatusNotFound, 0, "404: Not Found")
	}

	h, ok := s.takeLocked(bucketKey)
	if !ok {
		s.limited++
		a := jsonAnswer(http.StatusTooManyRequests, map[string]any{
			"message": "You are being rate limited.", "retry_after": h.retryAfter, "global": false,
		})
		a.header = h.header
		a.header.Set("Retry-After", strconv.Itoa(int(math.Ceil(h.retryAfter))))
		a.header.Set("X-RateLimit-Scope", "user")
		return a
	}
	var a answer
	if parts[0] != "webhooks" && req.Header.Get("Authorization") != "Bot "+s.token {
		a = apiError(http.StatusUnauthorized, 0, "401: Unauthorized")
	} else {
		switch route {
		case "execute":
			a = s.executeLocked(req, parts[1], parts[2])
		case "get webhook":
			a = s.getWebhookLocked(parts[1], parts[2])
		case "get channel":
			a = s.getChannelLocked(parts[1])
		case "post message":
			a = s.postMessageLocked(req, parts[1])
		case "start thread":
			a = s.startThreadLocked(req, parts[1], parts[3])
		case "forum post":
			a = s.forumPostLocked(req, parts[1])
		default:
			a = s.guildRouteLocked(route, req, parts)
		}
	}
	if a.header == nil {
		a.header = http.Header{}
	}
	for k, v := range h.header {
		a.header[k] = v
	}
	return a
}

func scriptedAnswer(r Reply) answer {
	status := r.Status
	if status == 0 {
		status = http.StatusOK
	}
	a := answer{status: status, header: r.Header.Clone()}
	if a.header == nil {
		a.header = http.Header{}
	}
	switch {
	case r.Body != "":
		a.body = []byte(r.Body)
		if a.header.Get("Content-Type") == "" {
			a.header.Set("Content-Type", "text/html")
		}
	case status == http.StatusTooManyRequests:
		b, _ := json.Marshal(map[string]any{"message": orDefault(r.Message, "You are being rate limited."),
			"retry_after": r.RetryAfter, "global": r.Global, "code": r.Code})
		a.body = b
	case status >= 300:
		a.body, _ = json.Marshal(map[string]any{"code": r.Code, "message": orDefault(r.Message, http.StatusText(status))})
	}
	return a
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

type limitHeaders struct {
	header     http.Header
	retryAfter float64
}

// takeLocked counts a request against its bucket: a fixed window that
// starts with the bucket's first request, like Discord's.
func (s *Server) takeLocked(key string) (limitHeaders, bool) {
	now := s.clock.Now()
	sum := sha256.Sum256([]byte(key))
	h := http.Header{}
	h.Set("X-RateLimit-Bucket", hex.EncodeToString(sum[:8]))
	if s.limit <= 0 {
		h.Set("X-RateLimit-Limit", "1000")
		h.Set("X-RateLimit-Remaining", "999")
		h.Set("X-RateLimit-Reset-After", "1.000")
		h.Set("X-RateLimit-Reset", fmtSeconds(float64(now.Add(time.Second).UnixNano())/1e9))
		return limitHeaders{header: h}, true
	}
	b := s.buckets[key]
	if b == nil || !now.Before(b.start.Add(s.window)) {
		b = &bucket{start: now}
		s.buckets[key] = b
	}
	reset := b.start.Add(s.window)
	resetAfter := reset.Sub(now).Seconds()
	ok := b.count < s.limit
	if ok {
		b.count++
	}
	h.Set("X-RateLimit-Limit", strconv.Itoa(s.limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(s.limit-b.count))
	h.Set("X-RateLimit-Reset-After", fmtSeconds(resetAfter))
	h.Set("X-RateLimit-Reset", fmtSeconds(float64(reset.UnixNano())/1e9))
	return limitHeaders{header: h, retryAfter: resetAfter}, ok
}

func fmtSeconds(f float64) string { return strconv.FormatFloat(f, 'f', 3, 64) }

// messageBody is what a message-creating request carries; allowed_mentions
// is kept raw to tell "parse":[] from null.
type messageBody struct {
	Content         string                    `json:"content"`
	Embeds          []*discordgo.MessageEmbed `json:"embeds"`
	AllowedMentions json.RawMessage           `json:"allowed_mentions"`
	ThreadName      string                    `json:"thread_name"`
	Components      json.RawMessage           `json:"components"`
}

func invalidJSON() answer {
	return apiError(http.StatusBadRequest, discordgo.ErrCodeTheRequestBodyContainsInvalidJSON, "The request body contains invalid JSON.")
}

// readMessage decodes a message-creating body and checks it.
func readMessage(body []byte) (*messageBody, discordgo.MessageAllowedMentions, *answer) {
	var m messageBody
	if json.Unmarshal(body, &m) != nil {
		a := invalidJSON()
		return nil, discordgo.MessageAllowedMentions{}, &a
	}
	allowed, bad := checkMessage(&m)
	return &m, allowed, bad
}

// checkMessage applies Discord's limits and chatrelay's mention rule.
func checkMessage(m *messageBody) (discordgo.MessageAllowedMentions, *answer) {
	var errs []string
	if n := len16(m.Content); n > MaxContent {
		errs = append(errs, fmt.Sprintf("content: must be %d or fewer in length (got %d)", MaxContent, n))
	}
	if len(m.Embeds) > MaxEmbeds {
		errs = append(errs, fmt.Sprintf("embeds: must be %d or fewer in length", MaxEmbeds))
	}
	total := 0
	for i, e := range m.Embeds {
		if e == nil {
			errs = append(errs, fmt.Sprintf("embeds.%d: null", i))
			continue
		}
		check := func(field, v string, limit int) {
			if n := len16(v); n > limit {
				errs = append(errs, fmt.Sprintf("embeds.%d.%s: must be %d or fewer in length (got %d)", i, field, limit, n))
			}
		}
		check("title", e.Title, MaxTitle)
		check("description", e.Description, MaxDescription)
		total += len16(e.Title) + len16(e.Description)
		if len(e.Fields) > MaxFields {
			errs = append(errs, fmt.Sprintf("embeds.%d.fields: must be %d or fewer in length", i, MaxFields))
		}
		for j, f := range e.Fields {
			if strings.TrimSpace(f.Name) == "" || strings.TrimSpace(f.Value) == "" {
				errs = append(errs, fmt.Sprintf("embeds.%d.fields.%d: name and value are required", i, j))
			}
			check(fmt.Sprintf("fields.%d.name", j), f.Name, MaxFieldName)
			check(fmt.Sprintf("fields.%d.value", j), f.Value, MaxFieldValue)
			total += len16(f.Name) + len16(f.Value)
		}
		if e.Footer != nil {
			check("footer.text", e.Footer.Text, MaxFooter)
			total += len16(e.Footer.Text)
		}
		if e.Author != nil {
			check("author.name", e.Author.Name, MaxAuthorName)
			total += len16(e.Author.Name)
		}
	}
	if total > MaxEmbedsTotal {
		errs = append(errs, fmt.Sprintf("embeds: embed size exceeds maximum size of %d (got %d)", MaxEmbedsTotal, total))
	}
	var am struct {
		Parse *[]string `json:"parse"`
		Roles []string  `json:"roles"`
		Users []string  `json:"users"`
	}
	var allowed discordgo.MessageAllowedMentions
	switch {
	case len(m.AllowedMentions) == 0 || string(m.AllowedMentions) == "null":
		errs = append(errs, `allowed_mentions: missing (chatrelay sends {"parse":[]} with every message)`)
	case json.Unmarshal(m.AllowedMentions, &am) != nil:
		errs = append(errs, "allowed_mentions: not an object")
	case am.Parse == nil:
		errs = append(errs, `allowed_mentions.parse: null (chatrelay sends "parse":[])`)
	case len(*am.Parse) > 0:
		errs = append(errs, fmt.Sprintf("allowed_mentions.parse: %q (chatrelay parses no mention)", *am.Parse))
	default:
		_ = json.Unmarshal(m.AllowedMentions, &allowed)
	}
	if len(errs) > 0 {
		a := formError(errs)
		return allowed, &a
	}
	if strings.TrimSpace(m.Content) == "" && len(m.Embeds) == 0 {
		a := apiError(http.StatusBadRequest, discordgo.ErrCodeCannotSendEmptyMessage, "Cannot send an empty message")
		return allowed, &a
	}
	return allowed, nil
}

func (s *Server) recordLocked(channelID, webhookID string, m *messageBody, allowed discordgo.MessageAllowedMentions, payload []byte, id string) *discordgo.Message {
	if id == "" {
		id = s.newIDLocked()
	}
	components := m.Components
	if string(components) == "null" {
		components = nil
	}
	s.messages = append(s.messages, Message{ID: id, ChannelID: channelID, WebhookID: webhookID, Content: m.Content,
		Embeds: m.Embeds, AllowedMentions: allowed, Payload: payload, Components: components})
	s.created = append(s.created, s.messages[len(s.messages)-1])
	return s.messageLocked(s.messages[len(s.messages)-1])
}

func (s *Server) executeLocked(req Request, id, token string) answer {
	w := s.webhooks[id]
	switch {
	case w == nil:
		return apiError(http.StatusNotFound, discordgo.ErrCodeUnknownWebhook, "Unknown Webhook")
	case w.token != token:
		return apiError(http.StatusUnauthorized, discordgo.ErrCodeInvalidWebhookTokenProvided, "Invalid Webhook Token")
	}
	parent := s.channels[w.channel]
	if parent == nil {
		return apiError(http.StatusNotFound, discordgo.ErrCodeUnknownWebhook, "Unknown Webhook")
	}
	m, allowed, bad := readMessage(req.Body)
	if bad != nil {
		return *bad
	}
	threadID := req.Query.Get("thread_id")
	forum := parent.typ == discordgo.ChannelTypeGuildForum || parent.typ == discordgo.ChannelTypeGuildMedia
	target := parent.id
	msgID := ""
	switch {
	case threadID != "" && m.ThreadName != "":
		return apiError(http.StatusBadRequest, 220002, "Webhooks can only create threads in forum channels")
	case threadID != "":
		th := s.channels[threadID]
		if th == nil || th.parent != parent.id {
			return apiError(http.StatusBadRequest, discordgo.ErrCodeUnknownChannel, "Unknown Channel")
		}
		if th.locked {
			return apiError(http.StatusForbidden, discordgo.ErrCodeThreadIsLocked, "Thread is locked")
		}
		th.archived = false // a webhook post unarchives the thread
		target = th.id
	case m.ThreadName != "":
		if !forum {
			return apiError(http.StatusBadRequest, 220003, "Webhooks can only create threads in forum channels")
		}
		if n := len16(m.ThreadName); n > MaxThreadName {
			return formError([]string{fmt.Sprintf("thread_name: must be %d or fewer in length (got %d)", MaxThreadName, n)})
		}
		th := &channel{id: s.newIDLocked(), parent: parent.id, name: m.ThreadName, typ: discordgo.ChannelTypeGuildPublicThread, guild: parent.guild}
		s.channels[th.id] = th
		target, msgID = th.id, th.id // a forum post's first message has the thread's id
	case forum:
		return apiError(http.StatusBadRequest, 220001, "Webhooks posted to forum channels must have a thread_name or thread_id")
	}
	msg := s.recordLocked(target, w.id, m, allowed, req.Body, msgID)
	if req.Query.Get("wait") != "true" {
		return answer{status: http.StatusNoContent}
	}
	return jsonAnswer(http.StatusOK, msg)
}

func (s *Server) getWebhookLocked(id, token string) answer {
	w := s.webhooks[id]
	switch {
	case w == nil:
		return apiError(http.StatusNotFound, discordgo.ErrCodeUnknownWebhook, "Unknown Webhook")
	case w.token != token:
		return apiError(http.StatusUnauthorized, discordgo.ErrCodeInvalidWebhookTokenProvided, "Invalid Webhook Token")
	}
	return jsonAnswer(http.StatusOK, map[string]any{"id": w.id, "type": 1, "channel_id": w.channel, "name": "chatrelay", "token": w.token})
}

func (s *Server) getChannelLocked(id string) answer {
	ch := s.channels[id]
	if ch == nil {
		return apiError(http.StatusNotFound, discordgo.ErrCodeUnknownChannel, "Unknown Channel")
	}
	return jsonAnswer(http.StatusOK, &discordgo.Channel{ID: ch.id, Type: ch.typ, Name: ch.name, ParentID: ch.parent,
		GuildID: ch.guild, PermissionOverwrites: ch.overwrites})
}

func (s *Server) postMessageLocked(req Request, id string) answer {
	ch := s.channels[id]
	if ch == nil {
		return apiError(http.StatusNotFound, discordgo.ErrCodeUnknownChannel, "Unknown Channel")
	}
	switch {
	case ch.typ == discordgo.ChannelTypeGuildForum || ch.typ == discordgo.ChannelTypeGuildMedia:
		return apiError(http.StatusBadRequest, discordgo.ErrCodeCannotExecuteActionOnThisChannelType, "Cannot execute action on this channel type")
	case ch.locked:
		return apiError(http.StatusForbidden, discordgo.ErrCodeThreadIsLocked, "Thread is locked")
	case ch.archived:
		return apiError(http.StatusBadRequest, discordgo.ErrCodePerformedOperationOnArchivedThread, "Thread is archived")
	}
	m, allowed, bad := readMessage(req.Body)
	if bad != nil {
		return *bad
	}
	return jsonAnswer(http.StatusOK, s.recordLocked(ch.id, "", m, allowed, req.Body, ""))
}

type threadBody struct {
	Name                string       `json:"name"`
	AutoArchiveDuration int          `json:"auto_archive_duration"`
	Message             *messageBody `json:"message"`
}

// readThread decodes and checks a thread-starting body.
func readThread(body []byte) (*threadBody, *answer) {
	var t threadBody
	if json.Unmarshal(body, &t) != nil {
		a := invalidJSON()
		return nil, &a
	}
	if n := len16(t.Name); n == 0 || n > MaxThreadName {
		a := formError([]string{fmt.Sprintf("name: must be between 1 and %d in length (got %d)", MaxThreadName, n)})
		return nil, &a
	}
	if d := t.AutoArchiveDuration; d != 0 && !slices.Contains([]int{60, 1440, 4320, 10080}, d) {
		a := formError([]string{fmt.Sprintf("auto_archive_duration: %d is not one of 60, 1440, 4320, 10080", d)})
		return nil, &a
	}
	return &t, nil
}

func (s *Server) startThreadLocked(req Request, channelID, messageID string) answer {
	ch := s.channels[channelID]
	if ch == nil {
		return apiError(http.StatusNotFound, discordgo.ErrCodeUnknownChannel, "Unknown Channel")
	}
	if ch.typ != discordgo.ChannelTypeGuildText && ch.typ != discordgo.ChannelTypeGuildNews {
		return apiError(http.StatusBadRequest, discordgo.ErrCodeCannotExecuteActionOnThisChannelType, "Cannot execute action on this channel type")
	}
	if !slices.ContainsFunc(s.messages, func(m Message) bool { return m.ID == messageID && m.ChannelID == channelID }) {
		return apiError(http.StatusNotFound, discordgo.ErrCodeUnknownMessage, "Unknown Message")
	}
	if s.channels[messageID] != nil {
		return apiError(http.StatusBadRequest, discordgo.ErrCodeThreadAlreadyCreatedForThisMessage, "A thread has already been created for this message")
	}
	t, bad := readThread(req.Body)
	if bad != nil {
		return *bad
	}
	th := &channel{id: messageID, parent: channelID, name: t.Name, typ: discordgo.ChannelTypeGuildPublicThread, guild: ch.guild}
	s.channels[th.id] = th
	return jsonAnswer(http.StatusCreated, &discordgo.Channel{ID: th.id, Type: th.typ, Name: th.name, ParentID: channelID})
}

func (s *Server) forumPostLocked(req Request, channelID string) answer {
	ch := s.channels[channelID]
	if ch == nil {
		return apiError(http.StatusNotFound, discordgo.ErrCodeUnknownChannel, "Unknown Channel")
	}
	if ch.typ != discordgo.ChannelTypeGuildForum && ch.typ != discordgo.ChannelTypeGuildMedia {
		return apiError(http.StatusBadRequest, discordgo.ErrCodeCannotExecuteActionOnThisChannelType, "Cannot execute action on this channel type")
	}
	t, bad := readThread(req.Body)
	if bad != nil {
		return *bad
	}
	if t.Message == nil {
		return formError([]string{"message: a forum post needs a message"})
	}
	allowed, bad := checkMessage(t.Message)
	if bad != nil {
		return *bad
	}
	th := &channel{id: s.newIDLocked(), parent: channelID, name: t.Name, typ: discordgo.ChannelTypeGuildPublicThread, guild: ch.guild}
	s.channels[th.id] = th
	msgPayload, _ := json.Marshal(t.Message)
	s.recordLocked(th.id, "", t.Message, allowed, msgPayload, th.id)
	return jsonAnswer(http.StatusCreated, &discordgo.Channel{ID: th.id, Type: th.typ, Name: th.name, ParentID: channelID})
}

// len16 counts UTF-16 units. It is written apart from the sink's own count on
// purpose: the fake checks that count, so it must not share its bugs.
func len16(s string) int {
	n := 0
	for _, r := range s {
		if r >= 0x10000 {
			n += 2
		} else {
			n++
		}
	}
	return n
}
