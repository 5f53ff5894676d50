package slack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

// What Slack sends the relay of a two-way sink's channel (PROTOCOLS.md
// §1.6), over HTTP (POST /slack/events) or Socket Mode alike: Events API
// payloads (thread messages) and interactivity payloads (button clicks).
// inbound turns them into thread messages and clicks for the relay's
// Inbox, which stores what it takes before the platform is answered.

// lookupTimeout bounds the users.info lookups of one message or click:
// Slack wants its answer within 3 s, and a reply goes to the visitor under
// the chatbot owner's name rather than not at all.
const lookupTimeout = 1500 * time.Millisecond

// handleTimeout bounds the handling of one request from Slack: within
// Slack's 3 s, or Slack sends it again anyway.
const handleTimeout = 2500 * time.Millisecond

// maxMentions bounds the users looked up for the @names of one message.
const maxMentions = 10

// inbound takes the events and clicks of one Slack app (one signing
// secret, or one app-level token) for the two-way sinks it serves.
type inbound struct {
	sinks []*Sink // in config order; the first counts what fits none
	inbox *relay.Inbox
	log   *slog.Logger
}

// sinkFor returns the sink whose channel is channel, or false.
func (in *inbound) sinkFor(channel string) (*Sink, bool) {
	for _, s := range in.sinks {
		if s.cfg.Channel == channel {
			return s, true
		}
	}
	return in.sinks[0], false
}

// eventPayload is an Events API payload: an event_callback carrying one
// event (https://docs.slack.dev/apis/events-api/#callback-field).
type eventPayload struct {
	Type    string       `json:"type"`
	EventID string       `json:"event_id"`
	Event   messageEvent `json:"event"`
}

// messageEvent is a message event
// (https://docs.slack.dev/reference/events/message).
type messageEvent struct {
	Type     string `json:"type"`
	SubType  string `json:"subtype"`
	Channel  string `json:"channel"`
	User     string `json:"user"`
	BotID    string `json:"bot_id"`
	Text     string `json:"text"`
	TS       string `json:"ts"`
	ThreadTS string `json:"thread_ts"`
	// Message is the message as changed (subtype message_changed).
	Message *struct {
		TS       string `json:"ts"`
		ThreadTS string `json:"thread_ts"`
	} `json:"message"`
}

// humanSubtypes are the subtypes of messages a person wrote: a plain
// message, one also sent to the channel, one with a file, a /me.
var humanSubtypes = map[string]bool{"": true, "thread_broadcast": true, "file_share": true, "me_message": true}

// editSubtypes are changes to messages, not new ones.
var editSubtypes = map[string]bool{"message_changed": true, "message_deleted": true, "message_replied": true}

// event takes one Events API payload. An error means nothing was stored:
// Slack must send it again (5xx, or no ack); anything else, taken or not,
// is answered as received.
func (in *inbound) event(ctx context.Context, body []byte) error {
	var p eventPayload
	if err := json.Unmarshal(body, &p); err != nil {
		in.log.Warn("unreadable Slack event; answered as received, so that Slack does not send it again", "err", err)
		return nil
	}
	if p.Type != "event_callback" || p.Event.Type != "message" {
		in.log.Debug("Slack event not taken", "type", p.Type, "event_type", p.Event.Type)
		return nil
	}
	return in.message(ctx, p.Event)
}

// message takes one message event to the inbox.
func (in *inbound) message(ctx context.Context, e messageEvent) error {
	s, ours := in.sinkFor(e.Channel)
	m := relay.ThreadMessage{Sink: s.Name(), Platform: TypeName, Channel: e.Channel, Thread: e.ThreadTS,
		MessageID: e.TS, AgentID: e.User, Text: e.Text,
		Bot:  e.BotID != "" || !humanSubtypes[e.SubType] && !editSubtypes[e.SubType],
		Edit: editSubtypes[e.SubType]}
	if m.Edit && e.Message != nil {
		m.MessageID, m.Thread = e.Message.TS, e.Message.ThreadTS
	}
	if m.Thread == "" {
		// A message at the channel's top level is in no thread of the
		// relay's: looked up as a thread of its own, it is one of none.
		m.Thread = m.MessageID
	}
	if !ours {
		// A ts is unique only within its channel: a thread_ts met in
		// another channel the bot is in (another team's, a Slack Connect
		// one) may equal one of the relay's threads, and is none of them.
		// Nothing is looked up, nothing stored.
		in.inbox.Ignore(m, relay.IgnoredForeignThread)
		return nil
	}
	if !m.Bot && !m.Edit && m.AgentID != "" {
		m.Text = plainText(e.Text, nil)
		if _, forVisitor := s.cfg.Reply.Rule().Visitor(m.Text); forVisitor {
			// Worth naming, if in one of the relay's threads (else
			// Accept ignores it, and no users.info is spent on it): who
			// wrote it, and whom it mentions. Not knowing (the store),
			// Accept says so.
			if mine, err := in.inbox.InRelayThread(ctx, s.Name(), m.Thread); err == nil && !mine {
				in.inbox.Ignore(m, relay.IgnoredForeignThread)
				return nil
			}
			lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
			who, err := s.people.find(lctx, e.User)
			if err != nil {
				in.log.Warn("could not look the agent up (users.info); the reply goes under the chatbot owner's name",
					"sink", s.Name(), "agent_id", e.User, "err", err)
			}
			m.AgentName, m.AgentAvatar = who.name, who.avatar
			looked := 0
			m.Text = plainText(e.Text, func(id string) string {
				if looked++; looked > maxMentions {
					return ""
				}
				p, err := s.people.find(lctx, id)
				if err != nil {
					return ""
				}
				return p.name
			})
			cancel()
		}
	}
	_, err := in.inbox.Accept(ctx, m)
	return err
}

// interaction is an interactivity payload of type block_actions
// (https://docs.slack.dev/reference/interaction-payloads/block_actions-payload).
type interaction struct {
	Type string `json:"type"`
	User struct {
		ID       string `json:"id"`
		Username string `json:"username"`
		Name     string `json:"name"`
	} `json:"user"`
	Container struct {
		MessageTS string `json:"message_ts"`
		ChannelID string `json:"channel_id"`
	} `json:"container"`
	Channel struct {
		ID string `json:"id"`
	} `json:"channel"`
	Message struct {
		TS     string          `json:"ts"`
		Text   string          `json:"text"`
		Blocks json.RawMessage `json:"blocks"`
	} `json:"message"`
	Actions []struct {
		ActionID string `json:"action_id"`
		Value    string `json:"value"`
	} `json:"actions"`
}

// interaction takes one interactivity payload: Claim and Resolve clicks
// on the relay's messages. An error means nothing was stored.
func (in *inbound) interaction(ctx context.Context, payload []byte) error {
	var p interaction
	if err := json.Unmarshal(payload, &p); err != nil {
		in.log.Warn("unreadable Slack interaction; answered as received", "err", err)
		return nil
	}
	if p.Type != "block_actions" {
		in.log.Debug("Slack interaction not taken", "type", p.Type)
		return nil
	}
	channel := p.Container.ChannelID
	if channel == "" {
		channel = p.Channel.ID
	}
	msgID := p.Container.MessageTS
	if msgID == "" {
		msgID = p.Message.TS
	}
	s, ok := in.sinkFor(channel)
	if !ok {
		in.log.Debug("click in a channel no two-way sink posts to; not taken", "channel", channel)
		return nil
	}
	for _, a := range p.Actions {
		var action string
		switch a.ActionID {
		case actionClaim:
			action = relay.ActionClaim
		case actionResolve:
			action = relay.ActionResolve
		default:
			continue // another app's button
		}
		agent := relay.Agent{ID: p.User.ID, Name: firstName(p.User.Name, p.User.Username)}
		lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		if who, err := s.people.find(lctx, p.User.ID); err == nil && who.name != "" {
			agent.Name = who.name
		}
		cancel()
		_, err := in.inbox.Click(ctx, relay.Click{Sink: s.Name(), Platform: TypeName, Action: action, ConversationID: a.Value,
			Agent: agent, Channel: channel, MessageID: msgID, Message: clickedMessage(p.Message.Text, p.Message.Blocks)})
		switch {
		case errors.Is(err, relay.ErrNotAClick):
			in.log.Debug("click not taken", "sink", s.Name(), "err", err)
		case err != nil:
			return err
		}
	}
	return nil
}

// handle takes a request Slack signed: an Events API payload (JSON) or an
// interactivity one (a form with payload=), as Slack sends it over HTTP.
func (in *inbound) handle(ctx context.Context, req VerifiedRequest) error {
	switch req.ContentType {
	case "application/json":
		return in.event(ctx, req.Body)
	case "application/x-www-form-urlencoded":
		form, err := url.ParseQuery(string(req.Body))
		if err != nil || form.Get("payload") == "" {
			in.log.Warn("Slack interaction without a payload; answered as received")
			return nil
		}
		return in.interaction(ctx, []byte(form.Get("payload")))
	}
	in.log.Warn("Slack request of an unknown content type; answered as received", "content_type", req.ContentType)
	return nil
}

// TypeName is the platform's name in thread messages and clicks.
const TypeName = "slack"

// httpSource serves POST /slack/events for the two-way sinks that take
// Slack's events over HTTP: one handler for every app, each request
// verified against every app's signing secret, then handled for the sinks
// of the app that signed it.
type httpSource struct {
	handler http.Handler
	log     *slog.Logger
	sinks   []string
}

func (h *httpSource) Handlers() map[string]http.Handler {
	return map[string]http.Handler{EventsPath: h.handler}
}

// Run says where the sinks take Slack's events; the listener serves them.
func (h *httpSource) Run(context.Context) error {
	h.log.Info("taking agents' replies and clicks from Slack at POST "+EventsPath+" (the app's Event Subscriptions and "+
		"Interactivity request URL)", "sinks", h.sinks)
	return nil
}

// newHTTPSource builds the events endpoint of sinks (each with a signing
// secret).
func newHTTPSource(sinks []*Sink, deps relay.SourceDeps) (*httpSource, error) {
	var secrets []relay.Secret
	var apps []*inbound
	for _, s := range sinks {
		i := 0
		for i < len(secrets) && secrets[i] != s.cfg.Reply.SigningSecret {
			i++
		}
		if i == len(secrets) {
			secrets = append(secrets, s.cfg.Reply.SigningSecret)
			apps = append(apps, &inbound{inbox: deps.Inbox, log: deps.Logger})
		}
		apps[i].sinks = append(apps[i].sinks, s)
	}
	v, err := NewVerifier(secrets, deps.Clock)
	if err != nil {
		return nil, err
	}
	// A request whose signature does not hold names no app: it is counted
	// under the first sink the endpoint serves.
	first := sinks[0].Name()
	h, err := NewEventsHandler(EventsConfig{
		Verifier: v, MaxBody: deps.MaxBody, Logger: deps.Logger,
		Rejected: func(error) { deps.Inbox.RejectedSignature(first) },
		Next: func(w http.ResponseWriter, r *http.Request, req VerifiedRequest) {
			ctx, cancel := context.WithTimeout(r.Context(), handleTimeout)
			defer cancel()
			if err := apps[req.Secret].handle(ctx, req); err != nil {
				// Not stored: Slack sends it again (X-Slack-Retry-Num), and
				// the inbox takes it once.
				deps.Logger.Warn("Slack request not stored; answered 503 so that Slack sends it again", "err", err,
					"retry_num", req.RetryNum)
				w.Header().Set("Retry-After", strconv.Itoa(1))
				http.Error(w, "not stored; send it again", http.StatusServiceUnavailable)
				return
			}
			w.WriteHeader(http.StatusOK)
		},
	})
	if err != nil {
		return nil, err
	}
	names := make([]string, len(sinks))
	for i, s := range sinks {
		names[i] = s.Name()
	}
	return &httpSource{handler: h, log: deps.Logger, sinks: names}, nil
}

// Sources builds the sources of the two-way Slack sinks among sinks (the
// Slack sinks the relay built): one endpoint at POST /slack/events for
// those whose reply: has a signing_secret, one Socket Mode connection for
// each that has an app_token.
func Sources(sinks []relay.Sink, deps relay.SourceDeps) ([]relay.Source, error) {
	deps = deps.WithDefaults()
	if deps.Inbox == nil {
		return nil, errors.New("slack sources: an inbox is required")
	}
	var overHTTP []*Sink
	var out []relay.Source
	for _, rs := range sinks {
		s, ok := rs.(*Sink)
		if !ok {
			return nil, fmt.Errorf("slack sources: %T is not a Slack sink", rs)
		}
		if !s.twoWay() {
			continue
		}
		if s.cfg.SocketMode() {
			out = append(out, newSocketSource(s, deps))
			continue
		}
		overHTTP = append(overHTTP, s)
	}
	if len(overHTTP) > 0 {
		h, err := newHTTPSource(overHTTP, deps)
		if err != nil {
			return nil, err
		}
		out = append([]relay.Source{h}, out...)
	}
	return out, nil
}

// clicked is the content of a clicked message as a status follow-up
// keeps it: its text (the notification's) and its blocks, as Slack sent
// them with the click.
type clicked struct {
	Text   string          `json:"text"`
	Blocks json.RawMessage `json:"blocks"`
}

func clickedMessage(text string, blocks json.RawMessage) json.RawMessage {
	if len(blocks) == 0 {
		return nil
	}
	b, err := json.Marshal(clicked{Text: text, Blocks: blocks})
	if err != nil {
		return nil
	}
	return b
}
