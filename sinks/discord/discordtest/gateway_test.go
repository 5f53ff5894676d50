package discordtest_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"

	"github.com/chatrelay/chatrelay/sinks/discord/discordtest"
)

// newSession is a discordgo Session pointed at the fake gateway through its
// http.Client and websocket.Dialer only (discordgo's Endpoint* globals are
// left alone), with the intents the relay's Discord adapter needs.
func newSession(t *testing.T, gw *discordtest.Gateway, token string) *discordgo.Session {
	t.Helper()
	s, err := discordgo.New("Bot " + token)
	if err != nil {
		t.Fatal(err)
	}
	s.Client = gw.HTTPClient()
	s.Dialer = gw.Dialer()
	s.ShouldRetryOnRateLimit = false
	s.LogLevel = -1 // discordgo logs through the log package otherwise
	s.Identify.Intents = discordgo.IntentsGuildMessages | discordgo.IntentsMessageContent
	return s
}

func within(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatal("nothing received in 20 s")
	}
	panic("unreachable")
}

var agent = discordgo.User{ID: "1310000000000000777", Username: "alex", GlobalName: "Alex", Avatar: "a1b2c3d4e5f6"}

// TestGatewayWithDiscordgo: a discordgo Session opens the fake gateway
// (HELLO, IDENTIFY with the bot token and the intents, READY), heartbeats,
// receives a thread message and a button click, answers the click through
// the interaction callback, and when told to reconnect (op 7) resumes its
// session (op 6) and gets the dispatch it missed meanwhile, once.
func TestGatewayWithDiscordgo(t *testing.T) {
	t.Parallel()
	gw := discordtest.NewGateway(t, discordtest.WithHeartbeat(100*time.Millisecond))
	s := newSession(t, gw, gw.Token())
	messages := make(chan *discordgo.MessageCreate, 16)
	clicks := make(chan *discordgo.InteractionCreate, 16)
	s.AddHandler(func(_ *discordgo.Session, m *discordgo.MessageCreate) { messages <- m })
	s.AddHandler(func(s *discordgo.Session, i *discordgo.InteractionCreate) {
		clicks <- i
		// Answer within 3 s: a deferred update of the clicked message.
		if err := s.InteractionRespond(i.Interaction, &discordgo.InteractionResponse{
			Type: discordgo.InteractionResponseDeferredMessageUpdate}); err != nil {
			t.Errorf("InteractionRespond: %v", err)
		}
	})
	// The session is reopened by a loop the test owns, as the relay's
	// adapter must own it: discordgo's own reconnection runs in goroutines
	// that Close does not stop (a heartbeat that fails while op 7 closes
	// the connection reopens it after Close), so it is switched off.
	s.ShouldReconnectOnError = false
	disconnected := make(chan struct{}, 8)
	s.AddHandler(func(*discordgo.Session, *discordgo.Disconnect) {
		select {
		case disconnected <- struct{}{}:
		default:
		}
	})
	if err := s.Open(); err != nil {
		t.Fatalf("Open: %v", err)
	}
	loop, stopLoop := context.WithCancel(t.Context())
	var reopen sync.WaitGroup
	reopen.Go(func() {
		for {
			select {
			case <-loop.Done():
				return
			case <-disconnected:
			}
			for {
				err := s.Open() // resumes: discordgo kept the session id and sequence
				if err == nil || errors.Is(err, discordgo.ErrWSAlreadyOpen) {
					break
				}
				select {
				case <-loop.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}
	})
	defer func() {
		stopLoop()
		reopen.Wait()
		s.Close()
	}()
	ctx := within(t)

	ids, err := gw.WaitIdentified(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := discordgo.IntentsGuildMessages | discordgo.IntentsMessageContent; ids[0].Intents != want {
		t.Fatalf("IDENTIFY intents %d, want GuildMessages|MessageContent (%d)", ids[0].Intents, want)
	}
	if s.State.User == nil || s.State.User.ID != gw.BotID || !s.State.User.Bot {
		t.Fatalf("READY not taken: state user %+v", s.State.User)
	}
	if err := gw.WaitHeartbeats(ctx, 2); err != nil {
		t.Fatalf("no heartbeats: %v", err)
	}

	// The sample thread message (../shared/payloads/discord).
	raw, err := os.ReadFile(filepath.Join("..", "testdata", "message-create-thread.json"))
	if err != nil {
		t.Fatal(err)
	}
	var frame struct {
		D json.RawMessage `json:"d"`
	}
	if err := json.Unmarshal(raw, &frame); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Dispatch(ctx, "MESSAGE_CREATE", frame.D); err != nil {
		t.Fatal(err)
	}
	m := receive(t, messages)
	if m.ChannelID != "1310000000000000400" || m.Author.ID != agent.ID || m.Author.Bot || m.Member.Nick != "Alex (Billing)" ||
		m.Content != "reply: Hi Sam, I've refunded the renewal." {
		t.Fatalf("message read as %+v (author %+v)", m.Message, m.Author)
	}

	click := gw.ButtonClick("1310000000000000600", "1310000000000000400", "1310000000000000001", "1310000000000000400",
		"chatrelay:claim:conv-1", agent, "Alex (Billing)")
	if _, err := gw.Dispatch(ctx, "INTERACTION_CREATE", click); err != nil {
		t.Fatal(err)
	}
	i := receive(t, clicks)
	if i.Type != discordgo.InteractionMessageComponent || i.MessageComponentData().CustomID != "chatrelay:claim:conv-1" ||
		i.Member == nil || i.Member.User.ID != agent.ID || i.Message.ID != "1310000000000000400" {
		t.Fatalf("click read as %+v", i.Interaction)
	}
	resp, err := gw.WaitInteractionResponse(ctx, "1310000000000000600")
	if err != nil || resp.Response.Type != discordgo.InteractionResponseDeferredMessageUpdate || resp.Late {
		t.Fatalf("interaction response %+v, %v", resp, err)
	}

	// Forced reconnect: op 7, then a message while the client is away.
	seq, err := gw.Dispatch(ctx, "MESSAGE_CREATE", discordtest.MessageCreate("1310000000000000501", "1310000000000000400",
		"1310000000000000001", agent, "Alex (Billing)", "reply: one more thing"))
	if err != nil {
		t.Fatal(err)
	}
	if m := receive(t, messages); m.ID != "1310000000000000501" {
		t.Fatalf("got %s", m.ID)
	}
	if err := gw.Reconnect(); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Dispatch(ctx, "MESSAGE_CREATE", discordtest.MessageCreate("1310000000000000502", "1310000000000000400",
		"1310000000000000001", agent, "Alex (Billing)", "reply: sent while you were away")); err != nil {
		t.Fatal(err)
	}
	resumes, err := gw.WaitResumed(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r := resumes[0]; !r.Valid || r.Seq != seq || r.Conn != 1 {
		t.Fatalf("RESUME %+v, want a valid resume from seq %d on the second connection", r, seq)
	}
	if m := receive(t, messages); m.ID != "1310000000000000502" {
		t.Fatalf("after resuming got %s, want the missed message", m.ID)
	}
	if _, err := gw.Dispatch(ctx, "MESSAGE_CREATE", discordtest.MessageCreate("1310000000000000503", "1310000000000000400",
		"1310000000000000001", agent, "Alex (Billing)", "reply: and now")); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, messages); m.ID != "1310000000000000503" {
		t.Fatalf("got %s, want the message after resuming (nothing twice)", m.ID)
	}
	if n, _ := gw.WaitIdentified(ctx, 1); len(n) != 1 {
		t.Fatalf("%d IDENTIFYs: a resumed session identifies once", len(n))
	}
}

// TestGatewayRefusesAnotherToken: IDENTIFY with a token that is not the
// bot's is closed with 4004 (authentication failed).
func TestGatewayRefusesAnotherToken(t *testing.T) {
	t.Parallel()
	gw := discordtest.NewGateway(t)
	s := newSession(t, gw, "not-the-token")
	s.ShouldReconnectOnError = false
	// Open reads HELLO and sends IDENTIFY; the gateway answers with a close.
	err := s.Open()
	if err == nil {
		s.Close()
		t.Fatal("Open with a wrong token succeeded")
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4004 {
		t.Fatalf("Open = %v, want the gateway's close 4004", err)
	}
	ids, werr := gw.WaitIdentified(within(t), 1)
	if werr != nil || ids[0].Token == "Bot "+gw.Token() {
		t.Fatalf("identifies %+v, %v", ids, werr)
	}
}

// TestGatewayInteractionCallbackRules: a callback for an interaction never
// dispatched is 404 (10062), a second one 400 (40060).
func TestGatewayInteractionCallbackRules(t *testing.T) {
	t.Parallel()
	gw := discordtest.NewGateway(t)
	s := newSession(t, gw, gw.Token())
	clicks := make(chan *discordgo.InteractionCreate, 1)
	s.AddHandler(func(_ *discordgo.Session, i *discordgo.InteractionCreate) { clicks <- i })
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := within(t)
	codeOf := func(err error) int {
		var rest *discordgo.RESTError
		if !errors.As(err, &rest) || rest.Message == nil {
			return 0
		}
		return rest.Message.Code
	}
	deferred := &discordgo.InteractionResponse{Type: discordgo.InteractionResponseDeferredMessageUpdate}
	unknown := &discordgo.Interaction{ID: "1310000000000000601", Token: "itok"}
	if err := s.InteractionRespond(unknown, deferred); codeOf(err) != discordgo.ErrCodeUnknownInteraction {
		t.Fatalf("unknown interaction: %v", err)
	}
	if _, err := gw.Dispatch(ctx, "INTERACTION_CREATE", gw.ButtonClick("1310000000000000602", "1310000000000000400",
		"1310000000000000001", "1310000000000000400", "chatrelay:resolve:conv-1", agent, "")); err != nil {
		t.Fatal(err)
	}
	i := receive(t, clicks)
	if err := s.InteractionRespond(i.Interaction, deferred); err != nil {
		t.Fatal(err)
	}
	if err := s.InteractionRespond(i.Interaction, deferred); codeOf(err) != discordgo.ErrCodeInteractionHasAlreadyBeenAcknowledged {
		t.Fatalf("second answer: %v", err)
	}
}

// TestGatewayWithREST: one Session, one http.Client: the gateway's calls go
// to the gateway fake, the REST calls to the REST fake.
func TestGatewayWithREST(t *testing.T) {
	t.Parallel()
	rest := discordtest.NewServer(t)
	channel := rest.AddChannel(discordgo.ChannelTypeGuildText)
	gw := discordtest.NewGateway(t, discordtest.WithREST(rest))
	s := newSession(t, gw, gw.Token())
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.ChannelMessageSendComplex(channel, &discordgo.MessageSend{Content: "hello",
		AllowedMentions: &discordgo.MessageAllowedMentions{Parse: []discordgo.AllowedMentionType{}}}); err != nil {
		t.Fatalf("REST through the gateway's client: %v", err)
	}
	if msgs := rest.Messages(channel); len(msgs) != 1 || msgs[0].Content != "hello" {
		t.Fatalf("REST fake got %+v", msgs)
	}
}
