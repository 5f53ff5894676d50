// Package chatdata is the destination of agent replies (SPEC §10): it
// delivers each agent-reply event to Chat Data's live-chat API, which
// appends the agent's message, under the agent's name and avatar, to the
// visitor's conversation. It is a sink like any other, so replies get every
// guarantee a mirror delivery has: stored before acknowledged, in order per
// conversation, retried with backoff, 429 honoured, dead-lettered and
// replayable.
//
// What Chat Data documents (PROTOCOLS.md §1.5): POST /api/v2/live-chat with
// a Bearer key and {"chatbotId","conversationId","message","role":"human",
// "name","avatar"}; GET /api/v2/current-plan checks a key; an error is
// {"status":"error","message":"…"}, sometimes under HTTP 200. Undocumented,
// and so handled defensively: the success body (any 2xx that is not an
// error is success), rate limits (429 and Retry-After honoured if they
// come), and whether an appended message comes back in a later chat
// event.
package chatdata

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

// Name is the destination's sink name: its metric label, its queue and
// dead letters (chatrelay dlq list --sink chatdata).
const Name = "chatdata"

// DefaultAPIURL is Chat Data's API.
const DefaultAPIURL = "https://api.chat-data.com"

// Paths of the calls, under the base URL.
const (
	liveChatPath    = "/api/v2/live-chat"
	currentPlanPath = "/api/v2/current-plan"
)

// maxAnswer bounds how much of an answer is read to find an error in it.
const maxAnswer = 64 << 10

// Config is the top-level chatdata section.
type Config struct {
	// APIKey is sent as Authorization: Bearer (keys look like sk-…).
	APIKey relay.Secret `mapstructure:"api_key"`
	// APIURL is the base URL (default DefaultAPIURL): a proxy or a test
	// server works; the paths are appended to it.
	APIURL string `mapstructure:"api_url"`
	// Timeout bounds one request (default relay.DefaultTimeout).
	Timeout time.Duration `mapstructure:"timeout"`
}

// withDefaults fills what the config left unset.
func (c Config) withDefaults() Config {
	if c.APIURL == "" {
		c.APIURL = DefaultAPIURL
	}
	if c.Timeout == 0 {
		c.Timeout = relay.DefaultTimeout
	}
	return c
}

// Validate checks c and joins one error per problem, each "key: problem;
// fix" with the key relative to the section ("api_key: …"), never
// repeating the key's value.
func (c Config) Validate() error {
	var errs []error
	switch key := c.APIKey.Reveal(); {
	case strings.TrimSpace(key) == "":
		errs = append(errs, errors.New("api_key: missing; set it to a Chat Data API key (sk-…), e.g. api_key: ${CHAT_DATA_API_KEY}, "+
			"or api_key_file"))
	case strings.ContainsFunc(key, func(r rune) bool { return r < ' ' || r == 0x7f }) || strings.TrimSpace(key) != key:
		errs = append(errs, errors.New("api_key: holds spaces, a line break or another control character; write the key alone"))
	}
	if c.APIURL != "" {
		if err := relay.CheckURL(c.APIURL); err != nil {
			errs = append(errs, fmt.Errorf("api_url: %w; set it to a base URL like %s", err, DefaultAPIURL))
		} else if u, err := url.Parse(c.APIURL); err != nil || u.RawQuery != "" || u.Fragment != "" {
			errs = append(errs, fmt.Errorf("api_url: a base URL takes no query or fragment; set it to a base URL like %s", DefaultAPIURL))
		}
	}
	if c.Timeout < 0 {
		errs = append(errs, errors.New("timeout: cannot be negative; write a duration like 10s, or leave it out for the default"))
	}
	return errors.Join(errs...)
}

// Sink posts agent replies to Chat Data's live-chat API.
type Sink struct {
	cfg    Config
	base   string // APIURL without a trailing slash
	client *http.Client
	deps   relay.SinkDeps
	scrub  *relay.Scrubber
}

// New checks cfg and returns the sink. It starts no goroutine.
func New(cfg Config, deps relay.SinkDeps) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	deps = deps.WithDefaults()
	relay.WarnPlainHTTP(deps.Logger, "api_url", cfg.APIURL)
	return &Sink{
		cfg:    cfg,
		base:   strings.TrimRight(cfg.APIURL, "/"),
		deps:   deps,
		scrub:  relay.NewScrubber(cfg.APIKey.Reveal()),
		client: deps.Client(cfg.Timeout),
	}, nil
}

// Name implements relay.Sink.
func (s *Sink) Name() string { return Name }

// SendTimeout implements relay.Budgeted: a send is one request.
func (s *Sink) SendTimeout() time.Duration { return s.cfg.Timeout }

// liveChat is the body of POST /api/v2/live-chat.
type liveChat struct {
	ChatbotID      string `json:"chatbotId"`
	ConversationID string `json:"conversationId"`
	Message        string `json:"message"`
	Role           string `json:"role"`
	Name           string `json:"name,omitempty"`
	Avatar         string `json:"avatar,omitempty"`
}

// Send implements relay.Sink: it appends the agent's message to the
// visitor's conversation. Errors are classified (PROTOCOLS.md §1.5):
//   - 401, 403: the key is refused; the destination is broken (every
//     reply is held until the key works again);
//   - {"status":"error"} under a 2xx, 404 (unknown conversation) and other
//     4xx: Chat Data refused this reply; permanent, so it is dead-lettered
//     at once and the conversation's later replies are not held up;
//   - 429 (Retry-After honoured), 408, 5xx, network: retryable.
func (s *Sink) Send(ctx context.Context, ev *relay.Event) error {
	r := ev.AgentReply()
	if r == nil {
		return relay.Permanent(fmt.Errorf("chatdata: event %s is a %q event; Chat Data's live-chat API takes only agent replies",
			ev.ID, ev.Topic), relay.ReasonClientError)
	}
	text := strings.TrimSpace(r.Text)
	if ev.ConversationID == "" || ev.ChatbotID == "" || text == "" {
		return relay.Permanent(fmt.Errorf("chatdata: agent reply %s lacks a conversation id, a chatbot id or text", ev.ID),
			relay.ReasonClientError)
	}
	body, err := json.Marshal(liveChat{ChatbotID: ev.ChatbotID, ConversationID: ev.ConversationID, Message: text,
		Role: "human", Name: strings.TrimSpace(r.AgentName), Avatar: r.AgentAvatar})
	if err != nil {
		return relay.Permanent(fmt.Errorf("chatdata: encode: %w", err), relay.ReasonOther)
	}
	if err := s.call(ctx, http.MethodPost, liveChatPath, body); err != nil {
		return fmt.Errorf("chatdata: live-chat: %w", err)
	}
	return nil
}

// Probe implements relay.Prober: GET /api/v2/current-plan checks the key
// (and the base URL) without posting anything.
func (s *Sink) Probe(ctx context.Context) error {
	if err := s.call(ctx, http.MethodGet, currentPlanPath, nil); err != nil {
		if c, _ := relay.Classify(err); c == relay.ClassBroken {
			return fmt.Errorf("chatdata: the API key was refused (check chatdata.api_key): %w", err)
		}
		return fmt.Errorf("chatdata: current-plan: %w", err)
	}
	return nil
}

// call makes one request and classifies its outcome.
func (s *Sink) call(ctx context.Context, method, path string, body []byte) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.base+path, rd)
	if err != nil {
		return relay.Broken(fmt.Errorf("build request: %w", relay.RedactURL(err)), relay.ReasonOther)
	}
	req.Header.Set("Authorization", "Bearer "+s.cfg.APIKey.Reveal())
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", s.deps.UserAgent)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return s.scrub.Error(err) // network, timeout, canceled: retryable
	}
	defer relay.Drain(resp)
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		// Classified by its status and what was read.
		s.deps.Logger.DebugContext(ctx, "chatdata answer cut short", "status", resp.StatusCode, "err", s.scrub.Error(err))
	}
	return s.classify(resp, answer)
}

// policy is how Chat Data's HTTP statuses are classified: a refused key
// (401, 403) marks the destination broken; 429, 408 and 5xx are retried;
// any other status, 404 (an unknown conversation) included, is permanent
// for this reply.
var policy = relay.HTTPPolicy{Broken: []int{http.StatusUnauthorized, http.StatusForbidden}}

// classify turns an answer into nil or a classified *relay.StatusError
// carrying Chat Data's message (scrubbed of the key), or up to 1 KiB of
// the body when it sent none.
func (s *Sink) classify(resp *http.Response, answer []byte) error {
	failed, message := errorBody(answer)
	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	switch {
	case ok && !failed:
		return nil
	case ok:
		// Chat Data understood the request and refused it under a 2xx:
		// the same request would be refused again.
		return relay.Permanent(&relay.StatusError{Status: resp.StatusCode, Body: s.scrub.Scrub(message)}, relay.ReasonClientError)
	case !failed:
		message = relay.ReadErrorBody(bytes.NewReader(answer))
	}
	return policy.Classify(resp.StatusCode, resp.Header, s.scrub.Scrub(message), s.deps.Clock.Now())
}

// errorBody reports whether an answer is {"status":"error"}, and its
// message.
func errorBody(answer []byte) (bool, string) {
	var probe struct {
		Status  string          `json:"status"`
		Message json.RawMessage `json:"message"`
	}
	if json.Unmarshal(answer, &probe) != nil || !strings.EqualFold(probe.Status, "error") {
		return false, ""
	}
	var msg string
	if json.Unmarshal(probe.Message, &msg) != nil {
		msg = string(probe.Message)
	}
	return true, relay.ReadErrorBody(strings.NewReader(msg))
}
