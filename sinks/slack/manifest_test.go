package slack_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/chatrelay/chatrelay/sinks/slack"
)

func TestNewManifest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		o      slack.ManifestOptions
		events string // the request URL of events and interactivity; "" for none
		err    string // the start of the error
	}{
		{"https", slack.ManifestOptions{URL: "https://relay.example.com"}, "https://relay.example.com/slack/events", ""},
		{"trailing slash", slack.ManifestOptions{URL: "https://relay.example.com/"}, "https://relay.example.com/slack/events", ""},
		{"behind a proxy path", slack.ManifestOptions{URL: "https://example.com/chatrelay/"}, "https://example.com/chatrelay/slack/events", ""},
		{"port", slack.ManifestOptions{URL: "https://relay.example.com:8443"}, "https://relay.example.com:8443/slack/events", ""},
		{"the request URL itself", slack.ManifestOptions{URL: "https://relay.example.com/slack/events"}, "https://relay.example.com/slack/events", ""},
		{"the request URL behind a proxy path", slack.ManifestOptions{URL: "https://example.com/chatrelay/slack/events/"}, "https://example.com/chatrelay/slack/events", ""},
		{"socket mode", slack.ManifestOptions{SocketMode: true}, "", ""},
		{"plain http", slack.ManifestOptions{URL: "http://relay.example.com"}, "", "url: \"http://relay.example.com\" is not https"},
		{"no URL", slack.ManifestOptions{}, "", "url: missing"},
		{"not absolute", slack.ManifestOptions{URL: "relay.example.com"}, "", "url: \"relay.example.com\" is not an absolute URL"},
		{"query", slack.ManifestOptions{URL: "https://relay.example.com/?x=1"}, "", "url: \"https://relay.example.com/?x=1\" has a query"},
		{"socket mode and URL", slack.ManifestOptions{SocketMode: true, URL: "https://relay.example.com"}, "", "url: not used with Socket Mode"},
		{"long name", slack.ManifestOptions{Name: strings.Repeat("x", 36), SocketMode: true}, "", "name: 36 characters"},
	}
	for _, tc := range tests {
		m, err := slack.NewManifest(tc.o)
		if tc.err != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q…", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		s := m.Settings
		if s.EventSubscriptions.RequestURL != tc.events || s.Interactivity.RequestURL != tc.events || !s.Interactivity.IsEnabled {
			t.Errorf("%s: events %q, interactivity %+v; want both at %q", tc.name, s.EventSubscriptions.RequestURL, s.Interactivity, tc.events)
		}
		if s.SocketModeEnabled != tc.o.SocketMode {
			t.Errorf("%s: socket_mode_enabled %v", tc.name, s.SocketModeEnabled)
		}
		if !slices.Equal(m.OAuthConfig.Scopes.Bot, slack.ReplyScopes) || !slices.Equal(s.EventSubscriptions.BotEvents, slack.ReplyBotEvents) {
			t.Errorf("%s: scopes %v events %v", tc.name, m.OAuthConfig.Scopes.Bot, s.EventSubscriptions.BotEvents)
		}
		if m.Display.Name != "chatrelay" || m.Features.BotUser.DisplayName != "chatrelay" {
			t.Errorf("%s: name %q bot %q", tc.name, m.Display.Name, m.Features.BotUser.DisplayName)
		}
	}
}
