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
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

// Config is one webhook sink's configuration.
type Config struct {
	Name string
	// URL is posted to exactly as configured. It is a Secret because URLs
	// often carry tokens.
	URL relay.Secret
	// Secret, if set, is a Standard Webhooks secret "whsec_<base64>"; each
	// request then carries webhook-signature.
	Secret relay.Secret
	// Headers are added to every request.
	Headers map[string]string
	// Timeout bounds one request (default 15s); the dispatcher's deadline
	// applies too.
	Timeout time.Duration
	// Transform, if set, rewrites the body before it is sent (redaction).
	Transform func(ev *relay.Event) ([]byte, error)
}

// Sink posts events to one URL.
type Sink struct {
	cfg    Config
	key    []byte
	client *http.Client
	deps   relay.SinkDeps
	scrub  *relay.Scrubber // the URL, the secret and the header values: scrubbed from answers
}

// New checks cfg and returns the sink. It starts no goroutine.
func New(cfg Config, deps relay.SinkDeps) (*Sink, error) {
	deps = deps.WithDefaults()
	if err := validURL(cfg.URL.Reveal()); err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	var key []byte
	if !cfg.Secret.IsZero() {
		k, err := DecodeSecret(cfg.Secret.Reveal())
		if err != nil {
			return nil, fmt.Errorf("secret: %w", err)
		}
		key = k
	}
	for name, value := range cfg.Headers {
		if !validHeaderName(name) {
			return nil, fmt.Errorf("headers: %q is not a valid HTTP header name", name)
		}
		if err := relay.CheckHeader(http.Header{name: {value}}); err != nil {
			return nil, fmt.Errorf("headers: %s: its value holds a line break or another control character; write it on one line", name)
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	// Error pages often echo the request ("Cannot POST /hooks/<token>",
	// the headers it came with), and a URL often carries a token in its
	// path or query: the scrubber knows every form of them.
	secrets := []string{cfg.URL.Reveal(), cfg.Secret.Reveal()}
	for _, v := range cfg.Headers {
		secrets = append(secrets, v)
	}
	return &Sink{
		cfg:   cfg,
		key:   key,
		deps:  deps,
		scrub: relay.NewScrubber(secrets...),
		client: &http.Client{
			Transport: deps.Transport,
			Timeout:   cfg.Timeout,
			// A destination is posted to exactly as configured; a redirect
			// is an answer, never followed.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

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
	if s.cfg.Transform != nil {
		b, err := s.cfg.Transform(ev)
		if err != nil {
			return relay.Permanent(fmt.Errorf("webhook sink %q: prepare body: %w", s.cfg.Name, err), relay.ReasonOther)
		}
		body = b
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL.Reveal(), bytes.NewReader(body))
	if err != nil {
		return relay.Permanent(fmt.Errorf("webhook sink %q: build request: %w", s.cfg.Name, relay.RedactURL(err)), relay.ReasonOther)
	}
	now := s.deps.Clock.Now()
	id := MessageID(ev, s.cfg.Name)
	h := req.Header
	for k, v := range s.cfg.Headers {
		h.Set(k, v)
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
	checked := *resp
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// What enters the error is the answer without the URL's secrets.
		checked.Body = io.NopCloser(strings.NewReader(s.scrub.Scrub(relay.ReadErrorBody(resp.Body))))
	}
	if err := relay.WebhookPolicy().Check(&checked, s.deps.Clock.Now()); err != nil {
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

// validURL accepts any absolute http or https URL; errors never echo it.
func validURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("not an http or https URL")
	}
	if u.Host == "" {
		return errors.New("URL has no host")
	}
	return nil
}

func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range name {
		if c > 126 || c <= 32 || strings.ContainsRune(`()<>@,;:\"/[]?={}`, c) {
			return false
		}
	}
	return true
}
