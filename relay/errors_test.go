package relay_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chatrelay/chatrelay/relay"
)

func TestHTTPPolicyCheck(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		status     int
		retryAfter string
		policy     relay.HTTPPolicy
		class      relay.Class
		after      time.Duration
		reason     relay.Reason
		ok         bool
	}{
		{status: 200, policy: relay.PlatformPolicy(), ok: true},
		{status: 204, policy: relay.WebhookPolicy(), ok: true},
		{status: 301, policy: relay.WebhookPolicy(), class: relay.ClassPermanent, reason: relay.ReasonClientError},
		{status: 400, policy: relay.WebhookPolicy(), class: relay.ClassPermanent, reason: relay.ReasonClientError},
		{status: 401, policy: relay.WebhookPolicy(), class: relay.ClassPermanent, reason: relay.ReasonClientError},
		{status: 401, policy: relay.PlatformPolicy(), class: relay.ClassBroken, reason: relay.ReasonAuth},
		{status: 403, policy: relay.PlatformPolicy(), class: relay.ClassBroken, reason: relay.ReasonAuth},
		{status: 404, policy: relay.PlatformPolicy(), class: relay.ClassBroken, reason: relay.ReasonGone},
		{status: 404, policy: relay.WebhookPolicy(), class: relay.ClassPermanent, reason: relay.ReasonClientError},
		{status: 408, policy: relay.WebhookPolicy(), class: relay.ClassRetryable, reason: relay.ReasonTimeout},
		{status: 410, policy: relay.WebhookPolicy(), class: relay.ClassBroken, reason: relay.ReasonGone},
		{status: 422, policy: relay.PlatformPolicy(), class: relay.ClassPermanent, reason: relay.ReasonClientError},
		{status: 429, retryAfter: "7", policy: relay.WebhookPolicy(), class: relay.ClassRateLimited, after: 7 * time.Second, reason: relay.ReasonRateLimited},
		{status: 429, retryAfter: "0.25", policy: relay.WebhookPolicy(), class: relay.ClassRateLimited, after: 250 * time.Millisecond, reason: relay.ReasonRateLimited},
		{status: 429, retryAfter: now.Add(90 * time.Second).Format(http.TimeFormat), policy: relay.WebhookPolicy(), class: relay.ClassRateLimited, after: 90 * time.Second, reason: relay.ReasonRateLimited},
		{status: 429, retryAfter: "soon", policy: relay.WebhookPolicy(), class: relay.ClassRetryable, reason: relay.ReasonRateLimited},
		{status: 429, policy: relay.WebhookPolicy(), class: relay.ClassRetryable, reason: relay.ReasonRateLimited},
		{status: 500, policy: relay.WebhookPolicy(), class: relay.ClassRetryable, reason: relay.ReasonServerError},
		{status: 503, retryAfter: "120", policy: relay.WebhookPolicy(), class: relay.ClassRateLimited, after: 2 * time.Minute, reason: relay.ReasonRateLimited},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d_%s_%v", tc.status, tc.retryAfter, tc.policy.Broken), func(t *testing.T) {
			t.Parallel()
			resp := &http.Response{StatusCode: tc.status, Header: http.Header{}, Body: http.NoBody}
			if tc.retryAfter != "" {
				resp.Header.Set("Retry-After", tc.retryAfter)
			}
			err := tc.policy.Check(resp, now)
			if tc.ok {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			class, after := relay.Classify(err)
			if class != tc.class || after != tc.after || relay.ReasonOf(err) != tc.reason {
				t.Fatalf("Check = %v: class %s after %s reason %s; want %s %s %s", err, class, after, relay.ReasonOf(err), tc.class, tc.after, tc.reason)
			}
			var se *relay.StatusError
			if !errors.As(err, &se) || se.Status != tc.status {
				t.Fatalf("error does not unwrap to *StatusError %d: %v", tc.status, err)
			}
		})
	}
}

func TestClassifyWrapped(t *testing.T) {
	t.Parallel()
	base := errors.New("boom")
	err := fmt.Errorf("sink %q: %w", "x", relay.RetryAfter(base, 3*time.Second))
	if c, d := relay.Classify(err); c != relay.ClassRateLimited || d != 3*time.Second {
		t.Fatalf("Classify through %%w = %s %s", c, d)
	}
	if !errors.Is(err, base) {
		t.Fatal("classified error does not unwrap")
	}
	if c, _ := relay.Classify(errors.New("plain")); c != relay.ClassRetryable {
		t.Fatalf("unclassified = %s, want retryable", c)
	}
	if r := relay.ReasonOf(fmt.Errorf("x: %w", context.DeadlineExceeded)); r != relay.ReasonTimeout {
		t.Fatalf("ReasonOf(deadline) = %s", r)
	}
}

func TestReadErrorBodyBounded(t *testing.T) {
	t.Parallel()
	got := relay.ReadErrorBody(strings.NewReader(strings.Repeat("é", 5000) + "\n\n  tail"))
	if len(got) > 1024 || !utf8.ValidString(got) {
		t.Fatalf("ReadErrorBody returned %d bytes, valid UTF-8 %v", len(got), utf8.ValidString(got))
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	secret := "https://hooks.slack.com/services/T000/B000/XXXXSECRET"
	inner := &url.Error{Op: "Post", URL: secret, Err: context.Canceled}
	err := relay.RedactURL(fmt.Errorf("wrapped: %w", inner))
	if strings.Contains(err.Error(), "XXXXSECRET") || !errors.Is(err, context.Canceled) {
		t.Fatalf("RedactURL = %v", err)
	}
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in    string
		limit int
		want  string
		cut   bool
	}{
		{"short", 10, "short", false},
		{"exactly ten", 11, "exactly ten", false},
		{"hello world and more", 12, "hello world…", true},
		{"ünïcödé text here", 8, "ünïcödé…", true},
		{"abcdefghijklmnop", 5, "abcd…", true},
		{"ab", 1, "…", true},
		{"family 👩‍👩‍👧‍👦👩‍👩‍👧‍👦", 15, "family 👩‍👩‍👧‍👦…", true}, // never half an emoji
		{"flags 🇨🇦🇫🇷", 9, "flags 🇨🇦…", true},
		{"", 0, "", false},
	} {
		got, cut := relay.Truncate(tc.in, tc.limit)
		if got != tc.want || cut != tc.cut {
			t.Errorf("Truncate(%q, %d) = %q %v, want %q %v", tc.in, tc.limit, got, cut, tc.want, tc.cut)
		}
	}
}

func FuzzTruncate(f *testing.F) {
	f.Add("hello world and more", 12)
	f.Add("ünïcödé\xff text", 3)
	f.Fuzz(func(t *testing.T, s string, limit int) {
		if limit < 0 || limit > 1<<16 {
			return
		}
		got, cut := relay.Truncate(s, limit)
		if utf8.RuneCountInString(got) > limit {
			t.Fatalf("Truncate(%q, %d) = %q: %d runes", s, limit, got, utf8.RuneCountInString(got))
		}
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Fatalf("Truncate made valid UTF-8 invalid: %q", got)
		}
		if !cut && got != s {
			t.Fatalf("not cut but changed: %q → %q", s, got)
		}
		if cut && limit > 0 && !strings.HasSuffix(got, "…") {
			t.Fatalf("cut without …: %q", got)
		}
	})
}

func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"7", "0.3", "Wed, 25 Nov 2026 10:01:30 GMT", "-1", "NaN", "1e309", "", " 12 "} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := relay.ParseRetryAfter(v, now)
		if ok && (d < 0 || d > 30*24*time.Hour) {
			t.Fatalf("ParseRetryAfter(%q) = %s", v, d)
		}
		if !ok && d != 0 {
			t.Fatalf("ParseRetryAfter(%q) = %s but not ok", v, d)
		}
	})
}
