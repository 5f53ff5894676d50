package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/chatdata/chatdatatest"
	"github.com/chatrelay/chatrelay/sinks/discord/discordtest"
)

// TestDiscordTwoWayAsANewUser follows the README's "Two-way live chat"
// Discord set-up through the binary (serve, the embedded store), with
// fakes standing in for Discord (REST and gateway) and Chat Data:
//  1. a visitor asks for a person: the escalation opens its thread in the
//     channel, with Claim and Resolve;
//  2. an agent answers in the thread with reply:; the relay stores it and
//     is stopped while Chat Data has not answered yet; once started again
//     it delivers the reply, once, and puts ✅ on the agent's message;
//  3. a message without the prefix stays an internal note; two quick
//     replies reach the visitor in the order written;
//  4. Claim shows who has the conversation on the escalation (the second
//     clicker is told, only them), Resolve shows it resolved;
//  5. with a Chat Data key that is refused (401) the reply is held (the
//     thread told once), then dead-lettered at retry.max_age, and the
//     thread says so with the replay command.
//
// It logs what the channel shows at each step (go test -v).
func TestDiscordTwoWayAsANewUser(t *testing.T) {
	t.Parallel()
	rest := discordtest.NewServer(t, discordtest.WithRateLimit(0, 0))
	channel := rest.AddChannel(discordgo.ChannelTypeGuildText)
	gw := discordtest.NewGateway(t, discordtest.WithREST(rest))
	api := chatdatatest.NewServer(t)
	front := newHeldFront(t, api.URL)
	const conv, chatbot = "5b0c7c1e-2d2f-4a36-9d8e-0f7d2c1a9b11", "654aee418bc9a33b0e50d0ad"
	dir := t.TempDir()
	config := func(apiKey, maxAge string) string {
		return discordTwoWayYAML(twoWaySetup{secret: "newuser-secret", level: "debug", maxAge: maxAge, dir: dir,
			apiKey: apiKey, apiURL: front.URL, gw: gw, channel: channel})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	runs := newDiscordRuns(t, ctx, gw)
	start := runs.start
	first := start("first", config(api.Key, "1h"), 1)

	// 1. The escalation opens the thread, with Claim and Resolve.
	body, err := os.ReadFile(filepath.Join("..", "..", "sinks", "discord", "testdata", "live-chat-escalation.json"))
	if err != nil {
		t.Fatal(err)
	}
	postSignedTopic(t, first.listen, "newuser-secret", "live-chat-escalation", body)
	var thread string
	relaytest.Eventually(t, 30*time.Second, "the escalation's thread", func() bool {
		if th := rest.Threads(channel); len(th) == 1 {
			thread = th[0]
		}
		return thread != ""
	})
	// The thread is the conversation's once the escalation's delivery is
	// done (a reply before that, within milliseconds, would be in a
	// thread the relay does not know yet).
	relaytest.Eventually(t, 30*time.Second, "the escalation delivered", func() bool { return first.delivered("live-chat-escalation") })
	root, _ := rest.Message(thread) // the thread starts on the escalation
	if got := buttonLabels(t, root); got != "[🙋 Claim] [✅ Resolve]" {
		t.Fatalf("the escalation's buttons: %s", got)
	}
	t.Logf("1. escalation posted:\n%s", channelView(t, rest, channel, thread))

	// 2. A reply, stored; the relay stops while Chat Data has not
	// answered; started again, it delivers the reply once.
	dana := discordgo.User{ID: "1310000000000000777", Username: "dana", GlobalName: "Dana K"}
	sam := discordgo.User{ID: "1310000000000000778", Username: "sam"}
	say := func(text string) string {
		t.Helper()
		id, err := gw.Say(ctx, thread, dana, "", text)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	checked := func(id string) bool {
		return slices.Contains(rest.Reactions(), discordtest.Reaction{ChannelID: thread, MessageID: id, Emoji: "✅"})
	}
	front.hold()
	hello := say("reply: Hi, I'm Dana from support. A replacement ships today.")
	select {
	case <-front.arrived:
	case <-ctx.Done():
		t.Fatal("the reply never reached Chat Data's door")
	}
	first.stop()
	if n := len(api.Messages(conv)); n != 0 || checked(hello) {
		t.Fatalf("before the restart: %d messages at Chat Data, ✅ %v", n, checked(hello))
	}
	t.Logf("2a. reply written, relay stopped before Chat Data answered:\n%s", channelView(t, rest, channel, thread))
	second := start("second", config(api.Key, "1h"), 2)
	relaytest.Eventually(t, 30*time.Second, "✅ on the reply after the restart", func() bool { return checked(hello) })
	msgs := api.Messages(conv)
	if len(msgs) != 1 || msgs[0].Text != "Hi, I'm Dana from support. A replacement ships today." || msgs[0].Name != "Dana K" ||
		msgs[0].Role != "human" || msgs[0].ChatbotID != chatbot {
		t.Fatalf("Chat Data got %+v; want the reply once, as Dana K", msgs)
	}
	t.Logf("2b. started again: the reply reached the visitor:\n%s", channelView(t, rest, channel, thread))

	// 3. A note stays in the thread; two quick replies keep their order.
	note := say("checking the warehouse before I promise anything")
	one := say("reply: First: your order number is 1042.")
	two := say("reply: Second: the courier comes tomorrow morning.")
	relaytest.Eventually(t, 30*time.Second, "✅ on both quick replies", func() bool { return checked(one) && checked(two) })
	var texts []string
	for _, m := range api.Messages(conv) {
		texts = append(texts, m.Text)
	}
	if want := []string{"Hi, I'm Dana from support. A replacement ships today.", "First: your order number is 1042.",
		"Second: the courier comes tomorrow morning."}; !slices.Equal(texts, want) {
		t.Fatalf("the visitor saw %q, want %q (no note, in order)", texts, want)
	}
	if checked(note) {
		t.Fatal("the note got ✅")
	}
	t.Logf("3. a note and two quick replies:\n%s", channelView(t, rest, channel, thread))

	// 4. Dana claims; Sam clicks Claim right after and is told; Dana
	// resolves.
	claim, resolve := "chatrelay:claim:"+conv+":"+chatbot, "chatrelay:resolve:"+conv+":"+chatbot
	for i, who := range []discordgo.User{dana, sam} {
		if _, err := gw.Dispatch(ctx, "INTERACTION_CREATE",
			gw.ButtonClick(fmt.Sprintf("131000000000000080%d", i), channel, discordtest.GuildID, root.ID, claim, who, "")); err != nil {
			t.Fatal(err)
		}
	}
	fus, err := gw.WaitFollowups(ctx, 1)
	if err != nil || fus[0].InteractionID != "1310000000000000801" || fus[0].Content != "Someone was first: 🙋 Claimed by Dana K." {
		t.Fatalf("the second clicker was told %+v, %v", fus, err)
	}
	shows := func(what, status, buttons string) {
		t.Helper()
		relaytest.Eventually(t, 30*time.Second, "the escalation to show "+what, func() bool {
			m, _ := rest.Message(root.ID)
			return strings.HasPrefix(m.Content, status+"\n") && buttonLabels(t, m) == buttons
		})
	}
	shows("the claim", "**🙋 Claimed by Dana K**", "[🙋 Claim (disabled)] [✅ Resolve]")
	t.Logf("4a. Dana claimed (Sam, second, was told %q):\n%s", fus[0].Content, channelView(t, rest, channel, thread))
	if _, err := gw.Dispatch(ctx, "INTERACTION_CREATE",
		gw.ButtonClick("1310000000000000803", channel, discordtest.GuildID, root.ID, resolve, dana, "")); err != nil {
		t.Fatal(err)
	}
	shows("it resolved", "**✅ Resolved by Dana K**", "[🙋 Claim (disabled)] [✅ Resolve (disabled)]")
	t.Logf("4b. Dana resolved:\n%s", channelView(t, rest, channel, thread))
	second.stop()

	// 5. A key Chat Data refuses: the reply is held, then dead-lettered
	// at retry.max_age, and the thread is told.
	start("refused key", config("sk-not-the-key-"+strings.Repeat("0", 32), "2s"), 3)
	lost := say("reply: One more thing: keep the broken one.")
	var told discordtest.Message
	relaytest.Eventually(t, 30*time.Second, "the thread told of the dead letter", func() bool {
		for _, m := range rest.Messages(thread) {
			if strings.Contains(m.Content, "did not reach the visitor") {
				told = m
				return true
			}
		}
		return false
	})
	for _, want := range []string{"401", "To send it again: ", " dlq replay "} {
		if !strings.Contains(told.Content, want) {
			t.Errorf("the note %q lacks %q", told.Content, want)
		}
	}
	var ref struct {
		Reference struct {
			MessageID string `json:"message_id"`
		} `json:"message_reference"`
	}
	if err := json.Unmarshal(told.Payload, &ref); err != nil || ref.Reference.MessageID != lost {
		t.Errorf("the note is not in reply to the lost reply: %s", told.Payload)
	}
	// Before that, held: told once at the first 401, in reply to it,
	// although the reply was retried until retry.max_age.
	var held []discordtest.Message
	deadAt, heldAt := -1, -1
	for i, m := range rest.Messages(thread) {
		switch {
		case strings.Contains(m.Content, relay.NotDeliveredYet):
			held, heldAt = append(held, m), i
		case m.ID == told.ID:
			deadAt = i
		}
	}
	refused := 0
	for _, r := range api.Requests() {
		if r.Status == http.StatusUnauthorized {
			refused++
		}
	}
	if len(held) != 1 || refused < 2 {
		t.Fatalf("%d held notes after %d refusals from Chat Data, want one despite the retries", len(held), refused)
	}
	if !strings.HasPrefix(held[0].Content, "⏳ "+relay.NotDeliveredYet+": Chat Data refuses chatrelay's API key (HTTP 401).") ||
		heldAt > deadAt {
		t.Errorf("the held note %q does not say why, or does not come before the dead-letter note", held[0].Content)
	}
	if err := json.Unmarshal(held[0].Payload, &ref); err != nil || ref.Reference.MessageID != lost {
		t.Errorf("the held note is not in reply to the lost reply: %s", held[0].Payload)
	}
	if checked(lost) || len(api.Messages(conv)) != 3 {
		t.Errorf("the refused reply got ✅ or reached the visitor")
	}
	t.Logf("5. Chat Data refused the key:\n%s", channelView(t, rest, channel, thread))
	for _, r := range runs.all {
		if l := r.logs.String(); strings.Contains(l, gw.Token()) || strings.Contains(l, api.Key) || strings.Contains(l, "sk-not-the-key") {
			t.Errorf("serve %s: a secret reached the logs", r.name)
		}
	}
}

// heldFront stands in front of the fake Chat Data: once hold is called,
// the next live-chat request is held until the relay gives up on it (it
// is stopped), and arrived is closed; every other request goes through.
type heldFront struct {
	URL     string
	arrived chan struct{}

	mu      sync.Mutex
	holding bool
}

func newHeldFront(t *testing.T, target string) *heldFront {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	f := &heldFront{arrived: make(chan struct{})}
	closing := make(chan struct{})
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		held := f.holding && r.URL.Path == chatdatatest.LiveChatPath
		f.holding = f.holding && !held
		f.mu.Unlock()
		if held {
			// The body read to its end, the server watches the
			// connection: its context ends when the relay hangs up.
			_, _ = io.Copy(io.Discard, r.Body)
			close(f.arrived)
			select {
			case <-r.Context().Done():
			case <-closing:
			}
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { close(closing); srv.Close() })
	f.URL = srv.URL
	return f
}

func (f *heldFront) hold() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.holding = true
}

// buttonLabels shows a message's buttons: "[🙋 Claim] [✅ Resolve
// (disabled)]".
func buttonLabels(t *testing.T, m discordtest.Message) string {
	t.Helper()
	if len(m.Components) == 0 {
		return ""
	}
	var rows []struct {
		Components []struct {
			Label    string `json:"label"`
			Disabled bool   `json:"disabled"`
			Emoji    *struct {
				Name string `json:"name"`
			} `json:"emoji"`
		} `json:"components"`
	}
	if err := json.Unmarshal(m.Components, &rows); err != nil {
		t.Fatalf("components %s: %v", m.Components, err)
	}
	var out []string
	for _, row := range rows {
		for _, b := range row.Components {
			s := b.Label
			if b.Emoji != nil {
				s = b.Emoji.Name + " " + s
			}
			if b.Disabled {
				s += " (disabled)"
			}
			out = append(out, "["+s+"]")
		}
	}
	return strings.Join(out, " ")
}

var replayID = regexp.MustCompile(`dlq replay \S+`)

// channelView is what a person sees in the channel and the thread: each
// message's author, text (an embed by its title), buttons and ✅.
func channelView(t *testing.T, rest *discordtest.Server, channel, thread string) string {
	t.Helper()
	reacted := map[string]bool{}
	for _, r := range rest.Reactions() {
		reacted[r.MessageID] = true
	}
	var b strings.Builder
	line := func(indent string, m discordtest.Message) {
		who := "chatrelay (bot)"
		if m.Author != "" {
			who = "agent " + m.Author
		}
		text := replayID.ReplaceAllString(m.Content, "dlq replay <id>")
		for _, e := range m.Embeds {
			text += " [embed: " + e.Title + "]"
		}
		fmt.Fprintf(&b, "%s%s: %s", indent, who, strings.ReplaceAll(text, "\n", " ⏎ "))
		if bl := buttonLabels(t, m); bl != "" {
			b.WriteString("  " + bl)
		}
		if reacted[m.ID] {
			b.WriteString("  ✅")
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "  #channel\n")
	for _, m := range rest.Messages(channel) {
		line("    ", m)
		if m.ID == thread {
			fmt.Fprintf(&b, "      thread:\n")
			for _, tm := range rest.Messages(thread) {
				line("        ", tm)
			}
		}
	}
	return b.String()
}
