package relay

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
)

// Headers Chat Data sends.
const (
	HeaderSignature = "x-chat-data-hmac-sha256"
	HeaderTopic     = "x-chat-data-topic"
)

// Sign returns the value of x-chat-data-hmac-sha256 for body, as Chat Data
// computes it: base64(HMAC-SHA256(key = the secret's bytes, body)).
func Sign(body []byte, secret Secret) string {
	m := hmac.New(sha256.New, []byte(secret.Reveal()))
	m.Write(body)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Verify reports whether header is a valid signature of body under any of
// the secrets. It compares in constant time and never parses body.
func Verify(body []byte, header string, secrets []Secret) bool {
	got, err := base64.StdEncoding.DecodeString(strings.TrimSpace(header))
	if err != nil || len(got) != sha256.Size {
		return false
	}
	ok := false
	for _, s := range secrets {
		m := hmac.New(sha256.New, []byte(s.Reveal()))
		m.Write(body)
		// Check every secret, so the time taken does not tell which matched.
		ok = hmac.Equal(got, m.Sum(nil)) || ok
	}
	return ok
}

// Appender is the part of the store the receiver writes to.
type Appender interface {
	Append(ctx context.Context, ev *Event, sinks []string) (Accepted, error)
	Ready(ctx context.Context) error
}

// ReceiverConfig configures a Receiver.
type ReceiverConfig struct {
	Secrets []Secret
	MaxBody int64 // bytes; default 1 MiB
	// MaxInflight bounds the bytes held for request bodies across every
	// request in flight, signed or not (max_inflight_bytes; default
	// DefaultMaxInflight). Past it the receiver answers 503 + Retry-After
	// before reading the body.
	MaxInflight int64
	Store       Appender
	Router      *Router
	Metrics     *Metrics
	Logger      *slog.Logger
	Clock       clockwork.Clock
	RetryAfter  time.Duration // what 503 answers tell the sender; default 5s
	// Accepting, shared with the dispatchers, keeps an event's "accepted"
	// line before its deliveries' lines; nil orders nothing.
	Accepting *Accepting
}

// Receiver is the inbound side: POST /webhook, GET /healthz, GET /readyz.
type Receiver struct {
	cfg ReceiverConfig
	mux *http.ServeMux

	// Rejections and failed readiness checks are logged at most once per
	// logEvery each, with how many were not logged: a flood of bad
	// requests, or a monitor polling /readyz, must not flood the log.
	rejectLog throttle
	readyLog  throttle
	busyLog   throttle

	inflight budget
}

const logEvery = 10 * time.Second

// throttle lets one log line through per logEvery and counts the others.
type throttle struct {
	mu      sync.Mutex
	logged  time.Time
	skipped int
}

// allow reports whether a line may be logged now and, if so, how many were
// held back since the last one.
func (t *throttle) allow(now time.Time) (ok bool, skipped int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.logged.IsZero() && now.Sub(t.logged) < logEvery {
		t.skipped++
		return false, 0
	}
	skipped = t.skipped
	t.logged, t.skipped = now, 0
	return true, skipped
}

// logThrottled logs a warning through t.
func (r *Receiver) logThrottled(t *throttle, msg string, args ...any) {
	ok, skipped := t.allow(r.cfg.Clock.Now())
	if !ok {
		return
	}
	if skipped > 0 {
		args = append(args, "not_logged_since_last", skipped)
	}
	r.cfg.Logger.Warn(msg, args...)
}

// logRejection logs a refused request, throttled.
func (r *Receiver) logRejection(msg string, args ...any) { r.logThrottled(&r.rejectLog, msg, args...) }

// NewReceiver returns a receiver. It starts no goroutine.
func NewReceiver(cfg ReceiverConfig) (*Receiver, error) {
	if len(cfg.Secrets) == 0 {
		return nil, errors.New("receiver: no signing secret")
	}
	if cfg.Store == nil || cfg.Router == nil || cfg.Metrics == nil {
		return nil, errors.New("receiver: store, router and metrics are required")
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = 5 * time.Second
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = DefaultMaxInflight
	}
	if cfg.MaxInflight < cfg.MaxBody {
		return nil, fmt.Errorf("receiver: max_inflight_bytes %d is below max_body_bytes %d: no body of the largest size could be read",
			cfg.MaxInflight, cfg.MaxBody)
	}
	r := &Receiver{cfg: cfg, mux: http.NewServeMux()}
	r.inflight.limit = cfg.MaxInflight
	r.inflight.gauge = cfg.Metrics.InflightBodyBytes
	r.mux.HandleFunc("POST /webhook", r.webhook)
	// Any other method: 405 with Allow, and a JSON error like every other
	// answer of the endpoint.
	r.mux.HandleFunc("/webhook", func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Allow", http.MethodPost)
		r.writeJSON(w, http.StatusMethodNotAllowed, answer{Status: "rejected",
			Error: req.Method + " is not allowed; Chat Data POSTs its events here"})
	})
	r.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		r.writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.mux.HandleFunc("GET /readyz", r.readyz)
	return r, nil
}

// ServeHTTP implements http.Handler.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) { r.mux.ServeHTTP(w, req) }

// InflightBytes returns the bytes reserved for request bodies right now.
func (r *Receiver) InflightBytes() int64 { return r.inflight.used.Load() }

type answer struct {
	Status string `json:"status"`
	ID     string `json:"id,omitempty"`
	Error  string `json:"error,omitempty"`
}

func (r *Receiver) webhook(w http.ResponseWriter, req *http.Request) {
	m := r.cfg.Metrics
	topicHeader := req.Header.Get(HeaderTopic)
	// Until the signature holds, the body is not read for its topic: a
	// rejected request is counted under its header's topic, or chat.
	rejectTopic := TopicLabel(TopicOf(topicHeader, ""))
	// Memory for the body is reserved before it is read, and held until the
	// request is answered.
	body, held, err := r.inflight.readBody(w, req, r.cfg.MaxBody)
	defer r.inflight.release(held)
	if err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.Is(err, errBusy):
			m.EventsReceived.WithLabelValues(rejectTopic, ReceiveUnavailable).Inc()
			r.logThrottled(&r.busyLog, "refusing requests: max_inflight_bytes of request bodies are in flight; answering 503 with Retry-After",
				"remote", req.RemoteAddr, "max_inflight_bytes", r.cfg.MaxInflight)
			// Closing the connection spares reading (or discarding) a body
			// that will not be used.
			w.Header().Set("Connection", "close")
			w.Header().Set("Retry-After", strconv.Itoa(int(r.cfg.RetryAfter.Round(time.Second)/time.Second)))
			r.writeJSON(w, http.StatusServiceUnavailable, answer{Status: "unavailable",
				Error: "too many request bodies in flight (max_inflight_bytes), retry later"})
		case errors.Is(err, errTooLarge), errors.As(err, &tooBig):
			m.EventsReceived.WithLabelValues(rejectTopic, ReceiveRejectedBody).Inc()
			w.Header().Set("Connection", "close")
			r.writeJSON(w, http.StatusRequestEntityTooLarge, answer{Status: "rejected",
				Error: "body larger than " + strconv.FormatInt(r.cfg.MaxBody, 10) + " bytes (max_body_bytes)"})
		default:
			m.EventsReceived.WithLabelValues(rejectTopic, ReceiveRejectedBody).Inc()
			r.writeJSON(w, http.StatusBadRequest, answer{Status: "rejected", Error: "could not read body"})
		}
		return
	}
	// Verify over the raw bytes before anything parses them.
	if !Verify(body, req.Header.Get(HeaderSignature), r.cfg.Secrets) {
		m.EventsReceived.WithLabelValues(rejectTopic, ReceiveRejectedSignature).Inc()
		r.logRejection("rejected request: missing or invalid signature; is signing_secrets the secret Chat Data shows?",
			"remote", req.RemoteAddr, "status", http.StatusForbidden)
		r.writeJSON(w, http.StatusForbidden, answer{Status: "rejected", Error: "missing or invalid " + HeaderSignature})
		return
	}
	ev, err := DecodeEvent(body)
	if err != nil {
		m.EventsReceived.WithLabelValues(rejectTopic, ReceiveRejectedBody).Inc()
		r.logRejection("rejected request: body is not a JSON object", "remote", req.RemoteAddr, "status", http.StatusBadRequest)
		r.writeJSON(w, http.StatusBadRequest, answer{Status: "rejected", Error: "body is not a JSON object"})
		return
	}
	topic := TopicOf(topicHeader, ev.Topic)
	if topic == TopicAgentReply || topic == TopicFollowup {
		// The relay's own topics: an agent's answer from a thread, which
		// would go to Chat Data's live-chat API, and what the relay posts
		// back into threads. Chat Data never sends them.
		m.EventsReceived.WithLabelValues(TopicLabel(topic), ReceiveRejectedBody).Inc()
		r.logRejection("rejected request: topic "+topic+" is chatrelay's own", "remote", req.RemoteAddr, "status", http.StatusBadRequest)
		r.writeJSON(w, http.StatusBadRequest, answer{Status: "rejected",
			Error: "topic " + topic + " is chatrelay's own (agents' answers from Slack and Discord threads, and what it posts back); Chat Data does not send it"})
		return
	}
	ev.Reply, ev.Followup = nil, nil // only the relay's own events carry one
	now := r.cfg.Clock.Now()
	id, err := uuid.NewV7()
	if err != nil {
		id = uuid.New()
	}
	ev.ID, ev.Topic, ev.ReceivedAt = id.String(), topic, now
	sinks := r.cfg.Router.Route(ev)

	logged := r.cfg.Accepting.Begin(ev.ID)
	defer logged()
	acc, err := r.cfg.Store.Append(req.Context(), ev, sinks)
	if err != nil {
		m.EventsReceived.WithLabelValues(TopicLabel(topic), ReceiveUnavailable).Inc()
		// The store logs when it stops and starts writing; each refused
		// request is counted (result="unavailable") and logged throttled.
		r.logRejection("store cannot accept events; answering 503 with Retry-After", "topic", topic, "err", err)
		w.Header().Set("Retry-After", strconv.Itoa(int(r.cfg.RetryAfter.Round(time.Second)/time.Second)))
		r.writeJSON(w, http.StatusServiceUnavailable, answer{Status: "unavailable", Error: "store unavailable, retry later"})
		return
	}
	switch {
	case acc.Duplicate:
		m.EventsReceived.WithLabelValues(TopicLabel(topic), ReceiveDuplicate).Inc()
		r.cfg.Logger.Info("duplicate event", "event_id", acc.ID, "topic", topic, "conversation_id", ev.ConversationID)
		r.writeJSON(w, http.StatusOK, answer{Status: "duplicate", ID: acc.ID})
		return
	case len(sinks) == 0:
		m.EventsReceived.WithLabelValues(TopicLabel(topic), ReceiveUnrouted).Inc()
		m.Usage.Observe(ev)
		r.cfg.Logger.Info("accepted event matches no route", "event_id", acc.ID, "topic", topic, "conversation_id", ev.ConversationID)
	default:
		m.EventsReceived.WithLabelValues(TopicLabel(topic), ReceiveAccepted).Inc()
		m.Usage.Observe(ev)
		r.cfg.Logger.Info("accepted event", "event_id", acc.ID, "topic", topic,
			"conversation_id", ev.ConversationID, "sinks", strings.Join(sinks, ","))
	}
	logged()
	r.writeJSON(w, http.StatusOK, answer{Status: "accepted", ID: acc.ID})
}

// readyz answers ready or not ready with a short reason code (ReadyReason):
// never the store's error text, which can name files and hosts. The detail
// goes to the log (throttled) and to the admin API (GET /api/v1/ready).
func (r *Receiver) readyz(w http.ResponseWriter, req *http.Request) {
	ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
	defer cancel()
	if err := r.cfg.Store.Ready(ctx); err != nil {
		reason := ReadyReason(err)
		r.logThrottled(&r.readyLog, "not ready: the store cannot accept events; /readyz answers 503", "reason", reason, "err", err)
		w.Header().Set("Retry-After", strconv.Itoa(int(r.cfg.RetryAfter/time.Second)))
		r.writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": reason})
		return
	}
	r.writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// writeJSON answers with v. A client that hung up before reading its
// answer is no fault of the relay: it is only logged at debug.
func (r *Receiver) writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		r.cfg.Logger.Debug("could not write the answer", "status", status, "err", err)
	}
}
