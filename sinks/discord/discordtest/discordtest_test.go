package discordtest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/chatrelay/chatrelay/sinks/discord/discordtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var client = &http.Client{Timeout: 5 * time.Second}

type answer struct {
	status int
	header http.Header
	code   int
	body   map[string]any
}

func do(t *testing.T, method, url, auth, body string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &a.body); err != nil {
			t.Fatalf("answer %q: %v", b, err)
		}
		if c, ok := a.body["code"].(float64); ok {
			a.code = int(c)
		}
	}
	return a
}

const ok = `"allowed_mentions":{"parse":[]}`

func embeds(es ...string) string { return `"embeds":[` + strings.Join(es, ",") + `]` }

func TestLimitsAndMentions(t *testing.T) {
	t.Parallel()
	fields := make([]string, 26)
	for i := range fields {
		fields[i] = `{"name":"n","value":"v"}`
	}
	x := func(n int) string { return strings.Repeat("x", n) }
	cases := []struct {
		name   string
		body   string
		status int
		code   int
	}{
		{"valid", `{"content":"hi",` + ok + `}`, 200, 0},
		{"content at limit", `{"content":"` + x(2000) + `",` + ok + `}`, 200, 0},
		{"content over", `{"content":"` + x(2001) + `",` + ok + `}`, 400, discordgo.ErrCodeInvalidFormBody},
		{"emoji count twice", `{"content":"` + strings.Repeat("😀", 1001) + `",` + ok + `}`, 400, discordgo.ErrCodeInvalidFormBody},
		{"title over", `{` + embeds(`{"title":"`+x(257)+`"}`) + `,` + ok + `}`, 400, discordgo.ErrCodeInvalidFormBody},
		{"description over", `{` + embeds(`{"description":"`+x(4097)+`"}`) + `,` + ok + `}`, 400, discordgo.ErrCodeInvalidFormBody},
		{"26 fields", `{` + embeds(`{"fields":[`+strings.Join(fields, ",")+`]}`) + `,` + ok + `}`, 400, discordgo.ErrCodeInvalidFormBody},
		{"empty field value", `{` + embeds(`{"fields":[{"name":"n","value":" "}]}`) + `,` + ok + `}`, 400, discordgo.ErrCodeInvalidFormBody},
		{"total over 6000", `{` + embeds(`{"description":"`+x(4000)+`"}`, `{"description":"`+x(2001)+`"}`) + `,` + ok + `}`, 400, discordgo.ErrCodeInvalidFormBody},
		{"total at 6000", `{` + embeds(`{"description":"`+x(4000)+`"}`, `{"description":"`+x(2000)+`"}`) + `,` + ok + `}`, 200, 0},
		{"11 embeds", `{` + embeds(strings.Split(strings.Repeat(`{"title":"t"};`, 11), ";")[:11]...) + `,` + ok + `}`, 400, discordgo.ErrCodeInvalidFormBody},
		{"no allowed_mentions", `{"content":"hi"}`, 400, discordgo.ErrCodeInvalidFormBody},
		{"parse null", `{"content":"hi","allowed_mentions":{"parse":null}}`, 400, discordgo.ErrCodeInvalidFormBody},
		{"parse everyone", `{"content":"hi","allowed_mentions":{"parse":["everyone"]}}`, 400, discordgo.ErrCodeInvalidFormBody},
		{"one role allowed", `{"content":"<@&1>","allowed_mentions":{"parse":[],"roles":["1"]}}`, 200, 0},
		{"empty", `{` + ok + `}`, 400, discordgo.ErrCodeCannotSendEmptyMessage},
		{"not JSON", `{`, 400, discordgo.ErrCodeTheRequestBodyContainsInvalidJSON},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := discordtest.NewServer(t, discordtest.WithRateLimit(0, 0))
			ch := srv.AddChannel(discordgo.ChannelTypeGuildText)
			for _, target := range []struct{ url, auth string }{
				{srv.AddWebhook(ch) + "?wait=true", ""},
				{srv.APIURL() + "/channels/" + ch + "/messages", "Bot " + srv.Token()},
			} {
				a := do(t, http.MethodPost, target.url, target.auth, tc.body)
				if a.status != tc.status || a.code != tc.code {
					t.Errorf("%s: HTTP %d code %d (%v), want %d code %d", target.url, a.status, a.code, a.body, tc.status, tc.code)
				}
			}
			if want := map[bool]int{true: 2, false: 0}[tc.status == 200]; len(srv.Messages(ch)) != want {
				t.Errorf("%d messages recorded, want %d", len(srv.Messages(ch)), want)
			}
		})
	}
}

func TestBucketLimit(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC))
	srv := discordtest.NewServer(t, discordtest.WithClock(clock))
	hook := srv.AddWebhook(srv.AddChannel(discordgo.ChannelTypeGuildText)) + "?wait=true"
	body := `{"content":"hi",` + ok + `}`
	for n := 1; n <= discordtest.DefaultBucketLimit; n++ {
		a := do(t, http.MethodPost, hook, "", body)
		if a.status != 200 || a.header.Get("X-RateLimit-Remaining") != fmt.Sprint(discordtest.DefaultBucketLimit-n) ||
			a.header.Get("X-RateLimit-Bucket") == "" || a.header.Get("X-RateLimit-Limit") != "5" {
			t.Fatalf("request %d: HTTP %d, headers %v", n, a.status, a.header)
		}
		clock.Advance(300 * time.Millisecond)
	}
	// 1.5 s into a 2 s window: refused for the 0.5 s left.
	a := do(t, http.MethodPost, hook, "", body)
	if a.status != 429 || a.body["retry_after"] != 0.5 || a.body["global"] != false ||
		a.header.Get("Retry-After") != "1" || a.header.Get("X-RateLimit-Reset-After") != "0.500" || a.header.Get("X-RateLimit-Scope") != "user" {
		t.Fatalf("6th request: HTTP %d %v %v", a.status, a.body, a.header)
	}
	if srv.RateLimited() != 1 {
		t.Errorf("RateLimited() = %d", srv.RateLimited())
	}
	clock.Advance(500 * time.Millisecond)
	if a := do(t, http.MethodPost, hook, "", body); a.status != 200 || a.header.Get("X-RateLimit-Remaining") != "4" {
		t.Fatalf("after the window: HTTP %d %v", a.status, a.header)
	}
}

func TestScript(t *testing.T) {
	t.Parallel()
	srv := discordtest.NewServer(t, discordtest.WithRateLimit(0, 0))
	hook := srv.AddWebhook(srv.AddChannel(discordgo.ChannelTypeGuildText)) + "?wait=true"
	body := `{"content":"hi",` + ok + `}`
	srv.ScriptAfter("POST /webhooks/", 1, discordtest.Reply{Status: 404, Code: 10015},
		discordtest.Reply{Status: 429, RetryAfter: 1.5, Header: http.Header{"Retry-After": {"2"}}})
	want := []struct{ status, code int }{{200, 0}, {404, 10015}, {429, 0}, {200, 0}}
	for i, w := range want {
		if a := do(t, http.MethodPost, hook, "", body); a.status != w.status || a.code != w.code {
			t.Errorf("request %d: HTTP %d code %d, want %d %d", i, a.status, a.code, w.status, w.code)
		}
	}
	reqs := srv.Requests()
	if len(reqs) != 4 || reqs[2].Status != 429 || !strings.HasPrefix(reqs[2].Path, "/webhooks/") {
		t.Errorf("recorded %+v", reqs)
	}
}

func TestThreadsAndAuth(t *testing.T) {
	t.Parallel()
	srv := discordtest.NewServer(t, discordtest.WithRateLimit(0, 0))
	text := srv.AddChannel(discordgo.ChannelTypeGuildText)
	forum := srv.AddChannel(discordgo.ChannelTypeGuildForum)
	textHook, forumHook := srv.AddWebhook(text)+"?wait=true", srv.AddWebhook(forum)+"?wait=true"
	msg := `"content":"hi",` + ok
	bot := "Bot " + srv.Token()
	cases := []struct {
		name, method, url, auth, body string
		status, code                  int
	}{
		{"thread_name in a text channel", "POST", textHook, "", `{"thread_name":"t",` + msg + `}`, 400, 220003},
		{"forum without thread", "POST", forumHook, "", `{` + msg + `}`, 400, 220001},
		{"thread_name and thread_id", "POST", forumHook + "&thread_id=1", "", `{"thread_name":"t",` + msg + `}`, 400, 220002},
		{"unknown thread", "POST", forumHook + "&thread_id=1", "", `{` + msg + `}`, 400, discordgo.ErrCodeUnknownChannel},
		{"forum post by webhook", "POST", forumHook, "", `{"thread_name":"t",` + msg + `}`, 200, 0},
		{"unknown webhook", "POST", srv.URL() + "/api/webhooks/1/x", "", `{` + msg + `}`, 404, discordgo.ErrCodeUnknownWebhook},
		{"wrong webhook token", "POST", textHook[:strings.LastIndexByte(textHook, '/')+1] + "wrong?wait=true", "", `{` + msg + `}`, 401, discordgo.ErrCodeInvalidWebhookTokenProvided},
		{"no bot token", "GET", srv.APIURL() + "/channels/" + text, "", "", 401, 0},
		{"wrong bot token", "GET", srv.APIURL() + "/channels/" + text, "Bot nope", "", 401, 0},
		{"get channel", "GET", srv.APIURL() + "/channels/" + forum, bot, "", 200, 0},
		{"message in a forum", "POST", srv.APIURL() + "/channels/" + forum + "/messages", bot, `{` + msg + `}`, 400, discordgo.ErrCodeCannotExecuteActionOnThisChannelType},
		{"forum post by bot", "POST", srv.APIURL() + "/channels/" + forum + "/threads", bot, `{"name":"t","message":{` + msg + `}}`, 201, 0},
		{"thread name too long", "POST", srv.APIURL() + "/channels/" + forum + "/threads", bot, `{"name":"` + strings.Repeat("x", 101) + `","message":{` + msg + `}}`, 400, discordgo.ErrCodeInvalidFormBody},
		{"thread on unknown message", "POST", srv.APIURL() + "/channels/" + text + "/messages/1/threads", bot, `{"name":"t"}`, 404, discordgo.ErrCodeUnknownMessage},
	}
	for _, tc := range cases {
		a := do(t, tc.method, tc.url, tc.auth, tc.body)
		if a.status != tc.status || a.code != tc.code {
			t.Errorf("%s: HTTP %d code %d (%v), want %d %d", tc.name, a.status, a.code, a.body, tc.status, tc.code)
		}
	}
	if got := srv.Threads(forum); len(got) != 2 {
		t.Errorf("forum has %d posts, want 2", len(got))
	}
	// A thread started on a message has the message's id; a second start
	// is refused.
	a := do(t, "POST", srv.APIURL()+"/channels/"+text+"/messages", bot, `{`+msg+`}`)
	id, _ := a.body["id"].(string)
	if a := do(t, "POST", srv.APIURL()+"/channels/"+text+"/messages/"+id+"/threads", bot, `{"name":"t","auto_archive_duration":10080}`); a.status != 201 || a.body["id"] != id {
		t.Fatalf("start thread: HTTP %d %v", a.status, a.body)
	}
	if a := do(t, "POST", srv.APIURL()+"/channels/"+text+"/messages/"+id+"/threads", bot, `{"name":"t"}`); a.code != discordgo.ErrCodeThreadAlreadyCreatedForThisMessage {
		t.Errorf("second start: HTTP %d %v", a.status, a.body)
	}
	a = do(t, "POST", srv.APIURL()+"/channels/"+text+"/messages", bot, `{`+msg+`}`)
	deleted, _ := a.body["id"].(string)
	srv.DeleteMessage(deleted)
	if len(srv.Messages(text)) != 1 {
		t.Errorf("deleted message still listed: %d messages", len(srv.Messages(text)))
	}
	if a := do(t, "POST", srv.APIURL()+"/channels/"+text+"/messages/"+deleted+"/threads", bot, `{"name":"t"}`); a.status != 404 || a.code != discordgo.ErrCodeUnknownMessage {
		t.Errorf("thread on a deleted message: HTTP %d %v", a.status, a.body)
	}
	srv.SetThread(id, true, false, false)
	if a := do(t, "POST", srv.APIURL()+"/channels/"+id+"/messages", bot, `{`+msg+`}`); a.code != discordgo.ErrCodePerformedOperationOnArchivedThread {
		t.Errorf("archived thread: HTTP %d %v", a.status, a.body)
	}
}

// TestHistory: GET /channels/{id}/messages with after and limit answers
// as Discord does: the oldest limit messages after the id, newest first,
// authors as written; a limit out of range is 400 (50035).
func TestHistory(t *testing.T) {
	t.Parallel()
	s := discordtest.NewServer(t, discordtest.WithRateLimit(0, 0))
	ch := s.AddChannel(discordgo.ChannelTypeGuildText)
	dana := discordgo.User{ID: "1310000000000000777", Username: "dana", GlobalName: "Dana K"}
	var ids []string
	for i := range 5 {
		ids = append(ids, s.Write(ch, dana, fmt.Sprintf("message %d", i)).ID)
	}
	s.Write(s.AddChannel(discordgo.ChannelTypeGuildText), dana, "elsewhere")
	auth := "Bot " + s.Token()
	tests := []struct {
		query  string
		status int
		want   []string // ids, as answered
	}{
		{"after=" + ch + "&limit=100", 200, []string{ids[4], ids[3], ids[2], ids[1], ids[0]}},
		{"after=" + ch + "&limit=2", 200, []string{ids[1], ids[0]}},
		{"after=" + ids[1] + "&limit=2", 200, []string{ids[3], ids[2]}},
		{"after=" + ids[4] + "&limit=2", 200, nil},
		{"after=" + ch + "&limit=101", 400, nil},
		{"after=" + ch + "&limit=0", 400, nil},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), "GET", s.APIURL()+"/channels/"+ch+"/messages?"+tt.query, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", auth)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status != 200 {
				return
			}
			var got []discordgo.Message
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			var gotIDs []string
			for _, m := range got {
				gotIDs = append(gotIDs, m.ID)
				if m.ChannelID != ch || m.Author == nil || m.Author.ID != dana.ID || m.Author.GlobalName != "Dana K" {
					t.Errorf("message %+v, author %+v", m, m.Author)
				}
			}
			if fmt.Sprint(gotIDs) != fmt.Sprint(tt.want) {
				t.Fatalf("ids %v, want %v", gotIDs, tt.want)
			}
		})
	}
}
