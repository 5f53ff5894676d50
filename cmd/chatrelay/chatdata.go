package main

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/viper"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/sinks/chatdata"
)

// TypeChatData is the kind of the chatdata destination, in logs and in
// check-config's list. It is not a sink type: the destination is
// configured by the top-level chatdata section, not under sinks.
const TypeChatData = "chatdata"

// ChatDataConfig is the top-level chatdata section (SPEC §10) as written:
// the chatdata package's keys (chatdata.Config, which checks them) and the
// *_file variant of its key.
type ChatDataConfig struct {
	APIKey     string        `mapstructure:"api_key"`
	APIKeyFile string        `mapstructure:"api_key_file"`
	APIURL     string        `mapstructure:"api_url"`
	Timeout    time.Duration `mapstructure:"timeout"`
}

// setChatDataDefaults registers the section's keys, so that
// CHATRELAY_CHATDATA_API_KEY and the others override them.
func setChatDataDefaults(v *viper.Viper) {
	v.SetDefault("chatdata.api_key", "")
	v.SetDefault("chatdata.api_key_file", "")
	v.SetDefault("chatdata.api_url", "")
	v.SetDefault("chatdata.timeout", "0s")
}

// Enabled reports whether the section is set: then agent replies are
// delivered to Chat Data.
func (c ChatDataConfig) Enabled() bool {
	return c.APIKey != "" || c.APIKeyFile != "" || c.APIURL != "" || c.Timeout != 0
}

func (c ChatDataConfig) config() chatdata.Config {
	return chatdata.Config{APIKey: relay.Secret(c.APIKey), APIURL: c.APIURL, Timeout: c.Timeout}
}

// validateChatData checks the chatdata section and the name it reserves.
func (c *Config) validateChatData() []error {
	var errs []error
	for i, s := range c.Sinks {
		if s.Name == chatdata.Name {
			errs = append(errs, problem{key: fmt.Sprintf("sinks[%d].name", i),
				msg: fmt.Sprintf("%q is the name of the Chat Data destination of agent replies (the chatdata section); give this sink another name", chatdata.Name)})
		}
	}
	for i, r := range c.Routes {
		for j, s := range r.Sinks {
			if s == chatdata.Name {
				errs = append(errs, problem{key: fmt.Sprintf("routes[%d].sinks[%d]", i, j),
					msg: "chatdata takes agent replies, and every one goes to it without a route; remove it from the route"})
			}
		}
	}
	if !c.ChatData.Enabled() {
		return errs
	}
	if err := c.ChatData.config().Validate(); err != nil {
		errs = append(errs, sinkProblemsUnder("chatdata", err)...)
	}
	return errs
}

// sinkProblemsUnder puts a package's problems ("api_key: …") under a
// section's key ("chatdata.api_key: …").
func sinkProblemsUnder(section string, err error) []error {
	var lines []error
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		lines = joined.Unwrap()
	} else {
		lines = []error{err}
	}
	out := make([]error, 0, len(lines))
	for _, l := range lines {
		key := section
		k, msg, ok := strings.Cut(l.Error(), ": ")
		if ok && !strings.ContainsAny(k, " \"") {
			key += "." + k
		} else {
			msg = l.Error()
		}
		out = append(out, problem{key: key, msg: msg})
	}
	return out
}

// buildChatData builds the chatdata destination when the section is set
// (nil when it is not).
func buildChatData(cfg *Config, env sinkEnv) (*builtSink, error) {
	if !cfg.ChatData.Enabled() {
		return nil, nil
	}
	logger := env.logger.With("sink", chatdata.Name, "kind", TypeChatData)
	const concurrency = 4
	deps := relay.SinkDeps{Logger: logger, KV: env.store.KV(chatdata.Name), Clock: env.clock,
		UserAgent: userAgent(), Transport: newTransport(concurrency)}
	pacer := relay.NewPacer(env.clock)
	deps.Throttle = pacer
	s, err := chatdata.New(cfg.ChatData.config(), deps)
	if err != nil {
		return nil, joinProblems(sinkProblemsUnder("chatdata", err))
	}
	if u, err := url.Parse(cfg.ChatData.APIURL); err == nil && u.Scheme == "http" {
		host := u.Hostname()
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			logger.Warn("chatdata.api_url uses plain http to another host: the API key and agents' replies travel unencrypted; use https")
		}
	}
	timeout := cfg.ChatData.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	return &builtSink{sink: s, pacer: pacer, conf: SinkConfig{Name: chatdata.Name, Type: TypeChatData},
		concurrency: concurrency, timeout: timeout, logger: logger}, nil
}

// replyDestinations are the router's destinations of agent replies.
func replyDestinations(cfg *Config) []relay.RouterOption {
	if !cfg.ChatData.Enabled() {
		return nil
	}
	return []relay.RouterOption{relay.ReplyDestinations(chatdata.Name)}
}
