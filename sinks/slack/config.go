package slack

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"text/template"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

// Config is one Slack sink's configuration: the keys of a "type: slack"
// entry under sinks, decoded as they are written. Exactly one mode is set:
// WebhookURL (incoming webhook), or Token and Channel (bot).
type Config struct {
	// Name is the sink's configured name (the common key "name"): the
	// metric label.
	Name string `mapstructure:"-"`
	// WebhookURL is an incoming webhook's URL (the URL is the credential).
	// It is posted to exactly as configured.
	WebhookURL relay.Secret `mapstructure:"webhook_url"`
	// Token is a bot token (xoxb-…) with chat:write; Channel the ID of the
	// channel to post in (C…). Bot mode threads each conversation.
	Token   relay.Secret `mapstructure:"token"`
	Channel string       `mapstructure:"channel"`
	// APIURL is the Web API's base URL in bot mode (default
	// https://slack.com/api/). A missing trailing "/" is added.
	APIURL string `mapstructure:"api_url"`
	// Mention is raw Slack syntax (<!subteam^S0123>, <@U0123>, <!here>)
	// put at the top of live-chat escalations, and nowhere else.
	Mention string `mapstructure:"mention"`
	// Template, if set, renders the message text (mrkdwn) in place of the
	// built-in text; header and context stay. It is written as text and
	// parsed with relay.ParseTemplate. Values it prints from the event
	// arrive escaped.
	Template *template.Template `mapstructure:"template"`
	// Timeout bounds one HTTP request (default relay.DefaultTimeout).
	Timeout time.Duration `mapstructure:"timeout"`
	// Reply, when set, makes the sink two-way (SPEC §10): agents answer
	// the visitor from the conversation's thread. Bot mode only.
	Reply *ReplyConfig `mapstructure:"reply"`
}

// ReplyConfig is a Slack sink's reply: section: the keys every two-way
// sink takes, and how Slack's events reach the relay: over HTTP at POST
// /slack/events on the public listener, verified with the app's signing
// secret, or over Socket Mode with an app-level token (no public URL).
type ReplyConfig struct {
	relay.ReplyConfig `mapstructure:",squash"`
	// SigningSecret is the app's Signing Secret (Basic Information): the
	// Events API and interactivity requests are verified with it.
	SigningSecret relay.Secret `mapstructure:"signing_secret"`
	// AppToken is an app-level token (xapp-…, scope connections:write):
	// events and clicks come over Socket Mode.
	AppToken relay.Secret `mapstructure:"app_token"`
}

// Replies implements relay.TwoWay.
func (c Config) Replies() (relay.ReplyConfig, bool) {
	if c.Reply == nil {
		return relay.ReplyConfig{}, false
	}
	return c.Reply.ReplyConfig, true
}

// SocketMode reports whether the sink's events come over Socket Mode.
func (c Config) SocketMode() bool { return c.Reply != nil && !c.Reply.AppToken.IsZero() }

// validateReply checks the reply: section of a bot-mode (or not) sink.
func (c Config) validateReply(bot bool) []error {
	r := c.Reply
	if r == nil {
		return nil
	}
	var errs []error
	if !bot {
		errs = append(errs, errors.New("reply: needs bot mode: replies are read from the conversation's thread, and an incoming webhook "+
			"makes none; set token and channel in place of webhook_url"))
	}
	secret, app := !r.SigningSecret.IsZero(), !r.AppToken.IsZero()
	switch {
	case secret && app:
		errs = append(errs, errors.New("reply.app_token: set together with reply.signing_secret; keep one: signing_secret to take "+
			"Slack's events at POST /slack/events, or app_token for Socket Mode"))
	case !secret && !app:
		errs = append(errs, errors.New("reply.signing_secret: missing; set it to the app's Signing Secret (Basic Information) "+
			"to take Slack's events at POST /slack/events, or set reply.app_token (xapp-…) for Socket Mode"))
	case secret && strings.TrimSpace(r.SigningSecret.Reveal()) != r.SigningSecret.Reveal():
		errs = append(errs, errors.New("reply.signing_secret: holds spaces or a line break; write the secret alone"))
	case app && !strings.HasPrefix(r.AppToken.Reveal(), "xapp-"):
		errs = append(errs, errors.New("reply.app_token: not an app-level token; generate one under Basic Information → "+
			"App-Level Tokens with the scope connections:write (xapp-…)"))
	}
	if err := r.ReplyConfig.Validate(); err != nil {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = append(errs, j.Unwrap()...) // one line each
		}
	}
	return errs
}

// maxRequests is how many requests one send may take at most: a turn of
// maxParts messages, and one more when its thread turns out to be gone
// and the message is posted again at top level.
const maxRequests = maxParts + 1

// withDefaults fills what the config left unset.
func (c Config) withDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = relay.DefaultTimeout
	}
	return c
}

// mentionSyntax is what a configured mention may be: one or more user,
// user group or special mentions, separated by spaces.
var mentionSyntax = regexp.MustCompile(`^<(@[UW][A-Z0-9]+|!subteam\^S[A-Z0-9]+|!here|!channel|!everyone)(\|[^<>|]*)?>( <(@[UW][A-Z0-9]+|!subteam\^S[A-Z0-9]+|!here|!channel|!everyone)(\|[^<>|]*)?>)*$`)

// channelID is the form of a Slack conversation ID.
var channelID = regexp.MustCompile(`^[CGD][A-Z0-9]{2,}$`)

// Validate checks c. It joins one error per problem, each starting with
// the config key relative to the sink ("webhook_url: …", so that the
// wiring can prefix "sinks[1].") and ending with the fix; none repeats a
// credential.
func (c Config) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("name: missing; give the sink a name"))
	}
	webhook := !c.WebhookURL.IsZero()
	bot := !c.Token.IsZero() || c.Channel != ""
	switch {
	case webhook && bot:
		errs = append(errs, errors.New("webhook_url: set together with token/channel; set webhook_url (incoming webhook) or token and channel (bot), not both"))
	case !webhook && !bot:
		errs = append(errs, errors.New("webhook_url: missing, and no credentials for a bot either; set webhook_url to the incoming webhook URL "+
			"Slack shows (https://hooks.slack.com/services/…), or token + channel for a bot; if you wrote ${SLACK_WEBHOOK_URL}, that variable is empty"))
	case webhook:
		if err := relay.CheckURL(c.WebhookURL.Reveal()); err != nil {
			errs = append(errs, fmt.Errorf("webhook_url: %w; set it to the incoming webhook URL Slack shows (https://hooks.slack.com/services/…)", err))
		}
		if c.APIURL != "" {
			errs = append(errs, errors.New("api_url: only used in bot mode (token and channel); remove it"))
		}
	default:
		if c.Token.IsZero() {
			errs = append(errs, errors.New("token: missing; set it to the app's Bot User OAuth Token (xoxb-…)"))
		} else if !strings.HasPrefix(c.Token.Reveal(), "xox") {
			errs = append(errs, errors.New("token: not a Slack token; set it to the app's Bot User OAuth Token (xoxb-…)"))
		}
		switch {
		case c.Channel == "":
			errs = append(errs, errors.New("channel: missing; set it to the channel's ID (C…, shown in the channel's details)"))
		case !channelID.MatchString(c.Channel):
			errs = append(errs, fmt.Errorf("channel: %q is not a channel ID; set it to the channel's ID (C…, shown in the channel's details), not its name", c.Channel))
		}
		if c.APIURL != "" {
			if err := relay.CheckURL(c.APIURL); err != nil {
				errs = append(errs, fmt.Errorf("api_url: %w; set it to the Web API's base URL, like https://slack.com/api/", err))
			}
		}
	}
	if c.Mention != "" && (len(c.Mention) > maxMention || !mentionSyntax.MatchString(c.Mention)) {
		errs = append(errs, fmt.Errorf("mention: %q is not Slack mention syntax; use <!subteam^S…> for a user group, <@U…> for a user, or <!here>", c.Mention))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout: %s is negative; set a positive duration like 10s", c.Timeout))
	}
	errs = append(errs, c.validateReply(bot && !webhook)...)
	return errors.Join(errs...)
}

// destination names where the sink posts, for the relay's books: the
// channel, or a hash of the webhook URL (never the URL: it is the
// credential), so that a turn resumed after the sink was pointed elsewhere
// starts from its first message there.
func destination(cfg Config) string {
	if cfg.WebhookURL.IsZero() {
		return cfg.Channel
	}
	sum := sha256.Sum256([]byte(cfg.WebhookURL.Reveal()))
	return "webhook-" + hex.EncodeToString(sum[:8])
}
