// Package chatdatatest is a fake Chat Data API for tests, on httptest: the
// two calls chatrelay makes (POST /api/v2/live-chat, which appends a human
// agent's message to a conversation, and GET /api/v2/current-plan, which
// checks a key). It answers as PROTOCOLS.md §1.5 describes Chat Data's API:
// a Bearer key, {"status":"error","message":"…"} for errors (also under
// HTTP 200, as the official n8n node allows), 401 for a bad key, and it can
// be scripted to answer 429 with Retry-After, 5xx, or anything else. Every
// request is recorded, and every message it accepted is kept per
// conversation, as the visitor would see it.
package chatdatatest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// Paths of the API the fake serves.
const (
	LiveChatPath    = "/api/v2/live-chat"
	CurrentPlanPath = "/api/v2/current-plan"
)

// MaxFiles is how many files one live-chat message may carry.
const MaxFiles = 3

// LiveChat is the body of POST /api/v2/live-chat.
type LiveChat struct {
	ChatbotID      string `json:"chatbotId"`
	ConversationID string `json:"conversationId"`
	Message        string `json:"message"`
	Role           string `json:"role"`
	Name           string `json:"name,omitempty"`
	Avatar         string `json:"avatar,omitempty"`
	Files          []File `json:"files,omitempty"`
}

// File is one file of a live-chat message.
type File struct {
	Name string `json:"name"`
	Type string `json:"type"`
	URL  string `json:"url"`
}

// Request is one request the fake received, and what it answered.
type Request struct {
	Method    string
	Path      string
	Key       string // the Bearer key sent ("" when none)
	UserAgent string
	Body      []byte    // the raw body
	LiveChat  *LiveChat // the parsed body of a live-chat request that was JSON
	Status    int       // the HTTP status answered
	Error     string    // the message of a {"status":"error"} answer; "" on success
}

// Message is a message the fake appended to a conversation: what the
// visitor sees.
type Message struct {
	ChatbotID      string
	ConversationID string
	Text           string
	Role           string
	Name           string
	Avatar         string
}

// Response scripts the answer to one request. The zero Response lets the
// fake answer as usual.
type Response struct {
	// Status is the HTTP status (default 200).
	Status int
	// Error, if set, is answered as {"status":"error","message":Error}
	// under Status (200 if unset: Chat Data does that too).
	Error string
	// RetryAfter, if set, is sent as the Retry-After header.
	RetryAfter string
	// Body, if set, is the whole body, sent as it is (Error is ignored).
	Body string
	// Hold, if set, keeps the request unanswered until it is closed or the
	// client gives up.
	Hold chan struct{}
}

// The answers of the fake's own making.
const (
	msgUnauthorized = "Unauthorized: invalid API key"
	msgNotFound     = "Conversation not found"
)

// Server is a fake Chat Data API.
type Server struct {
	// URL is the base URL (what chatdata.api_url is set to).
	URL string
	// Key is the API key the fake accepts.
	Key string

	t   testing.TB
	srv *httptest.Server

	mu            sync.Mutex
	script        []Response
	requests      []Request
	messages      []Message
	conversations map[string]bool // nil: every conversation exists
	successBody   string
}

// Option configures a Server.
type Option func(*Server)

// WithConversations makes only these conversations exist: a message to
// any other is answered 404 {"status":"error","message":"Conversation not
// found"}. Without it every conversation exists.
func WithConversations(ids ...string) Option {
	return func(s *Server) {
		s.conversations = map[string]bool{}
		for _, id := range ids {
			s.conversations[id] = true
		}
	}
}

// WithSuccessBody sets what a successful live-chat answer's body is.
// Chat Data does not document it: the default is {"status":"success"},
// and a client must take any 2xx body that is not an error as success.
func WithSuccessBody(body string) Option {
	return func(s *Server) { s.successBody = body }
}

// NewServer starts a fake Chat Data API, closed when the test ends.
func NewServer(t testing.TB, opts ...Option) *Server {
	t.Helper()
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	s := &Server{t: t, Key: "sk-" + hex.EncodeToString(b), successBody: `{"status":"success"}`}
	for _, o := range opts {
		o(s)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+LiveChatPath, s.serveLiveChat)
	mux.HandleFunc("GET "+CurrentPlanPath, s.serveCurrentPlan)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// What a web server says for a path it does not serve: not
		// Chat Data's JSON.
		s.record(Request{Method: r.Method, Path: r.URL.Path, Key: bearer(r), UserAgent: r.UserAgent(), Status: http.StatusNotFound})
		http.NotFound(w, r)
	})
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

// Script queues answers for the next requests, one each, in order; after
// them the fake answers as usual again.
func (s *Server) Script(rs ...Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = append(s.script, rs...)
}

// Requests returns every request received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Messages returns the messages appended to a conversation, in order.
func (s *Server) Messages(conversationID string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for _, m := range s.messages {
		if m.ConversationID == conversationID {
			out = append(out, m)
		}
	}
	return out
}

func (s *Server) next() (Response, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.script) == 0 {
		return Response{}, false
	}
	r := s.script[0]
	s.script = s.script[1:]
	return r, true
}

func (s *Server) record(req Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, req)
}

// bearer returns the key of an "Authorization: Bearer <key>" header.
func bearer(r *http.Request) string {
	scheme, key, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(key)
}

// answer writes one answer and records it with req.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, req Request, resp Response) {
	if resp.Hold != nil {
		select {
		case <-resp.Hold:
		case <-r.Context().Done():
			return
		}
	}
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	body := resp.Body
	if body == "" && resp.Error != "" {
		b, _ := json.Marshal(map[string]string{"status": "error", "message": resp.Error})
		body = string(b)
	}
	req.Status, req.Error = status, resp.Error
	s.record(req)
	if resp.RetryAfter != "" {
		w.Header().Set("Retry-After", resp.RetryAfter)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// authorized answers 401 and reports false unless the request carries the
// fake's key.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request, req Request) bool {
	if req.Key == s.Key {
		return true
	}
	s.answer(w, r, req, Response{Status: http.StatusUnauthorized, Error: msgUnauthorized})
	return false
}

func (s *Server) serveCurrentPlan(w http.ResponseWriter, r *http.Request) {
	req := Request{Method: r.Method, Path: r.URL.Path, Key: bearer(r), UserAgent: r.UserAgent()}
	if resp, ok := s.next(); ok {
		s.answer(w, r, req, resp)
		return
	}
	if !s.authorized(w, r, req) {
		return
	}
	s.answer(w, r, req, Response{Body: `{"plan":"standard","messageCredits":10000,"usedMessageCredits":42}`})
}

func (s *Server) serveLiveChat(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	req := Request{Method: r.Method, Path: r.URL.Path, Key: bearer(r), UserAgent: r.UserAgent(), Body: body}
	if err != nil {
		s.answer(w, r, req, Response{Status: http.StatusBadRequest, Error: "could not read the body"})
		return
	}
	var lc LiveChat
	if json.Unmarshal(body, &lc) == nil {
		req.LiveChat = &lc
	}
	if resp, ok := s.next(); ok {
		s.answer(w, r, req, resp)
		return
	}
	if !s.authorized(w, r, req) {
		return
	}
	if req.LiveChat == nil {
		s.answer(w, r, req, Response{Status: http.StatusBadRequest, Error: "Invalid JSON body"})
		return
	}
	if msg := invalid(lc); msg != "" {
		s.answer(w, r, req, Response{Status: http.StatusBadRequest, Error: msg})
		return
	}
	s.mu.Lock()
	known := s.conversations == nil || s.conversations[lc.ConversationID]
	s.mu.Unlock()
	if !known {
		s.answer(w, r, req, Response{Status: http.StatusNotFound, Error: msgNotFound})
		return
	}
	s.mu.Lock()
	s.messages = append(s.messages, Message{ChatbotID: lc.ChatbotID, ConversationID: lc.ConversationID,
		Text: lc.Message, Role: lc.Role, Name: lc.Name, Avatar: lc.Avatar})
	success := s.successBody
	s.mu.Unlock()
	s.answer(w, r, req, Response{Body: success})
}

// invalid says what is wrong with a live-chat body, as the API's rules
// have it, or "".
func invalid(lc LiveChat) string {
	switch {
	case lc.ChatbotID == "":
		return "chatbotId is required"
	case lc.ConversationID == "":
		return "conversationId is required"
	case strings.TrimSpace(lc.Message) == "":
		return "message is required"
	case lc.Role != "human" && lc.Role != "assistant":
		return `role must be "human" or "assistant"`
	case lc.Role != "human" && (lc.Name != "" || lc.Avatar != ""):
		return "name and avatar are only for human messages"
	case len(lc.Files) > MaxFiles:
		return "at most 3 files"
	}
	return ""
}
