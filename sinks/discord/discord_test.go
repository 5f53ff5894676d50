package discord_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/discord"
	"github.com/chatrelay/chatrelay/sinks/discord/discordtest"
)

const userAgent = "chatrelay/1.2.3"

// fixture is a fake Discord with one channel, and a sink posting to it.
type fixture struct {
	srv     *discordtest.Server
	channel string
	webhook string // webhook URL (webhook mode)
	cfg     discord.Config
}

// newFixture makes a channel of type typ and a config for it: bot mode, or
// webhook mode with a webhook in the channel.
func newFixture(t *testing.T, bot bool, typ discordgo.ChannelType, opts ...discordtest.Option) *fixture {
	t.Helper()
	f := &fixture{srv: discordtest.NewServer(t, opts...)}
	f.channel = f.srv.AddChannel(typ)
	f.cfg = discord.Config{Name: "chat-monitor"}
	if bot {
		f.cfg.Token, f.cfg.ChannelID, f.cfg.APIURL = relay.Secret(f.srv.Token()), f.channel, f.srv.APIURL()
	} else {
		f.webhook = f.srv.AddWebhook(f.channel)
		f.cfg.WebhookURL = relay.Secret(f.webhook)
	}
	return f
}

func (f *fixture) sink(t *testing.T, deps relay.SinkDeps) *discord.Sink {
	t.Helper()
	if deps.UserAgent == "" {
		deps.UserAgent = userAgent
	}
	s, err := discord.New(f.cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// secrets are what must never appear in an error or a log line.
func (f *fixture) secrets() []string {
	out := []string{f.srv.Token()}
	if f.webhook != "" {
		out = append(out, f.webhook, f.webhook[strings.LastIndexByte(f.webhook, '/')+1:])
	}
	return out
}

// chatEvent is the n-th chat turn of conversation conv.
func chatEvent(t testing.TB, n int, conv, question string) *relay.Event {
	return withID(eventBody(t, chatBody(question, fmt.Sprintf("Answer number %d.", n), 0.9, conv), relay.TopicChat), n)
}

// eventIDs returns the event id in each message's last footer.
func eventIDs(msgs []discordtest.Message) []string {
	var out []string
	for _, m := range msgs {
		e := m.Embeds[len(m.Embeds)-1]
		out = append(out, strings.Fields(e.Footer.Text)[1])
	}
	return out
}

func eventID(n int) string { return fmt.Sprintf("01936f3a-0000-7000-8000-%012d", n) }

func TestConformance(t *testing.T) {
	t.Parallel()
	const (
		webhookPath = "/api/webhooks/123456789012345678/tok3f9a8c7d2eXyZ-secret_part"
		token       = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.bot-token-secret-part"
		channelID   = "223456789012345678"
	)
	// Discord's JSON errors. A real 429 also carries retry_after, which
	// the sink prefers to the header; it is left out here so that the
	// suite's header-only expectations hold (TestRateLimitAnswers covers
	// the body).
	errorBody := func(status int) (string, string) {
		if status == http.StatusTooManyRequests {
			return "application/json", `{"message": "You are being rate limited.", "global": false}`
		}
		return "application/json", fmt.Sprintf(`{"message": "%d: %s", "code": 0}`, status, http.StatusText(status))
	}
	// A message; read as a channel (bot mode's first request) it is a
	// text channel.
	success := func() (string, string) {
		return "application/json", `{"id":"1300000000000000101","channel_id":"` + channelID + `","type":0,"content":"","embeds":[]}`
	}
	t.Run("webhook", func(t *testing.T) {
		t.Parallel()
		relaytest.Conformance(t, relaytest.Target{
			Policy:      relay.PlatformPolicy(),
			SecretPath:  webhookPath,
			ErrorBody:   errorBody,
			SuccessBody: success,
			New: func(t *testing.T, base string, deps relay.SinkDeps) relay.Sink {
				s, err := discord.New(discord.Config{Name: "chat-monitor", WebhookURL: relay.Secret(base + webhookPath)}, deps)
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
		})
	})
	t.Run("bot", func(t *testing.T) {
		t.Parallel()
		relaytest.Conformance(t, relaytest.Target{
			Policy:      relay.PlatformPolicy(),
			Secrets:     []string{token},
			ErrorBody:   errorBody,
			SuccessBody: success,
			New: func(t *testing.T, base string, deps relay.SinkDeps) relay.Sink {
				s, err := discord.New(discord.Config{Name: "chat-monitor", Token: relay.Secret(token), ChannelID: channelID,
					APIURL: base + "/api/v10"}, deps)
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
		})
	})
}

func TestNewRejects(t *testing.T) {
	t.Parallel()
	const tok = "secret-token-value-123"
	const hook = "https://discord.com/api/webhooks/123456789012345678/" + tok
	cases := []struct {
		name string
		cfg  discord.Config
		key  string // the error names this key
	}{
		{"nothing", discord.Config{}, "webhook_url"},
		{"both modes", discord.Config{WebhookURL: hook, Token: tok, ChannelID: "1"}, "webhook_url"},
		{"no scheme", discord.Config{WebhookURL: "discord.com/api/webhooks/1/" + tok}, "webhook_url"},
		{"ftp", discord.Config{WebhookURL: "ftp://discord.com/api/webhooks/1/" + tok}, "webhook_url"},
		{"not a webhook", discord.Config{WebhookURL: "https://discord.com/channels/1/" + tok}, "webhook_url"},
		{"api_url with webhook", discord.Config{WebhookURL: hook, APIURL: "https://proxy.example"}, "api_url"},
		{"bot without channel", discord.Config{Token: tok}, "channel_id"},
		{"channel name", discord.Config{Token: tok, ChannelID: "general"}, "channel_id"},
		{"channel without token", discord.Config{ChannelID: "123"}, "token"},
		{"token with space", discord.Config{Token: tok + " " + tok, ChannelID: "123"}, "token"},
		{"bad api_url", discord.Config{Token: tok, ChannelID: "123", APIURL: "ftp://" + tok}, "api_url"},
		{"mention everyone", discord.Config{WebhookURL: hook, Mention: "@everyone"}, "mention"},
		{"mention name", discord.Config{WebhookURL: hook, Mention: "<@&support>"}, "mention"},
		{"thread name too long", discord.Config{WebhookURL: hook, ThreadName: strings.Repeat("x", 60)}, "thread_name"},
		{"thread name as a template", discord.Config{WebhookURL: hook, ThreadName: "{{.ConversationID}}"}, "thread_name"},
		{"negative timeout", discord.Config{WebhookURL: hook, Timeout: -time.Second}, "timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := discord.New(tc.cfg, relay.SinkDeps{})
			if err == nil {
				t.Fatal("New accepted it")
			}
			if !strings.HasPrefix(err.Error(), tc.key+":") && !strings.Contains(err.Error(), "\n"+tc.key+":") {
				t.Errorf("error %q does not name %s", err, tc.key)
			}
			relaytest.AssertNoSecret(t, "error", err.Error(), tok, hook)
		})
	}
	for name, cfg := range map[string]discord.Config{
		"bot prefix":        {Token: "Bot " + tok, ChannelID: "123"},
		"versioned webhook": {WebhookURL: "http://127.0.0.1:1/api/v10/webhooks/1/" + tok + "/"},
		"user mention":      {WebhookURL: hook, Mention: "<@!123>"},
		"api_url host only": {Token: tok, ChannelID: "123", APIURL: "http://127.0.0.1:9"},
	} {
		if _, err := discord.New(cfg, relay.SinkDeps{}); err != nil {
			t.Errorf("%s: New: %v", name, err)
		}
	}
}

func TestWebhookPosts(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, discordgo.ChannelTypeGuildText, discordtest.WithRateLimit(0, 0))
	s := f.sink(t, relay.SinkDeps{})
	if err := s.Send(t.Context(), eventFile(t, "chat.json", relay.TopicChat)); err != nil {
		t.Fatal(err)
	}
	reqs := f.srv.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	wantPath := strings.TrimPrefix(f.webhook, f.srv.URL()+"/api")
	if r.Method != http.MethodPost || r.Path != wantPath || r.Query.Get("wait") != "true" {
		t.Errorf("%s %s?%s, want POST %s?wait=true", r.Method, r.Path, r.Query.Encode(), wantPath)
	}
	if ua := r.Header.Get("User-Agent"); !strings.HasPrefix(ua, "DiscordBot (") || !strings.HasSuffix(ua, userAgent) {
		t.Errorf("User-Agent %q", ua)
	}
	if r.Header.Get("Authorization") != "" || r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", r.Header)
	}
	if got := f.srv.Messages(f.channel); len(got) != 1 || len(got[0].Embeds) != 1 {
		t.Fatalf("channel has %d messages", len(got))
	}
}

func TestMentionOnlyOnEscalation(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name         string
		mention      string
		topic, file  string
		roles, users []string
	}{
		{"role on escalation", "<@&987654321098765432>", relay.TopicEscalation, "live-chat-escalation.json", []string{"987654321098765432"}, nil},
		{"user on escalation", "<@987654321098765432>", relay.TopicEscalation, "live-chat-escalation.json", nil, []string{"987654321098765432"}},
		{"none on chat", "<@&987654321098765432>", relay.TopicChat, "chat.json", nil, nil},
		{"none configured", "", relay.TopicEscalation, "live-chat-escalation.json", nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, bot := range []bool{false, true} {
				f := newFixture(t, bot, discordgo.ChannelTypeGuildText, discordtest.WithRateLimit(0, 0))
				f.cfg.Mention = tc.mention
				if err := f.sink(t, relay.SinkDeps{}).Send(t.Context(), eventFile(t, tc.file, tc.topic)); err != nil {
					t.Fatal(err)
				}
				// The fake refuses any message whose parse list is not [].
				m := f.srv.Messages(f.channel)[0]
				if !slices.Equal(m.AllowedMentions.Roles, tc.roles) || !slices.Equal(m.AllowedMentions.Users, tc.users) {
					t.Errorf("bot %v: allowed roles %v users %v, want %v %v", bot, m.AllowedMentions.Roles, m.AllowedMentions.Users, tc.roles, tc.users)
				}
				if want := tc.roles != nil || tc.users != nil; want != (m.Content != "") || (want && !strings.HasPrefix(m.Content, tc.mention)) {
					t.Errorf("bot %v: content %q", bot, m.Content)
				}
			}
		})
	}
}

// TestEscalationStandsOut: in bot mode, an escalation or a lead in a
// conversation that has a thread is posted in the channel, not inside the
// thread, with a link to the thread (SPEC §6); the conversation's later
// turns stay in the thread. In a forum, and for an escalation that opens a
// conversation, nothing changes.
func TestEscalationStandsOut(t *testing.T) {
	t.Parallel()
	escalation := func(n int, conv string) *relay.Event {
		ev := withID(eventFile(t, "live-chat-escalation.json", relay.TopicEscalation), n)
		ev.ConversationID = conv
		return ev
	}
	lead := func(n int, conv string) *relay.Event {
		ev := withID(eventFile(t, "lead-submission.json", relay.TopicLead), n)
		ev.ConversationID = conv
		return ev
	}
	t.Run("text channel", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, true, discordgo.ChannelTypeGuildText, discordtest.WithRateLimit(0, 0))
		f.cfg.Mention = "<@&987654321098765432>"
		s := f.sink(t, relay.SinkDeps{})
		for _, ev := range []*relay.Event{
			chatEvent(t, 1, "conv-a", "Hello?"),
			escalation(2, "conv-a"),
			chatEvent(t, 3, "conv-a", "Anyone?"),
			escalation(4, "conv-b"),
			lead(5, "conv-a"),
		} {
			if err := s.Send(t.Context(), ev); err != nil {
				t.Fatalf("event %s: %v", ev.ID, err)
			}
		}
		threads := f.srv.Threads(f.channel)
		if len(threads) != 2 {
			t.Fatalf("%d threads, want 2", len(threads))
		}
		th := threads[0]
		if got := eventIDs(f.srv.Messages(th)); !slices.Equal(got, []string{eventID(3)}) {
			t.Errorf("conv-a's thread holds %v, want only turn 3", got)
		}
		channel := f.srv.Messages(f.channel)
		if got := eventIDs(channel); !slices.Equal(got, []string{eventID(1), eventID(2), eventID(4), eventID(5)}) {
			t.Fatalf("channel holds %v, want turns 1, 2 (the escalation), 4 and 5 (the lead)", got)
		}
		if l := channel[3]; !strings.Contains(l.Content, "New lead") || !strings.Contains(l.Content, "<#"+th+">") ||
			len(l.AllowedMentions.Roles)+len(l.AllowedMentions.Users) != 0 {
			t.Errorf("lead content %q, allowed mentions %+v: want a link to thread %s and no mention", l.Content, l.AllowedMentions, th)
		}
		esc := channel[1]
		if !strings.HasPrefix(esc.Content, f.cfg.Mention) || !strings.Contains(esc.Content, "<#"+th+">") {
			t.Errorf("escalation content %q: want the mention and a link to thread %s", esc.Content, th)
		}
		if !slices.Equal(esc.AllowedMentions.Roles, []string{"987654321098765432"}) || len(esc.AllowedMentions.Users) != 0 {
			t.Errorf("allowed mentions %+v, want the configured role only", esc.AllowedMentions)
		}
		if strings.Contains(channel[2].Content, "<#") {
			t.Errorf("escalation opening a conversation links a thread: %q", channel[2].Content)
		}
	})
	t.Run("forum", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, true, discordgo.ChannelTypeGuildForum, discordtest.WithRateLimit(0, 0))
		s := f.sink(t, relay.SinkDeps{})
		for _, ev := range []*relay.Event{chatEvent(t, 1, "conv-a", "Hello?"), escalation(2, "conv-a")} {
			if err := s.Send(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
		}
		threads := f.srv.Threads(f.channel)
		if len(threads) != 1 {
			t.Fatalf("%d posts, want 1", len(threads))
		}
		if got := eventIDs(f.srv.Messages(threads[0])); !slices.Equal(got, []string{eventID(1), eventID(2)}) {
			t.Errorf("forum post holds %v, want both turns", got)
		}
	})
}

func TestBotThreads(t *testing.T) {
	t.Parallel()
	for _, typ := range []discordgo.ChannelType{discordgo.ChannelTypeGuildText, discordgo.ChannelTypeGuildForum} {
		t.Run(fmt.Sprintf("channel_type_%d", typ), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, true, typ, discordtest.WithRateLimit(0, 0))
			s := f.sink(t, relay.SinkDeps{})
			for _, ev := range []*relay.Event{
				chatEvent(t, 1, "conv-a", "Do you ship to Canada?"),
				chatEvent(t, 2, "conv-a", "And to Mexico?"),
				chatEvent(t, 3, "conv-b", "Is there a free plan?"),
				chatEvent(t, 4, "conv-a", "Thanks!"),
			} {
				if err := s.Send(t.Context(), ev); err != nil {
					t.Fatalf("event %s: %v", ev.ID, err)
				}
			}
			threads := f.srv.Threads(f.channel)
			if len(threads) != 2 {
				t.Fatalf("%d threads, want 2", len(threads))
			}
			a, b := threads[0], threads[1]
			want := map[string][]string{a: {eventID(2), eventID(4)}, b: nil}
			wantChannel := []string{eventID(1), eventID(3)}
			if typ == discordgo.ChannelTypeGuildForum {
				// The first turn is the post itself, inside the thread.
				want = map[string][]string{a: {eventID(1), eventID(2), eventID(4)}, b: {eventID(3)}}
				wantChannel = nil
			}
			if got := eventIDs(f.srv.Messages(f.channel)); !slices.Equal(got, wantChannel) {
				t.Errorf("channel has %v, want %v", got, wantChannel)
			}
			for th, ids := range want {
				if got := eventIDs(f.srv.Messages(th)); !slices.Equal(got, ids) {
					t.Errorf("thread %s has %v, want %v", th, got, ids)
				}
			}
			gets := 0
			for _, r := range f.srv.Requests() {
				if r.Header.Get("Authorization") != "Bot "+f.srv.Token() {
					t.Errorf("%s %s without the bot token", r.Method, r.Path)
				}
				if r.Method == http.MethodGet {
					gets++
				}
				if strings.HasSuffix(r.Path, "/threads") {
					var ts struct{ Name string }
					_ = json.Unmarshal(r.Body, &ts)
					if !strings.HasPrefix(ts.Name, "Chat · ") {
						t.Errorf("thread name %q", ts.Name)
					}
				}
			}
			if gets != 1 {
				t.Errorf("%d GET requests, want one (the channel type is cached)", gets)
			}
		})
	}
}

func TestWebhookForumThreads(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, discordgo.ChannelTypeGuildForum, discordtest.WithRateLimit(0, 0))
	f.cfg.ThreadName = "Support"
	s := f.sink(t, relay.SinkDeps{})
	for _, ev := range []*relay.Event{
		chatEvent(t, 1, "conv-a", "Do you ship to Canada?"),
		chatEvent(t, 2, "conv-a", "And to Mexico?"),
		chatEvent(t, 3, "conv-b", "Is there a free plan?"),
	} {
		if err := s.Send(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	threads := f.srv.Threads(f.channel)
	if len(threads) != 2 {
		t.Fatalf("%d posts, want 2", len(threads))
	}
	reqs := f.srv.Requests()
	var first struct {
		ThreadName string `json:"thread_name"`
	}
	_ = json.Unmarshal(reqs[0].Body, &first)
	if first.ThreadName != "Support · Do you ship to Canada?" || reqs[0].Query.Has("thread_id") {
		t.Errorf("first post: thread_name %q, thread_id %q", first.ThreadName, reqs[0].Query.Get("thread_id"))
	}
	if got := reqs[1].Query.Get("thread_id"); got != threads[0] || strings.Contains(string(reqs[1].Body), "thread_name") {
		t.Errorf("second turn: thread_id %q, want %s and no thread_name", got, threads[0])
	}
	if got := eventIDs(f.srv.Messages(threads[0])); !slices.Equal(got, []string{eventID(1), eventID(2)}) {
		t.Errorf("first post holds %v", got)
	}
}

func TestThreadsSurviveRestart(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		bot  bool
		typ  discordgo.ChannelType
	}{
		{"bot", true, discordgo.ChannelTypeGuildText},
		{"webhook forum", false, discordgo.ChannelTypeGuildForum},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tc.bot, tc.typ, discordtest.WithRateLimit(0, 0))
			if !tc.bot {
				f.cfg.ThreadName = "Support"
			}
			dir := t.TempDir()
			for i, ev := range []*relay.Event{chatEvent(t, 1, "conv-a", "Hello?"), chatEvent(t, 2, "conv-a", "Still there?")} {
				// A new store and a new sink for each event: a restart.
				st, err := bolt.Open(dir, bolt.Options{})
				if err != nil {
					t.Fatal(err)
				}
				err = f.sink(t, relay.SinkDeps{KV: st.KV("chat-monitor")}).Send(t.Context(), ev)
				if cerr := st.Close(); cerr != nil {
					t.Fatal(cerr)
				}
				if err != nil {
					t.Fatalf("event %d: %v", i+1, err)
				}
			}
			threads := f.srv.Threads(f.channel)
			if len(threads) != 1 {
				t.Fatalf("%d threads after the restart, want 1", len(threads))
			}
			if got := eventIDs(f.srv.Messages(threads[0])); !slices.Contains(got, eventID(2)) {
				t.Errorf("thread holds %v, want the second turn in it", got)
			}
		})
	}
}

func TestThreadGoneStartsAnother(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name                     string
		bot                      bool
		archived, locked, delete bool
	}{
		{"bot archived", true, true, false, false},
		{"bot locked", true, true, true, false},
		{"bot deleted", true, false, false, true},
		{"webhook locked", false, true, true, false},
		{"webhook deleted", false, false, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			typ := discordgo.ChannelTypeGuildText
			if !tc.bot {
				typ = discordgo.ChannelTypeGuildForum
			}
			f := newFixture(t, tc.bot, typ, discordtest.WithRateLimit(0, 0))
			f.cfg.ThreadName = "Support"
			s := f.sink(t, relay.SinkDeps{})
			if err := s.Send(t.Context(), chatEvent(t, 1, "conv-a", "Hello?")); err != nil {
				t.Fatal(err)
			}
			old := f.srv.Threads(f.channel)[0]
			f.srv.SetThread(old, tc.archived, tc.locked, tc.delete)
			for n := 2; n <= 3; n++ {
				if err := s.Send(t.Context(), chatEvent(t, n, "conv-a", "Still there?")); err != nil {
					t.Fatalf("event %d: %v", n, err)
				}
			}
			var fresh string
			for _, th := range f.srv.Threads(f.channel) {
				if th != old {
					fresh = th
				}
			}
			if fresh == "" {
				t.Fatal("no new thread")
			}
			got := append(eventIDs(f.srv.Messages(f.channel)), eventIDs(f.srv.Messages(fresh))...)
			if !slices.Contains(got, eventID(2)) || !slices.Contains(eventIDs(f.srv.Messages(fresh)), eventID(3)) {
				t.Errorf("turns 2 and 3 are not in the new thread: channel+thread hold %v", got)
			}
		})
	}
}

// TestRootDeleted: the message a conversation's thread is to start from is
// deleted before the thread starts (Discord: 404, code 10008 Unknown
// Message). That is no reason to mark the whole sink down: the turn is
// done (or its next part opens a new thread), and the conversation's next
// turn opens a new thread.
func TestRootDeleted(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		long   bool // three messages: the second opens the new thread
		before bool // deleted before the retry; else between post and thread start
	}{
		{"deleted before the retry", false, true},
		{"long answer deleted before the retry", true, true},
		{"deleted between post and thread start", false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, true, discordgo.ChannelTypeGuildText, discordtest.WithRateLimit(0, 0))
			s := f.sink(t, relay.SinkDeps{})
			ev := chatEvent(t, 1, "conv-a", "Hello?")
			if tc.long {
				ev = withID(eventBody(t, chatBody("Tell me everything.", longAnswer(), 0.9, "conv-a"), relay.TopicChat), 1)
			}
			startThread := "POST /channels/" + f.channel + "/messages/"
			if tc.before {
				f.srv.Script(startThread, discordtest.Reply{Status: 503})
				if err := s.Send(t.Context(), ev); err == nil {
					t.Fatal("thread start failed, but Send succeeded")
				}
				f.srv.DeleteMessage(f.srv.Messages(f.channel)[0].ID)
			} else {
				f.srv.Script(startThread, discordtest.Reply{Status: 404, Code: discordgo.ErrCodeUnknownMessage, Message: "Unknown Message"})
			}
			if err := s.Send(t.Context(), ev); err != nil {
				t.Fatalf("Send after the root was deleted: %v", err)
			}
			if tc.long {
				// Parts 2 and 3 are posted once: part 2 in the channel,
				// where it starts the new thread, part 3 in it.
				msgs := f.srv.Messages(f.channel)
				th := f.srv.Threads(f.channel)
				if len(th) != 1 || len(msgs) != 1 || th[0] != msgs[0].ID || !strings.HasSuffix(msgs[0].Embeds[len(msgs[0].Embeds)-1].Footer.Text, "part 2 of 3") {
					t.Fatalf("threads %v, channel %d messages: want part 2 in the channel with a new thread on it", th, len(msgs))
				}
				if got := f.srv.Messages(th[0]); len(got) != 1 || !strings.HasSuffix(got[0].Embeds[len(got[0].Embeds)-1].Footer.Text, "part 3 of 3") {
					t.Fatalf("new thread holds %d messages, want part 3", len(got))
				}
				return
			}
			if err := s.Send(t.Context(), chatEvent(t, 2, "conv-a", "Still there?")); err != nil {
				t.Fatalf("next turn: %v", err)
			}
			var second string
			for _, m := range f.srv.Messages(f.channel) {
				if eventIDs([]discordtest.Message{m})[0] == eventID(2) {
					second = m.ID
				}
			}
			if th := f.srv.Threads(f.channel); second == "" || !slices.Equal(th, []string{second}) {
				t.Fatalf("threads %v: want one, started on the next turn's message %q", th, second)
			}
			if err := s.Send(t.Context(), chatEvent(t, 3, "conv-a", "And now?")); err != nil {
				t.Fatal(err)
			}
			if got := eventIDs(f.srv.Messages(second)); !slices.Equal(got, []string{eventID(3)}) {
				t.Errorf("new thread holds %v, want turn 3", got)
			}
		})
	}
}

// strictKV is an in-memory relay.KV that, like a real store, refuses work
// on a context that has ended.
type strictKV struct {
	mu sync.Mutex
	m  map[string]string
}

func (k *strictKV) Get(ctx context.Context, key string) (string, bool, error) {
	if err := ctx.Err(); err != nil {
		return "", false, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.m[key]
	return v, ok, nil
}

func (k *strictKV) Put(ctx context.Context, key, value string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[string]string{}
	}
	k.m[key] = value
	return nil
}

// cancelAfter is a transport that, once Discord has answered a POST whose
// path contains match (the answer read whole), cancels the send's context:
// the per-send deadline firing just after a message went out.
type cancelAfter struct {
	match  string
	cancel context.CancelFunc
}

func (c cancelAfter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil || r.Method != http.MethodPost || !strings.Contains(r.URL.Path, c.match) {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	c.cancel()
	return resp, nil
}

// TestRecordsOutliveTheSend: what the sink records after a post (the
// conversation's thread, a turn's progress) is written even when the
// send's context ends right after Discord answered; otherwise the retry
// posts again and the conversation gets a second thread.
func TestRecordsOutliveTheSend(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		bot    bool
		typ    discordgo.ChannelType
		thread string // webhook mode: thread_name (forum)
		match  string // the POST after whose answer the context ends
		long   bool   // a turn of three messages
		packed bool
	}{
		{name: "bot forum post", bot: true, typ: discordgo.ChannelTypeGuildForum, match: "/threads"},
		{name: "webhook forum post", typ: discordgo.ChannelTypeGuildForum, thread: "Support", match: "/webhooks/"},
		{name: "bot thread root", bot: true, typ: discordgo.ChannelTypeGuildText, match: "/messages"},
		{name: "webhook long answer", typ: discordgo.ChannelTypeGuildText, match: "/webhooks/", long: true},
		{name: "packed forum post", bot: true, typ: discordgo.ChannelTypeGuildForum, match: "/threads", packed: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tc.bot, tc.typ, discordtest.WithRateLimit(0, 0))
			f.cfg.ThreadName = tc.thread
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			s := f.sink(t, relay.SinkDeps{KV: &strictKV{}, Transport: cancelAfter{match: tc.match, cancel: cancel}})
			first := chatEvent(t, 1, "conv-a", "Hello?")
			if tc.long {
				first = withID(eventBody(t, chatBody("Tell me everything.", longAnswer(), 0.9, "conv-a"), relay.TopicChat), 1)
			}
			// The dispatcher: a failed send is retried on a new context.
			if tc.packed {
				if _, _, err := s.SendPacked(ctx, []*relay.Event{first, chatEvent(t, 2, "conv-b", "Hi?")}); err != nil {
					t.Fatalf("SendPacked: %v", err)
				}
			} else if err := s.Send(ctx, first); err != nil {
				if err := s.Send(t.Context(), first); err != nil {
					t.Fatalf("retry: %v", err)
				}
			}
			if err := s.Send(t.Context(), chatEvent(t, 3, "conv-a", "Still there?")); err != nil {
				t.Fatalf("next turn: %v", err)
			}
			if tc.long {
				var footers []string
				for _, m := range f.srv.Messages(f.channel) {
					footers = append(footers, m.Embeds[len(m.Embeds)-1].Footer.Text)
				}
				want := []string{"event " + first.ID + " · part 1 of 3", "event " + first.ID + " · part 2 of 3", "event " + first.ID + " · part 3 of 3", "event " + eventID(3)}
				if !slices.Equal(footers, want) {
					t.Errorf("posted %q, want each part once: %q", footers, want)
				}
				return
			}
			threads := f.srv.Threads(f.channel)
			if len(threads) != 1 {
				t.Fatalf("%d threads, want 1: the retry or the next turn opened another", len(threads))
			}
			if got := eventIDs(f.srv.Messages(threads[0])); !slices.Contains(got, eventID(3)) {
				t.Errorf("thread holds %v, want the next turn in it", got)
			}
			if n := len(f.srv.Messages("")); n != 2 {
				t.Errorf("%d messages, want 2: something was posted twice", n)
			}
		})
	}
}

func TestErrorClasses(t *testing.T) {
	t.Parallel()
	html := "<!DOCTYPE html><html><body>502 Bad Gateway</body></html>"
	cases := []struct {
		name     string
		bot      bool
		forum    bool
		match    string
		reply    discordtest.Reply
		class    relay.Class
		reason   relay.Reason
		after    time.Duration
		contains string
	}{
		{"unknown webhook", false, false, "POST", discordtest.Reply{Status: 404, Code: 10015}, relay.ClassBroken, relay.ReasonGone, 0, "webhook_url"},
		{"invalid webhook token", false, false, "POST", discordtest.Reply{Status: 401, Code: 50027}, relay.ClassBroken, relay.ReasonAuth, 0, "copy the webhook URL"},
		{"webhook 404 without code", false, false, "POST", discordtest.Reply{Status: 404}, relay.ClassBroken, relay.ReasonGone, 0, "webhook_url"},
		{"webhook forbidden", false, false, "POST", discordtest.Reply{Status: 403, Code: 50013}, relay.ClassBroken, relay.ReasonAuth, 0, "webhook_url"},
		{"unknown channel", true, false, "GET /channels/", discordtest.Reply{Status: 404, Code: 10003}, relay.ClassBroken, relay.ReasonGone, 0, "channel_id"},
		{"bad bot token", true, false, "GET /channels/", discordtest.Reply{Status: 401, Message: "401: Unauthorized"}, relay.ClassBroken, relay.ReasonAuth, 0, "token"},
		{"missing access", true, false, "POST /channels/", discordtest.Reply{Status: 403, Code: 50001}, relay.ClassBroken, relay.ReasonAuth, 0, "Send Messages"},
		{"missing permissions", true, false, "POST /channels/", discordtest.Reply{Status: 403, Code: 50013}, relay.ClassBroken, relay.ReasonAuth, 0, "Create Public Threads"},
		{"invalid form body", false, false, "POST", discordtest.Reply{Status: 400, Code: 50035, Message: "Invalid Form Body"}, relay.ClassPermanent, relay.ReasonClientError, 0, "Invalid Form Body"},
		{"empty message", true, false, "POST /channels/", discordtest.Reply{Status: 400, Code: 50006}, relay.ClassPermanent, relay.ReasonClientError, 0, "code 50006"},
		{"too large", false, false, "POST", discordtest.Reply{Status: 413, Code: 40005}, relay.ClassPermanent, relay.ReasonClientError, 0, "code 40005"},
		{"forum needs thread_name", false, false, "POST", discordtest.Reply{Status: 400, Code: 220001}, relay.ClassPermanent, relay.ReasonClientError, 0, "set thread_name"},
		{"thread_name and thread_id", false, false, "POST", discordtest.Reply{Status: 400, Code: 220002}, relay.ClassPermanent, relay.ReasonClientError, 0, "code 220002"},
		{"thread_name outside forum", false, false, "POST", discordtest.Reply{Status: 400, Code: 220003}, relay.ClassPermanent, relay.ReasonClientError, 0, "remove thread_name"},
		{"other 400", false, false, "POST", discordtest.Reply{Status: 400}, relay.ClassPermanent, relay.ReasonClientError, 0, "HTTP 400"},
		{"channel write limit", true, false, "POST /channels/", discordtest.Reply{Status: 429, Code: 20028, RetryAfter: 10}, relay.ClassRateLimited, relay.ReasonRateLimited, 10 * time.Second, "code 20028"},
		{"overloaded", false, false, "POST", discordtest.Reply{Status: 503, Code: 130000}, relay.ClassRetryable, relay.ReasonServerError, 0, "code 130000"},
		{"server error", true, false, "POST /channels/", discordtest.Reply{Status: 500}, relay.ClassRetryable, relay.ReasonServerError, 0, "HTTP 500"},
		{"bad gateway page", false, false, "POST", discordtest.Reply{Status: 502, Body: html}, relay.ClassRetryable, relay.ReasonServerError, 0, "502 Bad Gateway"},
		{"forum post refused", true, true, "POST /channels/", discordtest.Reply{Status: 400, Code: 50035}, relay.ClassPermanent, relay.ReasonClientError, 0, "start forum post"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			typ := discordgo.ChannelTypeGuildText
			if tc.forum {
				typ = discordgo.ChannelTypeGuildForum
			}
			f := newFixture(t, tc.bot, typ, discordtest.WithRateLimit(0, 0))
			f.srv.Script(tc.match, tc.reply)
			logger, logs := relaytest.NewLogger()
			err := f.sink(t, relay.SinkDeps{Logger: logger}).Send(t.Context(), chatEvent(t, 1, "conv-a", "Hi"))
			if err == nil {
				t.Fatal("Send succeeded")
			}
			class, after := relay.Classify(err)
			if class != tc.class || relay.ReasonOf(err) != tc.reason || after != tc.after {
				t.Errorf("class %s, reason %s, after %s; want %s, %s, %s (%v)", class, relay.ReasonOf(err), after, tc.class, tc.reason, tc.after, err)
			}
			if !strings.Contains(err.Error(), tc.contains) || !strings.HasPrefix(err.Error(), `discord sink "chat-monitor": `) {
				t.Errorf("error %q: want it to name the sink and say %q", err, tc.contains)
			}
			var ae *discord.APIError
			if !errors.As(err, &ae) || ae.Status != tc.reply.Status || ae.Code != tc.reply.Code {
				t.Errorf("errors.As APIError: %+v", ae)
			}
			relaytest.AssertNoSecret(t, "error", err.Error(), f.secrets()...)
			relaytest.AssertNoSecret(t, "log", logs.String(), f.secrets()...)
		})
	}
}

func TestRateLimitAnswers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		reply  discordtest.Reply
		class  relay.Class
		after  time.Duration
		global bool
	}{
		{"body beats header", discordtest.Reply{Status: 429, RetryAfter: 0.35, Header: http.Header{"Retry-After": {"1"}}}, relay.ClassRateLimited, 350 * time.Millisecond, false},
		{"global", discordtest.Reply{Status: 429, RetryAfter: 2.5, Global: true, Header: http.Header{"Retry-After": {"3"}, "X-Ratelimit-Global": {"true"}}}, relay.ClassRateLimited, 2500 * time.Millisecond, true},
		{"html page with header", discordtest.Reply{Status: 429, Body: "<html>rate limited</html>", Header: http.Header{"Retry-After": {"3"}}}, relay.ClassRateLimited, 3 * time.Second, false},
		{"reset-after only", discordtest.Reply{Status: 429, Body: `{"message":"slow down"}`, Header: http.Header{"X-Ratelimit-Reset-After": {"1.25"}}}, relay.ClassRateLimited, 1250 * time.Millisecond, false},
		{"no delay given", discordtest.Reply{Status: 429, Body: "<html>rate limited</html>"}, relay.ClassRetryable, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, false, discordgo.ChannelTypeGuildText, discordtest.WithRateLimit(0, 0))
			f.srv.Script("POST", tc.reply)
			err := f.sink(t, relay.SinkDeps{}).Send(t.Context(), chatEvent(t, 1, "conv-a", "Hi"))
			class, after := relay.Classify(err)
			if class != tc.class || after != tc.after || relay.ReasonOf(err) != relay.ReasonRateLimited {
				t.Fatalf("class %s after %s reason %s, want %s after %s (%v)", class, after, relay.ReasonOf(err), tc.class, tc.after, err)
			}
			if tc.global != strings.Contains(err.Error(), "global") {
				t.Errorf("error %q: global %v", err, tc.global)
			}
			relaytest.AssertNoSecret(t, "error", err.Error(), f.secrets()...)
		})
	}
}

// holds records the holds that sends reported.
type holds struct {
	mu sync.Mutex
	at []time.Time
}

// post sends ev to s as the dispatcher does, noting a hold it reports.
func (h *holds) post(t *testing.T, s *discord.Sink, ev *relay.Event) error {
	t.Helper()
	rep, err := relay.Post(t.Context(), s, ev)
	if !rep.HoldUntil.IsZero() {
		h.mu.Lock()
		h.at = append(h.at, rep.HoldUntil)
		h.mu.Unlock()
	}
	return err
}

func (h *holds) list() []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.at)
}

func TestRateLimitHeadersHold(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	t.Run("reset-after", func(t *testing.T) {
		t.Parallel()
		clock := clockwork.NewFakeClockAt(start)
		f := newFixture(t, false, discordgo.ChannelTypeGuildText, discordtest.WithClock(clock))
		h := &holds{}
		s := f.sink(t, relay.SinkDeps{Clock: clock})
		for n := 1; n <= discordtest.DefaultBucketLimit; n++ {
			clock.Advance(100 * time.Millisecond)
			if err := h.post(t, s, chatEvent(t, n, fmt.Sprintf("conv-%d", n), "Hi")); err != nil {
				t.Fatal(err)
			}
			// Only the answer that empties the bucket holds the sink,
			// until the bucket refills: 2 s after its first request.
			want := []time.Time(nil)
			if n == discordtest.DefaultBucketLimit {
				want = []time.Time{start.Add(100*time.Millisecond + discordtest.DefaultBucketWindow)}
			}
			if got := h.list(); !slices.Equal(got, want) {
				t.Fatalf("after request %d: holds %v, want %v", n, got, want)
			}
		}
	})
	t.Run("reset only", func(t *testing.T) {
		t.Parallel()
		clock := clockwork.NewFakeClockAt(start)
		f := newFixture(t, false, discordgo.ChannelTypeGuildText, discordtest.WithClock(clock))
		reset := start.Add(1500 * time.Millisecond)
		f.srv.Script("POST", discordtest.Reply{Status: 200, Header: http.Header{
			"X-Ratelimit-Remaining": {"0"}, "X-Ratelimit-Reset": {fmt.Sprintf("%.3f", float64(reset.UnixMilli())/1000)},
		}})
		h := &holds{}
		if err := h.post(t, f.sink(t, relay.SinkDeps{Clock: clock}), chatEvent(t, 1, "c", "Hi")); err != nil {
			t.Fatal(err)
		}
		if got := h.list(); len(got) != 1 || !got[0].Equal(reset) {
			t.Fatalf("holds %v, want [%v]", got, reset)
		}
	})
}

// admission waits as the dispatcher does before a send: past the sink's
// hold, then for a slot of its pace.
type admission struct {
	pace *relay.Pace
	hold *relay.Hold
}

func (a admission) wait(ctx context.Context) error {
	if err := a.hold.Wait(ctx); err != nil {
		return err
	}
	return a.pace.Wait(ctx)
}

// acquire waits until a may send, moving the fake clock on in small steps
// whenever a is waiting on it.
func acquire(t *testing.T, clock *clockwork.FakeClock, a admission) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- a.wait(t.Context()) }()
	for {
		waiting := make(chan error, 1)
		ctx, cancel := context.WithCancel(t.Context())
		go func() { waiting <- clock.BlockUntilContext(ctx, 1) }()
		select {
		case err := <-done:
			cancel()
			<-waiting
			if err != nil {
				t.Fatal(err)
			}
			return
		case err := <-waiting:
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			clock.Advance(5 * time.Millisecond)
		}
	}
}

func TestPacingAvoids429(t *testing.T) {
	t.Parallel()
	const sends = 23
	cases := []struct {
		name     string
		pace     bool // the sink's declared pace
		throttle bool // the holds sends report (rate-limit headers) hold the pacer
		want429  bool
	}{
		{"declared pace and headers", true, true, false},
		{"declared pace alone", true, false, false},
		{"headers alone", false, true, false},
		{"neither (control: the fake does refuse)", false, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, bot := range []bool{false, true} {
				clock := clockwork.NewFakeClockAt(time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC))
				f := newFixture(t, bot, discordgo.ChannelTypeGuildText, discordtest.WithClock(clock))
				s := f.sink(t, relay.SinkDeps{Clock: clock})
				gate := admission{pace: relay.NewPace(clock, 0, 0), hold: relay.NewHold(clock)}
				if tc.pace {
					every, burst := s.Pace()
					gate.pace = relay.NewPace(clock, every, burst)
				}
				var errs []error
				for n := 1; n <= sends; n++ {
					acquire(t, clock, gate)
					// Bot mode: one conversation, so every turn after the
					// first goes to the same thread's bucket.
					rep, err := relay.Post(t.Context(), s, chatEvent(t, n, "conv-steady", "Hi"))
					if err != nil {
						errs = append(errs, err)
					}
					if tc.throttle && !rep.HoldUntil.IsZero() {
						gate.hold.Until(rep.HoldUntil) // as the dispatcher does
					}
				}
				got429 := f.srv.RateLimited() > 0
				if got429 != tc.want429 {
					t.Errorf("bot %v: %d requests refused with 429 (errors %v), want 429s: %v", bot, f.srv.RateLimited(), errs, tc.want429)
				}
				if !tc.want429 && len(errs) > 0 {
					t.Errorf("bot %v: %v", bot, errs)
				}
			}
		})
	}
}

func TestPartsResume(t *testing.T) {
	t.Parallel()
	long := eventBody(t, chatBody("Tell me everything about shipping to Canada.", longAnswer(), 0.9, "conv-long"), relay.TopicChat)
	t.Run("webhook long answer", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, false, discordgo.ChannelTypeGuildText, discordtest.WithRateLimit(0, 0))
		f.srv.ScriptAfter("POST", 2, discordtest.Reply{Status: 500})
		s := f.sink(t, relay.SinkDeps{})
		if err := s.Send(t.Context(), long); err == nil {
			t.Fatal("third part failed, but Send succeeded")
		}
		if n := len(f.srv.Messages(f.channel)); n != 2 {
			t.Fatalf("%d parts posted before the failure, want 2", n)
		}
		for range 2 { // the retry, and a redelivery after success
			if err := s.Send(t.Context(), long); err != nil {
				t.Fatal(err)
			}
		}
		var footers []string
		for _, m := range f.srv.Messages(f.channel) {
			footers = append(footers, m.Embeds[len(m.Embeds)-1].Footer.Text)
		}
		want := []string{"event " + long.ID + " · part 1 of 3", "event " + long.ID + " · part 2 of 3", "event " + long.ID + " · part 3 of 3"}
		if !slices.Equal(footers, want) {
			t.Errorf("posted %q, want each part once: %q", footers, want)
		}
	})
	t.Run("bot thread start", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, true, discordgo.ChannelTypeGuildText, discordtest.WithRateLimit(0, 0))
		f.srv.Script("POST /channels/"+f.channel+"/messages/", discordtest.Reply{Status: 503})
		s := f.sink(t, relay.SinkDeps{})
		ev := chatEvent(t, 1, "conv-a", "Hello?")
		if err := s.Send(t.Context(), ev); err == nil {
			t.Fatal("thread start failed, but Send succeeded")
		}
		if err := s.Send(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
		msgs := f.srv.Messages(f.channel)
		threads := f.srv.Threads(f.channel)
		if len(msgs) != 1 || len(threads) != 1 || threads[0] != msgs[0].ID {
			t.Fatalf("%d messages, threads %v: want the one message and a thread started on it", len(msgs), threads)
		}
		if err := s.Send(t.Context(), chatEvent(t, 2, "conv-a", "Hello again")); err != nil {
			t.Fatal(err)
		}
		if got := eventIDs(f.srv.Messages(threads[0])); !slices.Equal(got, []string{eventID(2)}) {
			t.Errorf("thread holds %v", got)
		}
	})
	t.Run("bot long answer in a thread", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, true, discordgo.ChannelTypeGuildText, discordtest.WithRateLimit(0, 0))
		s := f.sink(t, relay.SinkDeps{})
		ev := withID(eventBody(t, chatBody("Tell me everything.", longAnswer(), 0.9, "conv-a"), relay.TopicChat), 1)
		// Part 1 goes to the channel and starts the thread; part 3 fails.
		f.srv.ScriptAfter("POST /channels/", 3, discordtest.Reply{Status: 502})
		if err := s.Send(t.Context(), ev); err == nil {
			t.Fatal("Send succeeded")
		}
		if err := s.Send(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
		th := f.srv.Threads(f.channel)
		if len(th) != 1 || len(f.srv.Messages(f.channel)) != 1 || len(f.srv.Messages(th[0])) != 2 {
			t.Fatalf("threads %v, %d messages in the channel: want 1 root and 2 parts in its thread", th, len(f.srv.Messages(f.channel)))
		}
	})
}

func TestPacking(t *testing.T) {
	t.Parallel()
	t.Run("webhook", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, false, discordgo.ChannelTypeGuildText, discordtest.WithRateLimit(0, 0))
		s := f.sink(t, relay.SinkDeps{})
		evs := []*relay.Event{chatEvent(t, 1, "a", "One?"), chatEvent(t, 2, "b", "Two?"), chatEvent(t, 3, "c", "Three?")}
		for _, ev := range evs {
			if !s.CanPack(t.Context(), ev) {
				t.Fatalf("CanPack(%s) false in webhook mode", ev.ID)
			}
		}
		if n, _, err := s.SendPacked(t.Context(), evs); err != nil || n != 3 {
			t.Fatal(n, err)
		}
		msgs := f.srv.Messages(f.channel)
		if len(msgs) != 1 || len(msgs[0].Embeds) != 3 {
			t.Fatalf("%d messages, want one with 3 embeds", len(msgs))
		}
		for i, e := range msgs[0].Embeds {
			if e.Footer.Text != "event "+eventID(i+1) {
				t.Errorf("embed %d is %q: not in order", i, e.Footer.Text)
			}
		}
	})
	t.Run("bot", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, true, discordgo.ChannelTypeGuildText, discordtest.WithRateLimit(0, 0))
		s := f.sink(t, relay.SinkDeps{})
		evs := []*relay.Event{chatEvent(t, 1, "a", "One?"), chatEvent(t, 2, "b", "Two?")}
		if n, _, err := s.SendPacked(t.Context(), evs); err != nil || n != 2 {
			t.Fatal(n, err)
		}
		threads := f.srv.Threads(f.channel)
		if len(threads) != 1 || len(f.srv.Messages(f.channel)) != 1 {
			t.Fatalf("threads %v: want one packed message with one thread", threads)
		}
		next := chatEvent(t, 3, "b", "Two, again?")
		if s.CanPack(t.Context(), next) {
			t.Error("CanPack true for a conversation that has a thread")
		}
		if !s.CanPack(t.Context(), chatEvent(t, 4, "new", "Hi")) {
			t.Error("CanPack false for a new conversation")
		}
		if err := s.Send(t.Context(), next); err != nil {
			t.Fatal(err)
		}
		if got := eventIDs(f.srv.Messages(threads[0])); !slices.Equal(got, []string{eventID(3)}) {
			t.Errorf("packed thread holds %v, want the next turn of conversation b", got)
		}
	})
	t.Run("long turns: what fits whole now, the rest later", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, false, discordgo.ChannelTypeGuildText, discordtest.WithRateLimit(0, 0))
		s := f.sink(t, relay.SinkDeps{})
		var evs []*relay.Event
		for n := 1; n <= s.MaxPack(); n++ {
			ev := withID(eventBody(t, chatBody("Everything?", strings.Repeat("A fairly long answer. ", 60), 0.9, fmt.Sprint("c", n)), relay.TopicChat), n)
			if !s.CanPack(t.Context(), ev) {
				t.Fatalf("turn %d cannot pack", n)
			}
			evs = append(evs, ev)
		}
		var sizes []int
		for rest := evs; len(rest) > 0; {
			n, _, err := s.SendPacked(t.Context(), rest)
			if err != nil {
				t.Fatal(err) // the fake refuses more than 6000 characters
			}
			if n < 1 || n > len(rest) {
				t.Fatalf("SendPacked reported %d of %d", n, len(rest))
			}
			sizes, rest = append(sizes, n), rest[n:]
		}
		msgs := f.srv.Messages(f.channel)
		if len(sizes) < 2 || len(msgs) != len(sizes) {
			t.Fatalf("10 long turns went out as %v in %d messages; want several", sizes, len(msgs))
		}
		i := 0
		for _, m := range msgs {
			for _, e := range m.Embeds {
				i++
				if e.Footer.Text != "event "+eventID(i) {
					t.Errorf("embed %d is %q: not in order", i, e.Footer.Text)
				}
				if strings.Contains(e.Description, "…") {
					t.Errorf("embed %d was cut", i)
				}
			}
		}
		if i != len(evs) {
			t.Errorf("%d embeds for %d turns", i, len(evs))
		}
	})
	t.Run("a turn too long for one embed does not pack", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, false, discordgo.ChannelTypeGuildText, discordtest.WithRateLimit(0, 0))
		s := f.sink(t, relay.SinkDeps{})
		if s.CanPack(t.Context(), withID(eventBody(t, chatBody("Everything?", longAnswer(), 0.9, "c1"), relay.TopicChat), 1)) {
			t.Error("a turn longer than one embed can pack")
		}
	})
	t.Run("resuming turn goes alone", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, false, discordgo.ChannelTypeGuildText, discordtest.WithRateLimit(0, 0))
		f.srv.ScriptAfter("POST", 1, discordtest.Reply{Status: 500})
		s := f.sink(t, relay.SinkDeps{})
		long := eventBody(t, chatBody("Everything?", longAnswer(), 0.9, "c"), relay.TopicChat)
		if err := s.Send(t.Context(), long); err == nil {
			t.Fatal("Send succeeded")
		}
		if s.CanPack(t.Context(), long) {
			t.Error("CanPack true for a turn with parts posted")
		}
	})
}

func TestProbe(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		bot    bool
		typ    discordgo.ChannelType
		break_ func(f *fixture)
		class  relay.Class
		ok     bool
	}{
		{"webhook", false, discordgo.ChannelTypeGuildText, nil, 0, true},
		{"bot", true, discordgo.ChannelTypeGuildForum, nil, 0, true},
		{"deleted webhook", false, discordgo.ChannelTypeGuildText, func(f *fixture) {
			f.srv.Script("GET", discordtest.Reply{Status: 404, Code: 10015})
		}, relay.ClassBroken, false},
		{"bad bot token", true, discordgo.ChannelTypeGuildText, func(f *fixture) { f.cfg.Token = "wrong-token" }, relay.ClassBroken, false},
		{"voice channel", true, discordgo.ChannelTypeGuildVoice, nil, relay.ClassBroken, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tc.bot, tc.typ, discordtest.WithRateLimit(0, 0))
			if tc.break_ != nil {
				tc.break_(f)
			}
			err := f.sink(t, relay.SinkDeps{}).Probe(t.Context())
			if tc.ok != (err == nil) {
				t.Fatalf("Probe: %v", err)
			}
			if err != nil {
				if c, _ := relay.Classify(err); c != tc.class {
					t.Errorf("class %s, want %s (%v)", c, tc.class, err)
				}
				relaytest.AssertNoSecret(t, "error", err.Error(), append(f.secrets(), "wrong-token")...)
			}
			for _, r := range f.srv.Requests() {
				if r.Method != http.MethodGet {
					t.Errorf("Probe sent %s %s", r.Method, r.Path)
				}
			}
		})
	}
}

// TestNoSecretLeaks points the sink at a proxy that echoes the request URL
// and headers in its error pages, and at a closed port, and checks every
// error and log line (logged at debug) for the token and webhook URL.
func TestNoSecretLeaks(t *testing.T) {
	t.Parallel()
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := map[string]int{"404": 404, "429": 429, "502": 502, "400": 400}[r.Header.Get("X-Test-Status")]
		if status == 0 {
			status = 502
		}
		if status == 429 {
			w.Header().Set("Retry-After", "1")
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, `<html>%d for %s (auth %s) %s</html>`, status, r.URL.String(), r.Header.Get("Authorization"), r.URL.Path)
	}))
	defer echo.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	const token = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.leaky-bot-token"
	const hookPath = "/api/webhooks/123456789012345678/leaky-webhook-token"
	for _, base := range []string{echo.URL, closed.URL} {
		for _, status := range []string{"404", "429", "502", "400"} {
			for _, cfg := range []discord.Config{
				{Name: "x", WebhookURL: relay.Secret(base + hookPath)},
				{Name: "x", Token: token, ChannelID: "123", APIURL: base},
			} {
				logger, logs := relaytest.NewLogger()
				deps := relay.SinkDeps{Logger: logger, Transport: headerTransport{"X-Test-Status", status}}
				s, err := discord.New(cfg, deps)
				if err != nil {
					t.Fatal(err)
				}
				_, _, packErr := s.SendPacked(t.Context(), []*relay.Event{chatEvent(t, 2, "d", "Hi"), chatEvent(t, 3, "e", "Hi")})
				errs := []error{s.Send(t.Context(), chatEvent(t, 1, "c", "Hi")), s.Probe(t.Context()), packErr}
				secrets := []string{token, base + hookPath, "leaky-webhook-token"}
				for _, err := range errs {
					if err == nil {
						t.Fatalf("%s %s: no error", base, status)
					}
					relaytest.AssertNoSecret(t, "error", err.Error(), secrets...)
					relaytest.AssertNoSecret(t, "error (%+v)", fmt.Sprintf("%+v", err), secrets...)
				}
				relaytest.AssertNoSecret(t, "log", logs.String(), secrets...)
			}
		}
	}
}

// headerTransport adds a header to every request.
type headerTransport struct{ key, value string }

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.key, h.value)
	return http.DefaultTransport.RoundTrip(r)
}
