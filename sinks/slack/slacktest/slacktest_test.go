package slacktest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/chatrelay/chatrelay/sinks/slack/slacktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func client() *http.Client { return &http.Client{Timeout: 10 * time.Second} }

// postWebhook posts a JSON body and returns the status, body and
// Retry-After.
func postWebhook(t *testing.T, u, body string) (int, string, string) {
	t.Helper()
	resp, err := client().Post(u, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("Retry-After")
}

// postMessage calls chat.postMessage as slack-go does (form-encoded) and
// returns the status, "error" and Retry-After.
func postMessage(t *testing.T, srv *slacktest.Server, form url.Values) (int, string, string) {
	t.Helper()
	resp, err := client().PostForm(srv.APIURL()+"chat.postMessage", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	if r.OK == (r.Error != "") {
		t.Fatalf("ok %v with error %q", r.OK, r.Error)
	}
	return resp.StatusCode, r.Error, resp.Header.Get("Retry-After")
}

func section(text string) string {
	b, _ := json.Marshal(map[string]any{"type": "section", "text": map[string]string{"type": "mrkdwn", "text": text}})
	return string(b)
}

func repeat(block string, n int) string {
	return "[" + strings.TrimSuffix(strings.Repeat(block+",", n), ",") + "]"
}

func TestLimits(t *testing.T) {
	t.Parallel()
	ctx := func(n int) string {
		return `{"type":"context","elements":` + repeat(`{"type":"mrkdwn","text":"x"}`, n) + `}`
	}
	fields := func(n int) string {
		return `{"type":"section","fields":` + repeat(`{"type":"mrkdwn","text":"x"}`, n) + `}`
	}
	for _, tc := range []struct {
		name, text, blocks, code string
	}{
		{"ok", "fallback", repeat(section("hi"), 50), ""},
		{"51 blocks", "fallback", repeat(section("hi"), 51), "invalid_blocks"},
		{"section 3000", "x", "[" + section(strings.Repeat("é", 3000)) + "]", ""},
		{"section 3001", "x", "[" + section(strings.Repeat("é", 3001)) + "]", "invalid_blocks"},
		{"header 150", "x", `[{"type":"header","text":{"type":"plain_text","text":"` + strings.Repeat("h", 150) + `"}}]`, ""},
		{"header 151", "x", `[{"type":"header","text":{"type":"plain_text","text":"` + strings.Repeat("h", 151) + `"}}]`, "invalid_blocks"},
		{"header mrkdwn", "x", `[{"type":"header","text":{"type":"mrkdwn","text":"h"}}]`, "invalid_blocks"},
		{"context 10", "x", "[" + ctx(10) + "]", ""},
		{"context 11", "x", "[" + ctx(11) + "]", "invalid_blocks"},
		{"fields 11", "x", "[" + fields(11) + "]", "invalid_blocks"},
		{"blocks text too long", "x", repeat(section(strings.Repeat("a", 3000)), 5), "msg_blocks_too_long"},
		{"no text", "", "", "no_text"},
		{"blocks not a list", "x", `"nope"`, "invalid_blocks_format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := slacktest.NewServer(t)
			form := url.Values{"token": {srv.Token}, "channel": {"C1"}, "text": {tc.text}}
			if tc.blocks != "" {
				form.Set("blocks", tc.blocks)
			}
			if _, code, _ := postMessage(t, srv, form); code != tc.code {
				t.Errorf("chat.postMessage: error %q, want %q", code, tc.code)
			}
			body, _ := json.Marshal(map[string]any{"text": tc.text, "blocks": json.RawMessage(orNull(tc.blocks))})
			status, got, _ := postWebhook(t, srv.WebhookURL(), string(body))
			want, wantStatus := "ok", http.StatusOK
			if tc.code != "" {
				want, wantStatus = tc.code, http.StatusBadRequest
			}
			if status != wantStatus || got != want {
				t.Errorf("webhook: %d %q, want %d %q", status, got, wantStatus, want)
			}
			if wantOK := tc.code == ""; len(srv.Messages()) != map[bool]int{true: 2, false: 0}[wantOK] {
				t.Errorf("%d messages accepted", len(srv.Messages()))
			}
		})
	}
}

func orNull(s string) string {
	if s == "" {
		return "null"
	}
	return s
}

func TestWebhookAnswers(t *testing.T) {
	t.Parallel()
	srv := slacktest.NewServer(t)
	if status, body, _ := postWebhook(t, srv.URL+"/services/T0/B0/wrong", `{"text":"hi"}`); status != 404 || body != "no_service" {
		t.Errorf("unknown webhook: %d %q", status, body)
	}
	if status, body, _ := postWebhook(t, srv.WebhookURL(), `{"text":`); status != 400 || body != "invalid_payload" {
		t.Errorf("broken JSON: %d %q", status, body)
	}
	srv.Script(slacktest.Response{Status: 403, Error: "invalid_token"}, slacktest.Response{}, slacktest.Response{Status: 429, RetryAfter: "1.5"})
	if status, body, _ := postWebhook(t, srv.WebhookURL(), `{"text":"hi"}`); status != 403 || body != "invalid_token" {
		t.Errorf("scripted: %d %q", status, body)
	}
	if status, body, _ := postWebhook(t, srv.WebhookURL(), `{"text":"hi"}`); status != 200 || body != "ok" {
		t.Errorf("zero Response: %d %q, want the usual answer", status, body)
	}
	if status, _, ra := postWebhook(t, srv.WebhookURL(), `{"text":"hi"}`); status != 429 || ra != "1.5" {
		t.Errorf("scripted 429: %d Retry-After %q", status, ra)
	}
	reqs := srv.Requests()
	if len(reqs) != 5 || reqs[2].Error != "invalid_token" || reqs[3].Status != 200 || reqs[4].Status != 429 {
		t.Errorf("recorded %+v", reqs)
	}
}

func TestAPIAnswers(t *testing.T) {
	t.Parallel()
	srv := slacktest.NewServer(t)
	for _, tc := range []struct {
		token, code string
	}{{"", "not_authed"}, {"xoxb-wrong", "invalid_auth"}, {srv.Token, ""}} {
		form := url.Values{"channel": {"C1"}, "text": {"hi"}}
		if tc.token != "" {
			form.Set("token", tc.token)
		}
		if _, code, _ := postMessage(t, srv, form); code != tc.code {
			t.Errorf("token %q: error %q, want %q", tc.token, code, tc.code)
		}
	}
	srv.Script(slacktest.Response{Status: 429, Error: "ratelimited", RetryAfter: "3"})
	if status, code, ra := postMessage(t, srv, url.Values{"token": {srv.Token}, "channel": {"C1"}, "text": {"x"}}); status != 429 || code != "ratelimited" || ra != "3" {
		t.Errorf("scripted 429: %d %q %q", status, code, ra)
	}
}

func TestThreadsAndDeletedRoots(t *testing.T) {
	t.Parallel()
	for _, answer := range []string{"", "thread_not_found", "invalid_thread_ts"} {
		t.Run("answer "+answer, func(t *testing.T) {
			t.Parallel()
			var opts []slacktest.Option
			if answer != "" {
				opts = append(opts, slacktest.WithDeletedRootAnswer(answer))
			}
			srv := slacktest.NewServer(t, opts...)
			post := func(thread string) (slacktest.Message, string) {
				form := url.Values{"token": {srv.Token}, "channel": {"C1"}, "text": {"x"}, "thread_ts": {thread}}
				_, code, _ := postMessage(t, srv, form)
				msgs := srv.Messages()
				return msgs[len(msgs)-1], code
			}
			root, _ := post("")
			if reply, _ := post(root.TS); reply.ThreadTS != root.TS || reply.Broadcast {
				t.Fatalf("reply in thread %q, broadcast %v; want %q, false", reply.ThreadTS, reply.Broadcast, root.TS)
			}
			form := url.Values{"token": {srv.Token}, "channel": {"C1"}, "text": {"x"}, "thread_ts": {root.TS}, "reply_broadcast": {"true"}}
			postMessage(t, srv, form)
			if msgs := srv.Messages(); !msgs[len(msgs)-1].Broadcast || srv.Requests()[len(srv.Requests())-1].ReplyBroadcast != "true" {
				t.Fatal("reply_broadcast=true not recorded")
			}
			srv.DeleteMessage("C1", root.TS)
			before := len(srv.Messages())
			orphan, code := post(root.TS)
			switch {
			case answer == "" && (code != "" || orphan.ThreadTS != ""):
				t.Fatalf("reply to a deleted root: error %q, thread %q; want it at top level", code, orphan.ThreadTS)
			case answer != "" && (code != answer || len(srv.Messages()) != before):
				t.Fatalf("reply to a deleted root: error %q, %d new messages; want %q and none", code, len(srv.Messages())-before, answer)
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClock()
	srv := slacktest.NewServer(t, slacktest.WithRateLimit(time.Second, 1), slacktest.WithClock(clock))
	send := func(channel string) (int, string) {
		status, _, ra := postMessage(t, srv, url.Values{"token": {srv.Token}, "channel": {channel}, "text": {"x"}})
		return status, ra
	}
	if status, _ := send("C1"); status != 200 {
		t.Fatalf("first: %d", status)
	}
	if status, ra := send("C1"); status != 429 || ra != "1" {
		t.Fatalf("second in the same second: %d Retry-After %q, want 429 1", status, ra)
	}
	if status, _ := send("C2"); status != 200 {
		t.Fatalf("another channel: %d; the limit is per channel", status)
	}
	clock.Advance(time.Second)
	if status, _ := send("C1"); status != 200 {
		t.Fatalf("a second later: %d", status)
	}
	if status, _, ra := postWebhook(t, srv.WebhookURL(), `{"text":"a"}`); status != 200 || ra != "" {
		t.Fatalf("webhook: %d", status)
	}
	if status, body, ra := postWebhook(t, srv.WebhookURL(), `{"text":"b"}`); status != 429 || ra != "1" {
		t.Fatalf("webhook burst: %d %q Retry-After %q", status, body, ra)
	}
	if n := len(srv.Messages()); n != 4 {
		t.Fatalf("%d messages accepted, want 4", n)
	}
}

// call calls a Web API method with the bot token and returns the answer's
// "error" ("" when ok) and header.
func call(t *testing.T, srv *slacktest.Server, method string, form url.Values) (string, http.Header, map[string]any) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "POST", srv.APIURL()+method, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+srv.Token)
	resp, err := client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	e, _ := a["error"].(string)
	return e, resp.Header, a
}

// TestTwoWayMethods: users.info, reactions.add and chat.update answer as
// Slack does, and every answer lists the token's scopes.
func TestTwoWayMethods(t *testing.T) {
	t.Parallel()
	srv := slacktest.NewServer(t)
	srv.AddUser(slacktest.User{ID: "U1", Name: "dana", RealName: "Dana Scully", DisplayName: "Dana", Image72: "https://x/72.png"})
	e, h, a := call(t, srv, "users.info", url.Values{"user": {"U1"}})
	user, _ := a["user"].(map[string]any)
	profile, _ := user["profile"].(map[string]any)
	if e != "" || profile["display_name"] != "Dana" || profile["image_72"] != "https://x/72.png" ||
		h.Get("X-OAuth-Scopes") != strings.Join(slacktest.ReplyScopes, ",") {
		t.Fatalf("users.info: %q %v %q", e, a, h.Get("X-OAuth-Scopes"))
	}
	if e, _, _ := call(t, srv, "users.info", url.Values{"user": {"U404"}}); e != "user_not_found" {
		t.Fatalf("unknown user: %q", e)
	}
	react := url.Values{"channel": {"C1"}, "timestamp": {"1.2"}, "name": {"white_check_mark"}}
	for i, want := range []string{"", "already_reacted"} {
		if e, _, _ := call(t, srv, "reactions.add", react); e != want {
			t.Fatalf("reaction %d: %q, want %q", i, e, want)
		}
	}
	srv.DeleteMessage("C1", "9.9")
	if e, _, _ := call(t, srv, "reactions.add", url.Values{"channel": {"C1"}, "timestamp": {"9.9"}, "name": {"x"}}); e != "message_not_found" {
		t.Fatalf("deleted message: %q", e)
	}
	if got := srv.Reactions(); len(got) != 1 || got[0] != (slacktest.Reaction{Channel: "C1", TS: "1.2", Name: "white_check_mark"}) {
		t.Fatalf("reactions %+v", got)
	}
	if _, e, _ := postMessage(t, srv, url.Values{"token": {srv.Token}, "channel": {"C1"}, "text": {"hi"}}); e != "" {
		t.Fatal(e)
	}
	ts := srv.Messages()[0].TS
	button := `[{"type":"actions","block_id":"b","elements":[{"type":"button","action_id":"a","value":"v","text":{"type":"plain_text","text":"Claim"}}]}]`
	for _, tc := range []struct {
		ts, blocks, want string
	}{
		{ts, button, ""},
		{"7.7", button, "message_not_found"},
		{ts, `[{"type":"actions","elements":[{"type":"button","action_id":"a","text":{"type":"mrkdwn","text":"x"}}]}]`, "invalid_blocks"},
		{ts, `[{"type":"actions","elements":[]}]`, "invalid_blocks"},
	} {
		if e, _, _ := call(t, srv, "chat.update", url.Values{"channel": {"C1"}, "ts": {tc.ts}, "text": {"t"}, "blocks": {tc.blocks}}); e != tc.want {
			t.Errorf("chat.update %s %s: %q, want %q", tc.ts, tc.blocks, e, tc.want)
		}
	}
	if m, _ := srv.Message("C1", ts); string(m.Blocks) != button || m.Text != "t" {
		t.Fatalf("updated message %+v", m)
	}
	narrow := slacktest.NewServer(t, slacktest.WithScopes("chat:write"))
	if e, h, _ := call(t, narrow, "reactions.add", react); e != "missing_scope" || h.Get("X-OAuth-Scopes") != "chat:write" {
		t.Fatalf("without reactions:write: %q %q", e, h.Get("X-OAuth-Scopes"))
	}
}
