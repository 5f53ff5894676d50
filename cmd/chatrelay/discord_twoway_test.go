package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/chatdata/chatdatatest"
	"github.com/chatrelay/chatrelay/sinks/discord/discordtest"
)

// replicaProc is one serve run that a test can stop on its own.
type replicaProc struct {
	name          string
	listen, admin string
	logs          *relaytest.LogBuffer
	stop          func()
}

// startServe runs serve with yaml (listen and admin added) until stop or
// the end of the test.
func startServe(t *testing.T, name, yaml string) *replicaProc {
	t.Helper()
	listen, admin := freeAddr(t), freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf("listen: %s\nadmin: {listen: %s}\n", listen, admin)+yaml)
	return serveAt(t, name, cfg, listen, admin)
}

// serveAt runs serve on the config file at path, whose listen and admin
// addresses are given, until stop or the end of the test; it returns once
// the receiver is ready.
func serveAt(t *testing.T, name, path, listen, admin string) *replicaProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &replicaProc{name: name, listen: listen, admin: admin, logs: &relaytest.LogBuffer{}}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", path}, nil, &relaytest.LogBuffer{}, r.logs, os.Getenv)
	}()
	stopped := false
	r.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("%s: serve exit %d:\n%s", name, code, r.logs.String())
		}
	}
	t.Cleanup(r.stop)
	relaytest.Eventually(t, 30*time.Second, name+"'s receiver", func() bool {
		resp, err := http.Get("http://" + listen + "/readyz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	return r
}

// twoWaySetup is what discordTwoWayYAML fills in.
type twoWaySetup struct {
	secret, level, maxAge, dir string // the signing secret, log level, retry.max_age, store.path
	apiKey, apiURL             string // Chat Data's
	gw                         *discordtest.Gateway
	channel                    string
}

// discordTwoWayYAML is a config with one two-way Discord sink (chat-monitor,
// reply: prefix) on the fake gateway's Discord, the chatdata section, and
// the embedded store in setup.dir.
func discordTwoWayYAML(c twoWaySetup) string {
	return fmt.Sprintf(`
signing_secrets: [%s]
log: {level: %s, format: json}
retry: {initial: 50ms, max: 300ms, max_age: %s}
shutdown_timeout: 500ms
store: {path: %s}
chatdata:
  api_key: %s
  api_url: %s
sinks:
  - name: chat-monitor
    type: discord
    token: %s
    channel_id: "%s"
    api_url: %s/api/v10
    mention: "<@&1310000000000000444>"
    reply: { prefix: "reply:" }
`, c.secret, c.level, c.maxAge, c.dir, c.apiKey, c.apiURL, c.gw.Token(), c.channel, c.gw.URL())
}

// discordRuns starts serve runs of a test one after the other against one
// fake gateway, and shows every run's log if the test fails.
type discordRuns struct {
	t   *testing.T
	ctx context.Context
	gw  *discordtest.Gateway
	all []*replicaProc
}

func newDiscordRuns(t *testing.T, ctx context.Context, gw *discordtest.Gateway) *discordRuns {
	r := &discordRuns{t: t, ctx: ctx, gw: gw}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range r.all {
				t.Logf("serve %s:\n%s", p.name, p.logs.String())
			}
		}
	})
	return r
}

// start runs serve with yaml and returns once the gateway has seen the
// test's sessions-th session open (this run's).
func (r *discordRuns) start(name, yaml string, sessions int) *replicaProc {
	r.t.Helper()
	p := startServe(r.t, name, yaml)
	r.all = append(r.all, p)
	if _, err := r.gw.WaitIdentified(r.ctx, sessions); err != nil {
		r.t.Fatalf("%s: no gateway session: %v", name, err)
	}
	return p
}

// TestDiscordTwoWayOnTwoReplicas runs two serve replicas on one NATS
// server with a two-way Discord bot sink and the chatdata destination,
// against fakes of Discord (REST and gateway) and of Chat Data's API:
//   - exactly one replica holds the gateway session, the one that owns the
//     sink; when it stops, the other takes the session over;
//   - an agent's prefixed reply in the conversation's thread reaches Chat
//     Data under the agent's nickname, and gets ✅ once accepted, through
//     whichever replica holds the session (before and after the handover);
//   - a reply Chat Data refuses for good is dead-lettered, and the thread
//     says so with the replay command;
//   - two agents click Claim on the escalation: one wins, the other is
//     told; the escalation then shows who has it, and Resolve after.
//
// The holder either stops, or is cut off from NATS while it runs (as a
// crash looks to the other replica): its lease lapses, it closes its
// session, and the other replica takes the sink and the session over.
func TestDiscordTwoWayOnTwoReplicas(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		crash bool
	}{{"holder stops", false}, {"holder cut off", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			discordTwoWay(t, tc.crash)
		})
	}
}

func discordTwoWay(t *testing.T, crash bool) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	rest := discordtest.NewServer(t, discordtest.WithRateLimit(0, 0))
	channel := rest.AddChannel(discordgo.ChannelTypeGuildText)
	gw := discordtest.NewGateway(t, discordtest.WithREST(rest))
	api := chatdatatest.NewServer(t)
	const conv, chatbot = "5b0c7c1e-2d2f-4a36-9d8e-0f7d2c1a9b11", "654aee418bc9a33b0e50d0ad"
	config := func(natsURL string) string {
		return fmt.Sprintf(`
signing_secrets: [twoway-secret]
log: {level: debug, format: json}
retry: {initial: 50ms, max: 500ms, max_age: 1m}
store:
  driver: nats
  nats: {url: "%s", partitions: 2, ack_wait: 3s}
chatdata: {api_key: %s, api_url: %s}
sinks:
  - name: support
    type: discord
    token: %s
    channel_id: "%s"
    api_url: %s/api/v10
    mention: "<@&1310000000000000444>"
    reply: {prefix: "reply:"}
`, natsURL, api.Key, api.URL, gw.Token(), channel, gw.URL())
	}
	links := []*natsLink{newNATSLink(t, ns.Addr().String()), newNATSLink(t, ns.Addr().String())}
	replicas := []*replicaProc{startServe(t, "a", config(links[0].url())), startServe(t, "b", config(links[1].url()))}
	t.Cleanup(func() {
		if t.Failed() {
			for _, r := range replicas {
				t.Logf("replica %s:\n%s", r.name, r.logs.String())
			}
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	if _, err := gw.WaitIdentified(ctx, 1); err != nil {
		t.Fatalf("no replica opened the gateway session: %v", err)
	}

	// A visitor asks for a person: the escalation opens the thread, with
	// Claim and Resolve.
	body, err := os.ReadFile(filepath.Join("..", "..", "sinks", "discord", "testdata", "live-chat-escalation.json"))
	if err != nil {
		t.Fatal(err)
	}
	postSignedTopic(t, replicas[0].listen, "twoway-secret", "live-chat-escalation", body)
	var thread string
	relaytest.Eventually(t, 30*time.Second, "the escalation's thread", func() bool {
		th := rest.Threads(channel)
		if len(th) == 1 {
			thread = th[0]
		}
		return thread != ""
	})
	// The thread is recorded as the conversation's once the escalation's
	// delivery is done: a reply before that is in a thread the relay does
	// not know yet (a window of milliseconds, that no agent typing meets).
	relaytest.Eventually(t, 30*time.Second, "the escalation delivered", func() bool {
		return slices.ContainsFunc(replicas, func(r *replicaProc) bool { return r.delivered("live-chat-escalation") })
	})
	holder := func() *replicaProc {
		for _, r := range replicas {
			if strings.Contains(r.logs.String(), "discord gateway session started") {
				return r
			}
		}
		return nil
	}
	first := holder()
	if first == nil {
		t.Fatal("no replica says it holds the session")
	}

	dana := discordgo.User{ID: "1310000000000000777", Username: "dana", GlobalName: "Dana K"}
	sam := discordgo.User{ID: "1310000000000000778", Username: "sam"}
	reply := func(text string) string {
		t.Helper()
		id, err := gw.Say(ctx, thread, dana, "Dana (Support)", text)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	delivered := func(n int, text, messageID string) {
		t.Helper()
		relaytest.Eventually(t, 30*time.Second, "reply "+text+" at Chat Data", func() bool {
			return len(api.Messages(conv)) >= n
		})
		m := api.Messages(conv)[n-1]
		if m.Text != text || m.Name != "Dana (Support)" || m.ChatbotID != chatbot || m.Role != "human" {
			t.Fatalf("Chat Data got %+v", m)
		}
		relaytest.Eventually(t, 30*time.Second, "✅ on "+messageID, func() bool {
			return slices.Contains(rest.Reactions(), discordtest.Reaction{ChannelID: thread, MessageID: messageID, Emoji: "✅"})
		})
	}
	delivered(1, "Hi, I'm Dana from support. Sending a replacement today.", reply("reply: Hi, I'm Dana from support. Sending a replacement today."))
	reply("note to self: check the warehouse") // a note: stays in the thread

	// Two agents click Claim at once.
	var esc discordtest.Message
	for _, m := range rest.Messages(channel) {
		if len(m.Components) > 0 {
			esc = m
		}
	}
	if esc.ID != thread {
		t.Fatalf("the escalation %q is not the thread's root %q", esc.ID, thread)
	}
	claim := "chatrelay:claim:" + conv + ":" + chatbot
	for i, who := range []discordgo.User{dana, sam} {
		if _, err := gw.Dispatch(ctx, "INTERACTION_CREATE",
			gw.ButtonClick(fmt.Sprintf("131000000000000090%d", i), channel, discordtest.GuildID, esc.ID, claim, who, "")); err != nil {
			t.Fatal(err)
		}
	}
	fus, err := gw.WaitFollowups(ctx, 1)
	if err != nil || fus[0].InteractionID != "1310000000000000901" || fus[0].Content != "Someone was first: 🙋 Claimed by Dana K." {
		t.Fatalf("the second clicker was told %+v, %v", fus, err)
	}
	relaytest.Eventually(t, 30*time.Second, "the escalation to show the claim", func() bool {
		m, _ := rest.Message(esc.ID)
		return strings.HasPrefix(m.Content, "**🙋 Claimed by Dana K**")
	})

	// The holder stops, or is cut off: the other replica takes the
	// session over, and a reply written then is delivered through it.
	if crash {
		links[slices.Index(replicas, first)].cut()
	} else {
		first.stop()
	}
	if _, err := gw.WaitIdentified(ctx, 2); err != nil {
		t.Fatalf("the other replica did not take the session over: %v", err)
	}
	delivered(2, "Your replacement ships tomorrow.", reply("reply: Your replacement ships tomorrow."))

	// Chat Data refuses the next one for good: the thread is told.
	api.Script(chatdatatest.Response{Status: http.StatusNotFound, Error: "Conversation not found"})
	lost := reply("reply: are you still there?")
	relaytest.Eventually(t, 30*time.Second, "the thread told of the dead letter", func() bool {
		for _, m := range rest.Messages(thread) {
			if strings.Contains(m.Content, "This reply did not reach the visitor") && strings.Contains(m.Content, "dlq replay") {
				var ref struct {
					Reference struct {
						MessageID string `json:"message_id"`
					} `json:"message_reference"`
				}
				return json.Unmarshal(m.Payload, &ref) == nil && ref.Reference.MessageID == lost
			}
		}
		return false
	})

	// Resolve, through the replica that holds the session now.
	resolve := "chatrelay:resolve:" + conv + ":" + chatbot
	if _, err := gw.Dispatch(ctx, "INTERACTION_CREATE",
		gw.ButtonClick("1310000000000000903", channel, discordtest.GuildID, esc.ID, resolve, sam, "")); err != nil {
		t.Fatal(err)
	}
	relaytest.Eventually(t, 30*time.Second, "the escalation to show it resolved", func() bool {
		m, _ := rest.Message(esc.ID)
		return strings.HasPrefix(m.Content, "**✅ Resolved by sam**")
	})

	if n := gw.MaxLive(); n != 1 {
		t.Errorf("%d gateway sessions were open at once; one replica at a time holds it", n)
	}
	if ids, _ := gw.WaitIdentified(ctx, 2); len(ids) != 2 {
		t.Errorf("%d IDENTIFYs, want 2 (one per holder)", len(ids))
	}
	if n := len(api.Messages(conv)); n != 2 {
		t.Errorf("Chat Data got %d messages, want 2 (no note, nothing twice)", n)
	}
	for _, r := range replicas {
		if strings.Contains(r.logs.String(), gw.Token()) || strings.Contains(r.logs.String(), api.Key) {
			t.Errorf("%s: a secret reached the logs", r.name)
		}
	}
}

// delivered reports whether the replica logged a delivery of an event of
// topic.
func (r *replicaProc) delivered(topic string) bool {
	for line := range strings.Lines(r.logs.String()) {
		if strings.Contains(line, `"msg":"delivered"`) && strings.Contains(line, `"topic":"`+topic+`"`) {
			return true
		}
	}
	return false
}

// postSignedTopic posts a signed Chat Data event of topic.
func postSignedTopic(t testing.TB, listen, secret, topic string, body []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+listen+"/webhook", bytes.NewReader(body))
	req.Header.Set(relay.HeaderSignature, relay.Sign(body, relay.Secret(secret)))
	req.Header.Set(relay.HeaderTopic, topic)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST answered %d", resp.StatusCode)
	}
}

// natsLink forwards a replica's TCP connections to the NATS server, so
// that a test can cut the replica off at once.
type natsLink struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
	down  bool
}

func newNATSLink(t *testing.T, target string) *natsLink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &natsLink{ln: ln, target: target}
	l.wg.Go(l.serve)
	t.Cleanup(func() { l.cut(); _ = l.ln.Close(); l.wg.Wait() })
	return l
}

func (l *natsLink) url() string { return "nats://" + l.ln.Addr().String() }

func (l *natsLink) serve() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		down := l.down
		l.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		s, err := net.Dial("tcp", l.target)
		if err != nil {
			c.Close()
			continue
		}
		l.mu.Lock()
		l.conns = append(l.conns, c, s)
		l.mu.Unlock()
		l.wg.Go(func() { _, _ = io.Copy(s, c); s.Close() })
		l.wg.Go(func() { _, _ = io.Copy(c, s); c.Close() })
	}
}

// cut closes every connection and refuses new ones.
func (l *natsLink) cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = true
	for _, c := range l.conns {
		_ = c.Close()
	}
	l.conns = nil
}
