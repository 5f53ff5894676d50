package slack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	slackapi "github.com/slack-go/slack"

	"github.com/chatrelay/chatrelay/relay"
)

// Slack is called with the sink's own HTTP client and slack-go's types:
// one place reads every answer (call, postWebhook) and classifies it once
// (classify, codeError), and the bodies are always drained.

// postWebhook posts m to the incoming webhook.
func (s *Sink) postWebhook(ctx context.Context, m message) error {
	no := false
	body, err := json.Marshal(slackapi.WebhookMessage{
		Text:        m.text,
		Blocks:      &slackapi.Blocks{BlockSet: m.blocks},
		Parse:       "none", // no @name or #channel typed as text becomes a link or a mention
		UnfurlLinks: &no,
		UnfurlMedia: &no,
	})
	if err != nil {
		return relay.Permanent(fmt.Errorf("slack sink %q: encode message: %w", s.cfg.Name, err), relay.ReasonOther)
	}
	status, h, answer, err := s.postToWebhook(ctx, body, "post webhook")
	if err != nil {
		return err
	}
	if err := s.classify(status, h, answer); err != nil {
		return fmt.Errorf("slack sink %q: webhook: %w", s.cfg.Name, err)
	}
	return nil
}

// postToWebhook POSTs body to the incoming webhook (op names it in an
// error) and returns the answer's status, header and, unless it is a 2xx,
// at most 1 KiB of its body.
func (s *Sink) postToWebhook(ctx context.Context, body []byte, op string) (status int, h http.Header, answer string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.WebhookURL.Reveal(), bytes.NewReader(body))
	if err != nil {
		return 0, nil, "", relay.Broken(fmt.Errorf("slack sink %q: webhook request: %w", s.cfg.Name, relay.RedactURL(err)), relay.ReasonGone)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", s.deps.UserAgent)
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, "", fmt.Errorf("slack sink %q: %s: %w", s.cfg.Name, op, relay.RedactURL(err))
	}
	defer relay.Drain(resp)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		answer = relay.ReadErrorBody(resp.Body)
	}
	return resp.StatusCode, resp.Header, answer, nil
}

// postAPI posts m with chat.postMessage, into thread parent if set (and
// then, with broadcast, shown in the channel as well). It returns the
// message's ts and whether Slack put it in the thread.
func (s *Sink) postAPI(ctx context.Context, m message, parent string, broadcast bool) (ts string, threaded bool, err error) {
	blocks, err := json.Marshal(m.blocks)
	if err != nil {
		return "", false, relay.Permanent(fmt.Errorf("slack sink %q: encode message: %w", s.cfg.Name, err), relay.ReasonOther)
	}
	form := url.Values{
		"channel":      {s.cfg.Channel},
		"text":         {m.text}, // escaped already
		"blocks":       {string(blocks)},
		"parse":        {"none"},  // no @name or #channel typed as text becomes a mention
		"link_names":   {"false"}, // nor a name
		"unfurl_links": {"false"},
		"unfurl_media": {"false"},
	}
	if parent != "" {
		form.Set("thread_ts", parent)
		if broadcast {
			form.Set("reply_broadcast", "true")
		}
	}
	var a postMessageAnswer
	if err := s.call(ctx, "chat.postMessage", form, &a); err != nil {
		return "", false, err
	}
	return a.TS, a.Message.ThreadTimestamp != "", nil
}

// maxAPIBody bounds what is read of a Web API answer.
const maxAPIBody = 1 << 20

// answer is a Web API answer: every one carries slack-go's SlackResponse.
type answer interface {
	response() *slackapi.SlackResponse
}

// postMessageAnswer is chat.postMessage's answer.
type postMessageAnswer struct {
	slackapi.SlackResponse
	TS      string           `json:"ts"`
	Message slackapi.Message `json:"message"`
}

func (a *postMessageAnswer) response() *slackapi.SlackResponse { return &a.SlackResponse }

// authTestAnswer is auth.test's answer.
type authTestAnswer struct {
	slackapi.SlackResponse
	slackapi.AuthTestResponse
}

func (a *authTestAnswer) response() *slackapi.SlackResponse { return &a.SlackResponse }

// call calls Web API method with form, as the bot, and decodes its answer
// into out. An answer other than 200 is classified by its status (and the
// error code in its body); a 200 with "ok":false by its error code.
func (s *Sink) call(ctx context.Context, method string, form url.Values, out answer) error {
	_, err := s.callHeader(ctx, method, form, out)
	return err
}

// callHeader is call that also returns the answer's header (auth.test's
// X-OAuth-Scopes).
func (s *Sink) callHeader(ctx context.Context, method string, form url.Values, out answer) (http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.apiURL+method, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, relay.Broken(fmt.Errorf("slack sink %q: %s: %w", s.cfg.Name, method, relay.RedactURL(err)), relay.ReasonGone)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+s.cfg.Token.Reveal())
	req.Header.Set("User-Agent", s.deps.UserAgent)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("slack sink %q: %s: %w", s.cfg.Name, method, relay.RedactURL(err))
	}
	defer relay.Drain(resp)
	if resp.StatusCode != http.StatusOK {
		if err := s.classify(resp.StatusCode, resp.Header, relay.ReadErrorBody(resp.Body)); err != nil {
			return resp.Header, fmt.Errorf("slack sink %q: %s: %w", s.cfg.Name, method, err)
		}
		// Another 2xx: the Web API answers 200 or an error, so this is
		// not Slack's answer (a proxy's, say) and says nothing of the
		// message.
		return resp.Header, relay.Retryable(fmt.Errorf("slack sink %q: %s: unexpected HTTP %d from the Web API (it answers 200)",
			s.cfg.Name, method, resp.StatusCode), relay.ReasonOther)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAPIBody)).Decode(out); err != nil {
		return resp.Header, relay.Retryable(fmt.Errorf("slack sink %q: %s: unreadable answer: %w", s.cfg.Name, method, err), relay.ReasonOther)
	}
	if r := out.response(); !r.Ok {
		e := &slackError{status: http.StatusOK, code: r.Error, needed: r.Needed}
		return resp.Header, fmt.Errorf("slack sink %q: %s: %w", s.cfg.Name, method, codeError(e, resp.Header.Get("Retry-After"), s.deps.Clock.Now()))
	}
	return resp.Header, nil
}

// plainAnswer is the answer of a method whose result chatrelay does not
// read (reactions.add, chat.update).
type plainAnswer struct{ slackapi.SlackResponse }

func (a *plainAnswer) response() *slackapi.SlackResponse { return &a.SlackResponse }
