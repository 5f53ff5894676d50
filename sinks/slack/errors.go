package slack

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

// defaultRateLimitWait is how long to wait after "ok":false "rate_limited",
// which Slack sends without a Retry-After
// (https://docs.slack.dev/reference/methods/chat.postMessage#errors).
const defaultRateLimitWait = time.Second

// slackError is an error code Slack answered with: "ok":false from the Web
// API, or the plain-text body of an incoming webhook's error answer. Its
// text says what to fix.
type slackError struct {
	status  int    // HTTP status
	code    string // Slack's error code, e.g. not_in_channel
	needed  string // for missing_scope: the scope Slack asks for
	webhook bool
}

func (e *slackError) Error() string {
	msg := e.code
	if e.status != http.StatusOK {
		msg = fmt.Sprintf("HTTP %d %s", e.status, e.code)
	}
	if h := hint(e.code, e.needed, e.webhook); h != "" {
		msg += ": " + h
	}
	return msg
}

// classifyCode maps a Slack error code to a delivery class
// (PROTOCOLS.md §3; https://docs.slack.dev/reference/methods/chat.postMessage#errors).
// ok is false for codes not listed.
func classifyCode(code string) (class relay.Class, reason relay.Reason, ok bool) {
	switch code {
	case "ratelimited", "rate_limited":
		return relay.ClassRateLimited, relay.ReasonRateLimited, true
	case "internal_error", "fatal_error", "service_unavailable", "request_timeout", "rollup_error":
		return relay.ClassRetryable, relay.ReasonServerError, true
	case "thread_not_found", "invalid_thread_ts":
		// The conversation's thread root was deleted. The sink posts at
		// top level instead; should that fail the same way, a retry
		// starts a new thread.
		return relay.ClassRetryable, relay.ReasonClientError, true
	case "invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive",
		"missing_scope", "not_allowed_token_type", "no_permission", "not_in_channel",
		"restricted_action", "restricted_action_read_only_channel", "restricted_action_thread_only_channel",
		"ekm_access_denied", "invalid_token", "action_prohibited", "posting_to_general_channel_denied":
		return relay.ClassBroken, relay.ReasonAuth, true
	case "channel_not_found", "is_archived", "channel_is_archived", "no_service", "no_service_id",
		"no_team", "team_disabled", "team_not_found":
		return relay.ClassBroken, relay.ReasonGone, true
	case "invalid_blocks", "invalid_blocks_format", "invalid_payload", "msg_too_long",
		"msg_blocks_too_long", "no_text", "missing_text_or_fallback_or_attachments",
		"too_many_attachments", "invalid_arguments", "user_not_found", "invalid_form_data",
		"invalid_json", "json_not_object", "invalid_charset", "invalid_attachments",
		"invalid_metadata_format", "metadata_too_large":
		return relay.ClassPermanent, relay.ReasonClientError, true
	}
	return relay.ClassRetryable, relay.ReasonOther, false
}

// hint says what to do about an error code.
func hint(code, needed string, webhook bool) string {
	switch code {
	case "invalid_auth", "not_authed", "not_allowed_token_type":
		return "Slack does not accept the bot token; set token to the app's Bot User OAuth Token (xoxb-…)"
	case "token_revoked", "token_expired":
		return "the bot token was revoked or has expired; reinstall the app in the workspace and set token to its new Bot User OAuth Token"
	case "account_inactive":
		return "the token belongs to a deactivated user or workspace; reinstall the app and set token to its new Bot User OAuth Token"
	case "missing_scope", "no_permission":
		if needed != "" && needed != "chat:write" {
			return "the app lacks the " + needed + " scope; add it under OAuth & Permissions and reinstall the app"
		}
		return "the app lacks the chat:write scope; add chat:write (and chat:write.public to post in channels the bot has not joined) " +
			"under OAuth & Permissions and reinstall the app"
	case "not_in_channel":
		return "the bot is not a member of the channel; invite the bot to the channel (/invite @your-app) or add the chat:write.public scope and reinstall the app"
	case "restricted_action", "restricted_action_read_only_channel", "restricted_action_thread_only_channel":
		return "the workspace does not let the bot post in this channel; ask a workspace admin, or set channel to another channel"
	case "ekm_access_denied":
		return "Enterprise Key Management blocks access to the channel; ask a workspace admin"
	case "invalid_token":
		return "the incoming webhook's token is invalid or revoked; create a new incoming webhook and set webhook_url to its URL"
	case "action_prohibited":
		return "a workspace admin restricted posting through this webhook; ask the admin, or create an incoming webhook for another channel"
	case "posting_to_general_channel_denied":
		return "only admins may post in this channel; create the incoming webhook for another channel"
	case "channel_not_found":
		if webhook {
			return "the webhook's channel no longer exists; create a new incoming webhook and set webhook_url to its URL"
		}
		return "no such channel, or the bot cannot see it; set channel to the channel's ID (C…, shown in the channel's details) and invite the bot to private channels"
	case "is_archived", "channel_is_archived":
		return "the channel is archived; unarchive it, or point the sink at another channel"
	case "no_service", "no_service_id", "no_team", "team_disabled", "team_not_found":
		return "the incoming webhook was disabled or removed, or its workspace is gone; create a new incoming webhook and set webhook_url to its URL"
	case "ratelimited", "rate_limited":
		return "Slack asked chatrelay to slow down"
	case "thread_not_found", "invalid_thread_ts":
		return "the conversation's thread was deleted; the next attempt starts a new one"
	case "internal_error", "fatal_error", "service_unavailable", "request_timeout", "rollup_error":
		return "a temporary failure at Slack"
	case "invalid_blocks", "invalid_blocks_format", "msg_too_long", "msg_blocks_too_long", "no_text",
		"missing_text_or_fallback_or_attachments", "too_many_attachments", "invalid_payload", "invalid_arguments":
		return "Slack refused the message as built by chatrelay (please report it); the event is kept in the dead letters"
	}
	return ""
}

// brokenHint says what to fix when an HTTP status without a known error
// code marks the destination broken.
func brokenHint(status int, webhook bool) string {
	switch {
	case webhook && (status == http.StatusUnauthorized || status == http.StatusForbidden):
		return "Slack refuses the incoming webhook; create a new one and set webhook_url to its URL"
	case webhook:
		return "the incoming webhook does not exist (any more); create a new one and set webhook_url to its URL"
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return "Slack refuses the bot token; check token (and api_url, if set)"
	default:
		return "the Web API was not found; check api_url (it must end in /api/), or remove it to use Slack's"
	}
}

// codeError classifies error code e.
func codeError(e *slackError, retryAfter string, now time.Time) error {
	class, reason, known := classifyCode(e.code)
	switch {
	case !known:
		// Slack refused this message for a reason not listed: permanent
		// for this event (STYLE.md §2.3), with the code as reason.
		return relay.Permanent(e, relay.ReasonClientError)
	case class == relay.ClassRateLimited:
		d, ok := relay.ParseRetryAfter(retryAfter, now)
		if !ok {
			d = defaultRateLimitWait
		}
		return relay.RetryAfter(e, d)
	case class == relay.ClassBroken:
		return relay.Broken(e, reason)
	case class == relay.ClassPermanent:
		return relay.Permanent(e, reason)
	}
	return relay.Retryable(e, reason)
}

// classify classifies an answer from Slack by its status, header and (at
// most 1 KiB of) its body, as read: nil for 2xx; 429, 408 and 5xx as
// relay's platform policy says (Retry-After honoured, fractions included);
// otherwise by Slack's error code in the body when it is a known one, else
// by the policy again. The sink's credentials are scrubbed from the body
// before it enters the error.
func (s *Sink) classify(status int, h http.Header, body string) error {
	now := s.deps.Clock.Now()
	if status >= 200 && status < 300 {
		return nil
	}
	body = s.scrub.Scrub(body)
	code := body
	if !s.webhook() {
		code = jsonErrorCode(body)
	}
	if status != http.StatusTooManyRequests && status != http.StatusRequestTimeout && status < 500 {
		if _, _, known := classifyCode(code); known {
			return codeError(&slackError{status: status, code: code, webhook: s.webhook()}, "", now)
		}
	}
	err := relay.PlatformPolicy().Classify(status, h, body, now)
	if class, _ := relay.Classify(err); class == relay.ClassBroken {
		return &hinted{err: err, hint: brokenHint(status, s.webhook())}
	}
	return err
}

// hinted adds what to fix to an error, keeping its class.
type hinted struct {
	err  error
	hint string
}

func (e *hinted) Error() string { return e.err.Error() + "; " + e.hint }
func (e *hinted) Unwrap() error { return e.err }

// jsonErrorCode reads "error" from a Web API body, or returns "".
func jsonErrorCode(body string) string {
	var r struct {
		Error string `json:"error"`
	}
	if json.Unmarshal([]byte(body), &r) != nil {
		return ""
	}
	return r.Error
}

// threadGone reports whether Slack refused a reply because the thread's
// first message is gone (deleted).
func threadGone(err error) bool {
	var se *slackError
	return errors.As(err, &se) && (se.code == "thread_not_found" || se.code == "invalid_thread_ts")
}
