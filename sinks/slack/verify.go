package slack

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
)

// The headers of Slack's signed requests (Events API, interactivity).
const (
	HeaderSignature   = "X-Slack-Signature"
	HeaderTimestamp   = "X-Slack-Request-Timestamp"
	HeaderRetryNum    = "X-Slack-Retry-Num"
	HeaderRetryReason = "X-Slack-Retry-Reason"
)

// MaxRequestAge is how far a request's timestamp may be from now, either
// way: older requests are refused as replays (Slack's own rule).
const MaxRequestAge = 5 * time.Minute

// signatureVersion prefixes Slack's signatures and their base string.
const signatureVersion = "v0"

// Why a request's signature does not hold.
var (
	ErrNoSignature  = errors.New("no " + HeaderSignature + " or " + HeaderTimestamp)
	ErrStale        = errors.New("request timestamp more than 5 minutes from now (a replay, or a clock off)")
	ErrBadSignature = errors.New("signature does not match any signing secret")
)

// Verifier checks the v0 signatures of Slack's requests: hex HMAC-SHA256,
// keyed by the app's signing secret, of "v0:" + timestamp + ":" + the raw
// body, with the timestamp within MaxRequestAge of now (PROTOCOLS.md §1.6).
// It compares in constant time, against every secret (several Slack apps,
// or a rotation), and never parses the body. It is safe for concurrent use.
type Verifier struct {
	secrets []relay.Secret
	clock   clockwork.Clock
}

// NewVerifier returns a verifier for the signing secrets (each app's
// Basic Information → Signing Secret).
func NewVerifier(secrets []relay.Secret, clock clockwork.Clock) (*Verifier, error) {
	if len(secrets) == 0 {
		return nil, errors.New("slack verifier: no signing secret")
	}
	for i, s := range secrets {
		if strings.TrimSpace(s.Reveal()) == "" {
			return nil, fmt.Errorf("slack verifier: signing secret %d is empty", i)
		}
	}
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	return &Verifier{secrets: append([]relay.Secret(nil), secrets...), clock: clock}, nil
}

// Sign returns the X-Slack-Signature of body sent at ts, as Slack computes
// it (for tests and fakes).
func Sign(secret relay.Secret, ts time.Time, body []byte) string {
	return signatureVersion + "=" + hex.EncodeToString(mac(secret, strconv.FormatInt(ts.Unix(), 10), body))
}

func mac(secret relay.Secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret.Reveal()))
	m.Write([]byte(signatureVersion + ":" + ts + ":"))
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks the signature of a request whose headers are h and raw
// body is body, and returns the index of the secret that signed it.
func (v *Verifier) Verify(h http.Header, body []byte) (int, error) {
	sig, ts := strings.TrimSpace(h.Get(HeaderSignature)), strings.TrimSpace(h.Get(HeaderTimestamp))
	if sig == "" || ts == "" {
		return -1, ErrNoSignature
	}
	// Slack sends each header once, the timestamp as decimal digits: a
	// request with two signatures or two timestamps is not Slack's, even
	// when the first pair holds (a proxy in front might have checked the
	// other).
	if len(h.Values(HeaderSignature)) > 1 {
		return -1, ErrBadSignature
	}
	if len(h.Values(HeaderTimestamp)) > 1 || len(ts) > 12 || strings.TrimLeft(ts, "0123456789") != "" {
		return -1, ErrStale
	}
	sent, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return -1, ErrStale
	}
	if d := v.clock.Now().Sub(time.Unix(sent, 0)); d > MaxRequestAge || d < -MaxRequestAge {
		return -1, ErrStale
	}
	hexSig, ok := strings.CutPrefix(sig, signatureVersion+"=")
	if !ok {
		return -1, ErrBadSignature
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return -1, ErrBadSignature
	}
	match := -1
	for i, s := range v.secrets {
		// Every secret is tried, so the time taken does not tell which
		// matched.
		if hmac.Equal(got, mac(s, ts, body)) && match < 0 {
			match = i
		}
	}
	if match < 0 {
		return -1, ErrBadSignature
	}
	return match, nil
}

// VerifiedRequest is a request to POST /slack/events whose signature held:
// its raw body, the secret that signed it, and Slack's retry headers.
type VerifiedRequest struct {
	Body   []byte
	Secret int // index of the signing secret (which app)
	// ContentType is the media type: application/json (Events API) or
	// application/x-www-form-urlencoded (interactivity: payload=<json>).
	ContentType string
	// RetryNum is X-Slack-Retry-Num (0 on the first delivery) and
	// RetryReason X-Slack-Retry-Reason: Slack sends an event again when it
	// got no 2xx within 3 s. The inbox deduplicates by message id anyway.
	RetryNum    int
	RetryReason string
}

// EventsConfig configures the handler of POST /slack/events.
type EventsConfig struct {
	Verifier *Verifier
	// MaxBody bounds a request's body (default 1 MiB): a larger one is
	// answered 413 before it is verified.
	MaxBody int64
	// Next handles a verified request other than url_verification: it
	// stores what it takes (an agent reply, a click) and then answers 2xx,
	// within Slack's 3 s, or 5xx so that Slack sends it again.
	Next func(w http.ResponseWriter, r *http.Request, req VerifiedRequest)
	// Rejected, if set, is called for each request refused for its
	// signature (a metric: chatrelay_agent_replies_total's
	// rejected_signature).
	Rejected func(err error)
	Logger   *slog.Logger
}

// NewEventsHandler returns the handler of POST /slack/events on the public
// listener: Slack's Events API and interactivity requests. In this order:
// the body is read within MaxBody (413 past it), its signature verified
// over the raw bytes before anything parses it (401 when it does not hold:
// nothing else happens), a url_verification is answered with its
// challenge, and everything else goes to Next with the verified body.
func NewEventsHandler(cfg EventsConfig) (http.Handler, error) {
	if cfg.Verifier == nil || cfg.Next == nil {
		return nil, errors.New("slack events handler: a verifier and a next handler are required")
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Rejected == nil {
		cfg.Rejected = func(error) {}
	}
	return &eventsHandler{cfg: cfg}, nil
}

type eventsHandler struct {
	cfg EventsConfig

	// Refusals are logged at most once per rejectLogEvery, with how many
	// were not: a flood of forged requests must not flood the log.
	mu       sync.Mutex
	loggedAt time.Time
	skipped  int
}

const rejectLogEvery = 10 * time.Second

// logRejection logs a refused request, throttled.
func (h *eventsHandler) logRejection(r *http.Request, err error) {
	now := h.cfg.Verifier.clock.Now()
	h.mu.Lock()
	if !h.loggedAt.IsZero() && now.Sub(h.loggedAt) < rejectLogEvery {
		h.skipped++
		h.mu.Unlock()
		return
	}
	skipped := h.skipped
	h.loggedAt, h.skipped = now, 0
	h.mu.Unlock()
	args := []any{"remote", r.RemoteAddr, "reason", err.Error(), "status", http.StatusUnauthorized}
	if skipped > 0 {
		args = append(args, "not_logged_since_last", skipped)
	}
	h.cfg.Logger.Warn("refused a Slack request: its signature does not hold; is reply.signing_secret the app's Signing Secret?", args...)
}

func (h *eventsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "Slack POSTs its events here", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			w.Header().Set("Connection", "close")
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "could not read the body", http.StatusBadRequest)
		return
	}
	secret, err := h.cfg.Verifier.Verify(r.Header, body)
	if err != nil {
		h.cfg.Rejected(err)
		h.logRejection(r, err)
		http.Error(w, "invalid signature", http.StatusUnauthorized)
		return
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/json" {
		if challenge, ok := urlVerification(body); ok {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			_, _ = io.WriteString(w, challenge)
			return
		}
	}
	retry, _ := strconv.Atoi(r.Header.Get(HeaderRetryNum))
	h.cfg.Next(w, r, VerifiedRequest{Body: body, Secret: secret, ContentType: ct,
		RetryNum: max(retry, 0), RetryReason: r.Header.Get(HeaderRetryReason)})
}

// maxChallenge bounds the challenge echoed back: Slack's are about 50
// characters.
const maxChallenge = 256

// urlVerification reports whether body is Slack's url_verification
// request, and its challenge.
func urlVerification(body []byte) (string, bool) {
	if !bytes.Contains(body, []byte("url_verification")) {
		return "", false
	}
	var v struct {
		Type      string `json:"type"`
		Challenge string `json:"challenge"`
	}
	if json.Unmarshal(body, &v) != nil || v.Type != "url_verification" || v.Challenge == "" || len(v.Challenge) > maxChallenge {
		return "", false
	}
	return v.Challenge, true
}
