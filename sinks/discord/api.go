package discord

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay"
)

// Discord's JSON error codes that discordgo has no constant for.
// https://discord.com/developers/docs/topics/opcodes-and-status-codes#json
const (
	errCodeForumNeedsThread   = 220001 // a forum webhook needs thread_name or thread_id
	errCodeThreadNameAndID    = 220002 // thread_name and thread_id together
	errCodeThreadsOnlyInForum = 220003 // thread_name with a non-forum webhook
)

const (
	maxResponseBody = 1 << 20 // a message or channel object
	maxErrorBody    = 8 << 10 // an error answer, read to find its code
	maxErrorText    = 300     // of Discord's message, in an error
)

// APIError is an error answer from Discord's REST API. Its text carries no
// token or webhook URL.
type APIError struct {
	Op      string // what was attempted: "post message", "start thread", …
	Status  int    // HTTP status
	Code    int    // Discord's JSON error code; 0 when the body had none
	Message string // Discord's message (and field errors), shortened
	Fix     string // what to change, when the destination is at fault
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: HTTP %d", e.Op, e.Status)
	if e.Code != 0 {
		fmt.Fprintf(&b, ", Discord code %d", e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.Fix != "" {
		b.WriteString("; " + e.Fix)
	}
	return b.String()
}

// call is one REST request.
type call struct {
	op      string
	method  string
	url     *url.URL
	payload any // sent as JSON; nil for none
	// in is what, inside the sink's destination, the request names: ""
	// for the configured channel or webhook itself, inThread or
	// inMessage. An error about such a part (deleted, archived, locked)
	// says nothing about the destination.
	in string
}

// What a call names inside the destination.
const (
	inThread  = "thread"  // a conversation's thread (its channel id, or a webhook's thread_id)
	inMessage = "message" // a message of the channel (to start a thread on it)
)

// do makes one request and decodes a 2xx answer into out (when out is not
// nil and the answer has a body). Every other outcome is a classified error
// that names the sink and carries no secret. Rate-limit headers are read
// from every answer into rep (nil: not a send's).
func (s *Sink) do(ctx context.Context, rep *relay.Report, c call, out any) error {
	var body io.Reader
	if c.payload != nil {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false) // Markdown quotes and mentions stay readable
		if err := enc.Encode(c.payload); err != nil {
			return relay.Permanent(s.errorf("%s: encode: %w", c.op, err), relay.ReasonOther)
		}
		s.log.DebugContext(ctx, "discord request", "op", c.op, "payload", strings.TrimSpace(b.String()))
		body = &b
	}
	req, err := http.NewRequestWithContext(ctx, c.method, c.url.String(), body)
	if err != nil {
		return relay.Permanent(s.errorf("%s: %w", c.op, relay.RedactURL(err)), relay.ReasonOther)
	}
	req.Header.Set("User-Agent", s.ua)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if s.bot() {
		req.Header.Set("Authorization", "Bot "+s.token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		// The URL carries the webhook token: redact it before wrapping.
		return s.errorf("%s: %w", c.op, relay.RedactURL(err))
	}
	defer relay.Drain(resp)
	now := s.clock.Now()
	s.observe(ctx, rep, c.op, resp.Header, now)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if out != nil && resp.StatusCode != http.StatusNoContent {
			if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBody)).Decode(out); err != nil && err != io.EOF {
				// Posted all the same; only what the answer said is lost.
				s.log.DebugContext(ctx, "discord answer not understood", "op", c.op, "status", resp.StatusCode, "err", err)
			}
		}
		return nil
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if err != nil {
		// Classified by its status and what was read.
		s.log.DebugContext(ctx, "discord error answer cut short", "op", c.op, "status", resp.StatusCode, "err", err)
	}
	return s.classify(c, resp.StatusCode, resp.Header, raw, now)
}

// errorf formats an error that names the sink, with every secret removed
// from the text (the wrapped chain is kept for errors.Is and errors.As).
func (s *Sink) errorf(format string, args ...any) error {
	return s.scrub.Error(fmt.Errorf("discord sink %q: "+format, append([]any{s.cfg.Name}, args...)...))
}

// observe reads the rate-limit headers of an answer: when the bucket is
// empty, the send reports it (rep), and the dispatcher holds the sink until
// it refills, so that steady traffic never meets a 429.
func (s *Sink) observe(ctx context.Context, rep *relay.Report, op string, h http.Header, now time.Time) {
	if strings.TrimSpace(h.Get("X-RateLimit-Remaining")) != "0" {
		return
	}
	d, ok := relay.ParseRetryAfter(h.Get("X-RateLimit-Reset-After"), now)
	if !ok {
		if reset, err := strconv.ParseFloat(strings.TrimSpace(h.Get("X-RateLimit-Reset")), 64); err == nil {
			d, ok = time.Unix(0, int64(reset*float64(time.Second))).Sub(now), true
		}
	}
	if !ok || d <= 0 {
		return
	}
	if rep != nil {
		rep.Hold(now.Add(d))
	}
	s.log.DebugContext(ctx, "discord rate-limit bucket empty; holding the sink", "op", op,
		"bucket", h.Get("X-RateLimit-Bucket"), "delay", d)
}

// maxRetryAfter bounds a retry_after from a body (the dispatcher bounds
// every wait by retry.max_age as well).
const maxRetryAfter = 30 * 24 * time.Hour

// errorBody is Discord's error answer (a 429's has retry_after and global).
type errorBody struct {
	Code       int             `json:"code"`
	Message    string          `json:"message"`
	Errors     json.RawMessage `json:"errors"`
	RetryAfter *float64        `json:"retry_after"`
	Global     bool            `json:"global"`
}

// classify turns a non-2xx answer to c into a classified error (SPEC §5,
// PROTOCOLS.md §2.4): Discord's error code first, then the status through
// relay's platform policy.
func (s *Sink) classify(c call, status int, h http.Header, raw []byte, now time.Time) error {
	ae := &APIError{Op: c.op, Status: status}
	var body errorBody
	if json.Unmarshal(raw, &body) == nil {
		ae.Code = body.Code
		msg := body.Message
		if len(body.Errors) > 0 && string(body.Errors) != "null" {
			var b bytes.Buffer
			if json.Compact(&b, body.Errors) == nil {
				msg += " " + b.String()
			}
		}
		ae.Message = msg
	} else {
		ae.Message = relay.ReadErrorBody(bytes.NewReader(raw)) // a proxy's or Cloudflare's page
	}
	ae.Message, _ = truncate(s.scrub.Scrub(strings.TrimSpace(ae.Message)), maxErrorText)

	wrap := func(class relay.Class, reason relay.Reason, after time.Duration) error {
		var err error
		switch class {
		case relay.ClassPermanent:
			err = relay.Permanent(ae, reason)
		case relay.ClassBroken:
			err = relay.Broken(ae, reason)
		case relay.ClassRateLimited:
			err = relay.RetryAfter(ae, after)
		default:
			err = relay.Retryable(ae, reason)
		}
		return s.errorf("%w", err)
	}

	if status == http.StatusTooManyRequests || ae.Code == discordgo.ErrCodeChannelHasHitWriteRateLimit {
		if body.Global || h.Get("X-RateLimit-Global") != "" {
			ae.Message = strings.TrimSpace(ae.Message + " (global limit of the bot token)")
		}
		// The body's retry_after is the precise value; the header is whole
		// seconds; Reset-After is what the bucket said.
		d, ok := time.Duration(0), false
		if ra := body.RetryAfter; ra != nil && *ra >= 0 {
			d, ok = time.Duration(math.Round(min(*ra, maxRetryAfter.Seconds())*float64(time.Second))), true
		}
		if !ok {
			d, ok = relay.ParseRetryAfter(h.Get("Retry-After"), now)
		}
		if !ok {
			d, ok = relay.ParseRetryAfter(h.Get("X-RateLimit-Reset-After"), now)
		}
		if ok {
			return wrap(relay.ClassRateLimited, relay.ReasonRateLimited, d)
		}
		return wrap(relay.ClassRetryable, relay.ReasonRateLimited, 0)
	}

	if partGone(c.in, ae.Code) {
		// A message or thread inside the destination is gone, archived
		// or locked: the destination itself is fine, and marking it
		// down would hold every conversation. The sink recovers where
		// it can (a new thread); what is left is worth a retry, which
		// starts from what the store now says.
		return wrap(relay.ClassRetryable, relay.ReasonClientError, 0)
	}
	switch ae.Code {
	case discordgo.ErrCodeUnknownWebhook:
		ae.Fix = "the webhook was deleted; create a new one (channel settings → Integrations → Webhooks) and set webhook_url to its URL"
		return wrap(relay.ClassBroken, relay.ReasonGone, 0)
	case discordgo.ErrCodeInvalidWebhookTokenProvided:
		ae.Fix = "the webhook URL's token is wrong; copy the webhook URL again into webhook_url"
		return wrap(relay.ClassBroken, relay.ReasonAuth, 0)
	case discordgo.ErrCodeUnknownChannel:
		ae.Fix = "the channel no longer exists or the bot cannot see it; check channel_id and that the bot is in the server"
		if !s.bot() {
			ae.Fix = "the webhook's channel no longer exists; create a webhook in an existing channel and set webhook_url"
		}
		return wrap(relay.ClassBroken, relay.ReasonGone, 0)
	case discordgo.ErrCodeMissingAccess, discordgo.ErrCodeMissingPermissions:
		ae.Fix = s.forbiddenFix()
		return wrap(relay.ClassBroken, relay.ReasonAuth, 0)
	case discordgo.ErrCodeInvalidFormBody, discordgo.ErrCodeCannotSendEmptyMessage, discordgo.ErrCodeRequestEntityTooLarge:
		return wrap(relay.ClassPermanent, relay.ReasonClientError, 0)
	case errCodeForumNeedsThread:
		ae.Fix = "the webhook's channel is a forum; set thread_name so that each conversation becomes a post"
		return wrap(relay.ClassPermanent, relay.ReasonClientError, 0)
	case errCodeThreadNameAndID:
		return wrap(relay.ClassPermanent, relay.ReasonClientError, 0)
	case errCodeThreadsOnlyInForum:
		ae.Fix = "thread_name works only with a forum channel's webhook; remove thread_name, or use bot mode for threads in a text channel"
		return wrap(relay.ClassPermanent, relay.ReasonClientError, 0)
	case discordgo.ErrCodeAPIResourceIsCurrentlyOverloaded:
		return wrap(relay.ClassRetryable, relay.ReasonServerError, 0)
	}

	// The status alone, by the table every platform sink shares.
	base := relay.PlatformPolicy().Classify(status, h, "", now)
	class, after := relay.Classify(base)
	switch status {
	case http.StatusUnauthorized:
		ae.Fix = "the bot token is invalid or was reset; set token to the bot's current token (Developer Portal → Bot → Reset Token)"
		if !s.bot() {
			ae.Fix = "Discord refuses the webhook URL; copy it again into webhook_url"
		}
	case http.StatusForbidden:
		ae.Fix = s.forbiddenFix()
	case http.StatusNotFound, http.StatusGone:
		ae.Fix = "Discord does not know this webhook or channel; check webhook_url or channel_id"
	}
	return wrap(class, relay.ReasonOf(base), after)
}

// partGone reports whether code, answered to a call naming in, is about a
// part of the destination (a message, a thread) rather than the
// destination: Unknown Message always; Unknown Channel, archived thread
// and locked thread when the call named a thread. Unknown Channel on the
// configured channel, Unknown Webhook, a bad webhook token, 401 and 403
// still mark the destination broken.
func partGone(in string, code int) bool {
	switch code {
	case discordgo.ErrCodeUnknownMessage:
		return true
	case discordgo.ErrCodeUnknownChannel, discordgo.ErrCodePerformedOperationOnArchivedThread, discordgo.ErrCodeThreadIsLocked:
		return in == inThread
	}
	return false
}

// forbiddenFix says what to do about a 403.
func (s *Sink) forbiddenFix() string {
	if !s.bot() {
		return "Discord forbids posting with this webhook; check that it still exists and copy its URL again into webhook_url"
	}
	return "give the bot View Channel, Send Messages, Embed Links, Create Public Threads, Send Messages in Threads and Read Message History in the channel"
}

// codeOf returns the Discord error code in err's chain (0 when none).
func codeOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return 0
}
