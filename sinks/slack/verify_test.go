package slack_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/slack"
)

const (
	signingSecret = "8f742231b10e8888abcd99yyyzzz85a5"
	otherSecret   = "rotated-signing-secret-0123456789"
)

var now = time.Unix(1_765_000_100, 0)

func slackPayload(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "slack-"+name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func signed(secret relay.Secret, ts time.Time, body []byte) http.Header {
	h := http.Header{}
	h.Set(slack.HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(slack.HeaderSignature, slack.Sign(secret, ts, body))
	return h
}

func newVerifier(t testing.TB) *slack.Verifier {
	t.Helper()
	v, err := slack.NewVerifier([]relay.Secret{signingSecret, otherSecret}, clockwork.NewFakeClockAt(now))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSignMatchesSlack: Slack's documented example (api.slack.com/
// authentication/verifying-requests-from-slack, its signing secret,
// timestamp and body) gives Slack's signature.
func TestSignMatchesSlack(t *testing.T) {
	t.Parallel()
	body := []byte("token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
	got := slack.Sign(signingSecret, time.Unix(1531420618, 0), body)
	if want := "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"; got != want {
		t.Fatalf("Sign = %s, want Slack's %s", got, want)
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	body := slackPayload(t, "event-thread-reply")
	edit := func(h http.Header, k, v string) http.Header {
		h = h.Clone()
		h.Set(k, v)
		return h
	}
	good := signed(signingSecret, now, body)
	add := func(h http.Header, k, v string) http.Header {
		h = h.Clone()
		h.Add(k, v)
		return h
	}
	plus := http.Header{}
	plus.Set(slack.HeaderTimestamp, "+"+strconv.FormatInt(now.Unix(), 10))
	plus.Set(slack.HeaderSignature, "v0="+hex.EncodeToString(func() []byte {
		m := hmac.New(sha256.New, []byte(signingSecret))
		m.Write([]byte("v0:" + plus.Get(slack.HeaderTimestamp) + ":"))
		m.Write(body)
		return m.Sum(nil)
	}()))
	tests := []struct {
		name   string
		h      http.Header
		body   []byte
		secret int
		err    error
	}{
		{"signed now", good, body, 0, nil},
		{"second secret", signed(otherSecret, now, body), body, 1, nil},
		{"4m59s old", signed(signingSecret, now.Add(-4*time.Minute-59*time.Second), body), body, 0, nil},
		{"5 minutes old, the edge", signed(signingSecret, now.Add(-5*time.Minute), body), body, 0, nil},
		{"5m01s old", signed(signingSecret, now.Add(-5*time.Minute-time.Second), body), body, -1, slack.ErrStale},
		{"6 minutes ahead", signed(signingSecret, now.Add(6*time.Minute), body), body, -1, slack.ErrStale},
		{"no headers", http.Header{}, body, -1, slack.ErrNoSignature},
		{"no timestamp", edit(good, slack.HeaderTimestamp, ""), body, -1, slack.ErrNoSignature},
		{"timestamp not a number", edit(good, slack.HeaderTimestamp, "soon"), body, -1, slack.ErrStale},
		{"timestamp moved", edit(good, slack.HeaderTimestamp, strconv.FormatInt(now.Unix()-1, 10)), body, -1, slack.ErrBadSignature},
		{"v1 prefix", edit(good, slack.HeaderSignature, "v1="+strings.TrimPrefix(good.Get(slack.HeaderSignature), "v0=")), body, -1, slack.ErrBadSignature},
		{"not hex", edit(good, slack.HeaderSignature, "v0=zz"), body, -1, slack.ErrBadSignature},
		{"short", edit(good, slack.HeaderSignature, good.Get(slack.HeaderSignature)[:40]), body, -1, slack.ErrBadSignature},
		{"another body", good, append(bytes.Clone(body), ' '), -1, slack.ErrBadSignature},
		{"another secret", signed("not-the-secret", now, body), body, -1, slack.ErrBadSignature},
		// Slack sends each header once, the timestamp as digits: anything
		// else is not Slack's, whatever a proxy in front would make of it.
		{"a forged signature after Slack's", add(good, slack.HeaderSignature, "v0="+strings.Repeat("00", 32)), body, -1, slack.ErrBadSignature},
		{"Slack's signature after a forged one", add(edit(good, slack.HeaderSignature, "v0="+strings.Repeat("00", 32)),
			slack.HeaderSignature, good.Get(slack.HeaderSignature)), body, -1, slack.ErrBadSignature},
		{"two timestamps", add(good, slack.HeaderTimestamp, "1"), body, -1, slack.ErrStale},
		{"timestamp with a sign", plus, body, -1, slack.ErrStale},
	}
	v := newVerifier(t)
	for _, tc := range tests {
		secret, err := v.Verify(tc.h, tc.body)
		if secret != tc.secret || !errors.Is(err, tc.err) {
			t.Errorf("%s: Verify = %d, %v; want %d, %v", tc.name, secret, err, tc.secret, tc.err)
		}
	}
	if _, err := slack.NewVerifier(nil, nil); err == nil {
		t.Error("a verifier without secrets")
	}
	if _, err := slack.NewVerifier([]relay.Secret{" "}, nil); err == nil {
		t.Error("a verifier with a blank secret")
	}
}

// eventsServer runs the handler of POST /slack/events and records what it
// passes on.
type eventsServer struct {
	srv      *httptest.Server
	logs     *relaytest.LogBuffer
	mu       sync.Mutex
	passed   []slack.VerifiedRequest
	rejected []error
}

func newEventsServer(t *testing.T) *eventsServer {
	t.Helper()
	logger, logs := relaytest.NewLogger()
	es := &eventsServer{logs: logs}
	h, err := slack.NewEventsHandler(slack.EventsConfig{
		Verifier: newVerifier(t), MaxBody: 64 << 10, Logger: logger,
		Next: func(w http.ResponseWriter, r *http.Request, req slack.VerifiedRequest) {
			es.mu.Lock()
			es.passed = append(es.passed, req)
			es.mu.Unlock()
			w.WriteHeader(http.StatusOK)
		},
		Rejected: func(err error) {
			es.mu.Lock()
			es.rejected = append(es.rejected, err)
			es.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	es.srv = httptest.NewServer(h)
	t.Cleanup(es.srv.Close)
	return es
}

func (es *eventsServer) post(t *testing.T, method, contentType string, h http.Header, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, es.srv.URL+slack.EventsPath, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := es.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestEventsHandler: Slack's requests, signed and not, at POST
// /slack/events: nothing unsigned goes further than the signature check.
func TestEventsHandler(t *testing.T) {
	t.Parallel()
	verification := slackPayload(t, "url-verification")
	event := slackPayload(t, "event-thread-reply")
	click := []byte("payload=" + url.QueryEscape(string(slackPayload(t, "block-actions-claim"))))
	retried := signed(signingSecret, now, event)
	retried.Set(slack.HeaderRetryNum, "2")
	retried.Set(slack.HeaderRetryReason, "http_timeout")
	const form = "application/x-www-form-urlencoded"
	tests := []struct {
		name        string
		method, ct  string
		h           http.Header
		body        []byte
		status      int
		answer      string // the start of the answer's body
		passed      bool
		rejected    bool
		retry       int
		contentType string
	}{
		{name: "url_verification", method: "POST", ct: "application/json", h: signed(signingSecret, now, verification), body: verification,
			status: 200, answer: "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"},
		{name: "url_verification unsigned", method: "POST", ct: "application/json", body: verification, status: 401, rejected: true},
		{name: "url_verification signed with another secret", method: "POST", ct: "application/json",
			h: signed("not-the-secret", now, verification), body: verification, status: 401, rejected: true},
		{name: "thread reply", method: "POST", ct: "application/json", h: signed(signingSecret, now, event), body: event,
			status: 200, passed: true, contentType: "application/json"},
		{name: "thread reply, Slack's second retry", method: "POST", ct: "application/json; charset=utf-8", h: retried, body: event,
			status: 200, passed: true, retry: 2, contentType: "application/json"},
		{name: "replayed an hour later", method: "POST", ct: "application/json", h: signed(signingSecret, now.Add(-time.Hour), event), body: event,
			status: 401, rejected: true},
		{name: "button click", method: "POST", ct: form, h: signed(otherSecret, now, click), body: click,
			status: 200, passed: true, contentType: form},
		{name: "click with a forged body", method: "POST", ct: form, h: signed(otherSecret, now, click), body: append(bytes.Clone(click), '1'),
			status: 401, rejected: true},
		{name: "GET", method: "GET", status: 405},
		{name: "too large", method: "POST", ct: "application/json", h: http.Header{}, body: bytes.Repeat([]byte("x"), 65<<10), status: 413},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			es := newEventsServer(t)
			status, answer := es.post(t, tc.method, tc.ct, tc.h, tc.body)
			if status != tc.status || !strings.HasPrefix(answer, tc.answer) {
				t.Fatalf("answer %d %q, want %d %q", status, answer, tc.status, tc.answer)
			}
			es.mu.Lock()
			defer es.mu.Unlock()
			if (len(es.passed) == 1) != tc.passed || len(es.passed) > 1 {
				t.Fatalf("passed on %d requests, want passed=%v", len(es.passed), tc.passed)
			}
			if (len(es.rejected) == 1) != tc.rejected {
				t.Fatalf("rejected %v, want rejected=%v", es.rejected, tc.rejected)
			}
			if tc.passed {
				p := es.passed[0]
				if !bytes.Equal(p.Body, tc.body) || p.RetryNum != tc.retry || p.ContentType != tc.contentType {
					t.Fatalf("passed %+v", p)
				}
			}
			relaytest.AssertNoSecret(t, "log", es.logs.String(), signingSecret, otherSecret)
		})
	}
}

// TestRejectionsLoggedThrottled: a flood of forged requests is counted
// each time and logged once per 10 s.
func TestRejectionsLoggedThrottled(t *testing.T) {
	t.Parallel()
	es := newEventsServer(t)
	for range 20 {
		if status, _ := es.post(t, "POST", "application/json", http.Header{}, []byte(`{}`)); status != 401 {
			t.Fatalf("status %d", status)
		}
	}
	if n := strings.Count(es.logs.String(), "refused a Slack request"); n != 1 {
		t.Fatalf("%d log lines for 20 refusals, want 1:\n%s", n, es.logs)
	}
	es.mu.Lock()
	defer es.mu.Unlock()
	if len(es.rejected) != 20 {
		t.Fatalf("%d refusals counted, want 20", len(es.rejected))
	}
}

// FuzzVerify: a request verifies if and only if its signature is Slack's
// HMAC of its timestamp and body under one of the secrets, and its
// timestamp is within 5 minutes of now.
func FuzzVerify(f *testing.F) {
	body := slackPayload(f, "event-thread-reply")
	f.Add(body, slack.Sign(signingSecret, now, body), strconv.FormatInt(now.Unix(), 10))
	f.Add(body, slack.Sign(otherSecret, now, body), strconv.FormatInt(now.Unix()-300, 10))
	f.Add([]byte(""), "v0=", "0")
	f.Add([]byte("{}"), "v0="+strings.Repeat("ab", 32), "+1765000100")
	f.Add([]byte("{}"), " V0=00 ", "-1")
	v := newVerifier(f)
	f.Fuzz(func(t *testing.T, body []byte, sig, ts string) {
		h := http.Header{}
		h.Set(slack.HeaderSignature, sig)
		h.Set(slack.HeaderTimestamp, ts)
		secret, err := v.Verify(h, body)
		if err != nil {
			if secret != -1 {
				t.Fatalf("refused with secret %d", secret)
			}
			return
		}
		// It held: the timestamp is a number within the window, and the
		// signature is the HMAC of exactly this timestamp and body.
		trimmed := strings.TrimSpace(h.Get(slack.HeaderTimestamp))
		sent, perr := strconv.ParseInt(trimmed, 10, 64)
		if perr != nil || strings.TrimLeft(trimmed, "0123456789") != "" {
			t.Fatalf("accepted timestamp %q", ts)
		}
		if d := now.Sub(time.Unix(sent, 0)); d > slack.MaxRequestAge || d < -slack.MaxRequestAge {
			t.Fatalf("accepted a timestamp %s from now", d)
		}
		key := []relay.Secret{signingSecret, otherSecret}[secret]
		m := hmac.New(sha256.New, []byte(key.Reveal()))
		m.Write([]byte("v0:" + trimmed + ":"))
		m.Write(body)
		got, _ := hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(h.Get(slack.HeaderSignature)), "v0="))
		if !hmac.Equal(got, m.Sum(nil)) {
			t.Fatalf("accepted signature %q for timestamp %q", sig, ts)
		}
	})
}

// FuzzEventsHandler: whatever arrives, nothing reaches the next handler
// unless its signature holds, and only a signed url_verification is
// answered with its challenge.
func FuzzEventsHandler(f *testing.F) {
	verification := slackPayload(f, "url-verification")
	f.Add(verification, true, "application/json")
	f.Add(slackPayload(f, "event-thread-reply"), true, "application/json")
	f.Add([]byte(`{"type":"url_verification","challenge":"<script>"}`), false, "application/json")
	f.Add([]byte("payload=%7B%7D"), true, "application/x-www-form-urlencoded")
	v := newVerifier(f)
	f.Fuzz(func(t *testing.T, body []byte, sign bool, contentType string) {
		passed := false
		h, err := slack.NewEventsHandler(slack.EventsConfig{Verifier: v, MaxBody: 1 << 16,
			Next: func(w http.ResponseWriter, _ *http.Request, req slack.VerifiedRequest) {
				passed = true
				if !bytes.Equal(req.Body, body) {
					t.Errorf("passed on another body")
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest("POST", slack.EventsPath, bytes.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		if sign {
			for k, vs := range signed(signingSecret, now, body) {
				req.Header[k] = vs
			}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch {
		case !sign && (passed || rec.Code != http.StatusUnauthorized):
			t.Fatalf("unsigned request: status %d, passed %v", rec.Code, passed)
		case sign && len(body) <= 1<<16 && rec.Code == http.StatusUnauthorized:
			t.Fatalf("signed request refused")
		case rec.Code == http.StatusOK && !passed && !bytes.Contains(body, rec.Body.Bytes()):
			t.Fatalf("answered %q, which is not the request's challenge", rec.Body.String())
		}
	})
}
