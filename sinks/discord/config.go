package discord

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"text/template"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

// DefaultAPIURL is the base of Discord's REST API that bot mode uses unless
// Config.APIURL says otherwise.
const DefaultAPIURL = "https://discord.com/api/v10"

// Config is one Discord sink's configuration: the keys of a "type: discord"
// entry under sinks, decoded as they are written. Exactly one mode is set:
// WebhookURL (channel webhook), or Token and ChannelID (bot).
type Config struct {
	// Name is the configured sink name (the common key "name"): the metric
	// label and log key.
	Name string `mapstructure:"-"`

	// WebhookURL is a channel webhook URL, …/api/webhooks/{id}/{token}. It
	// is posted to exactly as configured, host included, with ?wait=true so
	// that Discord answers with the message (or an error) instead of 204.
	WebhookURL relay.Secret `mapstructure:"webhook_url"`

	// Token is a bot token (with or without the "Bot " prefix), and
	// ChannelID the id of the text, announcement or forum channel the bot
	// posts to. In bot mode every conversation gets a thread.
	Token     relay.Secret `mapstructure:"token"`
	ChannelID string       `mapstructure:"channel_id"`
	// APIURL replaces DefaultAPIURL in bot mode (a proxy, or a test
	// server). A URL without a path gets /api/v10 appended.
	APIURL string `mapstructure:"api_url"`

	// ThreadName names the thread each conversation gets. In webhook mode
	// setting it turns on forum mode: the webhook's channel must then be a
	// forum or media channel, where every conversation becomes a post. In
	// bot mode threads are always made and ThreadName is their prefix
	// (default "Chat"). The user's question follows it.
	ThreadName string `mapstructure:"thread_name"`

	// Mention is sent with live-chat-escalation events only, in Discord's
	// raw syntax: "<@&roleID>" for a role, "<@userID>" for a user. It is the
	// only mention chatrelay ever lets ping: its id alone is listed in
	// allowed_mentions.
	Mention string `mapstructure:"mention"`

	// Template, if set, renders the text of the message (the embed's
	// description) instead of the question and answer. It is written as
	// text and parsed with relay.ParseTemplate.
	Template *template.Template `mapstructure:"template"`

	// Timeout bounds one HTTP request (default relay.DefaultTimeout). The
	// dispatcher's per-send deadline (SendTimeout) covers every request of
	// a send.
	Timeout time.Duration `mapstructure:"timeout"`

	// Reply, when set, makes the sink two-way (SPEC §10): agents answer
	// the visitor from the conversation's thread, read through Discord's
	// gateway (the Message Content intent switched on), and escalations
	// carry Claim and Resolve buttons. Bot mode only.
	Reply *relay.ReplyConfig `mapstructure:"reply"`
}

// Replies implements relay.TwoWay.
func (c Config) Replies() (relay.ReplyConfig, bool) {
	if c.Reply == nil {
		return relay.ReplyConfig{}, false
	}
	return *c.Reply, true
}

// maxRequests is how many requests one send may take at most: a turn of
// maxMessagesPerTurn messages, the channel's type (asked once), and the
// start of a thread on the first message.
const maxRequests = maxMessagesPerTurn + 2

// withDefaults fills what the config left unset.
func (c Config) withDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = relay.DefaultTimeout
	}
	return c
}

// webhookPath matches the path of a channel webhook URL:
// …/api[/v10]/webhooks/{id}/{token}.
var webhookPath = regexp.MustCompile(`^(?:/.*)?/api(?:/v[0-9]+)?/webhooks/([0-9]{1,20})/([A-Za-z0-9._-]{1,200})/?$`)

// snowflake matches a Discord id.
var snowflake = regexp.MustCompile(`^[0-9]{1,20}$`)

// endpoints is what a valid Config says about where and how to post.
type endpoints struct {
	// Webhook mode.
	webhook   *url.URL
	webhookID string
	// Bot mode.
	api   *url.URL
	token string

	mention mention
	secrets []string // removed from every text that enters an error or a log line
}

// Validate checks c. It joins one error per problem, each starting with
// the config key relative to the sink ("webhook_url: …") and ending with
// the fix; none echoes a secret.
func (c Config) Validate() error {
	_, err := c.parse()
	return err
}

// parse checks c and derives its endpoints.
func (c Config) parse() (endpoints, error) {
	var ep endpoints
	var errs []error
	hasWebhook, hasBot := !c.WebhookURL.IsZero(), !c.Token.IsZero() || c.ChannelID != ""
	switch {
	case hasWebhook && hasBot:
		errs = append(errs, errors.New("webhook_url: set together with token/channel_id; set either webhook_url (channel webhook) or token + channel_id (bot), not both"))
	case hasWebhook:
		errs = append(errs, ep.webhookMode(c)...)
	case hasBot:
		errs = append(errs, ep.botMode(c)...)
	default:
		errs = append(errs, errors.New("webhook_url: missing, and no token + channel_id either; set webhook_url (channel settings → Integrations → Webhooks → Copy Webhook URL), or token + channel_id for bot mode"))
	}
	if c.ThreadName != "" {
		if strings.TrimSpace(c.ThreadName) == "" || len16(c.ThreadName) > maxThreadName/2 {
			errs = append(errs, fmt.Errorf("thread_name: must be 1 to %d characters", maxThreadName/2))
		}
		if strings.Contains(c.ThreadName, "{{") {
			errs = append(errs, errors.New(`thread_name: plain text, not a template ("{{" would show as written); `+
				`write a word like Support: each thread is titled "Support · <the user's question>"`))
		}
	}
	m, err := parseMention(c.Mention)
	if err != nil {
		errs = append(errs, err)
	}
	ep.mention = m
	if c.Timeout < 0 {
		errs = append(errs, errors.New("timeout: must not be negative"))
	}
	if c.Reply != nil {
		if hasWebhook {
			errs = append(errs, errors.New("reply: needs bot mode: replies are read from the conversation's thread through the bot's "+
				"gateway session, and a webhook has none; set token and channel_id in place of webhook_url"))
		}
		if err := c.Reply.Validate(); err != nil {
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = append(errs, j.Unwrap()...) // one line each
			} else {
				errs = append(errs, err)
			}
		}
	}
	return ep, errors.Join(errs...)
}

func (ep *endpoints) webhookMode(c Config) []error {
	var errs []error
	raw := c.WebhookURL.Reveal()
	u, err := url.Parse(raw)
	if err == nil {
		err = relay.CheckURL(raw)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("webhook_url: %w; set it to the URL Discord shows under channel settings → Integrations → Webhooks → Copy Webhook URL", err))
	} else if m := webhookPath.FindStringSubmatch(u.EscapedPath()); m == nil {
		errs = append(errs, errors.New("webhook_url: not a Discord webhook URL (want …/api/webhooks/{id}/{token}); copy it from channel settings → Integrations → Webhooks"))
	} else {
		u.Fragment, u.RawFragment = "", ""
		ep.webhook, ep.webhookID = u, m[1]
		ep.secrets = append(ep.secrets, raw, m[2])
	}
	if c.APIURL != "" {
		errs = append(errs, errors.New("api_url: applies to bot mode only; the webhook URL already says where to post"))
	}
	return errs
}

func (ep *endpoints) botMode(c Config) []error {
	var errs []error
	tok := strings.TrimSpace(c.Token.Reveal())
	tok = strings.TrimSpace(strings.TrimPrefix(tok, "Bot "))
	switch {
	case tok == "":
		errs = append(errs, errors.New("token: missing; set it to the bot's token (Developer Portal → your application → Bot → Reset Token)"))
	case strings.ContainsAny(tok, " \t\r\n"):
		errs = append(errs, errors.New("token: contains white space; paste the bot token alone"))
	default:
		ep.token = tok
		ep.secrets = append(ep.secrets, tok)
	}
	if !snowflake.MatchString(c.ChannelID) {
		errs = append(errs, errors.New("channel_id: must be the channel's numeric id (turn on Developer Mode, then right-click the channel → Copy Channel ID)"))
	}
	base := DefaultAPIURL
	if c.APIURL != "" {
		base = c.APIURL
	}
	u, err := url.Parse(base)
	if err != nil || relay.CheckURL(base) != nil || u.RawQuery != "" {
		errs = append(errs, errors.New("api_url: not an http or https base URL such as https://discord.com/api/v10"))
	} else {
		if u.Path == "" || u.Path == "/" {
			u = u.JoinPath("api", "v10")
		}
		ep.api = u
	}
	return errs
}

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
