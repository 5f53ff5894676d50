package discord

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
)

// Sink posts events to one Discord channel, through a channel webhook or as
// a bot. It implements relay.Sink, relay.Packer, relay.Prober and
// relay.Paced, and is safe for concurrent use.
type Sink struct {
	cfg    Config
	log    *slog.Logger
	clock  clockwork.Clock
	books  *relay.Books
	kv     relay.KV // the books' store: also the catch-up's (catchup.go)
	client *http.Client
	ua     string

	// Webhook mode.
	webhook   *url.URL
	webhookID string
	// Bot mode.
	api   *url.URL
	token string

	mention mention
	scrub   *relay.Scrubber // the token, or the webhook URL and its token: removed from every text that enters an error or a log line

	mu       sync.Mutex
	chanType *discordgo.ChannelType // bot mode: the channel's type, once known

	// memo keeps the turns CanPack rendered, for the send that follows.
	memo *relay.RenderMemo[turn]
}

var (
	_ relay.Poster = (*Sink)(nil)
	_ relay.Packer = (*Sink)(nil)
	_ relay.Prober = (*Sink)(nil)
	_ relay.Paced  = (*Sink)(nil)
	_ relay.TwoWay = (*Sink)(nil)
)

// New checks cfg and returns the sink. It does no I/O and starts no
// goroutine. Its errors name the config key and never echo a secret.
func New(cfg Config, deps relay.SinkDeps) (*Sink, error) {
	deps = deps.WithDefaults()
	cfg = cfg.withDefaults()
	ep, err := cfg.parse()
	if err != nil {
		return nil, err
	}
	s := &Sink{
		cfg:       cfg,
		log:       deps.Logger,
		clock:     deps.Clock,
		ua:        userAgent(deps.UserAgent),
		memo:      relay.NewRenderMemo[turn](memoSize),
		webhook:   ep.webhook,
		webhookID: ep.webhookID,
		api:       ep.api,
		token:     ep.token,
		mention:   ep.mention,
		scrub:     relay.NewScrubber(ep.secrets...),
		client:    deps.Client(cfg.Timeout),
	}
	kv := deps.KV
	if kv == nil {
		// Thread mappings and progress then last as long as the process.
		kv = relay.NewMemKV()
	}
	s.kv, s.books = kv, relay.NewBooks(kv, cfg.Name, deps.Logger)
	if s.bot() {
		relay.WarnPlainHTTP(deps.Logger, "api_url", cfg.APIURL)
	} else {
		relay.WarnPlainHTTP(deps.Logger, "webhook_url", cfg.WebhookURL.Reveal())
	}
	return s, nil
}

// SendTimeout implements relay.Budgeted: a send may take maxRequests
// requests, each within the sink's timeout.
func (s *Sink) SendTimeout() time.Duration { return maxRequests * s.cfg.Timeout }

// userAgent is what Discord asks for, "DiscordBot ($url, $version)",
// followed by chatrelay's own.
func userAgent(own string) string {
	version := "dev"
	if _, v, ok := strings.Cut(own, "/"); ok && v != "" {
		version = v
	}
	return fmt.Sprintf("DiscordBot (https://github.com/chatrelay/chatrelay, %s) %s", version, own)
}

// Replies implements relay.TwoWay.
func (s *Sink) Replies() (relay.ReplyConfig, bool) { return s.cfg.Replies() }

// twoWay reports whether the sink takes replies (bot mode with reply:).
func (s *Sink) twoWay() bool { return s.bot() && s.cfg.Reply != nil }

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

// Probe implements relay.Prober: it reads the webhook (webhook mode), or
// (bot mode) the channel, and checks the bot's permissions there and,
// for a two-way sink, the Message Content intent (probeBot); it posts
// nothing.
func (s *Sink) Probe(ctx context.Context) error {
	if !s.bot() {
		probe := *s.webhook
		probe.RawQuery = ""
		var wh discordgo.Webhook
		return s.do(ctx, nil, call{op: "get webhook", method: http.MethodGet, url: &probe}, &wh)
	}
	return s.probeBot(ctx, s.twoWay())
}

// channelType returns the type of the bot's channel, asking Discord once.
func (s *Sink) channelType(ctx context.Context, rep *relay.Report) (discordgo.ChannelType, error) {
	s.mu.Lock()
	known := s.chanType
	s.mu.Unlock()
	if known != nil {
		return *known, nil
	}
	ch, err := s.readChannel(ctx, rep)
	if err != nil {
		return 0, err
	}
	return ch.Type, nil
}

// readChannel reads the bot's channel, checks that the bot can post chat
// turns there, and keeps its type.
func (s *Sink) readChannel(ctx context.Context, rep *relay.Report) (*discordgo.Channel, error) {
	var ch discordgo.Channel
	if err := s.do(ctx, rep, call{op: "get channel", method: http.MethodGet, url: s.route("channels", s.cfg.ChannelID)}, &ch); err != nil {
		return nil, err
	}
	switch ch.Type {
	case discordgo.ChannelTypeGuildText, discordgo.ChannelTypeGuildNews,
		discordgo.ChannelTypeGuildForum, discordgo.ChannelTypeGuildMedia:
	default:
		return nil, relay.Broken(fmt.Errorf("discord sink %q: channel_id names a channel of type %d, where the bot cannot post chat turns; choose a text, announcement or forum channel", s.cfg.Name, ch.Type), relay.ReasonClientError)
	}
	s.mu.Lock()
	s.chanType = &ch.Type
	s.mu.Unlock()
	return &ch, nil
}

// route is the bot-mode URL of an API route.
func (s *Sink) route(elem ...string) *url.URL { return s.api.JoinPath(elem...) }

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
