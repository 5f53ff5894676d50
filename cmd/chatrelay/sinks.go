package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"text/template"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/sinks/console"
	"github.com/chatrelay/chatrelay/sinks/discord"
	"github.com/chatrelay/chatrelay/sinks/slack"
	"github.com/chatrelay/chatrelay/sinks/webhook"
)

// KVSource gives each sink its key/value namespace (the store, or memory
// for check-config --probe).
type KVSource interface {
	KV(namespace string) relay.KV
}

// sinkEnv is what building sinks needs from serve.
type sinkEnv struct {
	stdout io.Writer
	logger *slog.Logger
	clock  clockwork.Clock
	store  KVSource
}

// builtSink is a configured sink with what its dispatcher needs.
type builtSink struct {
	sink        relay.Sink
	pacer       *relay.Pacer
	conf        SinkConfig
	concurrency int
	timeout     time.Duration
	logger      *slog.Logger
}

// defaultSinks is what embedded-default mode delivers to.
func defaultSinks(cfg *Config) []SinkConfig {
	if len(cfg.Sinks) == 0 && cfg.Embedded() {
		return []SinkConfig{{Name: "console", Type: TypeConsole}}
	}
	return cfg.Sinks
}

// buildSinks constructs every configured sink, collecting every problem.
func buildSinks(cfg *Config, env sinkEnv) ([]builtSink, error) {
	var out []builtSink
	var errs []error
	for i, sc := range defaultSinks(cfg) {
		logger := env.logger.With("sink", sc.Name, "kind", sc.Type)
		pacer := relay.NewPacer(env.clock)
		concurrency := defaultConcurrency(sc.Type)
		if sc.Concurrency > 0 {
			concurrency = sc.Concurrency
		}
		deps := relay.SinkDeps{Logger: logger, KV: env.store.KV(sc.Name), Throttle: pacer,
			Clock: env.clock, UserAgent: userAgent(), Transport: newTransport(concurrency)}
		sink, requests, err := newSink(sc, deps, env.stdout)
		if err != nil {
			errs = append(errs, sinkProblems(i, err)...)
			continue
		}
		if p, ok := sink.(relay.Paced); ok {
			pacer.SetPace(p.Pace())
		}
		if sc.Rate != "" {
			every, burst, _ := ParseRate(sc.Rate) // validated
			pacer.SetPace(every, burst)
		}
		// One send may take several requests (a long turn continues in
		// follow-up messages; a thread is started): the dispatcher's deadline
		// covers them all, each request has the sink's own timeout.
		timeout := sc.Timeout
		if timeout <= 0 {
			timeout = 10 * time.Second
		}
		timeout *= time.Duration(requests)
		warnPlainHTTP(logger, i, sc)
		out = append(out, builtSink{sink: sink, pacer: pacer, conf: sc, concurrency: concurrency,
			timeout: timeout, logger: logger})
	}
	if b, err := buildChatData(cfg, env); err != nil {
		errs = append(errs, err)
	} else if b != nil {
		out = append(out, *b)
	}
	return out, errors.Join(errs...)
}

// sinkProblems puts a sink constructor's problems under the sink's keys:
// each line of its error starts with the sink's own key ("url: …"), which
// becomes "sinks[1].url: …".
func sinkProblems(i int, err error) []error {
	var lines []error
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		lines = joined.Unwrap()
	} else {
		lines = []error{err}
	}
	out := make([]error, 0, len(lines))
	for _, l := range lines {
		k, msg, ok := strings.Cut(l.Error(), ": ")
		if !ok || strings.ContainsAny(k, " \"") {
			k, msg = "", l.Error() // not keyed: the sink as a whole
		}
		key := fmt.Sprintf("sinks[%d]", i)
		if k != "" {
			key += "." + k
		}
		out = append(out, problem{key: key, msg: msg})
	}
	return out
}

// defaultConcurrency is how many conversations a sink of a type has in
// flight at once unless the config says otherwise: paced platforms need
// few, a generic webhook benefits from many.
func defaultConcurrency(typ string) int {
	switch typ {
	case TypeWebhook:
		return 16
	case TypeSlack, TypeDiscord:
		return 2
	}
	return 1
}

// newTransport is a sink's own HTTP transport: it keeps as many idle
// connections to its destination as the sink has sends in flight (the
// default transport keeps two, and a busy sink would dial for every send).
func newTransport(concurrency int) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = max(concurrency, 2)
	t.MaxIdleConns = max(t.MaxIdleConns, 2*concurrency)
	return t
}

// newSink builds one sink and says how many requests one send may take at
// most.
func newSink(sc SinkConfig, deps relay.SinkDeps, stdout io.Writer) (sink relay.Sink, requests int, err error) {
	switch sc.Type {
	case TypeConsole:
		return console.New(sc.Name, stdout), 1, nil
	case TypeSlack:
		tmpl, err := parseTemplate(sc)
		if err != nil {
			return nil, 0, err
		}
		s, err := slack.New(slack.Config{
			Name: sc.Name, WebhookURL: relay.Secret(sc.WebhookURL), Token: relay.Secret(sc.Token),
			Channel: sc.Channel, APIURL: sc.APIURL, Mention: sc.Mention, Template: tmpl, Timeout: sc.Timeout,
		}, deps)
		return s, 5, err
	case TypeDiscord:
		tmpl, err := parseTemplate(sc)
		if err != nil {
			return nil, 0, err
		}
		s, err := discord.New(discord.Config{
			Name: sc.Name, WebhookURL: relay.Secret(sc.WebhookURL), Token: relay.Secret(sc.Token),
			ChannelID: sc.ChannelID, APIURL: sc.APIURL, ThreadName: sc.ThreadName, Mention: sc.Mention,
			Template: tmpl, Timeout: sc.Timeout,
		}, deps)
		return s, 6, err
	case TypeWebhook:
		s, err := webhook.New(webhook.Config{
			Name: sc.Name, URL: relay.Secret(sc.URL), Secret: relay.Secret(sc.Secret),
			Headers: sc.Headers, Timeout: sc.Timeout,
		}, deps)
		return s, 1, err
	}
	return nil, 0, fmt.Errorf("type %q is not a sink type", sc.Type)
}

// warnPlainHTTP warns (once, at start) about a sink URL that sends tokens
// and messages unencrypted to another machine. The URL itself is not logged.
func warnPlainHTTP(logger *slog.Logger, i int, sc SinkConfig) {
	for key, raw := range map[string]string{"url": sc.URL, "webhook_url": sc.WebhookURL, "api_url": sc.APIURL} {
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "http" {
			continue
		}
		host := u.Hostname()
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			continue
		}
		logger.Warn(fmt.Sprintf("sinks[%d].%s uses plain http to another host: messages and tokens travel unencrypted; use https", i, key))
	}
}

// parseTemplate parses a sink's message template, if it has one.
func parseTemplate(sc SinkConfig) (*template.Template, error) {
	if sc.Template == "" {
		return nil, nil
	}
	t, err := relay.ParseTemplate(sc.Name, sc.Template)
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	return t, nil
}

// probeKV gives every sink a throwaway in-memory key/value store:
// check-config --probe must not open (and lock) the real store.
type probeKV struct{}

func (probeKV) KV(string) relay.KV { return relay.NewMemKV() }
