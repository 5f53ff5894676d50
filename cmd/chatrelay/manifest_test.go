package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// manifestDoc is what a Slack app manifest must say for two-way live chat,
// read back from the printed text as Slack would read it.
type manifestDoc struct {
	Display struct {
		Name        string `json:"name" yaml:"name"`
		Description string `json:"description" yaml:"description"`
	} `json:"display_information" yaml:"display_information"`
	Features struct {
		BotUser struct {
			DisplayName  string `json:"display_name" yaml:"display_name"`
			AlwaysOnline bool   `json:"always_online" yaml:"always_online"`
		} `json:"bot_user" yaml:"bot_user"`
	} `json:"features" yaml:"features"`
	OAuth struct {
		Scopes struct {
			Bot []string `json:"bot" yaml:"bot"`
		} `json:"scopes" yaml:"scopes"`
	} `json:"oauth_config" yaml:"oauth_config"`
	Settings struct {
		Events struct {
			RequestURL *string  `json:"request_url" yaml:"request_url"`
			BotEvents  []string `json:"bot_events" yaml:"bot_events"`
		} `json:"event_subscriptions" yaml:"event_subscriptions"`
		Interactivity struct {
			IsEnabled  bool    `json:"is_enabled" yaml:"is_enabled"`
			RequestURL *string `json:"request_url" yaml:"request_url"`
		} `json:"interactivity" yaml:"interactivity"`
		SocketMode    bool `json:"socket_mode_enabled" yaml:"socket_mode_enabled"`
		OrgDeploy     bool `json:"org_deploy_enabled" yaml:"org_deploy_enabled"`
		TokenRotation bool `json:"token_rotation_enabled" yaml:"token_rotation_enabled"`
	} `json:"settings" yaml:"settings"`
}

func TestSlackManifestCommand(t *testing.T) {
	t.Parallel()
	scopes := []string{"chat:write", "reactions:write", "users:read", "channels:history", "groups:history"}
	events := []string{"message.channels", "message.groups"}
	tests := []struct {
		name   string
		args   []string
		format string
		url    string // "" for none (Socket Mode)
		bot    string
	}{
		{"yaml", []string{"--url", "https://relay.example.com"}, "yaml", "https://relay.example.com/slack/events", "chatrelay"},
		{"json", []string{"--url", "https://relay.example.com/", "--format", "json"}, "json", "https://relay.example.com/slack/events", "chatrelay"},
		{"socket mode", []string{"--socket-mode", "--name", "Support Bridge"}, "yaml", "", "Support Bridge"},
		{"socket mode, json", []string{"--socket-mode", "--format", "json"}, "json", "", "chatrelay"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := cli(t, append([]string{"slack-manifest"}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var m manifestDoc
			var err error
			if tc.format == "json" {
				dec := json.NewDecoder(strings.NewReader(out))
				dec.DisallowUnknownFields()
				err = dec.Decode(&m)
			} else {
				dec := yaml.NewDecoder(strings.NewReader(out))
				dec.KnownFields(true)
				err = dec.Decode(&m)
			}
			if err != nil {
				t.Fatalf("stdout is not a %s manifest: %v\n%s", tc.format, err, out)
			}
			s := m.Settings
			if !slices.Equal(m.OAuth.Scopes.Bot, scopes) || !slices.Equal(s.Events.BotEvents, events) {
				t.Errorf("scopes %v, bot events %v", m.OAuth.Scopes.Bot, s.Events.BotEvents)
			}
			if m.Display.Name != tc.bot || m.Features.BotUser.DisplayName != tc.bot || m.Display.Description == "" {
				t.Errorf("names %q, %q; want %q", m.Display.Name, m.Features.BotUser.DisplayName, tc.bot)
			}
			if !s.Interactivity.IsEnabled || s.SocketMode != (tc.url == "") {
				t.Errorf("interactivity %v, socket mode %v", s.Interactivity.IsEnabled, s.SocketMode)
			}
			for what, got := range map[string]*string{"event_subscriptions": s.Events.RequestURL, "interactivity": s.Interactivity.RequestURL} {
				switch {
				case tc.url == "" && got != nil:
					t.Errorf("%s.request_url %q with Socket Mode", what, *got)
				case tc.url != "" && (got == nil || *got != tc.url):
					t.Errorf("%s.request_url %v, want %q", what, got, tc.url)
				}
			}
			// The next steps go to stderr, so stdout pipes as it is.
			if !strings.Contains(errOut, "From a manifest") || strings.Contains(out, "Next:") {
				t.Errorf("next steps: stderr %q", errOut)
			}
			if tc.url == "" && !strings.Contains(errOut, "connections:write") {
				t.Errorf("Socket Mode's next steps do not say the app-level token's scope: %q", errOut)
			}
		})
	}
}

func TestSlackManifestUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		says string
	}{
		{nil, "--url: missing"},
		{[]string{"--url", "http://relay.example.com"}, "is not https"},
		{[]string{"--url", "https://relay.example.com", "--socket-mode"}, "not used with Socket Mode"},
		{[]string{"--url", "https://relay.example.com", "--format", "toml"}, `--format "toml"`},
		{[]string{"--url", "https://relay.example.com", "extra"}, "unknown command"},
	} {
		code, out, errOut := cli(t, append([]string{"slack-manifest"}, tc.args...)...)
		if code != 2 || !strings.Contains(errOut, tc.says) || out != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 saying %q", tc.args, code, out, errOut, tc.says)
		}
	}
}
