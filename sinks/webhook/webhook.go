// Package webhook is the generic outbound sink: it POSTs the original Chat
// Data JSON, byte for byte, to a URL, signed as Standard Webhooks describe
// (webhook-id, webhook-timestamp, webhook-signature).
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

// Sink posts events to one URL.
type Sink struct {
	cfg    Config
	key    []byte
	client *http.Client
	deps   relay.SinkDeps
	scrub  *relay.Scrubber // the URL, the secret and the header values: scrubbed from answers
}

// New checks cfg and returns the sink. Its error joins one error per
// problem, each starting with the config key. It starts no goroutine.
func New(cfg Config, deps relay.SinkDeps) (*Sink, error) {
	deps = deps.WithDefaults()
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var key []byte
	if !cfg.Secret.IsZero() {
		key, _ = DecodeSecret(cfg.Secret.Reveal()) // validated
	}
	relay.WarnPlainHTTP(deps.Logger, "url", cfg.URL.Reveal())
	// Error pages often echo the request ("Cannot POST /hooks/<token>",
	// the headers it came with), and a URL often carries a token in its
	// path or query: the scrubber knows every form of them.
	secrets := []string{cfg.URL.Reveal(), cfg.Secret.Reveal()}
	for _, v := range cfg.Headers {
		secrets = append(secrets, v.Reveal())
	}
	return &Sink{
		cfg:    cfg,
		key:    key,
		deps:   deps,
		scrub:  relay.NewScrubber(secrets...),
		client: deps.Client(cfg.Timeout),
	}, nil
}

// SendTimeout implements relay.Budgeted: a send is one request.
func (s *Sink) SendTimeout() time.Duration { return s.cfg.Timeout }

// Name implements relay.Sink.
func (s *Sink) Name() string { return s.cfg.Name }

// MessageID is the webhook-id of event ev on sink name: stable across
// retries, so receivers can deduplicate.
func MessageID(ev *relay.Event, sink string) string {
	return "msg_" + ev.ID + "_" + sink
}

// Send implements relay.Sink.
func (s *Sink) Send(ctx context.Context, ev *relay.Event) error {
	body := ev.Body
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL.Reveal(), bytes.NewReader(body))
	if err != nil {
		return relay.Permanent(fmt.Errorf("webhook sink %q: build request: %w", s.cfg.Name, relay.RedactURL(err)), relay.ReasonOther)
	}
	now := s.deps.Clock.Now()
	id := MessageID(ev, s.cfg.Name)
	h := req.Header
	for k, v := range s.cfg.Headers {
		h.Set(k, v.Reveal())
	}
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", s.deps.UserAgent)
	h.Set(relay.HeaderTopic, ev.Topic)
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	if s.key != nil {
		h.Set("webhook-signature", Signature(s.key, id, now, body))
	}
	if err := relay.CheckHeader(h); err != nil {
		// The topic comes from the event: one Go will not send can
		// never be delivered.
		return fmt.Errorf("webhook sink %q: %w", s.cfg.Name, err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook sink %q: post: %w", s.cfg.Name, relay.RedactURL(err))
	}
	defer relay.Drain(resp)
	answer := ""
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// What enters the error is the answer without the URL's secrets.
		answer = s.scrub.Scrub(relay.ReadErrorBody(resp.Body))
	}
	if err := relay.WebhookPolicy().Classify(resp.StatusCode, resp.Header, answer, s.deps.Clock.Now()); err != nil {
		return fmt.Errorf("webhook sink %q: %w", s.cfg.Name, err)
	}
	return nil
}

// Signature is the Standard Webhooks v1 signature: "v1," followed by
// base64(HMAC-SHA256(key, id.timestamp.body)).
func Signature(key []byte, id string, ts time.Time, body []byte) string {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s.%d.", id, ts.Unix())
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// DecodeSecret reads a "whsec_<base64>" secret into its key bytes.
func DecodeSecret(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return nil, errors.New(`not a Standard Webhooks secret: it must start with "whsec_" followed by base64`)
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return nil, errors.New(`not a Standard Webhooks secret: the part after "whsec_" is not valid base64`)
	}
	if len(key) < 24 {
		return nil, fmt.Errorf("secret too short: %d bytes after decoding, want at least 24 (192 bits)", len(key))
	}
	return key, nil
}
