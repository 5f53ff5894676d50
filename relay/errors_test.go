package relay_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chatrelay/chatrelay/relay"
)

func TestHTTPPolicyClassify(t *testing.T) {
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
			h := http.Header{}
			if tc.retryAfter != "" {
				h.Set("Retry-After", tc.retryAfter)
			}
			err := tc.policy.Classify(tc.status, h, "", now)
			if tc.ok {
				if err != nil {
					t.Fatalf("Classify = %v, want nil", err)
				}
				return
			}
			class, after := relay.Classify(err)
			if class != tc.class || after != tc.after || relay.ReasonOf(err) != tc.reason {
				t.Fatalf("Classify = %v: class %s after %s reason %s; want %s %s %s", err, class, after, relay.ReasonOf(err), tc.class, tc.after, tc.reason)
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

// TestUnreachable: the errors that count towards marking a sink down are
// those where nothing answered (refused, DNS, TLS, timeout); any answer of
// the destination, even an error status or a cut response, is not one.
func TestUnreachable(t *testing.T) {
	t.Parallel()
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return "http://" + addr + "/in"
	}()
	tlsSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is the point
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	hang := make(chan struct{})
	hangSrv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-hang:
		}
	}))
	defer hangSrv.Close()
	defer close(hang)
	cut := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Ty")
		_ = buf.Flush()
		_ = conn.Close()
	}))
	defer cut.Close()
	plain := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer plain.Close()

	post := func(url string, timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader("{}"))
		resp, err := (&http.Client{}).Do(req)
		if err != nil {
			// As a sink reports it: URL redacted, wrapped, retryable.
			return fmt.Errorf("webhook sink %q: post: %w", "x", relay.RedactURL(err))
		}
		relay.Drain(resp)
		return nil
	}
	dnsErr := &url.Error{Op: "Post", URL: "[redacted]", Err: &net.OpError{Op: "dial", Net: "tcp",
		Err: &net.DNSError{Err: "no such host", Name: "hooks.example.invalid", IsNotFound: true}}}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", post(closed, 10*time.Second), true},
		{"TLS: unknown authority", post(tlsSrv.URL, 10*time.Second), true},
		{"TLS: not a TLS server", post(strings.Replace(plain.URL, "http:", "https:", 1), 10*time.Second), true},
		{"no answer in time", post(hangSrv.URL, 100*time.Millisecond), true},
		{"DNS", fmt.Errorf("slack sink %q: %w", "x", relay.Retryable(dnsErr, relay.ReasonNetwork)), true},
		{"dispatcher's own timeout cause", fmt.Errorf("post: %w", fmt.Errorf("sink %q: no answer within 10s: %w", "x", context.DeadlineExceeded)), true},
		{"cut mid-response", post(cut.URL, 10*time.Second), false},
		{"HTTP 503", relay.Retryable(&relay.StatusError{Status: 503}, relay.ReasonServerError), false},
		{"HTTP 408", relay.Retryable(&relay.StatusError{Status: 408}, relay.ReasonTimeout), false},
		{"HTTP 410", relay.Broken(&relay.StatusError{Status: 410}, relay.ReasonGone), false},
		{"rate limited", relay.RetryAfter(errors.New("429"), time.Second), false},
		{"permanent", relay.Permanent(errors.New("invalid_blocks"), relay.ReasonClientError), false},
		{"canceled (shutdown)", fmt.Errorf("post: %w", context.Canceled), false},
		{"something else", errors.New("slack: ok:false internal_error"), false},
		{"nil", nil, false},
	} {
		if tc.err == nil && tc.name != "nil" {
			t.Errorf("%s: the request succeeded", tc.name)
			continue
		}
		if got := relay.Unreachable(tc.err); got != tc.want {
			t.Errorf("%s: Unreachable(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// FuzzTruncateBytes: a byte-bounded cut is valid UTF-8 within the limit,
// ends in "…" when it cut, and is a prefix of s otherwise.
func FuzzTruncateBytes(f *testing.F) {
	for _, seed := range []string{"", "abcdef", "a😀", "ab€", "€€", "Ünïcödé with 👨‍👩‍👧 family", strings.Repeat("x", 300)} {
		for _, limit := range []int{0, 2, 3, 4, 5, 8, 256} {
			f.Add(seed, limit)
		}
	}
	f.Fuzz(func(t *testing.T, s string, limit int) {
		if limit < 0 || limit > 1<<16 || !utf8.ValidString(s) {
			return
		}
		got, cut := relay.TruncateBytes(s, limit)
		if len(got) > limit || !utf8.ValidString(got) {
			t.Fatalf("TruncateBytes(%q, %d) = %q: %d bytes", s, limit, got, len(got))
		}
		if !cut && got != s {
			t.Fatalf("TruncateBytes(%q, %d) = %q without cutting", s, limit, got)
		}
		if cut && limit >= len("…") && !strings.HasSuffix(got, "…") {
			t.Fatalf("TruncateBytes(%q, %d) = %q: cut without …", s, limit, got)
		}
	})
}
