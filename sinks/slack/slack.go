package slack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	slackapi "github.com/slack-go/slack"

	"github.com/chatrelay/chatrelay/relay"
)

// pace keeps under chat.postMessage's limit of about one message per
// second per channel, which incoming webhooks share
// (https://docs.slack.dev/apis/web-api/rate-limits). The 10% headroom
// absorbs network jitter: two sends spaced exactly 1s apart here can arrive
// less than 1s apart at Slack.
const (
	paceEvery = 1100 * time.Millisecond
	paceBurst = 1
)

// minSecretSegment is the shortest last path segment of a webhook URL that
// is scrubbed on its own; Slack's are 24 characters.
const minSecretSegment = 8

// Sink posts events to one Slack channel, through an incoming webhook or
// as a bot. It implements relay.Sink, relay.Packer, relay.Prober and
// relay.Paced.
type Sink struct {
	cfg     Config
	deps    relay.SinkDeps
	client  *http.Client
	api     *slackapi.Client // bot mode; nil with a webhook
	books   *relay.Books
	dest    string // the channel, or a hash of the webhook URL: part of state keys
	render  renderer
	secrets []string // what must never appear in an error: scrubbed from answers
}

var (
	_ relay.Packer = (*Sink)(nil)
	_ relay.Prober = (*Sink)(nil)
	_ relay.Paced  = (*Sink)(nil)
)

// New checks cfg and returns the sink. Its error joins one error per
// problem (errors.Join), each "key: problem; fix", never repeating a
// credential. It starts no goroutine.
func New(cfg Config, deps relay.SinkDeps) (*Sink, error) {
	deps = deps.WithDefaults()
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Sink{
		cfg:  cfg,
		deps: deps,
		dest: destination(cfg),
		client: &http.Client{
			Transport: deps.Transport,
			Timeout:   cfg.Timeout,
			// Posted to exactly as configured: a redirect is an answer.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		render: renderer{md: newMarkdown(), mention: cfg.Mention, tmpl: cfg.Template, logger: deps.Logger,
			memo: relay.NewRenderMemo[content](memoSize)},
	}
	kv := deps.KV
	if kv == nil {
		deps.Logger.Warn("no key/value store: conversation threads and multi-part progress will not survive a restart")
		kv = relay.NewMemKV()
	}
	s.books = relay.NewBooks(kv, cfg.Name, deps.Logger)
	if s.webhook() {
		raw := cfg.WebhookURL.Reveal()
		s.secrets = []string{raw}
		if u, err := url.Parse(raw); err == nil {
			if len(u.Path) > 1 {
				s.secrets = append(s.secrets, u.Path)
			}
			// The last segment is the webhook's secret token
			// (/services/T…/B…/<secret>): an answer may echo it alone.
			// A short one ("/hook") is no secret, and scrubbing it would
			// garble error text.
			if seg := path.Base(u.Path); len(seg) >= minSecretSegment {
				s.secrets = append(s.secrets, seg)
			}
		}
		relay.WarnPlainHTTP(deps.Logger, "webhook_url", raw)
		return s, nil
	}
	s.secrets = []string{cfg.Token.Reveal()}
	relay.WarnPlainHTTP(deps.Logger, "api_url", cfg.APIURL)
	apiURL := cfg.APIURL
	if apiURL == "" {
		apiURL = slackapi.APIURL
	}
	if !strings.HasSuffix(apiURL, "/") {
		apiURL += "/" // slack-go appends the method name
	}
	s.api = slackapi.New(cfg.Token.Reveal(), slackapi.OptionHTTPClient(apiDoer{s}), slackapi.OptionAPIURL(apiURL))
	return s, nil
}

func (s *Sink) webhook() bool { return !s.cfg.WebhookURL.IsZero() }

// Name implements relay.Sink.
func (s *Sink) Name() string { return s.cfg.Name }

// SendTimeout implements relay.Budgeted: a send may take maxRequests
// requests, each within the sink's timeout.
func (s *Sink) SendTimeout() time.Duration { return maxRequests * s.cfg.Timeout }

// Pace implements relay.Paced: about one message per second.
func (s *Sink) Pace() (every time.Duration, burst int) { return paceEvery, paceBurst }

// MaxPack implements relay.Packer.
func (s *Sink) MaxPack() int { return maxPack }

// Send implements relay.Sink: it renders ev and posts its messages in
// order, in bot mode into the conversation's thread (or starting it); the
// relay's books say where the thread is and what an earlier attempt
// posted already.
func (s *Sink) Send(ctx context.Context, ev *relay.Event) error {
	msgs := s.render.render(ev)
	if err := relay.Rendered(ctx); err != nil {
		return fmt.Errorf("slack sink %q: %w", s.cfg.Name, err)
	}
	posted, err := s.books.Deliver(ctx, s.turn(ev, msgs))
	s.hold(posted)
	return err
}

// turn is how msgs, ev's messages, are posted. In bot mode each message
// goes into the thread it is given, or starts one at top level.
func (s *Sink) turn(ev *relay.Event, msgs []message) relay.Turn {
	return relay.Turn{Event: ev, Dest: s.dest, Parts: len(msgs), Threads: !s.webhook(),
		Post: func(ctx context.Context, i int, thread string) (relay.Placed, error) {
			if s.webhook() {
				return relay.Placed{}, s.postWebhook(ctx, msgs[i])
			}
			// An escalation or a lead into a conversation's thread is
			// shown in the channel too, so that on-call and sales never
			// miss one (SPEC §6). Its first message only; the rest of a
			// long one stays in the thread.
			broadcast := (ev.Topic == relay.TopicEscalation || ev.Topic == relay.TopicLead) && thread != "" && i == 0
			ts, threaded, err := s.postAPI(ctx, msgs[i], thread, broadcast)
			switch {
			case err != nil && thread != "" && threadGone(err):
				return relay.Placed{}, relay.ThreadGone(err)
			case err != nil:
				return relay.Placed{}, err
			case thread == "" || !threaded:
				// A new top-level message (when given a thread, Slack
				// posted it at top level because the thread's first
				// message was deleted): the thread from now on.
				return relay.Placed{Thread: ts}, nil
			}
			return relay.Placed{Thread: thread}, nil
		}}
}

// hold tells the dispatcher to wait after a send that posted several
// messages, so that the channel's pace holds on average.
func (s *Sink) hold(posted int) {
	if posted > 1 {
		s.deps.Throttle.HoldUntil(s.deps.Clock.Now().Add(time.Duration(posted-1) * paceEvery))
	}
}

// CanPack implements relay.Packer: short chat turns can share a message;
// in bot mode only those whose conversation has no thread yet.
func (s *Sink) CanPack(ctx context.Context, ev *relay.Event) bool {
	if !s.render.packable(ev) {
		return false
	}
	if s.webhook() || ev.ConversationID == "" {
		return true
	}
	ts, err := s.books.Thread(ctx, s.dest, ev.ConversationID)
	return err == nil && ts == ""
}

// SendPacked implements relay.Packer: one message with as many of the turns
// as fit whole, in order. In bot mode it becomes the thread of each
// conversation in it. When only one turn fits, it goes out as Send would
// post it. Once the message is posted the call succeeds: a thread mapping
// that cannot be recorded is logged, not retried, so that the message is
// not posted twice.
func (s *Sink) SendPacked(ctx context.Context, evs []*relay.Event) (int, error) {
	if len(evs) == 0 {
		return 0, nil
	}
	m, n := s.render.renderPacked(evs)
	if err := relay.Rendered(ctx); err != nil {
		return 0, fmt.Errorf("slack sink %q: %w", s.cfg.Name, err)
	}
	if n == 1 {
		// Not "1 new chat messages": the turn's own layout.
		if err := s.Send(ctx, evs[0]); err != nil {
			return 0, err
		}
		return 1, nil
	}
	if s.webhook() {
		if err := s.postWebhook(ctx, m); err != nil {
			return 0, err
		}
		return n, nil
	}
	ts, _, err := s.postAPI(ctx, m, "", false)
	if err != nil {
		return 0, err
	}
	for _, ev := range evs[:n] {
		if ev.ConversationID == "" {
			continue
		}
		if err := s.books.SetThread(ctx, s.dest, ev.ConversationID, ts); err != nil {
			s.deps.Logger.WarnContext(ctx, "packed message posted, but its thread could not be recorded",
				"event_id", ev.ID, "conversation_id", ev.ConversationID, "err", err)
		}
	}
	return n, nil
}

// Probe implements relay.Prober: auth.test in bot mode. An incoming webhook
// (".../services/...") gets an empty message, which Slack refuses (400
// no_text) without posting anything when the webhook works, and answers like
// any send when it is revoked, removed or its channel archived.
func (s *Sink) Probe(ctx context.Context) error {
	if s.webhook() {
		if err := relay.CheckURL(s.cfg.WebhookURL.Reveal()); err != nil {
			return relay.Broken(fmt.Errorf("slack sink %q: webhook_url: %w", s.cfg.Name, err), relay.ReasonGone)
		}
		return s.probeWebhook(ctx)
	}
	var header http.Header
	_, err := s.api.AuthTestContext(context.WithValue(ctx, headerKey{}, &header))
	if err != nil {
		return fmt.Errorf("slack sink %q: auth.test: %w", s.cfg.Name, s.apiError(err, header))
	}
	return nil
}

// emptyMessageCodes are Slack's answers to an empty message: the webhook
// exists and would take a real one.
var emptyMessageCodes = []string{"no_text", "missing_text_or_fallback_or_attachments", "invalid_payload"}

func (s *Sink) probeWebhook(ctx context.Context) error {
	if u, err := url.Parse(s.cfg.WebhookURL.Reveal()); err != nil || !strings.HasPrefix(u.Path, "/services/") {
		// Not an incoming webhook's URL (a workflow trigger, a
		// Slack-compatible service): an empty message might start
		// something there, so only the URL's form was checked.
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.WebhookURL.Reveal(), strings.NewReader("{}"))
	if err != nil {
		return relay.Broken(fmt.Errorf("slack sink %q: webhook request: %w", s.cfg.Name, relay.RedactURL(err)), relay.ReasonGone)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", s.deps.UserAgent)
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("slack sink %q: probe webhook: %w", s.cfg.Name, relay.RedactURL(err))
	}
	defer relay.Drain(resp)
	body := relay.ReadErrorBody(resp.Body)
	if resp.StatusCode == http.StatusBadRequest && slices.Contains(emptyMessageCodes, body) {
		return nil
	}
	resp.Body = io.NopCloser(strings.NewReader(body))
	if err := s.checkResponse(resp); err != nil {
		return fmt.Errorf("slack sink %q: probe webhook: %w", s.cfg.Name, err)
	}
	return nil // a 2xx: whatever answered takes messages
}

// postWebhook posts m to the incoming webhook with the sink's own client:
// slack-go's helper drops the error body that tells no_service from
// invalid_payload.
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
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.WebhookURL.Reveal(), bytes.NewReader(body))
	if err != nil {
		return relay.Broken(fmt.Errorf("slack sink %q: webhook request: %w", s.cfg.Name, relay.RedactURL(err)), relay.ReasonGone)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", s.deps.UserAgent)
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("slack sink %q: post webhook: %w", s.cfg.Name, relay.RedactURL(err))
	}
	defer relay.Drain(resp)
	if err := s.checkResponse(resp); err != nil {
		return fmt.Errorf("slack sink %q: webhook: %w", s.cfg.Name, err)
	}
	return nil
}

// postAPI posts m with chat.postMessage, into thread parent if set (and
// then, with broadcast, shown in the channel as well). It returns the
// message's ts and whether Slack put it in the thread.
func (s *Sink) postAPI(ctx context.Context, m message, parent string, broadcast bool) (ts string, threaded bool, err error) {
	opts := []slackapi.MsgOption{
		slackapi.MsgOptionText(m.text, false), // escaped already
		slackapi.MsgOptionBlocks(m.blocks...),
		slackapi.MsgOptionParse(false),     // parse=none: no @name or #channel typed as text becomes a mention
		slackapi.MsgOptionLinkNames(false), // link_names=false
		slackapi.MsgOptionDisableLinkUnfurl(),
		slackapi.MsgOptionDisableMediaUnfurl(),
	}
	if parent != "" {
		opts = append(opts, slackapi.MsgOptionTS(parent))
		if broadcast {
			opts = append(opts, slackapi.MsgOptionBroadcast()) // reply_broadcast=true
		}
	}
	var header http.Header
	_, ts, msg, err := s.api.PostMessageWithResponseContext(context.WithValue(ctx, headerKey{}, &header), s.cfg.Channel, opts...)
	if err != nil {
		return "", false, fmt.Errorf("slack sink %q: chat.postMessage: %w", s.cfg.Name, s.apiError(err, header))
	}
	return ts, msg.ThreadTimestamp != "", nil
}

// headerKey carries, in a request's context, where apiDoer stores the
// answer's headers (for the Retry-After of an "ok":false answer).
type headerKey struct{}

// apiDoer is the HTTP client slack-go uses: the sink's client, with its
// User-Agent, every body drained, and every answer but 200 classified here
// (slack-go drops the body and reads only integer Retry-After values). It
// returns a response, or an error; never neither.
type apiDoer struct{ s *Sink }

// maxAPIBody bounds what slack-go may read of an answer.
const maxAPIBody = 1 << 20

func (d apiDoer) Do(req *http.Request) (*http.Response, error) {
	req.Header.Set("User-Agent", d.s.deps.UserAgent)
	resp, err := d.s.client.Do(req)
	if err != nil {
		return nil, relay.RedactURL(err)
	}
	if h, ok := req.Context().Value(headerKey{}).(*http.Header); ok {
		*h = resp.Header
	}
	if resp.StatusCode != http.StatusOK {
		defer relay.Drain(resp)
		if err := d.s.checkResponse(resp); err != nil {
			return nil, err
		}
		// Another 2xx: the Web API answers 200 or an error, so this is
		// not Slack's answer (a proxy's, say) and says nothing of the
		// message. Never (nil, nil): slack-go would dereference the
		// missing response.
		return nil, relay.Retryable(fmt.Errorf("unexpected HTTP %d from the Web API (it answers 200)", resp.StatusCode), relay.ReasonOther)
	}
	resp.Body = &drainingBody{r: io.LimitReader(resp.Body, maxAPIBody), c: resp.Body}
	return resp, nil
}

// drainingBody reads what is left on Close, so that the connection can be
// reused whatever the decoder read.
type drainingBody struct {
	r io.Reader
	c io.ReadCloser
}

func (b *drainingBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *drainingBody) Close() error {
	_, _ = io.Copy(io.Discard, io.LimitReader(b.c, 64<<10))
	return b.c.Close()
}

// scrub removes the sink's credentials from text taken from an answer: the
// token, or the webhook URL, its path and its secret last segment. The
// longest go first, so that a shorter one inside them leaves no piece.
func (s *Sink) scrub(text string) string {
	for _, secret := range s.secrets {
		if secret != "" {
			text = strings.ReplaceAll(text, secret, "[redacted]")
		}
	}
	return text
}
