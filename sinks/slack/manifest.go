package slack

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// What two-way live chat needs of a Slack app (SPEC §10, PROTOCOLS.md
// §1.6): the bot scopes to post, react, name agents and read thread
// replies in public and private channels, and the bot events that carry
// those replies.
var (
	ReplyScopes    = []string{"chat:write", "reactions:write", "users:read", "channels:history", "groups:history"}
	ReplyBotEvents = []string{"message.channels", "message.groups"}
)

// EventsPath is where the relay's public listener takes Slack's Events API
// and interactivity requests.
const EventsPath = "/slack/events"

// Manifest is a Slack app manifest
// (https://api.slack.com/reference/manifests), with only the fields
// chatrelay sets: it reads as YAML or JSON, ready to paste at
// api.slack.com/apps → Create New App → From a manifest.
type Manifest struct {
	Display     ManifestDisplay  `json:"display_information" yaml:"display_information"`
	Features    ManifestFeatures `json:"features" yaml:"features"`
	OAuthConfig ManifestOAuth    `json:"oauth_config" yaml:"oauth_config"`
	Settings    ManifestSettings `json:"settings" yaml:"settings"`
}

// ManifestDisplay is display_information.
type ManifestDisplay struct {
	Name        string `json:"name" yaml:"name"`
	Description string `json:"description" yaml:"description"`
}

// ManifestFeatures is features.
type ManifestFeatures struct {
	BotUser ManifestBotUser `json:"bot_user" yaml:"bot_user"`
}

// ManifestBotUser is features.bot_user.
type ManifestBotUser struct {
	DisplayName  string `json:"display_name" yaml:"display_name"`
	AlwaysOnline bool   `json:"always_online" yaml:"always_online"`
}

// ManifestOAuth is oauth_config.
type ManifestOAuth struct {
	Scopes ManifestScopes `json:"scopes" yaml:"scopes"`
}

// ManifestScopes is oauth_config.scopes.
type ManifestScopes struct {
	Bot []string `json:"bot" yaml:"bot"`
}

// ManifestSettings is settings.
type ManifestSettings struct {
	EventSubscriptions   ManifestEvents        `json:"event_subscriptions" yaml:"event_subscriptions"`
	Interactivity        ManifestInteractivity `json:"interactivity" yaml:"interactivity"`
	OrgDeployEnabled     bool                  `json:"org_deploy_enabled" yaml:"org_deploy_enabled"`
	SocketModeEnabled    bool                  `json:"socket_mode_enabled" yaml:"socket_mode_enabled"`
	TokenRotationEnabled bool                  `json:"token_rotation_enabled" yaml:"token_rotation_enabled"`
}

// ManifestEvents is settings.event_subscriptions. Without a request URL
// (Socket Mode) the events come over the app's WebSocket.
type ManifestEvents struct {
	RequestURL string   `json:"request_url,omitempty" yaml:"request_url,omitempty"`
	BotEvents  []string `json:"bot_events" yaml:"bot_events"`
}

// ManifestInteractivity is settings.interactivity: the Claim and Resolve
// buttons' clicks.
type ManifestInteractivity struct {
	IsEnabled  bool   `json:"is_enabled" yaml:"is_enabled"`
	RequestURL string `json:"request_url,omitempty" yaml:"request_url,omitempty"`
}

// ManifestOptions says what app NewManifest describes.
type ManifestOptions struct {
	// Name is the app's and its bot's name (default "chatrelay").
	Name string
	// URL is the relay's public base URL (https://relay.example.com, or
	// with a path behind a proxy): Slack posts events and clicks to
	// URL + EventsPath. Not used with SocketMode.
	URL string
	// SocketMode: events and clicks come over a WebSocket the relay
	// opens with an app-level token; no public URL is needed.
	SocketMode bool
}

// maxAppName is Slack's limit on an app's and a bot's name.
const maxAppName = 35

// NewManifest returns the manifest of a Slack app for a bot-mode sink that
// takes replies. Its errors name the option ("url: …").
func NewManifest(o ManifestOptions) (Manifest, error) {
	name := strings.TrimSpace(o.Name)
	if name == "" {
		name = "chatrelay"
	}
	if n := len([]rune(name)); n > maxAppName {
		return Manifest{}, fmt.Errorf("name: %d characters; Slack takes at most %d", n, maxAppName)
	}
	m := Manifest{
		Display: ManifestDisplay{Name: name,
			Description: "Mirrors Chat Data chatbot conversations into Slack; agents answer visitors from the thread."},
		Features:    ManifestFeatures{BotUser: ManifestBotUser{DisplayName: name, AlwaysOnline: true}},
		OAuthConfig: ManifestOAuth{Scopes: ManifestScopes{Bot: append([]string(nil), ReplyScopes...)}},
		Settings: ManifestSettings{
			EventSubscriptions: ManifestEvents{BotEvents: append([]string(nil), ReplyBotEvents...)},
			Interactivity:      ManifestInteractivity{IsEnabled: true},
			SocketModeEnabled:  o.SocketMode,
		},
	}
	if o.SocketMode {
		if o.URL != "" {
			return Manifest{}, errors.New("url: not used with Socket Mode (events come over the app's WebSocket); leave it out")
		}
		return m, nil
	}
	events, err := eventsURL(o.URL)
	if err != nil {
		return Manifest{}, fmt.Errorf("url: %w", err)
	}
	m.Settings.EventSubscriptions.RequestURL = events
	m.Settings.Interactivity.RequestURL = events
	return m, nil
}

// eventsURL is base + EventsPath (or base itself when it already ends
// with EventsPath): Slack's request URL for events and interactivity.
func eventsURL(base string) (string, error) {
	if strings.TrimSpace(base) == "" {
		return "", errors.New("missing; give the relay's public https URL (like https://relay.example.com), or use Socket Mode")
	}
	u, err := url.Parse(strings.TrimSpace(base))
	switch {
	case err != nil || u.Host == "" || u.Scheme == "":
		return "", fmt.Errorf("%q is not an absolute URL; write it like https://relay.example.com", base)
	case u.Scheme != "https":
		return "", fmt.Errorf("%q is not https: Slack sends events only to https URLs; put the relay behind TLS (tls: in the config) or use Socket Mode", base)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return "", fmt.Errorf("%q has a query, a fragment or credentials; give the base URL alone", base)
	}
	// The request URL itself (as the README and the manifest show it) is
	// taken as it is, not given a second EventsPath.
	u.Path = strings.TrimRight(u.Path, "/")
	if !strings.HasSuffix(u.Path, EventsPath) {
		u.Path += EventsPath
	}
	u.RawPath = ""
	return u.String(), nil
}
