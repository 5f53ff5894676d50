package discord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
)

// DefaultAPIURL is the base of Discord's REST API that bot mode uses unless
// Config.APIURL says otherwise.
const DefaultAPIURL = "https://discord.com/api/v10"

// defaultTimeout bounds one HTTP request when Config.Timeout is zero.
const defaultTimeout = 10 * time.Second

// Config is one Discord sink's configuration. Exactly one mode is set:
// WebhookURL (channel webhook), or Token and ChannelID (bot).
type Config struct {
	// Name is the configured sink name: the metric label and log key.
	Name string

	// WebhookURL is a channel webhook URL, …/api/webhooks/{id}/{token}. It
	// is posted to exactly as configured, host included, with ?wait=true so
	// that Discord answers with the message (or an error) instead of 204.
	WebhookURL relay.Secret

	// Token is a bot token (with or without the "Bot " prefix), and
	// ChannelID the id of the text, announcement or forum channel the bot
	// posts to. In bot mode every conversation gets a thread.
	Token     relay.Secret
	ChannelID string
	// APIURL replaces DefaultAPIURL in bot mode (a proxy, or a test
	// server). A URL without a path gets /api/v10 appended.
	APIURL string

	// ThreadName names the thread each conversation gets. In webhook mode
	// setting it turns on forum mode: the webhook's channel must then be a
	// forum or media channel, where every conversation becomes a post. In
	// bot mode threads are always made and ThreadName is their prefix
	// (default "Chat"). The user's question follows it.
	ThreadName string

	// Mention is sent with live-chat-escalation events only, in Discord's
	// raw syntax: "<@&roleID>" for a role, "<@userID>" for a user. It is the
	// only mention chatrelay ever lets ping: its id alone is listed in
	// allowed_mentions.
	Mention string

	// Template, if set (from relay.ParseTemplate), renders the text of the
	// message (the embed's description) instead of the question and answer.
	Template *template.Template

	// Timeout bounds one HTTP request (default 10s). The dispatcher's
	// per-send deadline applies as well.
	Timeout time.Duration
}

// Sink posts events to one Discord channel, through a channel webhook or as
// a bot. It implements relay.Sink, relay.Packer, relay.Prober and
// relay.Paced, and is safe for concurrent use.
type Sink struct {
	cfg      Config
	log      *slog.Logger
	clock    clockwork.Clock
	kv       relay.KV
	throttle relay.Throttle
	client   *http.Client
	ua       string

	// Webhook mode.
	webhook   *url.URL
	webhookID string
	// Bot mode.
	api   *url.URL
	token string

	mention mention
	secrets []string // removed from every text that enters an error or a log line

	mu       sync.Mutex
	chanType *discordgo.ChannelType // bot mode: the channel's type, once known

	// memo keeps the turns CanPack rendered, for the send that follows.
	memo *relay.RenderMemo[turn]
}

var (
	_ relay.Sink   = (*Sink)(nil)
	_ relay.Packer = (*Sink)(nil)
	_ relay.Prober = (*Sink)(nil)
	_ relay.Paced  = (*Sink)(nil)
)

// webhookPath matches the path of a channel webhook URL:
// …/api[/v10]/webhooks/{id}/{token}.
var webhookPath = regexp.MustCompile(`^(?:/.*)?/api(?:/v[0-9]+)?/webhooks/([0-9]{1,20})/([A-Za-z0-9._-]{1,200})/?$`)

// snowflake matches a Discord id.
var snowflake = regexp.MustCompile(`^[0-9]{1,20}$`)

// New checks cfg and returns the sink. It does no I/O and starts no
// goroutine. Its errors name the config key and never echo a secret.
func New(cfg Config, deps relay.SinkDeps) (*Sink, error) {
	deps = deps.WithDefaults()
	s := &Sink{
		cfg:      cfg,
		log:      deps.Logger,
		clock:    deps.Clock,
		kv:       deps.KV,
		throttle: deps.Throttle,
		ua:       userAgent(deps.UserAgent),
		memo:     relay.NewRenderMemo[turn](memoSize),
	}
	if s.kv == nil {
		// Thread mappings and progress then last as long as the process.
		s.kv = relay.NewMemKV()
	}
	var errs []error
	hasWebhook, hasBot := !cfg.WebhookURL.IsZero(), !cfg.Token.IsZero() || cfg.ChannelID != ""
	switch {
	case hasWebhook && hasBot:
		errs = append(errs, errors.New("webhook_url: set together with token/channel_id; set either webhook_url (channel webhook) or token + channel_id (bot), not both"))
	case hasWebhook:
		errs = append(errs, s.webhookMode(cfg)...)
	case hasBot:
		errs = append(errs, s.botMode(cfg)...)
	default:
		errs = append(errs, errors.New("webhook_url: missing, and no token + channel_id either; set webhook_url (channel settings → Integrations → Webhooks → Copy Webhook URL), or token + channel_id for bot mode"))
	}
	if cfg.ThreadName != "" {
		if strings.TrimSpace(cfg.ThreadName) == "" || len16(cfg.ThreadName) > maxThreadName/2 {
			errs = append(errs, fmt.Errorf("thread_name: must be 1 to %d characters", maxThreadName/2))
		}
		if strings.Contains(cfg.ThreadName, "{{") {
			errs = append(errs, errors.New(`thread_name: plain text, not a template ("{{" would show as written); `+
				`write a word like Support: each thread is titled "Support · <the user's question>"`))
		}
	}
	m, err := parseMention(cfg.Mention)
	if err != nil {
		errs = append(errs, err)
	}
	s.mention = m
	if cfg.Timeout < 0 {
		errs = append(errs, errors.New("timeout: must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = defaultTimeout
	}
	s.client = &http.Client{
		Transport: deps.Transport,
		Timeout:   timeout,
		// A destination is posted to exactly as configured; a redirect is
		// an answer, never followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return s, nil
}

func (s *Sink) webhookMode(cfg Config) []error {
	var errs []error
	u, err := url.Parse(cfg.WebhookURL.Reveal())
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, errors.New("webhook_url: not an http or https URL; set it to the URL Discord shows under channel settings → Integrations → Webhooks → Copy Webhook URL"))
	} else if m := webhookPath.FindStringSubmatch(u.EscapedPath()); m == nil {
		errs = append(errs, errors.New("webhook_url: not a Discord webhook URL (want …/api/webhooks/{id}/{token}); copy it from channel settings → Integrations → Webhooks"))
	} else {
		u.Fragment, u.RawFragment = "", ""
		s.webhook, s.webhookID = u, m[1]
		s.secrets = append(s.secrets, cfg.WebhookURL.Reveal(), m[2])
	}
	if cfg.APIURL != "" {
		errs = append(errs, errors.New("api_url: applies to bot mode only; the webhook URL already says where to post"))
	}
	return errs
}

func (s *Sink) botMode(cfg Config) []error {
	var errs []error
	tok := strings.TrimSpace(cfg.Token.Reveal())
	tok = strings.TrimSpace(strings.TrimPrefix(tok, "Bot "))
	switch {
	case tok == "":
		errs = append(errs, errors.New("token: missing; set it to the bot's token (Developer Portal → your application → Bot → Reset Token)"))
	case strings.ContainsAny(tok, " \t\r\n"):
		errs = append(errs, errors.New("token: contains white space; paste the bot token alone"))
	default:
		s.token = tok
		s.secrets = append(s.secrets, tok)
	}
	if !snowflake.MatchString(cfg.ChannelID) {
		errs = append(errs, errors.New("channel_id: must be the channel's numeric id (turn on Developer Mode, then right-click the channel → Copy Channel ID)"))
	}
	base := DefaultAPIURL
	if cfg.APIURL != "" {
		base = cfg.APIURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		errs = append(errs, errors.New("api_url: not an http or https base URL such as https://discord.com/api/v10"))
	} else {
		if u.Path == "" || u.Path == "/" {
			u = u.JoinPath("api", "v10")
		}
		s.api = u
	}
	return errs
}

// userAgent is what Discord asks for, "DiscordBot ($url, $version)",
// followed by chatrelay's own.
func userAgent(own string) string {
	version := "dev"
	if _, v, ok := strings.Cut(own, "/"); ok && v != "" {
		version = v
	}
	return fmt.Sprintf("DiscordBot (https://github.com/chatrelay/chatrelay, %s) %s", version, own)
}

// Name implements relay.Sink.
func (s *Sink) Name() string { return s.cfg.Name }

// botMode reports whether the sink posts as a bot.
func (s *Sink) bot() bool { return s.api != nil }

// The pace the sink declares: one request every paceEvery, so at most 5 in
// any 2 s. Discord publishes no webhook limit; about 5 requests per 2 s per
// webhook has been reported, not confirmed (PROTOCOLS.md §2.3), and this
// keeps under that figure. It is a first guess only: the X-RateLimit-*
// headers of every answer (observe) and 429s are what really hold the sink.
const (
	paceEvery = 400 * time.Millisecond
	paceBurst = 1
)

// Pace implements relay.Paced (see paceEvery).
func (s *Sink) Pace() (every time.Duration, burst int) { return paceEvery, paceBurst }

// MaxPack implements relay.Packer: one embed per event, at most 10 embeds
// per message (all within 6000 characters).
func (s *Sink) MaxPack() int { return maxEmbeds }

// Probe implements relay.Prober: it reads the webhook (webhook mode) or the
// channel (bot mode), which checks the credentials without posting.
func (s *Sink) Probe(ctx context.Context) error {
	if !s.bot() {
		probe := *s.webhook
		probe.RawQuery = ""
		var wh discordgo.Webhook
		return s.do(ctx, call{op: "get webhook", method: http.MethodGet, url: &probe}, &wh)
	}
	_, err := s.channelType(ctx)
	return err
}

// channelType returns the type of the bot's channel, asking Discord once.
func (s *Sink) channelType(ctx context.Context) (discordgo.ChannelType, error) {
	s.mu.Lock()
	known := s.chanType
	s.mu.Unlock()
	if known != nil {
		return *known, nil
	}
	var ch discordgo.Channel
	if err := s.do(ctx, call{op: "get channel", method: http.MethodGet, url: s.route("channels", s.cfg.ChannelID)}, &ch); err != nil {
		return 0, err
	}
	switch ch.Type {
	case discordgo.ChannelTypeGuildText, discordgo.ChannelTypeGuildNews,
		discordgo.ChannelTypeGuildForum, discordgo.ChannelTypeGuildMedia:
	default:
		return 0, relay.Broken(fmt.Errorf("discord sink %q: channel_id names a channel of type %d, where the bot cannot post chat turns; choose a text, announcement or forum channel", s.cfg.Name, ch.Type), relay.ReasonClientError)
	}
	s.mu.Lock()
	s.chanType = &ch.Type
	s.mu.Unlock()
	return ch.Type, nil
}

// route is the bot-mode URL of an API route.
func (s *Sink) route(elem ...string) *url.URL { return s.api.JoinPath(elem...) }

// mention is the parsed Config.Mention.
type mention struct {
	raw  string
	role string // role id, or
	user string // user id
}

var (
	roleMention = regexp.MustCompile(`^<@&([0-9]{1,20})>$`)
	userMention = regexp.MustCompile(`^<@!?([0-9]{1,20})>$`)
)

func parseMention(raw string) (mention, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return mention{}, nil
	}
	if m := roleMention.FindStringSubmatch(raw); m != nil {
		return mention{raw: raw, role: m[1]}, nil
	}
	if m := userMention.FindStringSubmatch(raw); m != nil {
		return mention{raw: raw, user: m[1]}, nil
	}
	return mention{}, fmt.Errorf("mention: %q is not a role or user mention; write <@&ROLE_ID> for a role or <@USER_ID> for a user (@everyone and @here are not allowed)", raw)
}

// allowedMentions is sent with every message: nothing in the text is parsed
// for mentions, and only the configured mention may ping, on an escalation.
func (s *Sink) allowedMentions(withMention bool) *discordgo.MessageAllowedMentions {
	am := &discordgo.MessageAllowedMentions{Parse: []discordgo.AllowedMentionType{}}
	if withMention {
		if s.mention.role != "" {
			am.Roles = []string{s.mention.role}
		}
		if s.mention.user != "" {
			am.Users = []string{s.mention.user}
		}
	}
	return am
}
