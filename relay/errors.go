package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Class says what the dispatcher does after a failed send (SPEC §5).
type Class int

const (
	// ClassRetryable: try again later with exponential backoff. Any error
	// that was not classified otherwise is retryable: a wrong guess costs a
	// retry, never an event.
	ClassRetryable Class = iota
	// ClassPermanent: this event can never be delivered to this sink; it
	// goes to the dead letters at once.
	ClassPermanent
	// ClassBroken: the destination itself is misconfigured or gone; the sink
	// is marked down and holds every delivery.
	ClassBroken
	// ClassRateLimited: the platform asked us to wait; the whole sink pauses
	// for exactly that long.
	ClassRateLimited
)

func (c Class) String() string {
	switch c {
	case ClassPermanent:
		return "permanent"
	case ClassBroken:
		return "broken"
	case ClassRateLimited:
		return "rate_limited"
	}
	return "retryable"
}

// Reason is a bounded label for why a send failed: it feeds metrics and logs
// in place of error text.
type Reason string

const (
	ReasonRateLimited Reason = "rate_limited"
	ReasonServerError Reason = "server_error"
	ReasonClientError Reason = "client_error"
	ReasonAuth        Reason = "auth"
	ReasonGone        Reason = "gone"
	ReasonTimeout     Reason = "timeout"
	ReasonCanceled    Reason = "canceled"
	ReasonNetwork     Reason = "network"
	ReasonOther       Reason = "other"
)

// classified carries a class, a reason and (for rate limits) a delay.
type classified struct {
	class  Class
	reason Reason
	after  time.Duration
	err    error
}

func (e *classified) Error() string { return e.err.Error() }
func (e *classified) Unwrap() error { return e.err }

// Permanent marks err as permanent for this event.
func Permanent(err error, reason Reason) error {
	return &classified{class: ClassPermanent, reason: reason, err: err}
}

// Broken marks err as "the destination is broken": credentials revoked, the
// channel or webhook unknown or gone.
func Broken(err error, reason Reason) error {
	return &classified{class: ClassBroken, reason: reason, err: err}
}

// RetryAfter marks err as rate-limited: try again after exactly d.
func RetryAfter(err error, d time.Duration) error {
	return &classified{class: ClassRateLimited, reason: ReasonRateLimited, after: max(d, 0), err: err}
}

// Retryable marks err as retryable with a reason; unclassified errors are
// retryable too, this only adds the reason.
func Retryable(err error, reason Reason) error {
	return &classified{class: ClassRetryable, reason: reason, err: err}
}

// Classify returns the class of err and, for rate limits, how long to wait.
// nil is not an error and must not be classified.
func Classify(err error) (Class, time.Duration) {
	var c *classified
	if errors.As(err, &c) {
		return c.class, c.after
	}
	return ClassRetryable, 0
}

// ReasonOf returns the reason recorded on err, or one derived from its type.
func ReasonOf(err error) Reason {
	var c *classified
	if errors.As(err, &c) && c.reason != "" {
		return c.reason
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return ReasonTimeout
	case errors.Is(err, context.Canceled):
		return ReasonCanceled
	}
	var ne net.Error
	if errors.As(err, &ne) {
		if ne.Timeout() {
			return ReasonTimeout
		}
		return ReasonNetwork
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ReasonNetwork
	}
	return ReasonOther
}

// Unreachable reports whether err says the destination could not be reached
// at all: the connection was refused or could not be made (host or network
// unreachable), the name did not resolve, the TLS handshake failed, or no
// answer came in time. Consecutive such failures mark a sink down (SPEC §9);
// any answer from the destination, even an error status, is not one. This is
// the one place that decides it.
func Unreachable(err error) bool {
	if err == nil {
		return false
	}
	var c *classified
	if errors.As(err, &c) && (c.class == ClassPermanent || c.class == ClassBroken || c.class == ClassRateLimited) {
		return false // the destination answered, and said what it thinks
	}
	var se *StatusError
	if errors.As(err, &se) {
		return false // an HTTP answer, even 408 or 5xx, came from the destination
	}
	if errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return false // we gave up (shutdown), not the destination
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, http.ErrSchemeMismatch) {
		return true // no answer in time; or https to a server without TLS
	}
	var (
		dnsErr    *net.DNSError
		opErr     *net.OpError
		netErr    net.Error
		verifyErr *tls.CertificateVerificationError
		recordErr tls.RecordHeaderError
		alertErr  tls.AlertError
		authErr   x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		certErr   x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &dnsErr),
		errors.As(err, &opErr) && opErr.Op == "dial",
		errors.As(err, &verifyErr), errors.As(err, &recordErr), errors.As(err, &alertErr),
		errors.As(err, &authErr), errors.As(err, &hostErr), errors.As(err, &certErr):
		return true
	case errors.As(err, &netErr) && netErr.Timeout():
		return true
	}
	return false
}

// maxErrorBody bounds how much of a response body enters an error.
const maxErrorBody = 1 << 10

// StatusError is a non-2xx HTTP answer, with at most 1 KiB of its body.
type StatusError struct {
	Status int
	Body   string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("HTTP %d %s", e.Status, http.StatusText(e.Status))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// ReadErrorBody reads at most 1 KiB of an error response body as one line of
// valid UTF-8, for error messages. An answer cut short by a read error
// says so after what was read.
func ReadErrorBody(r io.Reader) string {
	b, err := io.ReadAll(io.LimitReader(r, maxErrorBody))
	s := strings.ToValidUTF8(string(b), "")
	s = strings.Join(strings.Fields(s), " ")
	if err != nil {
		s += " (answer cut short)"
	}
	return s
}

// Drain reads what is left of a response body (up to a bound) and closes it,
// so the connection can be reused.
func Drain(resp *http.Response) {
	if resp == nil || resp.Body == nil {
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// HTTPPolicy says which statuses mean the destination is broken.
type HTTPPolicy struct {
	// Broken lists the statuses that mark the sink down (SPEC §5). For
	// platforms (Slack, Discord) that is 401, 403, 404 and 410; for generic
	// webhooks only 410.
	Broken []int
}

// PlatformPolicy is the policy for Slack and Discord: credential and
// not-found answers mean the destination is broken.
func PlatformPolicy() HTTPPolicy {
	return HTTPPolicy{Broken: []int{http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusGone}}
}

// WebhookPolicy is the policy for generic webhooks: only 410 Gone marks the
// destination broken; other 4xx are permanent for the event.
func WebhookPolicy() HTTPPolicy {
	return HTTPPolicy{Broken: []int{http.StatusGone}}
}

// Classify classifies an HTTP answer from its status, its header and (at
// most 1 KiB of) its body, as read: nil for 2xx; otherwise a classified
// *StatusError carrying the body.
//
//   - 429: rate-limited for Retry-After (retryable with backoff when the
//     header is missing or garbled);
//   - 408, 5xx: retryable (rate-limited when a Retry-After is given);
//   - statuses listed in Broken: broken (auth for 401/403, gone otherwise);
//   - any other status: permanent for this event.
func (p HTTPPolicy) Classify(status int, h http.Header, body string, now time.Time) error {
	if status >= 200 && status < 300 {
		return nil
	}
	se := &StatusError{Status: status, Body: body}
	switch {
	case status == http.StatusTooManyRequests:
		if d, ok := ParseRetryAfter(h.Get("Retry-After"), now); ok {
			return RetryAfter(se, d)
		}
		return Retryable(se, ReasonRateLimited)
	case status == http.StatusRequestTimeout:
		return Retryable(se, ReasonTimeout)
	case status >= 500:
		if d, ok := ParseRetryAfter(h.Get("Retry-After"), now); ok {
			return RetryAfter(se, d)
		}
		return Retryable(se, ReasonServerError)
	}
	for _, b := range p.Broken {
		if status == b {
			reason := ReasonGone
			if status == http.StatusUnauthorized || status == http.StatusForbidden {
				reason = ReasonAuth
			}
			return Broken(se, reason)
		}
	}
	// Other 4xx, and 3xx (redirects are never followed: a destination is
	// posted to exactly as configured), are permanent for this event.
	return Permanent(se, ReasonClientError)
}

// maxRetryAfter guards against absurd header values; the dispatcher still
// bounds every wait by retry.max_age.
const maxRetryAfter = 30 * 24 * time.Hour

// ParseRetryAfter reads a Retry-After value: delta-seconds (fractions
// allowed, as Discord sends) or an HTTP-date. It reports false for a missing
// or garbled value.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" || len(v) > 64 {
		return 0, false
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs < 0 || secs != secs { // negative or NaN
			return 0, false
		}
		d := time.Duration(secs * float64(time.Second))
		if secs*float64(time.Second) > float64(maxRetryAfter) {
			d = maxRetryAfter
		}
		return d, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter), true
	}
	return 0, false
}

// CheckHeader returns a permanent error naming the first field of h that
// net/http refuses to send, or nil: a name that is not an HTTP token, or a
// value holding CR, LF or another control character (net/http then fails
// the request before it leaves, with an error no retry can change). Values
// built from an event (a topic from the body's "event" field) are checked
// with it before the request, so that such a delivery is parked at once
// instead of retried for retry.max_age while its conversation waits (SPEC
// §9). The error never holds the value, which may be a credential. Bytes
// that are not UTF-8 pass: HTTP allows them in a value, and so does Go.
func CheckHeader(h http.Header) error {
	for name, values := range h {
		if !validHeaderName(name) {
			return Permanent(fmt.Errorf("header name %q cannot be sent: it is not an HTTP token", name), ReasonClientError)
		}
		for _, v := range values {
			if i := strings.IndexFunc(v, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }); i >= 0 {
				return Permanent(fmt.Errorf("header %s cannot be sent: its value holds the control character %U, which HTTP does not allow",
					name, v[i]), ReasonClientError)
			}
		}
	}
	return nil
}

// validHeaderName reports whether name is an HTTP token (RFC 9110 §5.1).
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// RedactURL rewrites an *url.Error so that its URL (which may carry a token)
// reads "[redacted]", keeping the operation and the cause. Call it where the
// error is made, before anything wraps it. Other errors are returned as they
// are.
func RedactURL(err error) error {
	var ue *url.Error
	if err == nil || !errors.As(err, &ue) {
		return err
	}
	return &url.Error{Op: ue.Op, URL: redacted, Err: ue.Err}
}
