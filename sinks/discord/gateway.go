package discord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/gorilla/websocket"

	"github.com/chatrelay/chatrelay/relay"
)

// The gateway takes what agents write in the relay's threads (and click
// on its messages) into the relay, for a bot-mode sink with a reply:
// section: a discordgo session on Discord's gateway with the intents
// GuildMessages and MessageContent. Every message it receives is handed
// to the Inbox, which stores an agent's reply before Accept returns; the
// gateway does not send a message again, so the gateway retries Accept
// itself until the store takes it (the message id makes a repeat one
// reply).
//
// discordgo's own reconnection is off: it reopens from goroutines that
// Close does not stop. The gateway owns the loop instead: it reopens a
// dropped connection at once (RESUME: discordgo keeps the session id and
// sequence, and Discord replays what was missed), then with backoff.
//
// On NATS every replica would receive every message (and answer every
// click) if each held a session: a session is held only while this
// replica owns the sink (relay.Own: the paced sinks' ownership lease),
// the replica that posts to the channel.

// Inbox takes thread messages and clicks into the relay (relay.Inbox).
type Inbox interface {
	Accept(ctx context.Context, m relay.ThreadMessage) (relay.Intake, error)
	Click(ctx context.Context, c relay.Click) (relay.Clicked, error)
}

// GatewayDeps is what a gateway needs besides its sink.
type GatewayDeps struct {
	Inbox Inbox
	// Owner says when this replica may hold the sink's session
	// (relay.OwnerOf the store); nil: always.
	Owner relay.Owner
	// Dialer connects to the gateway's WebSocket; nil: a default one
	// (the URL is the one Discord's GET gateway names).
	Dialer *websocket.Dialer
	// Backoff is the first wait before reopening a session that failed
	// (default 1 s; doubled up to MaxBackoff, 2 min by default).
	Backoff, MaxBackoff time.Duration
	// States tells which conversations were resolved: their threads are
	// not caught up on (catchup.go). nil: every watched thread is.
	States States
}

// Gateway is a bot-mode sink's gateway session, run by Run. It implements
// relay.Source's Run.
type Gateway struct {
	s    *Sink
	deps GatewayDeps
	log  *slog.Logger

	self  atomic.Pointer[string] // the bot's user id, from READY
	names *lookups
	// rule is the sink's reply rule: only a message it sends to the
	// visitor is worth looking names up for.
	rule relay.ReplyRule
}

// Intents the session identifies with: thread messages and their text.
// MessageContent is privileged: it must be switched on in the Developer
// Portal, or Discord closes the session with 4014.
const Intents = discordgo.IntentsGuildMessages | discordgo.IntentsMessageContent

// Sources implements the discord sink type's relay sources: the gateway
// of each bot-mode sink with a reply: section (one session per bot token
// and sink).
func Sources(sinks []relay.Sink, deps relay.SourceDeps) ([]relay.Source, error) {
	deps = deps.WithDefaults()
	var out []relay.Source
	var errs []error
	for _, rs := range sinks {
		s, ok := rs.(*Sink)
		if !ok {
			continue
		}
		if _, on := s.Replies(); !on {
			continue
		}
		gd := GatewayDeps{Inbox: deps.Inbox, Owner: deps.Owner}
		if deps.Conversations != nil {
			gd.States = deps.Conversations
		}
		g, err := s.Gateway(gd)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, g)
	}
	return out, errors.Join(errs...)
}

// Gateway returns the gateway of a bot-mode sink. It starts nothing.
func (s *Sink) Gateway(deps GatewayDeps) (*Gateway, error) {
	if !s.bot() {
		return nil, fmt.Errorf("discord sink %q: replies need bot mode (token and channel_id): the gateway reads the conversations' threads", s.cfg.Name)
	}
	if deps.Inbox == nil {
		return nil, fmt.Errorf("discord sink %q: gateway: no inbox", s.cfg.Name)
	}
	if deps.Owner == nil {
		deps.Owner = relay.OwnerOf(nil)
	}
	if deps.Backoff <= 0 {
		deps.Backoff = time.Second
	}
	if deps.MaxBackoff <= 0 {
		deps.MaxBackoff = 2 * time.Minute
	}
	deps.Inbox = cursors{Inbox: deps.Inbox, s: s} // replies advance their thread's catch-up cursor
	g := &Gateway{s: s, deps: deps, log: s.log.With("component", "gateway")}
	g.names = newLookups(s, g.log)
	rc, _ := s.cfg.Replies()
	g.rule = rc.Rule()
	return g, nil
}

// Handlers implements relay.Source: the gateway connects out and serves
// nothing.
func (g *Gateway) Handlers() map[string]http.Handler { return nil }

// Run holds the gateway session whenever this replica owns the sink,
// until ctx ends. It returns once every goroutine it started has exited
// (discordgo's reader and heartbeat end right after Close, on their own),
// and never fails: a gateway that refuses the bot is logged, and retried.
func (g *Gateway) Run(ctx context.Context) error {
	for {
		held, release, err := g.deps.Owner.Own(ctx, g.s.cfg.Name)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, relay.ErrClosed) {
				return nil
			}
			return fmt.Errorf("discord sink %q: gateway: %w", g.s.cfg.Name, err)
		}
		g.hold(held)
		release()
		if ctx.Err() != nil {
			return nil
		}
		g.log.Info("this replica no longer owns the sink; closed its gateway session")
	}
}

// Bounds of the gateway's queues and waits.
const (
	inboundQueue = 256              // messages received and not yet taken by the Inbox
	clickQueue   = 64               // clicks not yet answered
	drainFor     = 5 * time.Second  // to take what was received, once the session closes
	openTimeout  = 30 * time.Second // to connect and get READY or RESUMED
	stableAfter  = time.Minute      // a session that lasted this long resets the backoff
)

// inbound is a dispatch the gateway handed to a worker.
type inbound struct {
	typ string
	raw json.RawMessage
}

// session is one discordgo session and the goroutines around it.
type session struct {
	dg       *discordgo.Session
	messages chan inbound
	clicks   chan inbound
	down     chan struct{} // a disconnect happened
	ready    chan struct{} // a new session started (READY): catch up
	stop     chan struct{} // closed once the workers are gone: a dispatch still on its way is dropped
	conns    *dialed
}

// hold runs one session while ctx lives: its workers and its reopen loop.
func (g *Gateway) hold(ctx context.Context) {
	sess, err := g.newSession()
	if err != nil {
		g.log.Error("cannot make a gateway session; replies from Discord are not read", "err", err)
		<-ctx.Done()
		return
	}
	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { g.work(work, sess.messages, g.message) })
	wg.Go(func() { g.work(work, sess.clicks, g.click) })
	wg.Go(func() { g.catchUps(ctx, sess.ready) })

	g.connect(ctx, sess)
	if err := sess.dg.Close(); err != nil {
		g.log.Debug("closing the gateway session", "err", err)
	}
	sess.conns.closeAll() // an Open still waiting for Discord
	stopWork()
	wg.Wait()
	close(sess.stop)
}

// newSession makes a discordgo session that reaches the gateway through
// the sink's API base and transport, reconnects only through connect, and
// hands every dispatch to the workers in the order received.
func (g *Gateway) newSession() (*session, error) {
	dg, err := discordgo.New("Bot " + g.s.token)
	if err != nil {
		return nil, err
	}
	sess := &session{
		dg:       dg,
		messages: make(chan inbound, inboundQueue),
		clicks:   make(chan inbound, clickQueue),
		down:     make(chan struct{}, 1),
		ready:    make(chan struct{}, 1),
		stop:     make(chan struct{}),
		conns:    &dialed{},
	}
	dg.Client = &http.Client{
		Transport:     apiBase{base: g.s.api.String(), next: g.s.client.Transport},
		Timeout:       g.s.cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	dialer := g.deps.Dialer
	if dialer == nil {
		dialer = &websocket.Dialer{Proxy: http.ProxyFromEnvironment, HandshakeTimeout: 15 * time.Second}
	}
	d := *dialer
	d.NetDialContext = sess.conns.dial(dialer.NetDialContext)
	dg.Dialer = &d
	dg.UserAgent = g.s.ua
	dg.ShouldReconnectOnError = false
	dg.ShouldReconnectVoiceOnSessionError = false
	dg.ShouldRetryOnRateLimit = false
	dg.MaxRestRetries = 0
	dg.StateEnabled = false
	dg.SyncEvents = true // handlers run on the reader: dispatches keep their order
	dg.LogLevel = -1     // discordgo logs through the log package; its errors come back to connect
	dg.Identify.Intents = Intents
	dg.AddHandler(func(_ *discordgo.Session, e *discordgo.Event) { g.dispatch(sess, e) })
	dg.AddHandler(func(*discordgo.Session, *discordgo.Disconnect) {
		select {
		case sess.down <- struct{}{}:
		default:
		}
	})
	return sess, nil
}

// dispatch runs on discordgo's reader for every dispatch: it hands those
// the relay acts on to the workers, waiting (the reader with it) while
// their queue is full, so that nothing received is dropped.
func (g *Gateway) dispatch(sess *session, e *discordgo.Event) {
	var q chan inbound
	switch e.Type {
	case "READY":
		var ready struct {
			User struct {
				ID string `json:"id"`
			} `json:"user"`
		}
		if json.Unmarshal(e.RawData, &ready) == nil && ready.User.ID != "" {
			g.self.Store(&ready.User.ID)
		}
		g.log.Info("discord gateway session started")
		select {
		case sess.ready <- struct{}{}:
		default: // a catch-up is due already
		}
		return
	case "RESUMED":
		g.log.Info("discord gateway session resumed")
		return
	case "MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE":
		q = sess.messages
	case "INTERACTION_CREATE":
		q = sess.clicks
	default:
		return
	}
	select {
	case q <- inbound{typ: e.Type, raw: e.RawData}:
	case <-sess.stop:
		g.log.Warn("gateway dispatch received as the session closed; not taken", "type", e.Type)
	}
}

// work hands what q receives to handle, one at a time in order, until
// ctx ends; then it handles what is still queued, within drainFor.
func (g *Gateway) work(ctx context.Context, q <-chan inbound, handle func(context.Context, inbound)) {
	for {
		select {
		case in := <-q:
			handle(ctx, in)
			continue
		case <-ctx.Done():
		}
		drain, cancel := context.WithTimeout(context.WithoutCancel(ctx), drainFor)
		defer cancel()
		for {
			select {
			case in := <-q:
				handle(drain, in)
			default:
				return
			}
		}
	}
}

// connect opens the session and reopens it whenever it drops, until ctx
// ends: at once after a session that held, else after a backoff.
func (g *Gateway) connect(ctx context.Context, sess *session) {
	failures := 0
	var warned time.Time
	for {
		opened := g.s.clock.Now()
		err := g.open(ctx, sess)
		if ctx.Err() != nil {
			return
		}
		if err == nil || errors.Is(err, discordgo.ErrWSAlreadyOpen) {
			warned = time.Time{}
			select {
			case <-ctx.Done():
				return
			case <-sess.down:
			}
			if g.s.clock.Since(opened) >= stableAfter {
				failures = 0
			}
			g.log.Info("discord gateway connection closed; reconnecting")
			if failures == 0 {
				failures++
				continue // at once: RESUME gets what was missed
			}
		} else {
			g.logOpenError(err, failures, &warned)
		}
		failures++
		wait := g.backoff(failures - 1)
		if fatal(err) {
			wait = g.deps.MaxBackoff
		}
		if g.sleep(ctx, wait) != nil {
			return
		}
	}
}

// sleep waits d on the sink's clock, or until ctx ends (then ctx.Err()).
func (g *Gateway) sleep(ctx context.Context, d time.Duration) error {
	t := g.s.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.Chan():
		return nil
	}
}

// open opens the session, giving up after openTimeout or when ctx ends
// (discordgo's Open waits for Discord without a deadline: closing the
// connection it dialed ends the wait).
func (g *Gateway) open(ctx context.Context, sess *session) error {
	done := make(chan error, 1)
	go func() { done <- sess.dg.Open() }()
	t := g.s.clock.NewTimer(openTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	case <-t.Chan():
	}
	sess.conns.closeAll()
	err := <-done
	if err == nil {
		err = errors.New("opened too late")
	}
	return fmt.Errorf("open the gateway session: %w", err)
}

// backoff is the wait after n failures in a row: doubling from Backoff, at
// most MaxBackoff, with up to a quarter of jitter.
func (g *Gateway) backoff(n int) time.Duration {
	d := g.deps.Backoff
	for range n {
		d *= 2
		if d >= g.deps.MaxBackoff {
			d = g.deps.MaxBackoff
			break
		}
	}
	return d - time.Duration(rand.Int64N(int64(d)/4+1))
}

// Gateway close codes that no retry cures soon
// (https://discord.com/developers/docs/topics/opcodes-and-status-codes#gateway-gateway-close-event-codes).
// gatewayWarnEvery spaces the warnings while the session cannot be
// opened: the first failure, then one each gatewayWarnEvery while it
// lasts (the attempts between log at DEBUG).
const gatewayWarnEvery = 5 * time.Minute

const (
	closeAuthenticationFailed = 4004
	closeInvalidIntents       = 4013
	closeDisallowedIntents    = 4014
)

// fatal reports whether err is a refusal of the bot's credentials or
// intents: the session is retried only at the longest backoff.
func fatal(err error) bool {
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		return false
	}
	switch ce.Code {
	case closeAuthenticationFailed, closeInvalidIntents, closeDisallowedIntents:
		return true
	}
	return false
}

// logOpenError says why the session did not open, and what to do when
// that is the bot's configuration; a failure that is not is a WARN at
// first and each gatewayWarnEvery after the last one (warned), else DEBUG.
func (g *Gateway) logOpenError(err error, failures int, warned *time.Time) {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		switch ce.Code {
		case closeAuthenticationFailed:
			g.log.Error("Discord's gateway refuses the bot token; agents' replies are not read. Set token to the bot's current token (Developer Portal → Bot → Reset Token)", "close_code", ce.Code)
			return
		case closeDisallowedIntents, closeInvalidIntents:
			g.log.Error("Discord's gateway refuses the Message Content intent; agents' replies are not read. Switch on Message Content Intent (Developer Portal → your application → Bot → Privileged Gateway Intents)", "close_code", ce.Code)
			return
		}
	}
	err = g.s.scrub.Error(err)
	if now := g.s.clock.Now(); warned.IsZero() || now.Sub(*warned) >= gatewayWarnEvery {
		*warned = now
		g.log.Warn("cannot open the discord gateway session; retrying", "err", err, "attempt", failures+1)
		return
	}
	g.log.Debug("cannot open the discord gateway session; retrying", "err", err, "attempt", failures+1)
}

// apiBase sends discordgo's REST requests (the gateway's discovery, GET
// …/gateway) to the sink's API base: discordgo builds its URLs from
// package variables, which the relay leaves alone.
type apiBase struct {
	base string
	next http.RoundTripper
}

func (a apiBase) RoundTrip(r *http.Request) (*http.Response, error) {
	rest, ok := strings.CutPrefix(r.URL.String(), discordgo.EndpointAPI)
	if !ok {
		return nil, fmt.Errorf("discord gateway: unexpected request outside the API")
	}
	u, err := r.URL.Parse(strings.TrimSuffix(a.base, "/") + "/" + rest)
	if err != nil {
		return nil, err
	}
	r = r.Clone(r.Context())
	r.URL, r.Host = u, u.Host
	return a.next.RoundTrip(r)
}

// dialed keeps the connections a session dialed, so that an Open waiting
// for Discord can be ended by closing them.
type dialed struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (d *dialed) dial(next func(context.Context, string, string) (net.Conn, error)) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		var err error
		if next != nil {
			c, err = next(ctx, network, addr)
		} else {
			var nd net.Dialer
			c, err = nd.DialContext(ctx, network, addr)
		}
		if err != nil {
			return nil, err
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		// Only the newest can be in use: discordgo has one connection.
		d.conns = append(d.conns[:0], c)
		return c, nil
	}
}

func (d *dialed) closeAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		_ = c.Close()
	}
	d.conns = nil
}
