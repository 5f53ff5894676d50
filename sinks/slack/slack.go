package slack

import (
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
	cfg    Config
	deps   relay.SinkDeps
	client *http.Client
	apiURL string // bot mode: the Web API's base URL, ending in "/"
	books  *relay.Books
	dest   string // the channel, or a hash of the webhook URL: where the books are kept
	render renderer
	scrub  *relay.Scrubber // the token, or the webhook URL and its parts: scrubbed from answers
	people *people         // bot mode: agents as users.info names them
}

var (
	_ relay.Poster = (*Sink)(nil)
	_ relay.Packer = (*Sink)(nil)
	_ relay.Prober = (*Sink)(nil)
	_ relay.Paced  = (*Sink)(nil)
	_ relay.TwoWay = (*Sink)(nil)
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
		cfg:    cfg,
		deps:   deps,
		dest:   destination(cfg),
		client: deps.Client(cfg.Timeout),
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
		secrets := []string{raw}
		if u, err := url.Parse(raw); err == nil {
			if len(u.Path) > 1 {
				secrets = append(secrets, u.Path)
			}
			// The last segment is the webhook's secret token
			// (/services/T…/B…/<secret>): an answer may echo it alone.
			// A short one ("/hook") is no secret, and scrubbing it would
			// garble error text.
			if seg := path.Base(u.Path); len(seg) >= minSecretSegment {
				secrets = append(secrets, seg)
			}
		}
		s.scrub = relay.NewScrubber(secrets...)
		relay.WarnPlainHTTP(deps.Logger, "webhook_url", raw)
		return s, nil
	}
	secrets := []string{cfg.Token.Reveal()}
	if cfg.Reply != nil {
		secrets = append(secrets, cfg.Reply.AppToken.Reveal(), cfg.Reply.SigningSecret.Reveal())
	}
	s.scrub = relay.NewScrubber(secrets...)
	relay.WarnPlainHTTP(deps.Logger, "api_url", cfg.APIURL)
	s.apiURL = cfg.APIURL
	if s.apiURL == "" {
		s.apiURL = slackapi.APIURL
	}
	if !strings.HasSuffix(s.apiURL, "/") {
		s.apiURL += "/" // the method name follows
	}
	s.people = newPeople(s)
	return s, nil
}

func (s *Sink) webhook() bool { return !s.cfg.WebhookURL.IsZero() }

// Name implements relay.Sink.
func (s *Sink) Name() string { return s.cfg.Name }

// Replies implements relay.TwoWay.
func (s *Sink) Replies() (relay.ReplyConfig, bool) { return s.cfg.Replies() }

// SendTimeout implements relay.Budgeted: a send may take maxRequests
// requests, each within the sink's timeout.
func (s *Sink) SendTimeout() time.Duration { return maxRequests * s.cfg.Timeout }

// Pace implements relay.Paced: about one message per second.
func (s *Sink) Pace() (every time.Duration, burst int) { return paceEvery, paceBurst }

// MaxPack implements relay.Packer.
func (s *Sink) MaxPack() int { return maxPack }

// Send implements relay.Sink: relay.Post, which the dispatcher calls.
func (s *Sink) Send(ctx context.Context, ev *relay.Event) error {
	_, err := relay.Post(ctx, s, ev)
	return err
}

// Turn implements relay.Poster: it renders ev; each message goes, in bot
// mode, into the thread it is given, or starts one at top level.
func (s *Sink) Turn(ctx context.Context, ev *relay.Event) (*relay.Turn, error) {
	if ev.Topic == relay.TopicFollowup {
		return s.followupTurn(ev)
	}
	msgs := s.withButtons(ev, s.render.render(ev))
	if err := relay.Rendered(ctx); err != nil {
		return nil, fmt.Errorf("slack sink %q: %w", s.cfg.Name, err)
	}
	return &relay.Turn{Books: s.books, Event: ev, Dest: s.dest, Parts: len(msgs), Threads: !s.webhook(),
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
			return placed(thread, ts, threaded, err)
		}}, nil
}

// placed is where a post given thread (none: top level) landed, as
// postAPI told it: a top-level message (when given a thread, Slack posted
// it at top level because the thread's first message was deleted) is the
// thread from now on; a thread Slack says is gone is relay.ThreadGone.
func placed(thread, ts string, threaded bool, err error) (relay.Placed, error) {
	switch {
	case err != nil && thread != "" && threadGone(err):
		return relay.Placed{}, relay.ThreadGone(err)
	case err != nil:
		return relay.Placed{}, err
	case thread == "" || !threaded:
		return relay.Placed{Thread: ts}, nil
	}
	return relay.Placed{Thread: thread}, nil
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
	ts, err := s.books.Thread(ctx, s.dest, relay.ConversationOf(ev))
	return err == nil && ts == ""
}

// SendPacked implements relay.Packer: one message with as many of the turns
// as fit whole, in order. In bot mode it becomes the thread of each
// conversation in it. When only one turn fits, it goes out as Send would
// post it. Once the message is posted the call succeeds: a thread mapping
// that cannot be recorded is logged, not retried, so that the message is
// not posted twice.
func (s *Sink) SendPacked(ctx context.Context, evs []*relay.Event) (int, relay.Report, error) {
	if len(evs) == 0 {
		return 0, relay.Report{}, nil
	}
	m, n := s.render.renderPacked(evs)
	if err := relay.Rendered(ctx); err != nil {
		return 0, relay.Report{}, fmt.Errorf("slack sink %q: %w", s.cfg.Name, err)
	}
	if n == 1 {
		// Not "1 new chat messages": the turn's own layout.
		rep, err := relay.Post(ctx, s, evs[0])
		if err != nil {
			return 0, rep, err
		}
		return 1, rep, nil
	}
	posted := relay.Report{Posts: 1}
	if s.webhook() {
		if err := s.postWebhook(ctx, m); err != nil {
			return 0, relay.Report{}, err
		}
		return n, posted, nil
	}
	ts, _, err := s.postAPI(ctx, m, "", false)
	if err != nil {
		return 0, relay.Report{}, err
	}
	for _, ev := range evs[:n] {
		if ev.ConversationID == "" {
			continue
		}
		if err := s.books.SetThread(ctx, s.dest, relay.ConversationOf(ev), ts); err != nil {
			s.deps.Logger.WarnContext(ctx, "packed message posted, but its thread could not be recorded",
				"event_id", ev.ID, "conversation_id", ev.ConversationID, "err", err)
		}
	}
	return n, posted, nil
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
	h, err := s.callHeader(ctx, "auth.test", url.Values{}, &authTestAnswer{})
	if err != nil {
		return err
	}
	if err := s.checkScopes(h.Get("X-OAuth-Scopes")); err != nil {
		return err
	}
	if s.cfg.SocketMode() {
		return s.probeAppToken(ctx)
	}
	return nil
}

// checkScopes checks the bot token's scopes, as Slack lists them in
// X-OAuth-Scopes, against what the sink needs: chat:write to post and,
// for a two-way sink, what replies need (ReplyScopes: reactions, names,
// and reading the channel's threads, public or private). An answer
// without the header (a proxy's) is not judged.
func (s *Sink) checkScopes(header string) error {
	if strings.TrimSpace(header) == "" {
		return nil
	}
	have := map[string]bool{}
	for sc := range strings.SplitSeq(header, ",") {
		have[strings.TrimSpace(sc)] = true
	}
	need := []string{"chat:write"}
	if s.twoWay() {
		need = append(need, "reactions:write", "users:read")
	}
	var missing []string
	for _, sc := range need {
		if !have[sc] {
			missing = append(missing, sc)
		}
	}
	if s.twoWay() {
		switch {
		case strings.HasPrefix(s.cfg.Channel, "G") && !have["groups:history"]:
			missing = append(missing, "groups:history")
		case !have["channels:history"] && !have["groups:history"]:
			missing = append(missing, "channels:history (public channel) or groups:history (private channel)")
		}
	}
	if len(missing) == 0 {
		return nil
	}
	why := "to post"
	if s.twoWay() {
		why = "for two-way live chat (post, react, name the agents, read the threads)"
	}
	return relay.Broken(fmt.Errorf("slack sink %q: the bot token lacks the scope(s) %s, needed %s; add them under OAuth & Permissions "+
		"and reinstall the app (chatrelay slack-manifest prints an app manifest with every scope)",
		s.cfg.Name, strings.Join(missing, ", "), why), relay.ReasonAuth)
}

// probeAppToken checks a Socket Mode sink's app-level token: Slack hands
// out a connection URL (apps.connections.open) that is then left unused.
func (s *Sink) probeAppToken(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.apiURL+"apps.connections.open", nil)
	if err != nil {
		return relay.Broken(fmt.Errorf("slack sink %q: apps.connections.open: %w", s.cfg.Name, relay.RedactURL(err)), relay.ReasonGone)
	}
	req.Header.Set("Authorization", "Bearer "+s.cfg.Reply.AppToken.Reveal())
	req.Header.Set("User-Agent", s.deps.UserAgent)
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("slack sink %q: apps.connections.open: %w", s.cfg.Name, relay.RedactURL(err))
	}
	defer relay.Drain(resp)
	var a slackapi.SlackResponse
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, maxAPIBody)).Decode(&a) != nil {
		return fmt.Errorf("slack sink %q: apps.connections.open: HTTP %d", s.cfg.Name, resp.StatusCode)
	}
	if !a.Ok {
		return relay.Broken(fmt.Errorf("slack sink %q: reply.app_token: Slack refuses it for Socket Mode (%s); generate an app-level token "+
			"with the scope connections:write under Basic Information → App-Level Tokens, and switch Socket Mode on",
			s.cfg.Name, s.scrub.Scrub(a.Error)), relay.ReasonAuth)
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
	status, h, answer, err := s.postToWebhook(ctx, []byte("{}"), "probe webhook")
	if err != nil {
		return err
	}
	if status == http.StatusBadRequest && slices.Contains(emptyMessageCodes, answer) {
		return nil
	}
	if err := s.classify(status, h, answer); err != nil {
		return fmt.Errorf("slack sink %q: probe webhook: %w", s.cfg.Name, err)
	}
	return nil // a 2xx: whatever answered takes messages
}
