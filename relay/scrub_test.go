package relay_test

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/chatrelay/chatrelay/relay"
)

func TestScrubber(t *testing.T) {
	t.Parallel()
	const (
		hook   = "https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/abcdefghijklmnopqrstuvwx"
		crm    = "https://crm.example/in/hooks/tok_4f9a8b7c6d5e4f3a?key=k_0123456789abcdef&team=a"
		bearer = "Bearer s3cr3t-t0ken-value"
	)
	s := relay.NewScrubber(hook, crm, bearer, "whsec_c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw==", "", "short", "  ")
	tests := []struct {
		name, in string
		gone     []string // must not survive
		kept     string   // what must stay, if anything
	}{
		{"a URL whole", "Post \"" + hook + "\": EOF", []string{hook, "abcdefghijklmnopqrstuvwx"}, "Post \""},
		{"a URL's path", "Cannot POST /services/T0AAAAAAA/B0BBBBBBB/abcdefghijklmnopqrstuvwx", []string{"abcdefghijklmnopqrstuvwx"}, "Cannot POST "},
		{"a URL's token segment alone", "invalid token abcdefghijklmnopqrstuvwx", []string{"abcdefghijklmnopqrstuvwx"}, "invalid token "},
		{"a URL without its scheme", "no route to crm.example/in/hooks/tok_4f9a8b7c6d5e4f3a", []string{"tok_4f9a8b7c6d5e4f3a"}, "no route to "},
		{"a query value", `{"error":"bad key k_0123456789abcdef"}`, []string{"k_0123456789abcdef"}, `{"error":"bad key `},
		{"a header echoed", "HTTP 401: Authorization: Bearer s3cr3t-t0ken-value refused", []string{"s3cr3t-t0ken-value"}, "HTTP 401: Authorization: "},
		{"the credential without its scheme", "token s3cr3t-t0ken-value revoked", []string{"s3cr3t-t0ken-value"}, " revoked"},
		{"percent-encoded", "redirect_uri=" + url.QueryEscape(hook), []string{"abcdefghijklmnopqrstuvwx", url.QueryEscape(hook)}, "redirect_uri="},
		{"JSON-escaped", `{"url":"https:\/\/hooks.slack.com\/services\/T0AAAAAAA\/B0BBBBBBB\/abcdefghijklmnopqrstuvwx"}`, nil, `{"url":"`},
		{"a signing secret", "secret whsec_c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw== is wrong", []string{"c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw"}, " is wrong"},
		{"short values are no secrets", "a short answer", nil, "a short answer"},
		{"a short query value is a word", "team=a", nil, "team=a"},
		{"text without secrets", "HTTP 500 Internal Server Error", nil, "HTTP 500 Internal Server Error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := s.Scrub(tc.in)
			for _, g := range tc.gone {
				if strings.Contains(got, g) {
					t.Errorf("Scrub(%q) = %q: %q survived", tc.in, got, g)
				}
			}
			if !strings.Contains(got, tc.kept) {
				t.Errorf("Scrub(%q) = %q: lost %q", tc.in, got, tc.kept)
			}
			if len(tc.gone) > 0 && !strings.Contains(got, "[redacted]") {
				t.Errorf("Scrub(%q) = %q: no [redacted] mark", tc.in, got)
			}
		})
	}
	// The JSON-escaped URL: the escaped form is gone (json.Marshal does
	// not escape "/", but a destination's encoder may).
	if got := s.Scrub(`"https:\/\/hooks.slack.com\/services\/T0AAAAAAA\/B0BBBBBBB\/abcdefghijklmnopqrstuvwx"`); strings.Contains(got, "abcdefghijklmnopqrstuvwx") {
		t.Errorf("escaped URL survived: %q", got)
	}
}

func TestScrubberIgnoresEmptyAndShortSecrets(t *testing.T) {
	t.Parallel()
	text := "delivery failed: HTTP 400 Bad Request: {\"error\":\"x\"}"
	for _, secrets := range [][]string{nil, {""}, {" "}, {"a"}, {"/"}, {"x"}, {"abcde"}, {"https://a.b/"}} {
		s := relay.NewScrubber(secrets...)
		if got := s.Scrub(text); got != text {
			t.Errorf("NewScrubber(%q).Scrub changed %q to %q", secrets, text, got)
		}
	}
	var nilScrubber *relay.Scrubber
	if got := nilScrubber.Scrub(text); got != text {
		t.Errorf("nil scrubber changed the text: %q", got)
	}
	if err := errors.New(text); nilScrubber.Error(err) != err {
		t.Error("nil scrubber replaced the error")
	}
}

// TestScrubbedErrorKeepsItsClass: scrubbing changes what an error says,
// never how the dispatcher treats it.
func TestScrubbedErrorKeepsItsClass(t *testing.T) {
	t.Parallel()
	s := relay.NewScrubber("Bearer tok-123456789")
	cause := &relay.StatusError{Status: 400, Body: "you sent Authorization: Bearer tok-123456789"}
	err := s.Error(fmt.Errorf("webhook sink %q: %w", "crm", relay.Permanent(cause, relay.ReasonClientError)))
	if strings.Contains(err.Error(), "tok-123456789") || !strings.Contains(err.Error(), `webhook sink "crm": HTTP 400`) {
		t.Fatalf("scrubbed error %q", err)
	}
	if c, _ := relay.Classify(err); c != relay.ClassPermanent || relay.ReasonOf(err) != relay.ReasonClientError {
		t.Fatalf("class %v reason %v after scrubbing", c, relay.ReasonOf(err))
	}
	var se *relay.StatusError
	if !errors.As(err, &se) || se.Status != 400 {
		t.Fatal("the status error is no longer reachable")
	}
	plain := errors.New("HTTP 503")
	if s.Error(plain) != plain {
		t.Error("an error without secrets was wrapped")
	}
}

// FuzzScrub: whatever the text, no secret (of the length scrubbed, without
// the brackets of the mark) survives scrubbing, and scrubbing twice changes
// nothing more.
func FuzzScrub(f *testing.F) {
	f.Add("Bearer abcdef123456", "HTTP 401: Bearer abcdef123456 is not valid")
	f.Add("https://hooks.slack.com/services/T0/B0/abcdefghijklmnopqrstuvwx", "Cannot POST /services/T0/B0/abcdefghijklmnopqrstuvwx")
	f.Add("aaaaaa", "aaaaaaaaaaaaa")
	f.Add("abcabcabc", "abcabcabcabcabc")
	f.Fuzz(func(t *testing.T, secret, text string) {
		s := relay.NewScrubber(secret)
		out := s.Scrub(text + secret + text)
		if len(strings.TrimSpace(secret)) >= relay.MinScrubLen && !strings.ContainsAny(secret, "[]") {
			if strings.Contains(out, secret) {
				t.Fatalf("secret %q survived in %q", secret, out)
			}
			if again := s.Scrub(out); again != out {
				t.Fatalf("scrubbing twice changed %q to %q", out, again)
			}
		}
	})
}

func TestCredentialHeader(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, value string
		want        bool
	}{
		{"X-Team", "support", false},
		{"X-Region", "eu-west", false},
		{"X-Env", "Production Team", false},
		{"Authorization", "Bearer x", true},
		{"X-Api-Key", "plainword", true},
		{"Cookie", "a", true},
		{"X-Client-Context", "ctx-7f3e9a1b", true},
		{"X-Team", "averyveryverylongword", true},
		{"X-Team", "tëam", true},
	} {
		if got := relay.CredentialHeader(tc.name, tc.value); got != tc.want {
			t.Errorf("CredentialHeader(%q, %q) = %v, want %v", tc.name, tc.value, got, tc.want)
		}
	}
}
