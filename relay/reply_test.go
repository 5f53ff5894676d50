package relay_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/chatrelay/chatrelay/relay"
)

func sampleReply() relay.Reply {
	return relay.Reply{
		Text:    "Hi Sam, I'm Alex from billing. I've refunded the renewal; you'll see it in 3-5 days.",
		AgentID: "U0123AGENT", AgentName: "Alex", AgentAvatar: "https://avatars.slack-edge.com/alex_72.png",
		Sink: "support-slack", Platform: "slack", Channel: "C0123456789",
		Thread: "1765000000.000100", MessageID: "1765000000.000200",
	}
}

func TestNewReplyEvent(t *testing.T) {
	t.Parallel()
	r := sampleReply()
	ev, err := relay.NewReplyEvent("5b1f0c36-3f4e-4a9b-9d0e-2f6c8a1b7e10", "654aee418bc9a33b0e50d0ad", r)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Topic != relay.TopicAgentReply || ev.ConversationID != "5b1f0c36-3f4e-4a9b-9d0e-2f6c8a1b7e10" ||
		ev.ChatbotID != "654aee418bc9a33b0e50d0ad" || ev.Reply == nil || *ev.Reply != r {
		t.Fatalf("event = topic %q conv %q bot %q reply %+v", ev.Topic, ev.ConversationID, ev.ChatbotID, ev.Reply)
	}
	if ev.OrderingKey() != "c:5b1f0c36-3f4e-4a9b-9d0e-2f6c8a1b7e10" {
		t.Fatalf("ordering key %q: replies of a conversation must keep their order", ev.OrderingKey())
	}
	// The body is the stored form: DecodeEvent reads the same event back,
	// and it is the JSON a webhook sink routed the topic receives.
	back, err := relay.DecodeEvent(ev.Body)
	if err != nil || back.Reply == nil || *back.Reply != r || back.Topic != relay.TopicAgentReply {
		t.Fatalf("decoded back: %+v (%v)", back, err)
	}
	var wire map[string]any
	if err := json.Unmarshal(ev.Body, &wire); err != nil {
		t.Fatal(err)
	}
	if wire["event"] != "agent-reply" || wire["conversation_id"] == nil || wire["chatbot_id"] == nil {
		t.Fatalf("body %s lacks event, conversation_id or chatbot_id", ev.Body)
	}
	reply := wire["reply"].(map[string]any)
	for _, k := range []string{"text", "agent_id", "agent_name", "agent_avatar", "sink", "platform", "channel", "thread", "message_id"} {
		if _, ok := reply[k]; !ok {
			t.Errorf("body's reply has no %q: %s", k, ev.Body)
		}
	}

	noAvatar := r
	noAvatar.AgentAvatar = "javascript:alert(1)"
	ev, err = relay.NewReplyEvent("c", "b", noAvatar)
	if err != nil || ev.Reply.AgentAvatar != "" {
		t.Fatalf("an avatar that is not an http(s) URL must be dropped: %+v (%v)", ev.Reply, err)
	}

	incomplete := []struct {
		name      string
		conv, bot string
		edit      func(*relay.Reply)
	}{
		{"no conversation", "", "b", nil},
		{"no chatbot", "c", "", nil},
		{"no text", "c", "b", func(r *relay.Reply) { r.Text = " \n\t" }},
		{"no message id", "c", "b", func(r *relay.Reply) { r.MessageID = "" }},
		{"no thread", "c", "b", func(r *relay.Reply) { r.Thread = "" }},
		{"no sink", "c", "b", func(r *relay.Reply) { r.Sink = "" }},
	}
	for _, tc := range incomplete {
		r := sampleReply()
		if tc.edit != nil {
			tc.edit(&r)
		}
		if _, err := relay.NewReplyEvent(tc.conv, tc.bot, r); !errors.Is(err, relay.ErrReplyIncomplete) {
			t.Errorf("%s: err = %v, want ErrReplyIncomplete", tc.name, err)
		}
	}
}

// TestReplyOnlyInAgentReplies: a Chat Data body with a "reply" member is not
// an agent reply, whatever it holds.
func TestReplyOnlyInAgentReplies(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		`{"event":"chat","reply":{"text":"x","sink":"s","thread":"t","message_id":"m"}}`,
		`{"reply":{"text":"x","sink":"s","thread":"t","message_id":"m"}}`,
		`{"event":"agent-reply","reply":"text"}`,
		`{"event":"agent-reply","reply":{"text":"no identity"}}`,
	} {
		ev, err := relay.DecodeEvent([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if ev.Reply != nil {
			t.Errorf("%s: Reply = %+v, want none", body, ev.Reply)
		}
	}
}

// TestReplyDedupeKey: an agent reply is the same reply when the platform
// says it is the same message, whatever its body; anything else is keyed
// by its body.
func TestReplyDedupeKey(t *testing.T) {
	t.Parallel()
	mk := func(edit func(*relay.Reply)) *relay.Event {
		r := sampleReply()
		if edit != nil {
			edit(&r)
		}
		ev, err := relay.NewReplyEvent("conv", "bot", r)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	base := mk(nil)
	same := []func(*relay.Reply){
		func(r *relay.Reply) { r.Text = "another text" },
		func(r *relay.Reply) { r.AgentName, r.AgentAvatar = "Alex (Billing)", "" },
	}
	for i, edit := range same {
		if ev := mk(edit); ev.DedupeKey() != base.DedupeKey() {
			t.Errorf("same message, change %d: another key", i)
		}
	}
	other := []func(*relay.Reply){
		func(r *relay.Reply) { r.MessageID = "1765000000.000300" },
		func(r *relay.Reply) { r.Sink = "other-slack" },
		func(r *relay.Reply) { r.Channel = "C999" },
		// Length-prefixed parts: moving a character between them is
		// another message.
		func(r *relay.Reply) { r.Channel, r.MessageID = r.Channel+"1", strings.TrimPrefix(r.MessageID, "1") },
	}
	for i, edit := range other {
		if ev := mk(edit); ev.DedupeKey() == base.DedupeKey() {
			t.Errorf("another message, change %d: same key", i)
		}
	}
	chat := &relay.Event{Topic: relay.TopicChat, Body: base.Body, Reply: base.Reply}
	if chat.DedupeKey() != relay.DedupeKey(base.Body) {
		t.Error("an event of another topic must be keyed by its body")
	}
}

func TestReplyRule(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		rule relay.ReplyRule
		in   string
		want string
		ok   bool
	}{
		{"prefix stripped", relay.ReplyRule{}, "reply: Hi Sam", "Hi Sam", true},
		{"prefix any case, leading space", relay.ReplyRule{}, "  \n Reply:Hi", "Hi", true},
		{"no prefix is a note", relay.ReplyRule{}, "checking with billing", "", false},
		{"prefix alone is nothing", relay.ReplyRule{}, "reply:   ", "", false},
		{"prefix later is a note", relay.ReplyRule{}, "I will reply: soon", "", false},
		{"own prefix", relay.ReplyRule{Prefix: "!v "}, "!V hello", "hello", true},
		{"own prefix, default not taken", relay.ReplyRule{Prefix: ">>"}, "reply: x", "", false},
		{"all: plain message", relay.ReplyRule{Mode: relay.ReplyAll}, " Hello there ", "Hello there", true},
		{"all: note", relay.ReplyRule{Mode: relay.ReplyAll}, "NOTE: VIP customer", "", false},
		{"all: prefix stripped too", relay.ReplyRule{Mode: relay.ReplyAll}, "reply: x", "x", true},
		{"all: empty", relay.ReplyRule{Mode: relay.ReplyAll}, " \t", "", false},
		{"multi-line kept", relay.ReplyRule{}, "reply: line 1\nline 2", "line 1\nline 2", true},
		{"non-ASCII prefix", relay.ReplyRule{Prefix: "Antwort:"}, "ANTWORT: Grüße", "Grüße", true},
		// What the visitor's chat cannot show goes, and cannot hide a
		// prefix or a note: from the rule.
		{"control characters dropped", relay.ReplyRule{}, "reply: a\x07b\x1b[31mc\u0085d\r\ne\tf", "ab[31mcd\ne\tf", true},
		{"all: NUL before note:", relay.ReplyRule{Mode: relay.ReplyAll}, "\x00note: VIP customer", "", false},
		{"all: zero-width space before note:", relay.ReplyRule{Mode: relay.ReplyAll}, "\u200bnote: VIP customer", "", false},
		{"all: BOM and LRM before note:", relay.ReplyRule{Mode: relay.ReplyAll}, "\ufeff\u200e NOTE: VIP", "", false},
		{"zero-width space before the prefix", relay.ReplyRule{}, "\u200breply: Hi", "Hi", true},
		{"only invisible after the prefix", relay.ReplyRule{}, "reply: \u200b\x00\u2060", "", false},
		{"emoji sequences kept", relay.ReplyRule{}, "reply: on it 👩\u200d💻", "on it 👩\u200d💻", true},
	}
	for _, tc := range tests {
		got, ok := tc.rule.Visitor(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: Visitor(%q) = %q, %v; want %q, %v", tc.name, tc.in, got, ok, tc.want, tc.ok)
		}
	}
	for _, bad := range []relay.ReplyRule{{Mode: "everything"}, {Prefix: "   "}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v: Validate accepted it", bad)
		}
	}
	if err := (relay.ReplyRule{Mode: relay.ReplyAll, Prefix: "r:"}).Validate(); err != nil {
		t.Error(err)
	}
}

// FuzzReplyRule: what goes to the visitor is never empty, has no leading
// or trailing space, and is the end of what the agent wrote; in prefix
// mode only a message starting with the prefix gives anything.
func FuzzReplyRule(f *testing.F) {
	f.Add("reply: Hi Sam", "", false)
	f.Add("  Reply:x", "reply:", false)
	f.Add("note: internal", "", true)
	f.Add("İstanbul", "i", false)
	f.Add("\u00a0reply:\u2003x", "", true)
	f.Fuzz(func(t *testing.T, text, prefix string, all bool) {
		rule := relay.ReplyRule{Prefix: prefix}
		if all {
			rule.Mode = relay.ReplyAll
		}
		got, ok := rule.Visitor(text)
		if !ok {
			if got != "" {
				t.Fatalf("nothing for the visitor, yet %q", got)
			}
			return
		}
		if got == "" || strings.TrimFunc(got, invisible) != got {
			t.Fatalf("Visitor(%q) = %q: empty or padded", text, got)
		}
		// Control characters (but line breaks and tabs) are dropped
		// wherever they are; the rest is what the agent wrote.
		control := func(r rune) bool { return unicode.IsControl(r) && r != '\n' && r != '\t' }
		if strings.ContainsFunc(got, control) {
			t.Fatalf("Visitor(%q) = %q: a control character reaches the visitor", text, got)
		}
		shown := strings.Map(func(r rune) rune {
			if control(r) {
				return -1
			}
			return r
		}, text)
		if !strings.HasSuffix(strings.TrimRightFunc(shown, invisible), got) {
			t.Fatalf("Visitor(%q) = %q: not the end of the message", text, got)
		}
		if utf8.ValidString(text) && !utf8.ValidString(got) {
			t.Fatalf("Visitor(%q) = %q: valid UTF-8 in, invalid out", text, got)
		}
		p := strings.TrimSpace(prefix)
		if p == "" {
			p = relay.DefaultReplyPrefix
		}
		if lead := strings.TrimLeftFunc(shown, invisible); !all && !strings.EqualFold(firstRunes(lead, utf8.RuneCountInString(p)), p) {
			t.Fatalf("prefix mode took %q, which does not start with %q", text, p)
		}
	})
}

// FuzzReplyEvent: whatever an agent writes and however the platform names
// them, the event stores and reads back the same reply, and its body is
// valid JSON.
func FuzzReplyEvent(f *testing.F) {
	r := sampleReply()
	f.Add(r.Text, r.AgentName, r.AgentAvatar, r.MessageID)
	f.Add("reply: <@U123> *bold* <https://x.y|label> \u2028 \x00", "Dana \"D\" O'Neil", "http://[::1]:80/a.png", "m\n1")
	f.Fuzz(func(t *testing.T, text, name, avatar, msgID string) {
		r := sampleReply()
		r.Text, r.AgentName, r.AgentAvatar, r.MessageID = text, name, avatar, msgID
		ev, err := relay.NewReplyEvent("conv", "bot", r)
		if err != nil {
			if !errors.Is(err, relay.ErrReplyIncomplete) {
				t.Fatalf("unexpected error: %v", err)
			}
			return
		}
		if !json.Valid(ev.Body) {
			t.Fatalf("body is not JSON: %q", ev.Body)
		}
		back, err := relay.DecodeEvent(ev.Body)
		if err != nil || back.Reply == nil {
			t.Fatalf("stored reply unreadable: %v", err)
		}
		if !reflect.DeepEqual(*back.Reply, *ev.Reply) {
			t.Fatalf("read back %+v, stored %+v", *back.Reply, *ev.Reply)
		}
		// JSON carries text as valid UTF-8: what is not is replaced, and
		// everything else arrives as written.
		if utf8.ValidString(text) && back.Reply.Text != text {
			t.Fatalf("text %q read back as %q", text, back.Reply.Text)
		}
	})
}

// firstRunes returns the first n runes of s (an invalid byte counts as
// one, as utf8.DecodeRuneInString reads it).
func firstRunes(s string, n int) string {
	i := 0
	for ; n > 0 && i < len(s); n-- {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return s[:i]
}

func TestRouterAgentReplies(t *testing.T) {
	t.Parallel()
	sinks := []string{"slack", "discord", "crm", "chatdata"}
	routes := []relay.Route{
		{Match: relay.Match{ChatbotID: []string{"bot-a"}}, Sinks: []string{"slack", "chatdata"}},
		{Match: relay.Match{Topic: []string{relay.TopicAgentReply}, ChatbotID: []string{"bot-a"}}, Sinks: []string{"crm"}},
		{Match: relay.Match{Topic: []string{relay.TopicChat, relay.TopicAgentReply}}, Sinks: []string{"discord"}},
	}
	reply := func(bot string) *relay.Event {
		return &relay.Event{Topic: relay.TopicAgentReply, ChatbotID: bot}
	}
	chat := &relay.Event{Topic: relay.TopicChat, ChatbotID: "bot-a"}
	tests := []struct {
		name   string
		router *relay.Router
		ev     *relay.Event
		want   []string
	}{
		{"reply: destination, and routes naming the topic", relay.NewRouter(sinks, routes, relay.ReplyDestinations("chatdata")),
			reply("bot-a"), []string{"discord", "crm", "chatdata"}},
		{"reply: a route that does not name the topic does not echo it", relay.NewRouter(sinks, routes[:1], relay.ReplyDestinations("chatdata")),
			reply("bot-a"), []string{"chatdata"}},
		{"reply without routes: the destination only", relay.NewRouter(sinks, nil, relay.ReplyDestinations("chatdata")),
			reply("bot-b"), []string{"chatdata"}},
		{"chat without routes: never the reply destination", relay.NewRouter(sinks, nil, relay.ReplyDestinations("chatdata")),
			chat, []string{"slack", "discord", "crm"}},
		{"chat: a route naming the reply destination does not reach it", relay.NewRouter(sinks, routes, relay.ReplyDestinations("chatdata")),
			chat, []string{"slack", "discord"}},
		{"reply with no destination configured goes nowhere", relay.NewRouter(sinks[:3], nil), reply("bot-a"), nil},
	}
	for _, tc := range tests {
		if got := tc.router.Route(tc.ev); !slices.Equal(got, tc.want) {
			t.Errorf("%s: Route = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestReceiverRefusesAgentReplies: agent-reply is the relay's own topic (an
// agent's answer, which goes to Chat Data's live-chat API). A signed body
// that claims it, by header or by its "event" field, is refused: Chat Data
// never sends one, and the header is not signed.
func TestReceiverRefusesAgentReplies(t *testing.T) {
	t.Parallel()
	f := newReceiver(t, nil, nil)
	reply, err := relay.NewReplyEvent("conv", "bot", sampleReply())
	if err != nil {
		t.Fatal(err)
	}
	chat := readPayload(t, "chat.json")
	for _, tc := range []struct {
		name, topic string
		body        []byte
	}{
		{"by header", relay.TopicAgentReply, chat},
		{"by the body's event field", "", reply.Body},
	} {
		resp, a := post(t, f.srv.URL+"/webhook", "POST", tc.body, relay.Sign(tc.body, secret), tc.topic)
		if resp.StatusCode != 400 || a.Status != "rejected" || !strings.Contains(a.Error, relay.TopicAgentReply) {
			t.Fatalf("%s: %d %+v, want 400 naming the topic", tc.name, resp.StatusCode, a)
		}
	}
	if recent, _ := f.store.Recent(t.Context(), "", 10); len(recent) != 0 {
		t.Fatalf("stored %+v", recent)
	}
	// Under another topic, a body with a "reply" member is Chat Data's
	// event like any other: it carries no agent reply.
	resp, a := post(t, f.srv.URL+"/webhook", "POST", reply.Body, relay.Sign(reply.Body, secret), relay.TopicChat)
	if resp.StatusCode != 200 {
		t.Fatalf("chat topic: %d %+v", resp.StatusCode, a)
	}
	rec, err := f.store.Lookup(t.Context(), a.ID)
	if err != nil || rec.Event.Topic != relay.TopicChat {
		t.Fatalf("Lookup: %+v %v", rec, err)
	}
	if rec.Event.AgentReply() != nil || rec.Event.DedupeKey() != relay.DedupeKey(reply.Body) {
		t.Fatal("a chat event carries no agent reply and is keyed by its body")
	}
}

func TestReplied(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]string{
		"Dana":            "Agent Dana replied:",
		"  Dana \n Smith": "Agent Dana Smith replied:",
		"":                "An agent replied:",
		" \t":             "An agent replied:",
	} {
		if got := (&relay.Reply{AgentName: name}).Replied(); got != want {
			t.Errorf("Replied(%q) = %q, want %q", name, got, want)
		}
	}
}

// The hint under an escalation tells agents the words the rule takes:
// following it reaches the visitor, and the note it names stays internal.
func TestReplyRuleHint(t *testing.T) {
	t.Parallel()
	for _, rule := range []relay.ReplyRule{{}, {Prefix: "  !v "}, {Prefix: "Antwort:"}, {Mode: relay.ReplyAll}, {Mode: relay.ReplyAll, Prefix: ">>"}} {
		hint := rule.Hint()
		_, quoted, ok := strings.Cut(hint, `"`)
		word, _, closed := strings.Cut(quoted, `"`)
		if !ok || !closed || word == "" {
			t.Fatalf("%+v: hint %q quotes no word", rule, hint)
		}
		got, taken := rule.Visitor(word + " Hi Sam")
		if rule.Mode == relay.ReplyAll {
			if word != relay.NotePrefix || taken {
				t.Errorf("%+v: hint %q: a message starting %q went to the visitor (%q)", rule, hint, word, got)
			}
			if got, taken := rule.Visitor("Hi Sam"); !taken || got != "Hi Sam" {
				t.Errorf("%+v: hint %q, yet a plain message = %q, %v", rule, hint, got, taken)
			}
			continue
		}
		if !taken || got != "Hi Sam" {
			t.Errorf("%+v: following hint %q gave %q, %v", rule, hint, got, taken)
		}
	}
}

// invisible: spaces and format characters (zero-width space, BOM,
// direction marks), which show nothing before or after a message.
func invisible(r rune) bool { return unicode.IsSpace(r) || unicode.Is(unicode.Cf, r) }
