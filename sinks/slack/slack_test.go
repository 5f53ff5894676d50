package slack_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/slack"
	"github.com/chatrelay/chatrelay/sinks/slack/slacktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

const (
	sinkName = "support-slack"
	channel  = "C0123ABCD"
)

// event reads a sample body from testdata as the receiver would.
func event(t testing.TB, file, topic string) *relay.Event {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, body, topic, file)
}

func decode(t testing.TB, body []byte, topic, seed string) *relay.Event {
	t.Helper()
	ev, err := relay.DecodeEvent(body)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(seed))
	ev.ID = "01900000-0000-7000-8000-" + hex.EncodeToString(sum[:6])
	ev.Topic = topic
	ev.ReceivedAt = time.Unix(1_700_000_000, 0).UTC()
	return ev
}

// turn builds a chat event of conversation conv ("" for none).
func turn(t testing.TB, id, conv, answer string) *relay.Event {
	t.Helper()
	m := map[string]any{
		"messages":   []map[string]string{{"role": "user", "content": "question " + id}},
		"answer":     map[string]any{"role": "assistant", "content": answer, "score": 0.5},
		"chatbot_id": "bot-1", "source": "widget",
	}
	if conv != "" {
		m["conversation_id"] = conv
	}
	body, _ := json.Marshal(m)
	return decode(t, body, relay.TopicChat, id)
}

// longAnswer is Markdown of about n characters in paragraphs.
func longAnswer(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "Paragraph %d explains one more detail of the shipping policy, with **bold** words and a [link](https://example.com/p/%d). ", i, i)
		if i%4 == 3 {
			b.WriteString("\n\n")
		}
	}
	return b.String()
}

func newWebhook(t testing.TB, srv *slacktest.Server, cfg slack.Config, deps relay.SinkDeps) *slack.Sink {
	t.Helper()
	cfg.Name = sinkName
	cfg.WebhookURL = relay.Secret(srv.WebhookURL())
	s, err := slack.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newBot(t testing.TB, srv *slacktest.Server, kv relay.KV, deps relay.SinkDeps) *slack.Sink {
	t.Helper()
	deps.KV = kv
	s, err := slack.New(slack.Config{Name: sinkName, Token: relay.Secret(srv.Token), Channel: channel, APIURL: srv.APIURL()}, deps)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// openStore opens the real embedded store in dir, closed at the end of the
// test unless the test closed it.
func openStore(t testing.TB, dir string) *bolt.Store {
	t.Helper()
	st, err := bolt.Open(dir, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { _ = st.Close() }) })
	return st
}

// posted returns the bodies of the requests the fake accepted.
func posted(srv *slacktest.Server) [][]byte {
	var out [][]byte
	for _, r := range srv.Requests() {
		if r.Status == http.StatusOK && r.Error == "" {
			out = append(out, r.Body)
		}
	}
	return out
}

// canonical indents a list of JSON bodies with sorted keys and no HTML
// escaping, so that golden files read well and compare byte for byte.
func canonical(t *testing.T, bodies [][]byte) []byte {
	t.Helper()
	var all []any
	for _, b := range bodies {
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("body is not JSON: %v", err)
		}
		all = append(all, v)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(all); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compareGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Fatalf("%s differs at line %d:\n got %s\nwant %s\n(review, then go test -update)", path, i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("%s differs in length: got %d lines, want %d (review, then go test -update)", path, len(gl), len(wl))
	}
}

// strs calls f on every string in a decoded JSON value.
func strs(v any, f func(string)) {
	switch v := v.(type) {
	case string:
		f(v)
	case []any:
		for _, e := range v {
			strs(e, f)
		}
	case map[string]any:
		for _, e := range v {
			strs(e, f)
		}
	}
}

// assertMentions fails unless every mention in the bodies is allowed.
func assertMentions(t *testing.T, bodies [][]byte, allowed string) {
	t.Helper()
	for _, b := range bodies {
		var v any
		_ = json.Unmarshal(b, &v)
		strs(v, func(s string) {
			if allowed != "" {
				s = strings.ReplaceAll(s, allowed, "")
			}
			for _, live := range []string{"<!", "<@", "<#"} {
				if i := strings.Index(s, live); i >= 0 {
					t.Errorf("live mention in a posted message: %.40q", s[i:])
				}
			}
		})
	}
}

const templateText = `{{if .Question}}*{{.Source}}* visitor asked: {{.Question}}{{end}}
{{with .Answer}}{{.Content}}{{end}}
Score: {{score .}} · <https://www.chat-data.com/chatbot/{{.ChatbotID}}|Open in Chat Data> <!channel>`

func TestGolden(t *testing.T) {
	t.Parallel()
	tmpl, err := relay.ParseTemplate(sinkName, templateText)
	if err != nil {
		t.Fatal(err)
	}
	const mention = "<!subteam^S0123ABC>"
	for _, tc := range []struct {
		name    string
		files   []string // several: sent packed
		topic   string
		cfg     slack.Config
		mention string // the one mention allowed in the output
		msgs    int
	}{
		{name: "chat", files: []string{"chat.json"}, msgs: 1},
		{name: "markdown", files: []string{"chat-markdown.json"}, msgs: 1},
		{name: "long", files: []string{"chat-long.json"}, msgs: 3},
		{name: "hostile", files: []string{"chat-hostile.json"}, msgs: 1},
		{name: "minimal", files: []string{"chat-minimal.json"}, msgs: 1},
		{name: "string-fields", files: []string{"chat-string-fields.json"}, msgs: 1},
		{name: "no-answer", files: []string{"chat-no-answer.json"}, msgs: 1},
		{name: "low-score", files: []string{"chat-low-score.json"}, msgs: 1},
		{name: "lead", files: []string{"lead-submission.json"}, topic: relay.TopicLead, msgs: 1},
		{name: "lead-custom-fields", files: []string{"lead-custom-fields.json"}, topic: relay.TopicLead, msgs: 1},
		{name: "escalation-history", files: []string{"live-chat-escalation-history.json"}, topic: relay.TopicEscalation, msgs: 1},
		{name: "escalation-complaint", files: []string{"live-chat-escalation-complaint.json"}, topic: relay.TopicEscalation,
			cfg: slack.Config{Mention: mention}, mention: mention, msgs: 1},
		{name: "escalation", files: []string{"live-chat-escalation.json"}, topic: relay.TopicEscalation, msgs: 1},
		{name: "escalation-mention", files: []string{"live-chat-escalation.json"}, topic: relay.TopicEscalation,
			cfg: slack.Config{Mention: mention}, mention: mention, msgs: 1},
		{name: "lead-mention-unused", files: []string{"lead-submission.json"}, topic: relay.TopicLead,
			cfg: slack.Config{Mention: mention}, msgs: 1},
		{name: "unknown-topic", files: []string{"unknown-topic.json"}, topic: "conversation-ended", msgs: 1},
		{name: "agent-reply", files: []string{"agent-reply.json"}, topic: relay.TopicAgentReply, msgs: 1},
		{name: "template", files: []string{"chat.json"}, cfg: slack.Config{Template: tmpl}, msgs: 1},
		{name: "template-hostile", files: []string{"chat-hostile.json"}, cfg: slack.Config{Template: tmpl}, msgs: 1},
		{name: "packed", files: []string{"chat.json", "chat-string-fields.json", "chat-minimal.json", "chat-hostile.json"}, msgs: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.topic == "" {
				tc.topic = relay.TopicChat
			}
			srv := slacktest.NewServer(t)
			sink := newWebhook(t, srv, tc.cfg, relay.SinkDeps{UserAgent: "chatrelay/test"})
			var evs []*relay.Event
			for _, f := range tc.files {
				evs = append(evs, event(t, f, tc.topic))
			}
			var err error
			if len(evs) == 1 {
				err = sink.Send(t.Context(), evs[0])
			} else {
				for _, ev := range evs {
					if !sink.CanPack(t.Context(), ev) {
						t.Fatalf("%s: CanPack false", ev.ID)
					}
				}
				var n int
				n, _, err = sink.SendPacked(t.Context(), evs)
				if err == nil && n != len(evs) {
					t.Fatalf("packed %d of %d short turns", n, len(evs))
				}
			}
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			bodies := posted(srv)
			if len(bodies) != tc.msgs {
				t.Fatalf("%d messages, want %d", len(bodies), tc.msgs)
			}
			for _, r := range srv.Requests() {
				if r.UnfurlLinks != "false" || r.UnfurlMedia != "false" {
					t.Errorf("unfurl_links %q, unfurl_media %q; want both false", r.UnfurlLinks, r.UnfurlMedia)
				}
				if r.UserAgent != "chatrelay/test" {
					t.Errorf("User-Agent %q", r.UserAgent)
				}
			}
			assertMentions(t, bodies, tc.mention)
			if tc.mention != "" {
				for _, b := range bodies {
					var m struct {
						Text   string          `json:"text"`
						Blocks json.RawMessage `json:"blocks"`
					}
					_ = json.Unmarshal(b, &m)
					var blocks any
					_ = json.Unmarshal(m.Blocks, &blocks)
					inBlocks := false
					strs(blocks, func(s string) { inBlocks = inBlocks || strings.HasPrefix(s, tc.mention+" ") })
					if !inBlocks || !strings.Contains(m.Text, tc.mention) {
						t.Errorf("the configured mention is missing from blocks (%v) or text (%q)", inBlocks, m.Text)
					}
				}
			}
			compareGolden(t, tc.name, canonical(t, bodies))
		})
	}
}

// TestGoldenBot: what the Web API receives in bot mode, as JSON (slack-go
// posts a form), every request of the event. The "-in-thread" cases are an
// escalation or a lead in a conversation that already has a thread: it
// goes into the thread and is broadcast to the channel (SPEC §6: on-call
// and sales never miss one). The others open their conversation's thread.
func TestGoldenBot(t *testing.T) {
	t.Parallel()
	const mention = "<!subteam^S0123ABC>"
	for _, tc := range []struct {
		name, file, topic string
		inThread          bool
		msgs              int
	}{
		{"escalation-in-thread", "live-chat-escalation.json", relay.TopicEscalation, true, 1},
		{"lead-in-thread", "lead-submission.json", relay.TopicLead, true, 1},
		{"bot-escalation-complaint", "live-chat-escalation-complaint.json", relay.TopicEscalation, false, 1},
		{"bot-lead-custom-fields", "lead-custom-fields.json", relay.TopicLead, false, 1},
		{"bot-no-answer", "chat-no-answer.json", relay.TopicChat, false, 1},
		{"bot-low-score", "chat-low-score.json", relay.TopicChat, false, 1},
		{"bot-long", "chat-long.json", relay.TopicChat, false, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := slacktest.NewServer(t)
			sink, err := slack.New(slack.Config{Name: sinkName, Token: relay.Secret(srv.Token), Channel: channel, APIURL: srv.APIURL(), Mention: mention},
				relay.SinkDeps{UserAgent: "chatrelay/test"})
			if err != nil {
				t.Fatal(err)
			}
			ev := event(t, tc.file, tc.topic)
			if tc.inThread {
				first := turn(t, "g1", "conv-esc", "Let me check.")
				ev.ConversationID = first.ConversationID
				if err := sink.Send(t.Context(), first); err != nil {
					t.Fatal(err)
				}
			}
			skip := len(srv.Requests())
			if err := sink.Send(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
			reqs := srv.Requests()[skip:]
			if len(reqs) != tc.msgs {
				t.Fatalf("%d requests, want %d", len(reqs), tc.msgs)
			}
			var bodies [][]byte
			for i, r := range reqs {
				if broadcast := tc.inThread && i == 0; (r.ReplyBroadcast == "true") != broadcast || (r.ThreadTS != "") != (tc.inThread || i > 0) {
					t.Errorf("request %d: thread_ts %q, reply_broadcast %q", i, r.ThreadTS, r.ReplyBroadcast)
				}
				form, err := url.ParseQuery(string(r.Body))
				if err != nil {
					t.Fatal(err)
				}
				doc := map[string]any{}
				for k, v := range form {
					switch k {
					case "token":
						continue
					case "blocks":
						var blocks any
						if err := json.Unmarshal([]byte(v[0]), &blocks); err != nil {
							t.Fatal(err)
						}
						doc[k] = blocks
					default:
						doc[k] = v[0]
					}
				}
				body, _ := json.Marshal(doc)
				bodies = append(bodies, body)
			}
			allowed := mention
			if tc.topic != relay.TopicEscalation {
				allowed = ""
			}
			assertMentions(t, bodies, allowed)
			compareGolden(t, tc.name, canonical(t, bodies))
		})
	}
}

// TestEscalationStandsOut: in bot mode an escalation or a lead that goes
// into a conversation's existing thread is broadcast to the channel as
// well; other turns, and an escalation or lead that opens a conversation,
// are not.
func TestEscalationStandsOut(t *testing.T) {
	t.Parallel()
	srv := slacktest.NewServer(t)
	sink := newBot(t, srv, nil, relay.SinkDeps{})
	escalation := func(id, conv string) *relay.Event {
		ev := event(t, "live-chat-escalation.json", relay.TopicEscalation)
		ev.ID, ev.ConversationID = id, conv
		return ev
	}
	lead := func(id, conv string) *relay.Event {
		ev := event(t, "lead-submission.json", relay.TopicLead)
		ev.ID, ev.ConversationID = id, conv
		return ev
	}
	long := escalation("e-long", "conv-a")
	long.Lead = append(long.Lead, relay.Field{Key: "message", Value: longAnswer(20000)})
	steps := []struct {
		ev        *relay.Event
		broadcast []bool // per message posted
	}{
		{turn(t, "a1", "conv-a", "first"), []bool{false}},
		{escalation("e1", "conv-a"), []bool{true}},
		{turn(t, "a2", "conv-a", "after"), []bool{false}},
		{escalation("e2", "conv-b"), []bool{false}}, // opens conv-b: at top level
		{lead("l1", "conv-a"), []bool{true}},
		{lead("l2", "conv-c"), []bool{false}}, // opens conv-c: at top level
		{long, []bool{true, false, false}},    // only its first message
	}
	for _, st := range steps {
		before := len(srv.Messages())
		if err := sink.Send(t.Context(), st.ev); err != nil {
			t.Fatalf("%s: %v", st.ev.ID, err)
		}
		msgs := srv.Messages()[before:]
		if len(msgs) != len(st.broadcast) {
			t.Fatalf("%s: %d messages, want %d", st.ev.ID, len(msgs), len(st.broadcast))
		}
		for i, m := range msgs {
			if m.Broadcast != st.broadcast[i] {
				t.Errorf("%s message %d: broadcast %v, want %v", st.ev.ID, i+1, m.Broadcast, st.broadcast[i])
			}
		}
	}
}

func TestConformance(t *testing.T) {
	t.Parallel()
	t.Run("webhook", func(t *testing.T) {
		t.Parallel()
		const path = "/services/T0CONF/B0CONF/s3cr3tw3bh00kt0k3n"
		relaytest.Conformance(t, relaytest.Target{
			Policy:     relay.PlatformPolicy(),
			SecretPath: path,
			New: func(t *testing.T, base string, deps relay.SinkDeps) relay.Sink {
				s, err := slack.New(slack.Config{Name: sinkName, WebhookURL: relay.Secret(base + path)}, deps)
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
			SuccessBody: func() (string, string) { return "text/plain", "ok" },
			ErrorBody: func(status int) (string, string) {
				codes := map[int]string{400: "invalid_payload", 401: "invalid_token", 403: "action_prohibited",
					404: "no_service", 410: "channel_is_archived", 413: "invalid_payload", 500: "rollup_error"}
				if c, ok := codes[status]; ok {
					return "text/plain", c
				}
				return "text/plain", http.StatusText(status)
			},
		})
	})
	t.Run("bot", func(t *testing.T) {
		t.Parallel()
		const token = "xoxb-1111-2222-c0nf0rm4nc3t0k3n"
		relaytest.Conformance(t, relaytest.Target{
			Policy:  relay.PlatformPolicy(),
			Secrets: []string{token},
			New: func(t *testing.T, base string, deps relay.SinkDeps) relay.Sink {
				s, err := slack.New(slack.Config{Name: sinkName, Token: token, Channel: channel, APIURL: base + "/api/"}, deps)
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
			SuccessBody: func() (string, string) {
				return "application/json", `{"ok":true,"channel":"C0123ABCD","ts":"1700000000.000100","message":{"type":"message","ts":"1700000000.000100"}}`
			},
			ErrorBody: func(status int) (string, string) {
				codes := map[int]string{400: "invalid_arguments", 401: "invalid_auth", 403: "missing_scope",
					404: "channel_not_found", 429: "ratelimited", 500: "internal_error", 503: "service_unavailable"}
				code, ok := codes[status]
				if !ok {
					return "text/html", "<html><body>" + http.StatusText(status) + "</body></html>"
				}
				return "application/json", `{"ok":false,"error":"` + code + `"}`
			},
			// The Web API answers 200 or an error, never 201 or 204. The
			// suite expects every 2xx to succeed; the sink instead treats
			// a 2xx other than 200 as a retryable error, since such an
			// answer is not Slack's and says nothing of the message
			// (TestBotUnexpected2xx).
			SkipStatuses: []int{201, 204},
		})
	})
}

func TestThreads(t *testing.T) {
	t.Parallel()
	srv := slacktest.NewServer(t)
	st := openStore(t, t.TempDir())
	sink := newBot(t, srv, st.KV(sinkName), relay.SinkDeps{UserAgent: "chatrelay/test"})
	evs := []*relay.Event{
		turn(t, "a1", "conv-a", "first answer"),
		turn(t, "a2", "conv-a", "second answer"),
		turn(t, "b1", "conv-b", "other conversation"),
		turn(t, "n1", "", "no conversation"),
		turn(t, "a3", "conv-a", "third answer"),
	}
	for _, ev := range evs {
		if err := sink.Send(t.Context(), ev); err != nil {
			t.Fatalf("%s: %v", ev.ID, err)
		}
	}
	msgs := srv.Messages()
	if len(msgs) != len(evs) {
		t.Fatalf("%d messages, want %d", len(msgs), len(evs))
	}
	for i, want := range []string{"", msgs[0].TS, "", "", msgs[0].TS} {
		if msgs[i].ThreadTS != want {
			t.Errorf("message %d (%s): thread_ts %q, want %q", i, evs[i].ID, msgs[i].ThreadTS, want)
		}
		if msgs[i].Channel != channel {
			t.Errorf("message %d: channel %q", i, msgs[i].Channel)
		}
	}
	for i, r := range srv.Requests() {
		if r.Token != srv.Token || r.UnfurlLinks != "false" || r.UnfurlMedia != "false" {
			t.Errorf("request %d: token ok %v, unfurl_links %q, unfurl_media %q", i, r.Token == srv.Token, r.UnfurlLinks, r.UnfurlMedia)
		}
		form := string(r.Body)
		if !strings.Contains(form, "parse=none") || !strings.Contains(form, "link_names=false") || r.UserAgent != "chatrelay/test" {
			t.Errorf("request %d: parse=none %v, link_names=false %v, User-Agent %q", i,
				strings.Contains(form, "parse=none"), strings.Contains(form, "link_names=false"), r.UserAgent)
		}
	}
}

func TestThreadsSurviveRestart(t *testing.T) {
	t.Parallel()
	srv := slacktest.NewServer(t)
	dir := t.TempDir()
	st := openStore(t, dir)
	if err := newBot(t, srv, st.KV(sinkName), relay.SinkDeps{}).Send(t.Context(), turn(t, "a1", "conv-a", "before")); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = openStore(t, dir)
	sink := newBot(t, srv, st.KV(sinkName), relay.SinkDeps{})
	if err := sink.Send(t.Context(), turn(t, "a2", "conv-a", "after the restart")); err != nil {
		t.Fatal(err)
	}
	msgs := srv.Messages()
	if len(msgs) != 2 || msgs[1].ThreadTS != msgs[0].TS || msgs[0].TS == "" {
		t.Fatalf("after a restart the turn went to thread %q, want %q", msgs[1].ThreadTS, msgs[0].TS)
	}

	// Another channel, same store: the old thread does not apply.
	other, err := slack.New(slack.Config{Name: sinkName, Token: relay.Secret(srv.Token), Channel: "C0OTHER00", APIURL: srv.APIURL()},
		relay.SinkDeps{KV: st.KV(sinkName)})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Send(t.Context(), turn(t, "a3", "conv-a", "elsewhere")); err != nil {
		t.Fatal(err)
	}
	if m := srv.Messages()[2]; m.Channel != "C0OTHER00" || m.ThreadTS != "" {
		t.Fatalf("in a new channel the turn went to %s thread %q, want a new thread", m.Channel, m.ThreadTS)
	}
}

// TestThreadRootDeleted: Slack either posts a reply to a deleted thread
// root at top level or refuses it (thread_not_found, invalid_thread_ts).
// Either way the turn is posted once, at top level, and becomes the
// conversation's new thread root.
func TestThreadRootDeleted(t *testing.T) {
	t.Parallel()
	for _, answer := range []string{"", "thread_not_found", "invalid_thread_ts"} {
		t.Run("answer "+answer, func(t *testing.T) {
			t.Parallel()
			var opts []slacktest.Option
			if answer != "" {
				opts = append(opts, slacktest.WithDeletedRootAnswer(answer))
			}
			t.Run("conversation", func(t *testing.T) {
				t.Parallel()
				srv := slacktest.NewServer(t, opts...)
				sink := newBot(t, srv, openStore(t, t.TempDir()).KV(sinkName), relay.SinkDeps{})
				for i, id := range []string{"a1", "a2", "a3"} {
					if i == 1 {
						srv.DeleteMessage(channel, srv.Messages()[0].TS)
					}
					if err := sink.Send(t.Context(), turn(t, id, "conv-a", "answer "+id)); err != nil {
						t.Fatalf("%s: %v", id, err)
					}
				}
				msgs := srv.Messages()
				if len(msgs) != 3 {
					t.Fatalf("%d messages, want 3", len(msgs))
				}
				if msgs[1].ThreadTS != "" {
					t.Fatalf("reply to a deleted root: thread_ts %q, want top level", msgs[1].ThreadTS)
				}
				if msgs[2].ThreadTS != msgs[1].TS {
					t.Fatalf("after the root was deleted the conversation went to %q, want the new root %q", msgs[2].ThreadTS, msgs[1].TS)
				}
			})
			t.Run("parts of a long turn", func(t *testing.T) {
				t.Parallel()
				srv := slacktest.NewServer(t, opts...)
				sink := newBot(t, srv, nil, relay.SinkDeps{})
				ev := turn(t, "n1", "", longAnswer(20000))
				srv.Script(slacktest.Response{}, slacktest.Response{Status: 503, Body: "unavailable"})
				if err := sink.Send(t.Context(), ev); err == nil {
					t.Fatal("second part failed, but Send succeeded")
				}
				srv.DeleteMessage(channel, srv.Messages()[0].TS)
				if err := sink.Send(t.Context(), ev); err != nil {
					t.Fatalf("retry: %v", err)
				}
				msgs := srv.Messages()
				if len(msgs) != 3 || msgs[1].ThreadTS != "" || msgs[2].ThreadTS != msgs[1].TS {
					t.Fatalf("%d messages; want part 2 at top level and part 3 in its thread: %+v", len(msgs), msgs)
				}
			})
		})
	}
}

func TestLongTurnWithoutConversationThreadsItsParts(t *testing.T) {
	t.Parallel()
	srv := slacktest.NewServer(t)
	sink := newBot(t, srv, nil, relay.SinkDeps{})
	if err := sink.Send(t.Context(), turn(t, "n1", "", longAnswer(20000))); err != nil {
		t.Fatal(err)
	}
	msgs := srv.Messages()
	if len(msgs) != 3 {
		t.Fatalf("%d messages, want 3", len(msgs))
	}
	if msgs[0].ThreadTS != "" || msgs[1].ThreadTS != msgs[0].TS || msgs[2].ThreadTS != msgs[0].TS {
		t.Fatalf("parts went to threads %q %q %q; want the first part's thread", msgs[0].ThreadTS, msgs[1].ThreadTS, msgs[2].ThreadTS)
	}
}

func TestBotErrorCodes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code   string
		body   string // whole answer, when the code alone is not enough
		class  relay.Class
		reason relay.Reason
		fix    string // what the error must say
	}{
		{code: "invalid_auth", class: relay.ClassBroken, reason: relay.ReasonAuth, fix: "Bot User OAuth Token"},
		{code: "not_authed", class: relay.ClassBroken, reason: relay.ReasonAuth, fix: "Bot User OAuth Token"},
		{code: "token_revoked", class: relay.ClassBroken, reason: relay.ReasonAuth, fix: "reinstall the app"},
		{code: "token_expired", class: relay.ClassBroken, reason: relay.ReasonAuth, fix: "reinstall the app"},
		{code: "account_inactive", class: relay.ClassBroken, reason: relay.ReasonAuth, fix: "reinstall the app"},
		{code: "channel_not_found", class: relay.ClassBroken, reason: relay.ReasonGone, fix: "channel's ID"},
		{code: "not_in_channel", class: relay.ClassBroken, reason: relay.ReasonAuth, fix: "invite the bot to the channel"},
		{code: "is_archived", class: relay.ClassBroken, reason: relay.ReasonGone, fix: "unarchive"},
		{code: "missing_scope", body: `{"ok":false,"error":"missing_scope","needed":"chat:write.public","provided":"chat:write"}`,
			class: relay.ClassBroken, reason: relay.ReasonAuth, fix: "lacks the chat:write.public scope"},
		{code: "restricted_action", class: relay.ClassBroken, reason: relay.ReasonAuth, fix: "workspace admin"},
		{code: "invalid_blocks", class: relay.ClassPermanent, reason: relay.ReasonClientError, fix: "dead letters"},
		{code: "invalid_blocks_format", class: relay.ClassPermanent, reason: relay.ReasonClientError, fix: "dead letters"},
		{code: "msg_too_long", class: relay.ClassPermanent, reason: relay.ReasonClientError, fix: "dead letters"},
		{code: "msg_blocks_too_long", class: relay.ClassPermanent, reason: relay.ReasonClientError, fix: "dead letters"},
		{code: "no_text", class: relay.ClassPermanent, reason: relay.ReasonClientError, fix: "dead letters"},
		{code: "too_many_attachments", class: relay.ClassPermanent, reason: relay.ReasonClientError, fix: "dead letters"},
		{code: "invalid_arguments", class: relay.ClassPermanent, reason: relay.ReasonClientError, fix: "dead letters"},
		{code: "a_code_from_the_future", class: relay.ClassPermanent, reason: relay.ReasonClientError},
		{code: "internal_error", class: relay.ClassRetryable, reason: relay.ReasonServerError},
		{code: "fatal_error", class: relay.ClassRetryable, reason: relay.ReasonServerError},
		{code: "service_unavailable", class: relay.ClassRetryable, reason: relay.ReasonServerError},
		{code: "request_timeout", class: relay.ClassRetryable, reason: relay.ReasonServerError},
		{code: "thread_not_found", class: relay.ClassRetryable, reason: relay.ReasonClientError, fix: "thread was deleted"},
		{code: "invalid_thread_ts", class: relay.ClassRetryable, reason: relay.ReasonClientError, fix: "thread was deleted"},
	} {
		t.Run(tc.code, func(t *testing.T) {
			t.Parallel()
			srv := slacktest.NewServer(t)
			srv.Script(slacktest.Response{Error: tc.code, Body: tc.body})
			err := newBot(t, srv, nil, relay.SinkDeps{}).Send(t.Context(), turn(t, "e1", "conv-e", "answer"))
			assertClass(t, err, tc.class, tc.reason, tc.code, tc.fix)
		})
	}
}

func TestWebhookErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		resp   slacktest.Response
		class  relay.Class
		reason relay.Reason
		fix    string
	}{
		{"no_service", slacktest.Response{Status: 404, Error: "no_service"}, relay.ClassBroken, relay.ReasonGone, "create a new incoming webhook"},
		{"invalid_token", slacktest.Response{Status: 403, Error: "invalid_token"}, relay.ClassBroken, relay.ReasonAuth, "create a new incoming webhook"},
		{"action_prohibited", slacktest.Response{Status: 403, Error: "action_prohibited"}, relay.ClassBroken, relay.ReasonAuth, "admin"},
		{"channel_not_found", slacktest.Response{Status: 404, Error: "channel_not_found"}, relay.ClassBroken, relay.ReasonGone, "create a new incoming webhook"},
		{"channel_is_archived", slacktest.Response{Status: 410, Error: "channel_is_archived"}, relay.ClassBroken, relay.ReasonGone, "unarchive"},
		{"401 without a code", slacktest.Response{Status: 401, Body: "Unauthorized"}, relay.ClassBroken, relay.ReasonAuth, "webhook_url"},
		{"404 without a code", slacktest.Response{Status: 404, Body: "Not Found"}, relay.ClassBroken, relay.ReasonGone, "webhook_url"},
		{"invalid_payload", slacktest.Response{Status: 400, Error: "invalid_payload"}, relay.ClassPermanent, relay.ReasonClientError, "dead letters"},
		{"no_text", slacktest.Response{Status: 400, Error: "no_text"}, relay.ClassPermanent, relay.ReasonClientError, "dead letters"},
		{"invalid_blocks", slacktest.Response{Status: 400, Error: "invalid_blocks"}, relay.ClassPermanent, relay.ReasonClientError, "dead letters"},
		{"too_many_attachments", slacktest.Response{Status: 400, Error: "too_many_attachments"}, relay.ClassPermanent, relay.ReasonClientError, "dead letters"},
		{"rollup_error", slacktest.Response{Status: 500, Error: "rollup_error"}, relay.ClassRetryable, relay.ReasonServerError, ""},
		{"502", slacktest.Response{Status: 502, Body: "<html>Bad Gateway</html>"}, relay.ClassRetryable, relay.ReasonServerError, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := slacktest.NewServer(t)
			srv.Script(tc.resp)
			err := newWebhook(t, srv, slack.Config{}, relay.SinkDeps{}).Send(t.Context(), event(t, "chat.json", relay.TopicChat))
			assertClass(t, err, tc.class, tc.reason, tc.resp.Error, tc.fix)
		})
	}
}

func TestAPIHTTPErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		resp   slacktest.Response
		class  relay.Class
		reason relay.Reason
		fix    string
	}{
		{"503 html", slacktest.Response{Status: 503, Body: "<html>down</html>"}, relay.ClassRetryable, relay.ReasonServerError, ""},
		{"404 no code", slacktest.Response{Status: 404, Body: "not found"}, relay.ClassBroken, relay.ReasonGone, "api_url"},
		{"403 no code", slacktest.Response{Status: 403, Body: "forbidden"}, relay.ClassBroken, relay.ReasonAuth, "token"},
		{"200 not JSON", slacktest.Response{Status: 200, Body: "<html>proxy</html>"}, relay.ClassRetryable, relay.ReasonOther, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := slacktest.NewServer(t)
			srv.Script(tc.resp)
			err := newBot(t, srv, nil, relay.SinkDeps{}).Send(t.Context(), turn(t, "e1", "conv-e", "answer"))
			assertClass(t, err, tc.class, tc.reason, "", tc.fix)
		})
	}
}

// TestBotUnexpected2xx: the Web API answers 200 or an error. Another 2xx
// (from a proxy, say) must not reach slack-go as "no response and no
// error", which it dereferences; it is a retryable error.
func TestBotUnexpected2xx(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusCreated, http.StatusAccepted, http.StatusNoContent, http.StatusPartialContent} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(status)
				if status != http.StatusNoContent {
					_, _ = io.WriteString(w, `{"ok":true,"channel":"C0123ABCD","ts":"1700000000.000100"}`)
				}
			}))
			t.Cleanup(srv.Close)
			sink, err := slack.New(slack.Config{Name: sinkName, Token: "xoxb-1-unexpected", Channel: channel, APIURL: srv.URL + "/api/"}, relay.SinkDeps{})
			if err != nil {
				t.Fatal(err)
			}
			for name, call := range map[string]func() error{
				"Send":  func() error { return sink.Send(t.Context(), turn(t, "u1", "conv-u", "answer")) },
				"Probe": func() error { return sink.Probe(t.Context()) },
			} {
				err := func() (err error) {
					defer func() {
						if p := recover(); p != nil {
							err = fmt.Errorf("panic: %v", p)
							t.Errorf("HTTP %d: %s panicked: %v", status, name, p)
						}
					}()
					return call()
				}()
				if err == nil {
					t.Fatalf("HTTP %d: %s succeeded", status, name)
				}
				if class, _ := relay.Classify(err); class != relay.ClassRetryable {
					t.Errorf("HTTP %d: %s: class %s (%v), want retryable", status, name, class, err)
				}
				if want := fmt.Sprintf("unexpected HTTP %d", status); !strings.Contains(err.Error(), want) {
					t.Errorf("%s: error %q does not say %q", name, err, want)
				}
			}
		})
	}
}

func assertClass(t *testing.T, err error, class relay.Class, reason relay.Reason, code, fix string) {
	t.Helper()
	if err == nil {
		t.Fatal("Send succeeded")
	}
	if got, _ := relay.Classify(err); got != class {
		t.Errorf("class %s, want %s (%v)", got, class, err)
	}
	if got := relay.ReasonOf(err); got != reason {
		t.Errorf("reason %s, want %s (%v)", got, reason, err)
	}
	for _, s := range []string{code, fix, sinkName} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		bot   bool
		resp  slacktest.Response
		class relay.Class
		after time.Duration
	}{
		{"webhook integer", false, slacktest.Response{Status: 429, RetryAfter: "2"}, relay.ClassRateLimited, 2 * time.Second},
		{"webhook fraction", false, slacktest.Response{Status: 429, RetryAfter: "1.5"}, relay.ClassRateLimited, 1500 * time.Millisecond},
		{"webhook without header", false, slacktest.Response{Status: 429}, relay.ClassRetryable, 0},
		{"bot integer", true, slacktest.Response{Status: 429, Error: "ratelimited", RetryAfter: "3"}, relay.ClassRateLimited, 3 * time.Second},
		{"bot fraction", true, slacktest.Response{Status: 429, Error: "ratelimited", RetryAfter: "0.25"}, relay.ClassRateLimited, 250 * time.Millisecond},
		{"bot HTTP date", true, slacktest.Response{Status: 429, RetryAfter: now.Add(5 * time.Second).Format(http.TimeFormat)}, relay.ClassRateLimited, 5 * time.Second},
		{"bot ok:false rate_limited", true, slacktest.Response{Error: "rate_limited"}, relay.ClassRateLimited, time.Second},
		{"bot ok:false ratelimited with header", true, slacktest.Response{Error: "ratelimited", RetryAfter: "4"}, relay.ClassRateLimited, 4 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := slacktest.NewServer(t)
			srv.Script(tc.resp)
			deps := relay.SinkDeps{Clock: clockwork.NewFakeClockAt(now)}
			sink := newWebhook(t, srv, slack.Config{}, deps)
			if tc.bot {
				sink = newBot(t, srv, nil, deps)
			}
			err := sink.Send(t.Context(), event(t, "chat.json", relay.TopicChat))
			if err == nil {
				t.Fatal("Send succeeded")
			}
			class, after := relay.Classify(err)
			if class != tc.class || after != tc.after {
				t.Fatalf("class %s after %s, want %s after %s (%v)", class, after, tc.class, tc.after, err)
			}
			if relay.ReasonOf(err) != relay.ReasonRateLimited {
				t.Errorf("reason %s", relay.ReasonOf(err))
			}
		})
	}
}

func TestMultiPartResumes(t *testing.T) {
	t.Parallel()
	for _, bot := range []bool{false, true} {
		t.Run(map[bool]string{false: "webhook", true: "bot"}[bot], func(t *testing.T) {
			t.Parallel()
			srv := slacktest.NewServer(t)
			dir := t.TempDir()
			st := openStore(t, dir)
			mk := func(st *bolt.Store) *slack.Sink {
				deps := relay.SinkDeps{KV: st.KV(sinkName)}
				if bot {
					return newBot(t, srv, st.KV(sinkName), deps)
				}
				return newWebhook(t, srv, slack.Config{}, deps)
			}
			ev := event(t, "chat-long.json", relay.TopicChat)
			srv.Script(slacktest.Response{}, slacktest.Response{Status: 503, Body: "unavailable"})
			err := mk(st).Send(t.Context(), ev)
			if class, _ := relay.Classify(err); err == nil || class != relay.ClassRetryable {
				t.Fatalf("second part failing with 503: %v, want a retryable error", err)
			}
			if n := len(srv.Messages()); n != 1 {
				t.Fatalf("%d messages after the failure, want 1", n)
			}
			// A restart between the attempts: progress is in the store.
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			sink := mk(openStore(t, dir))
			if err := sink.Send(t.Context(), ev); err != nil {
				t.Fatalf("retry: %v", err)
			}
			// Delivered once more (at least once): nothing is posted again.
			if err := sink.Send(t.Context(), ev); err != nil {
				t.Fatalf("redelivery: %v", err)
			}
			msgs := srv.Messages()
			if len(msgs) != 3 {
				t.Fatalf("%d messages, want the 3 parts once each", len(msgs))
			}
			for i, m := range msgs {
				if want := fmt.Sprintf("Part %d of 3", i+1); !strings.Contains(string(m.Blocks), want) {
					t.Errorf("message %d is not %q", i, want)
				}
				if bot && i > 0 && m.ThreadTS != msgs[0].TS {
					t.Errorf("part %d in thread %q, want %q", i+1, m.ThreadTS, msgs[0].TS)
				}
			}
		})
	}
}

// keysKV is an in-memory relay.KV that lists its keys.
type keysKV struct {
	mu sync.Mutex
	m  map[string]string
}

func (k *keysKV) Get(_ context.Context, key string) (string, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.m[key]
	return v, ok, nil
}

func (k *keysKV) Put(_ context.Context, key, value string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[string]string{}
	}
	k.m[key] = value
	return nil
}

func (k *keysKV) keys() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for key := range k.m {
		out = append(out, key)
	}
	return strings.Join(out, "\n")
}

// TestMultiPartNewDestination: a long turn whose first part went to one
// channel (or webhook) and whose sink now points elsewhere is posted whole
// in the new place: the progress record belongs to the old destination.
// The record's key never holds the webhook URL.
func TestMultiPartNewDestination(t *testing.T) {
	t.Parallel()
	for _, bot := range []bool{false, true} {
		t.Run(map[bool]string{false: "webhook", true: "bot"}[bot], func(t *testing.T) {
			t.Parallel()
			kv := &keysKV{}
			before, after := slacktest.NewServer(t), slacktest.NewServer(t)
			mk := func(srv *slacktest.Server, ch string) *slack.Sink {
				if !bot {
					return newWebhook(t, srv, slack.Config{}, relay.SinkDeps{KV: kv})
				}
				s, err := slack.New(slack.Config{Name: sinkName, Token: relay.Secret(srv.Token), Channel: ch, APIURL: srv.APIURL()}, relay.SinkDeps{KV: kv})
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			ev := event(t, "chat-long.json", relay.TopicChat)
			before.Script(slacktest.Response{}, slacktest.Response{Status: 503, Body: "unavailable"})
			if err := mk(before, channel).Send(t.Context(), ev); err == nil {
				t.Fatal("second part failed, but Send succeeded")
			}
			if err := mk(after, "C0OTHER00").Send(t.Context(), ev); err != nil {
				t.Fatalf("Send to the new destination: %v", err)
			}
			msgs := after.Messages()
			if len(msgs) != 3 {
				t.Fatalf("%d messages in the new destination, want the 3 parts", len(msgs))
			}
			for i, m := range msgs {
				if want := fmt.Sprintf("Part %d of 3", i+1); !strings.Contains(string(m.Blocks), want) {
					t.Errorf("message %d is not %q", i, want)
				}
				if bot && i > 0 && m.ThreadTS != msgs[0].TS {
					t.Errorf("part %d in thread %q, want the new root %q", i+1, m.ThreadTS, msgs[0].TS)
				}
			}
			relaytest.AssertNoSecret(t, "KV key", kv.keys(), before.WebhookURL(), before.WebhookPath(), after.WebhookURL(), after.WebhookPath())
		})
	}
}

func TestMultiPartUnderStrictRateLimit(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClock()
	srv := slacktest.NewServer(t, slacktest.WithRateLimit(time.Second, 1), slacktest.WithClock(clock))
	sink := newBot(t, srv, nil, relay.SinkDeps{Clock: clock})
	ev := event(t, "chat-long.json", relay.TopicChat)
	for attempt := 1; ; attempt++ {
		err := sink.Send(t.Context(), ev)
		if err == nil {
			break
		}
		class, after := relay.Classify(err)
		if class != relay.ClassRateLimited || after != time.Second || attempt > 3 {
			t.Fatalf("attempt %d: %s after %s (%v)", attempt, class, after, err)
		}
		clock.Advance(after) // what the dispatcher does
	}
	if msgs := srv.Messages(); len(msgs) != 3 {
		t.Fatalf("%d messages, want the 3 parts once each", len(msgs))
	}
}

// TestHoldAfterSeveralMessages: a send that posted several messages says
// so, and the dispatcher takes a slot of the channel's pace for each
// message after the first (relay's TestSeveralPostsTakeSeveralSlots), so
// that the pace holds on average.
func TestHoldAfterSeveralMessages(t *testing.T) {
	t.Parallel()
	srv := slacktest.NewServer(t)
	sink := newWebhook(t, srv, slack.Config{}, relay.SinkDeps{})
	for file, posts := range map[string]int{"chat.json": 1, "chat-long.json": 3} {
		rep, err := relay.Post(t.Context(), sink, event(t, file, relay.TopicChat))
		if err != nil {
			t.Fatal(err)
		}
		if rep.Posts != posts || !rep.HoldUntil.IsZero() {
			t.Errorf("%s: report %+v, want %d posts and no hold", file, rep, posts)
		}
	}
}

func TestTurnCutAfterFourMessages(t *testing.T) {
	t.Parallel()
	srv := slacktest.NewServer(t)
	logger, logs := relaytest.NewLogger()
	ev := turn(t, "huge", "conv-h", longAnswer(60000))
	if err := newWebhook(t, srv, slack.Config{}, relay.SinkDeps{Logger: logger}).Send(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	msgs := srv.Messages()
	if len(msgs) != 4 {
		t.Fatalf("%d messages, want 4", len(msgs))
	}
	var blocks []struct {
		Type string `json:"type"`
		Text *struct {
			Text string `json:"text"`
		} `json:"text"`
	}
	if err := json.Unmarshal(msgs[3].Blocks, &blocks); err != nil {
		t.Fatal(err)
	}
	lastSection := ""
	for _, b := range blocks {
		if b.Type == "section" {
			lastSection = b.Text.Text
		}
	}
	if !strings.HasSuffix(lastSection, "\n…") {
		t.Errorf("the last section does not end in …: %q", lastSection[max(0, len(lastSection)-40):])
	}
	if !strings.Contains(string(msgs[3].Blocks), "the whole turn is event "+ev.ID) {
		t.Errorf("the last message does not name the event")
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\"message cut") || !strings.Contains(logs.String(), ev.ID) {
		t.Errorf("no warning for the cut:\n%s", logs)
	}
}

func TestNoSecretsInLogsOrErrors(t *testing.T) {
	t.Parallel()
	srv := slacktest.NewServer(t)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	logger, logs := relaytest.NewLogger()
	deps := relay.SinkDeps{Logger: logger}
	const deadPath = "/services/T0DEAD/B0DEAD/d34dw3bh00k"
	webhook := newWebhook(t, srv, slack.Config{}, deps)
	dead, err := slack.New(slack.Config{Name: sinkName, WebhookURL: relay.Secret(closed.URL + deadPath)}, deps)
	if err != nil {
		t.Fatal(err)
	}
	bot := newBot(t, srv, nil, deps)
	deadBot, err := slack.New(slack.Config{Name: sinkName, Token: relay.Secret(srv.Token), Channel: channel, APIURL: closed.URL + "/api/"}, deps)
	if err != nil {
		t.Fatal(err)
	}
	var errs []error
	for i, step := range []struct {
		sink   *slack.Sink
		script []slacktest.Response
	}{
		{webhook, nil},
		{webhook, []slacktest.Response{{Status: 404, Error: "no_service"}}},
		{webhook, []slacktest.Response{{Status: 400, Body: "echo " + srv.WebhookURL()}}},
		{webhook, []slacktest.Response{{Status: 400, Body: "bad token " + lastSegment(srv.WebhookPath())}}},
		{dead, nil},
		{bot, nil},
		{bot, []slacktest.Response{{Error: "invalid_auth"}}},
		{bot, []slacktest.Response{{Status: 500, Body: "echo token=" + srv.Token}}},
		{deadBot, nil},
	} {
		srv.Script(step.script...)
		ev := turn(t, fmt.Sprint("s", i), fmt.Sprint("conv-", i), longAnswer(12000))
		errs = append(errs, step.sink.Send(t.Context(), ev), step.sink.Probe(t.Context()))
	}
	secrets := []string{srv.Token, srv.WebhookURL(), srv.WebhookPath(), lastSegment(srv.WebhookPath()), closed.URL + deadPath, deadPath}
	relaytest.AssertNoSecret(t, "log", logs.String(), secrets...)
	failures := 0
	for _, err := range errs {
		if err != nil {
			failures++
			relaytest.AssertNoSecret(t, "error", err.Error(), secrets...)
		}
	}
	if failures < 6 {
		t.Fatalf("only %d failures: the steps did not fail as scripted", failures)
	}
}

// lastSegment is a webhook path's last segment: its secret token.
func lastSegment(path string) string { return path[strings.LastIndexByte(path, '/')+1:] }

func TestNewRejects(t *testing.T) {
	t.Parallel()
	const hook = "https://hooks.slack.com/services/T0/B0/s3cr3t"
	const token = "xoxb-123-s3cr3t"
	for _, tc := range []struct {
		name string
		cfg  slack.Config
		says string
	}{
		{"no credentials", slack.Config{Name: "s"}, "no credentials"},
		{"both modes", slack.Config{Name: "s", WebhookURL: hook, Token: token, Channel: channel}, "not both"},
		{"no name", slack.Config{WebhookURL: hook}, "name"},
		{"webhook not a URL", slack.Config{Name: "s", WebhookURL: "hooks.slack.com/services/T0/B0/s3cr3t"}, "webhook_url"},
		{"webhook ftp", slack.Config{Name: "s", WebhookURL: "ftp://hooks.slack.com/services/T0/B0/s3cr3t"}, "webhook_url"},
		{"api_url with a webhook", slack.Config{Name: "s", WebhookURL: hook, APIURL: "https://slack.com/api/"}, "api_url"},
		{"token without channel", slack.Config{Name: "s", Token: token}, "channel"},
		{"channel without token", slack.Config{Name: "s", Channel: channel}, "token"},
		{"channel name", slack.Config{Name: "s", Token: token, Channel: "#support"}, "channel ID"},
		{"not a token", slack.Config{Name: "s", Token: "s3cr3t-but-not-slack", Channel: channel}, "token"},
		{"bad api_url", slack.Config{Name: "s", Token: token, Channel: channel, APIURL: "slack.com/api"}, "api_url"},
		{"bad mention", slack.Config{Name: "s", WebhookURL: hook, Mention: "@oncall"}, "mention"},
		{"negative timeout", slack.Config{Name: "s", WebhookURL: hook, Timeout: -time.Second}, "timeout"},
		{"reply on a webhook", slack.Config{Name: "s", WebhookURL: hook, Reply: &slack.ReplyConfig{SigningSecret: "sig-s3cr3t"}},
			"reply: needs bot mode"},
		{"reply without a way in", slack.Config{Name: "s", Token: token, Channel: channel, Reply: &slack.ReplyConfig{}},
			"reply.signing_secret: missing"},
		{"reply both ways in", slack.Config{Name: "s", Token: token, Channel: channel,
			Reply: &slack.ReplyConfig{SigningSecret: "sig-s3cr3t", AppToken: "xapp-1-s3cr3t"}}, "reply.app_token: set together"},
		{"reply bot token as app token", slack.Config{Name: "s", Token: token, Channel: channel,
			Reply: &slack.ReplyConfig{AppToken: "xoxb-9-s3cr3t"}}, "reply.app_token: not an app-level token"},
		{"reply mode and re-page", slack.Config{Name: "s", Token: token, Channel: channel, Reply: &slack.ReplyConfig{
			SigningSecret: "sig-s3cr3t", ReplyConfig: relay.ReplyConfig{Mode: "everything", Prefix: "  ", RepageAfter: -time.Minute}}},
			"reply.mode: \"everything\" is not a mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := slack.New(tc.cfg, relay.SinkDeps{})
			if err == nil {
				t.Fatal("New accepted it")
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not name %q", err, tc.says)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if key, _, ok := strings.Cut(line, ": "); !ok || strings.Trim(key, "abcdefghijklmnopqrstuvwxyz_.") != "" {
					t.Errorf("%q does not start with a config key", line)
				}
			}
			if tc.name == "reply mode and re-page" {
				for _, key := range []string{"reply.prefix:", "reply.repage_after:"} {
					if !strings.Contains(err.Error(), key) {
						t.Errorf("error does not name %s:\n%v", key, err)
					}
				}
			}
			relaytest.AssertNoSecret(t, "error", err.Error(), "s3cr3t", "T0/B0")
		})
	}
}

func TestNewAccepts(t *testing.T) {
	t.Parallel()
	srv := slacktest.NewServer(t)
	for _, tc := range []struct {
		name string
		cfg  slack.Config
	}{
		{"api_url without a trailing slash", slack.Config{Token: relay.Secret(srv.Token), Channel: channel, APIURL: srv.URL + "/api"}},
		{"mentions", slack.Config{WebhookURL: relay.Secret(srv.WebhookURL()), Mention: "<!subteam^S0123|oncall> <@U0456>"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Name = sinkName
			s, err := slack.New(tc.cfg, relay.SinkDeps{})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Send(t.Context(), event(t, "chat.json", relay.TopicChat)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestProbe(t *testing.T) {
	t.Parallel()
	srv := slacktest.NewServer(t)
	if err := newBot(t, srv, nil, relay.SinkDeps{}).Probe(t.Context()); err != nil {
		t.Fatalf("bot probe: %v", err)
	}
	srv.Script(slacktest.Response{Error: "token_revoked"})
	err := newBot(t, srv, nil, relay.SinkDeps{}).Probe(t.Context())
	if class, _ := relay.Classify(err); class != relay.ClassBroken || !strings.Contains(err.Error(), "auth.test") {
		t.Fatalf("revoked token: %v, want broken", err)
	}
	// A webhook is probed with an empty message: refused (no_text) by a
	// working webhook, so nothing shows in the channel.
	if err := newWebhook(t, srv, slack.Config{}, relay.SinkDeps{}).Probe(t.Context()); err != nil {
		t.Fatalf("webhook probe: %v", err)
	}
	if n := len(srv.Messages()); n != 0 {
		t.Fatalf("the webhook probe posted %d messages", n)
	}
	// Not an incoming webhook's URL (a workflow trigger): not contacted.
	trigger, err := slack.New(slack.Config{Name: sinkName, WebhookURL: relay.Secret(srv.URL + "/triggers/T0/1/abc")}, relay.SinkDeps{})
	if err != nil {
		t.Fatal(err)
	}
	before := len(srv.Requests())
	if err := trigger.Probe(t.Context()); err != nil || len(srv.Requests()) != before {
		t.Fatalf("workflow trigger URL: probe %v, %d requests", err, len(srv.Requests())-before)
	}
	for _, tc := range []struct {
		name   string
		script *slacktest.Response
		url    string
	}{
		{name: "removed webhook", url: srv.URL + "/services/T0/B0/removed"}, // 404 no_service
		{name: "revoked", script: &slacktest.Response{Status: http.StatusForbidden, Error: "invalid_token"}},
		{name: "archived channel", script: &slacktest.Response{Status: http.StatusGone, Error: "channel_is_archived"}},
	} {
		if tc.script != nil {
			srv.Script(*tc.script)
		}
		sink := newWebhook(t, srv, slack.Config{}, relay.SinkDeps{})
		if tc.url != "" {
			var err error
			sink, err = slack.New(slack.Config{Name: sinkName, WebhookURL: relay.Secret(tc.url)}, relay.SinkDeps{})
			if err != nil {
				t.Fatal(err)
			}
		}
		err := sink.Probe(t.Context())
		if class, _ := relay.Classify(err); class != relay.ClassBroken {
			t.Errorf("%s: probe %v, want a broken destination", tc.name, err)
		} else if strings.Contains(err.Error(), "/services/") {
			t.Errorf("%s: the error shows the webhook URL: %v", tc.name, err)
		}
	}
}

func TestPacking(t *testing.T) {
	t.Parallel()
	t.Run("what packs", func(t *testing.T) {
		t.Parallel()
		sink := newWebhook(t, slacktest.NewServer(t), slack.Config{}, relay.SinkDeps{})
		if sink.MaxPack() < 2 {
			t.Fatalf("MaxPack %d", sink.MaxPack())
		}
		for _, tc := range []struct {
			ev   *relay.Event
			want bool
		}{
			{event(t, "chat.json", relay.TopicChat), true},
			{event(t, "chat-markdown.json", relay.TopicChat), true},
			{event(t, "chat-long.json", relay.TopicChat), false},
			{event(t, "live-chat-escalation.json", relay.TopicEscalation), false},
			{event(t, "lead-submission.json", relay.TopicLead), false},
		} {
			if got := sink.CanPack(t.Context(), tc.ev); got != tc.want {
				t.Errorf("CanPack(%s %s) = %v", tc.ev.Topic, tc.ev.ID, got)
			}
		}
	})
	t.Run("a full pack posts what fits whole, the rest later", func(t *testing.T) {
		t.Parallel()
		srv := slacktest.NewServer(t) // rejects messages over Slack's limits
		sink := newWebhook(t, srv, slack.Config{}, relay.SinkDeps{})
		var evs []*relay.Event
		for i := range sink.MaxPack() {
			ev := turn(t, fmt.Sprint("p", i), fmt.Sprint("conv-", i), longAnswer(900))
			if !sink.CanPack(t.Context(), ev) {
				t.Fatalf("turn %d: CanPack false", i)
			}
			evs = append(evs, ev)
		}
		var sizes []int
		for rest := evs; len(rest) > 0; {
			n, _, err := sink.SendPacked(t.Context(), rest)
			if err != nil {
				t.Fatal(err)
			}
			if n < 1 || n > len(rest) {
				t.Fatalf("SendPacked reported %d of %d", n, len(rest))
			}
			sizes, rest = append(sizes, n), rest[n:]
		}
		if len(sizes) < 2 || len(srv.Messages()) != len(sizes) {
			t.Fatalf("%d turns of 900 characters went out as %v in %d messages; want several messages", len(evs), sizes, len(srv.Messages()))
		}
		all := ""
		for _, m := range srv.Messages() {
			all += string(m.Blocks)
		}
		last := -1
		for _, ev := range evs {
			if c := strings.Count(all, ev.ConversationID+"\""); c == 0 {
				t.Errorf("turn of %s missing", ev.ConversationID)
			}
			if at := strings.Index(all, ev.ConversationID+"\""); at < last {
				t.Errorf("turn of %s out of order", ev.ConversationID)
			} else {
				last = at
			}
		}
		if strings.Contains(all, "…") {
			t.Error("a packed turn was cut")
		}
	})
	t.Run("bot: the packed message is each conversation's thread", func(t *testing.T) {
		t.Parallel()
		srv := slacktest.NewServer(t)
		sink := newBot(t, srv, openStore(t, t.TempDir()).KV(sinkName), relay.SinkDeps{})
		a, b := turn(t, "a1", "conv-a", "answer a"), turn(t, "b1", "conv-b", "answer b")
		if !sink.CanPack(t.Context(), a) || !sink.CanPack(t.Context(), b) {
			t.Fatal("new conversations cannot pack")
		}
		if n, _, err := sink.SendPacked(t.Context(), []*relay.Event{a, b}); err != nil || n != 2 {
			t.Fatal(n, err)
		}
		a2, b2 := turn(t, "a2", "conv-a", "again a"), turn(t, "b2", "conv-b", "again b")
		if sink.CanPack(t.Context(), a2) {
			t.Fatal("a conversation with a thread can pack")
		}
		for _, ev := range []*relay.Event{a2, b2} {
			if err := sink.Send(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
		}
		msgs := srv.Messages()
		if len(msgs) != 3 || msgs[1].ThreadTS != msgs[0].TS || msgs[2].ThreadTS != msgs[0].TS {
			t.Fatalf("later turns are not in the packed message's thread: %+v", msgs)
		}
	})
}

func TestPaceAvoidsRateLimit(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClock()
	srv := slacktest.NewServer(t, slacktest.WithRateLimit(time.Second, 1), slacktest.WithClock(clock))
	sink := newBot(t, srv, nil, relay.SinkDeps{Clock: clock})

	// Two messages in the same instant: the fake refuses the second, as
	// Slack would.
	if err := sink.Send(t.Context(), turn(t, "x1", "", "one")); err != nil {
		t.Fatal(err)
	}
	if class, _ := relay.Classify(sink.Send(t.Context(), turn(t, "x2", "", "two"))); class != relay.ClassRateLimited {
		t.Fatalf("unpaced burst: class %s, want rate_limited", class)
	}
	clock.Advance(time.Second)

	// Paced as the sink asks: no 429 at all.
	every, burst := sink.Pace()
	pace := relay.NewPace(clock, every, burst)
	for i := range 5 {
		acquired := make(chan error, 1)
		go func() { acquired <- pace.Wait(t.Context()) }()
		if i > 0 { // the first goes at once; the others wait for the pace
			if err := clock.BlockUntilContext(t.Context(), 1); err != nil {
				t.Fatal(err)
			}
			clock.Advance(every)
		}
		if err := <-acquired; err != nil {
			t.Fatal(err)
		}
		if err := sink.Send(t.Context(), turn(t, fmt.Sprint("y", i), "", "paced")); err != nil {
			t.Fatalf("paced send %d: %v", i, err)
		}
	}
}

func TestHugeLeadStaysWithinLimits(t *testing.T) {
	t.Parallel()
	for name, fields := range map[string]func(i int) (string, string){
		"many fields":  func(i int) (string, string) { return fmt.Sprint("field_", i), "value" },
		"huge values":  func(i int) (string, string) { return fmt.Sprint("notes_", i), strings.Repeat("long note & more ", 200) },
		"both at once": func(i int) (string, string) { return fmt.Sprint("f", i), strings.Repeat("x", 10*i) },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			lead := map[string]string{"uuid": "u-1", "name": "Ada"}
			for i := range 600 {
				k, v := fields(i)
				lead[k] = v
			}
			body, _ := json.Marshal(map[string]any{"conversation_id": "c-1", "lead": lead})
			ev := decode(t, body, relay.TopicLead, name)
			srv := slacktest.NewServer(t)
			if err := newWebhook(t, srv, slack.Config{}, relay.SinkDeps{}).Send(t.Context(), ev); err != nil {
				t.Fatalf("Send: %v", err) // the fake enforces Slack's limits
			}
			// Short values are fields of the first message, long ones
			// text that continues over up to four: what does not fit is
			// cut, and the cut names the event.
			msgs := srv.Messages()
			last := string(msgs[len(msgs)-1].Blocks)
			if len(msgs) > 4 || !strings.Contains(last, "the whole event is "+ev.ID) && !strings.Contains(last, "the whole turn is event "+ev.ID) {
				t.Fatalf("%d messages; the cut is not noted", len(msgs))
			}
		})
	}
}
