package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/admin"
	"github.com/chatrelay/chatrelay/relay/bolt"
	natsstore "github.com/chatrelay/chatrelay/relay/nats"
	"github.com/chatrelay/chatrelay/sinks/chatdata"
)

func (a *app) serveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the relay (with no config file: embedded defaults, console sink)",
		Long: `Runs the relay until SIGINT or SIGTERM. On listen it takes Chat Data's events at
POST /webhook (and answers GET /healthz, GET /readyz); on admin.listen it serves
GET /metrics, the /api/v1 admin API and the web console.

Two-way live chat: a Slack sink with reply.signing_secret takes Slack's events and
button clicks at POST /slack/events on listen (chatrelay slack-manifest prints the
app); one with reply.app_token (Socket Mode) and a Discord sink with reply: connect
out to Slack or Discord, so they need no public URL.

With no config file it runs on embedded defaults: listens on 127.0.0.1:8080, stores
in ./chatrelay-data and prints what Slack and Discord would show.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			return a.serve(cmd.Context(), cfg)
		},
	}
}

// secretFileName is where embedded-default mode keeps its generated signing
// secret, inside store.path.
const secretFileName = "signing-secret"

// embeddedSecret returns the signing secret of embedded-default mode: the
// one kept in dir, or (fresh) a new one that writeEmbeddedSecret keeps once
// the relay is listening, so that a first start that fails (the port is
// taken) does not leave a secret that was never shown.
func embeddedSecret(dir string) (secret string, fresh bool, err error) {
	path := filepath.Join(dir, secretFileName)
	b, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b)), false, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", false, fmt.Errorf("read %s: %w", path, err)
	}
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return "", false, err
	}
	return base64.RawURLEncoding.EncodeToString(raw), true, nil
}

// writeEmbeddedSecret keeps a fresh embedded-default secret in dir.
func writeEmbeddedSecret(dir, secret string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("store.path %s: %w", dir, err)
	}
	path := filepath.Join(dir, secretFileName)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func (a *app) serve(ctx context.Context, cfg *Config) error {
	secrets := cfg.SigningSecrets
	var firstStart bool
	if cfg.Embedded() && len(secrets) == 0 {
		s, created, err := embeddedSecret(cfg.Store.Bolt.Path)
		if err != nil {
			return err
		}
		secrets, firstStart = []relay.Secret{relay.Secret(s)}, created
	}
	// One scrubber keeps every configured secret out of logs, stored
	// error text and admin API answers alike.
	scrub := relay.NewScrubber(append(cfg.Secrets(), secrets[0].Reveal())...)
	logger := newLogger(a.stderr, cfg.Log.Level, cfg.Log.Format, scrub)
	clock := clockwork.NewRealClock()

	// On NATS, a sink whose platform paces its channel (relay.Paced) is
	// sent to by one replica at a time; which sinks those are is known
	// once they are built, before the store hands out their queues.
	paced := pacedSinks{}
	store, err := openStore(ctx, cfg, logger, clock, paced.has)
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			logger.Error("closing the store", "err", err)
		}
	}()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := relay.NewMetrics(reg)
	reg.MustRegister(relay.NewQueueCollector(store, clock.Now), newBuildInfoMetric(readBuildInfo()))

	sinks, err := buildSinks(cfg, sinkEnv{stdout: a.stdout, logger: logger, clock: clock, store: store})
	if err != nil {
		return configError(err)
	}
	paced.add(sinks)
	names := make([]string, len(sinks))
	for i, s := range sinks {
		names[i] = s.sink.Name()
	}
	if moved, err := store.Reconcile(ctx, names); err != nil {
		return fmt.Errorf("reconcile the store with the configured sinks: %w", err)
	} else if moved > 0 {
		logger.Warn("deliveries for sinks no longer configured moved to the dead letters", "count", moved, "reason", "sink removed")
	}

	// Who has which conversation in hand (two-way live chat), in the
	// store, so that every replica sees the same.
	conversations, err := relay.NewConversations(store.KV(relay.ConversationsNamespace), clock)
	if err != nil {
		return err
	}

	routes := make([]relay.Route, len(cfg.Routes))
	for i, r := range cfg.Routes {
		routes[i] = relay.Route{Match: r.Match.toMatch(), Sinks: r.Sinks}
	}
	accepting := relay.NewAccepting() // an event's "accepted" line before its deliveries'
	router := relay.NewRouter(names, routes, replyDestinations(cfg)...)
	receiver, err := relay.NewReceiver(relay.ReceiverConfig{
		Secrets: secrets, MaxBody: int64(cfg.MaxBodyBytes), MaxInflight: int64(cfg.MaxInflightBytes), Store: store,
		Router: router, Metrics: metrics, Logger: logger.With("component", "receiver"), Clock: clock, Accepting: accepting,
	})
	if err != nil {
		return err
	}

	// Two-way live chat (SPEC §10): what agents write in the relay's
	// threads comes in through the sources into the inbox, and goes to
	// Chat Data like any delivery; how it ended, and the escalations
	// posted, come back to the threads as follow-ups.
	replies := twoWay(sinks)
	inbox, err := relay.NewInbox(relay.InboxConfig{
		Store: store, Router: router, Threads: relay.StoreThreads{KV: store.KV}, Rules: replyRules(replies),
		Metrics: metrics, Logger: logger.With("component", "inbox"), Clock: clock, Accepting: accepting,
		Conversations: conversations,
	})
	if err != nil {
		return err
	}
	var destinations []string
	if chatDataSet(cfg.ChatData) {
		destinations = []string{chatdata.Name}
	}
	followups, err := relay.NewFollowups(relay.FollowupsConfig{
		Store: store, Conversations: conversations, TwoWay: replies, Destinations: destinations,
		ReplayCommand: a.commandLine("dlq", "replay"), StatusCommand: a.commandLine("status"),
		Logger: logger.With("component", "followups"), Clock: clock,
	})
	if err != nil {
		return err
	}
	repageAfter := map[string]time.Duration{}
	for name, rc := range replies {
		repageAfter[name] = rc.RepageAfter
	}
	repager, err := relay.NewRepager(relay.RepagerConfig{Conversations: conversations, Store: store, After: repageAfter,
		Clock: clock, Logger: logger.With("component", "repager")})
	if err != nil {
		return err
	}
	sources, err := buildSources(sinks, relay.SourceDeps{Inbox: inbox, Logger: logger, Clock: clock, Owner: relay.OwnerOf(store),
		MaxBody: int64(cfg.MaxBodyBytes), UserAgent: userAgent(), Conversations: conversations})
	if err != nil {
		return err
	}
	public, err := publicHandler(receiver, sources)
	if err != nil {
		return err
	}

	front, err := newFrontTLS(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer front.close()

	dispatchers := make([]*relay.Dispatcher, len(sinks))
	states := map[string]admin.SinkState{}
	for i, s := range sinks {
		d, err := relay.NewDispatcher(relay.DispatcherConfig{
			Sink: s.sink, Queue: store.Queue(names[i]), PaceEvery: s.paceEvery, PaceBurst: s.paceBurst,
			Retry:       relay.RetryPolicy{Initial: cfg.Retry.Initial, Max: cfg.Retry.Max, MaxAge: cfg.Retry.MaxAge},
			Concurrency: s.concurrency, DrainTimeout: cfg.ShutdownTimeout,
			Redact: s.conf.Redact, NoPacking: s.conf.Pack != nil && !*s.conf.Pack,
			Metrics: metrics, Stats: store, Logger: s.logger, Clock: clock, Accepting: accepting, Scrub: scrub,
			ReplayCommand: a.commandLine("dlq", "replay"), Outcomes: followups,
		})
		if err != nil {
			return err
		}
		dispatchers[i] = d
		states[names[i]] = d
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w; set listen to a free address", err)
	}
	ln = front.wrap(ln)
	adminLn, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		ln.Close()
		return fmt.Errorf("admin.listen: %w; set admin.listen to a free address", err)
	}
	if firstStart {
		// Only now, with both listeners up, is the generated secret kept
		// (and shown once, by the banner below).
		if err := writeEmbeddedSecret(cfg.Store.Bolt.Path, secrets[0].Reveal()); err != nil {
			ln.Close()
			adminLn.Close()
			return err
		}
	}
	errLog := slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	srv := &http.Server{
		Handler:           public,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          front.serverLog(logger, errLog),
	}
	adminH, con, err := adminHandler(admin.Config{
		Store: store, Gatherer: reg, Metrics: metrics, Token: cfg.Admin.Token,
		Sinks: names, States: states, Logger: logger.With("component", "admin"), Now: clock.Now, Scrub: scrub,
		Version: version, StoreInfo: func(context.Context) admin.StoreInfo { return storeInfo(cfg) },
	}, store, conversations, clock, logger)
	if err != nil {
		ln.Close()
		adminLn.Close()
		return err
	}
	adminSrv := &http.Server{
		Handler:           adminH,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10, // as the public listener: the default is 1 MiB
		ErrorLog:          errLog,
	}

	if cfg.Embedded() {
		a.banner(cfg, ln.Addr().String(), adminLn.Addr().String(), secrets[0].Reveal(), firstStart)
	}
	logger.Info("chatrelay started", "version", readBuildInfo().Version, "listen", ln.Addr().String(), "admin", adminLn.Addr().String(),
		"store", storeDescription(cfg), "sinks", strings.Join(names, ","), "config", cfg.sourceName())

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveHTTP(srv, ln) })
	g.Go(func() error { return front.run(gctx) })
	g.Go(func() error { return serveHTTP(adminSrv, adminLn) })
	g.Go(func() error { return con.Run(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		logger.Info("shutting down: finishing in-flight requests and deliveries", "timeout", cfg.ShutdownTimeout)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), cfg.ShutdownTimeout)
		defer cancel()
		return errors.Join(srv.Shutdown(sctx), adminSrv.Shutdown(sctx))
	})
	for _, d := range dispatchers {
		g.Go(func() error { return d.Run(gctx) })
	}
	for _, src := range sources {
		g.Go(func() error { return src.Run(gctx) })
	}
	g.Go(func() error { return repager.Run(gctx) })
	err = g.Wait()
	if err != nil && ctx.Err() == nil {
		return err
	}
	logger.Info("chatrelay stopped; undelivered events stay in the store for the next start")
	return nil
}

func serveHTTP(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func storeDescription(cfg *Config) string {
	if cfg.Store.Driver == "nats" {
		return fmt.Sprintf("nats (%d partitions, %d replicas)", cfg.Store.NATS.Partitions, cfg.Store.NATS.Replicas)
	}
	return "bolt:" + cfg.Store.Bolt.Path
}

// storeInfo describes the store for chatrelay status: the bolt file and
// its size, or the NATS servers (without credentials).
func storeInfo(cfg *Config) admin.StoreInfo {
	if cfg.Store.Driver == "nats" {
		var hosts []string
		for _, one := range strings.Split(cfg.Store.NATS.URL, ",") {
			if u, err := url.Parse(strings.TrimSpace(one)); err == nil && u.Host != "" {
				hosts = append(hosts, u.Scheme+"://"+u.Host)
			}
		}
		return admin.StoreInfo{Driver: "nats", Path: strings.Join(hosts, ",")}
	}
	path := filepath.Join(cfg.Store.Bolt.Path, bolt.FileName)
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	info := admin.StoreInfo{Driver: "bolt", Path: path}
	if fi, err := os.Stat(path); err == nil {
		size := fi.Size()
		info.SizeBytes = &size
	}
	return info
}

// natsStartTimeout bounds how long serve waits for NATS at start.
const natsStartTimeout = 30 * time.Second

// pacedSinks names the sinks whose platform paces them (relay.Paced). It
// is filled once the sinks are built, before any queue is asked for.
type pacedSinks map[string]bool

// add notes which of sinks are paced.
func (p pacedSinks) add(sinks []builtSink) {
	for _, s := range sinks {
		if _, ok := s.sink.(relay.Paced); ok {
			p[s.sink.Name()] = true
		}
	}
}

func (p pacedSinks) has(sink string) bool { return p[sink] }

// openStore opens the configured store. exclusive says which sinks one
// replica at a time sends to (on NATS).
func openStore(ctx context.Context, cfg *Config, logger *slog.Logger, clock clockwork.Clock, exclusive func(sink string) bool) (relay.Store, error) {
	switch cfg.Store.Driver {
	case "nats":
		octx, cancel := context.WithTimeout(ctx, natsStartTimeout)
		defer cancel()
		opts := cfg.Store.NATS.Options()
		// Chat channels are paced per channel: one replica sends to each.
		opts.Exclusive, opts.Logger = exclusive, logger.With("component", "store")
		s, err := natsstore.Open(octx, opts)
		if err != nil {
			return nil, err // names store.nats and what to check
		}
		return s, nil
	case "bolt":
		opts := cfg.Store.Bolt.Options()
		opts.Clock, opts.Logger = clock, logger.With("component", "store")
		s, err := bolt.Open(cfg.Store.Bolt.Path, opts)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	return nil, configError(fmt.Errorf("store.driver: %q is not a store; use bolt or nats", cfg.Store.Driver))
}

// banner tells a new user on embedded defaults how to try it: on the first
// start with the generated secret in a send-test line ready to paste (as
// this chatrelay was started: go run, or the binary), on later ones where
// that secret is kept. The generated secret is for trying chatrelay
// locally; Chat Data signs with its own, which goes in a config.
func (a *app) banner(cfg *Config, addr, adminAddr, secret string, first bool) {
	url := "http://" + clientAddr(addr) + "/webhook"
	console := "http://" + clientAddr(adminAddr) + "/"
	secretPath := filepath.Join(cfg.Store.Bolt.Path, secretFileName)
	if first {
		fmt.Fprintf(a.stdout, `chatrelay is running on its embedded defaults: events are stored in %s and printed here.
It generated a signing secret to try it locally, kept in %s (shown this once).
Send a signed test event from another terminal:

    %s

Then open %s in a browser: the web console shows it.

To receive real events, write a chatrelay.yaml with your Slack, Discord or webhook sinks and, under
signing_secrets, the signing secret Chat Data shows under Settings → Webhooks (see config.example.yaml);
then give Chat Data your https://<host>/webhook as its webhook URL.

`, cfg.Store.Bolt.Path, secretPath, a.commandLine("send-test", "--url", url, "--secret", secret), console)
		return
	}
	fmt.Fprintf(a.stdout, `chatrelay is running on its embedded defaults; events print here. Its signing secret is kept in %s.
Try: %s
The web console: %s

`, secretPath, a.commandLine("send-test", "--url", url), console)
}

// clientAddr turns a listen address into one a client on this machine can
// dial (0.0.0.0 and :: become loopback).
func clientAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
