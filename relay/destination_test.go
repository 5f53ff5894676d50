package relay_test

import (
	"strings"
	"testing"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
)

// TestCheckURL: every sink checks its URLs with CheckURL, which accepts any
// absolute http(s) URL and never echoes one.
func TestCheckURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url  string
		want string // "" for accepted; else in the error
	}{
		{"https://hooks.slack.com/services/T0/B0/tok-s3cr3t", ""},
		{"http://127.0.0.1:9/in?token=tok-s3cr3t", ""},
		{"hooks.slack.com/services/T0/B0/tok-s3cr3t", "not a URL"},
		{"127.0.0.1/tok-s3cr3t", "not a URL"},
		{"ftp://example.com/tok-s3cr3t", `scheme "ftp" is not http or https`},
		{"xoxb-tok-s3cr3t://host/x", "its scheme is not http or https"},
		{"https://exa mple.com/tok-s3cr3t", "not a URL"},
	} {
		err := relay.CheckURL(tc.url)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q refused: %v", tc.url, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: %v, want %q", tc.url, err, tc.want)
		case err != nil:
			relaytest.AssertNoSecret(t, "error", err.Error(), "tok-s3cr3t")
		}
	}
}

// TestWarnPlainHTTP: plain http to another host is the one warning, and it
// names the key, never the URL.
func TestWarnPlainHTTP(t *testing.T) {
	t.Parallel()
	for url, warns := range map[string]bool{
		"http://crm.example.com/in/tok-s3cr3t": true,
		"http://10.0.0.5:8080/in":              true,
		"https://crm.example.com/in":           false,
		"http://127.0.0.1:9/in":                false,
		"http://localhost:9/in":                false,
		"http://[::1]:9/in":                    false,
		"":                                     false,
	} {
		logger, logs := relaytest.NewLogger()
		relay.WarnPlainHTTP(logger, "webhook_url", url)
		if got := strings.Contains(logs.String(), "webhook_url uses plain http"); got != warns {
			t.Errorf("%q: warned %v, want %v: %s", url, got, warns, logs)
		}
		relaytest.AssertNoSecret(t, "log", logs.String(), "tok-s3cr3t", "crm.example.com")
	}
}
