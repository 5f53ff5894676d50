package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/sinks/console"
	"github.com/chatrelay/chatrelay/sinks/discord"
	"github.com/chatrelay/chatrelay/sinks/slack"
	"github.com/chatrelay/chatrelay/sinks/webhook"
)

// sinkType is one kind of sink chatrelay can build, as "type:" names it:
// its package's Config (the keys it takes, which that package decodes
// into and checks) and its constructor. cmd names no key of any type.
type sinkType struct {
	config reflect.Type // the package's Config
	// concurrency is how many conversations a sink of the type has in
	// flight at once unless the config says otherwise: paced platforms
	// need few, a generic webhook benefits from many.
	concurrency int
	validate    func(name string, spec any) error
	build       func(name string, spec any, deps relay.SinkDeps, stdout io.Writer) (relay.Sink, error)
	// sources, when set, builds what takes agents' messages and clicks
	// from the type's platform into the relay, given every sink of the
	// type that was built (two-way or not).
	sources func(sinks []relay.Sink, deps relay.SourceDeps) ([]relay.Source, error)
}

// withSources sets the type's sources.
func (t sinkType) withSources(f func([]relay.Sink, relay.SourceDeps) ([]relay.Source, error)) sinkType {
	t.sources = f
	return t
}

// sinkKind makes the sinkType of a package whose Config is C and whose
// constructor makes an S. named sets the configured name on a C.
func sinkKind[C any, S relay.Sink](concurrency int, named func(C, string) C, validate func(C) error,
	build func(C, relay.SinkDeps, io.Writer) (S, error)) sinkType {
	return sinkType{
		config:      reflect.TypeFor[C](),
		concurrency: concurrency,
		validate: func(name string, spec any) error {
			if validate == nil {
				return nil
			}
			return validate(named(*spec.(*C), name))
		},
		build: func(name string, spec any, deps relay.SinkDeps, stdout io.Writer) (relay.Sink, error) {
			c := new(C)
			if spec != nil {
				c = spec.(*C)
			}
			s, err := build(named(*c, name), deps, stdout)
			if err != nil {
				return nil, err
			}
			return s, nil
		},
	}
}

// sinkTypes is every type of sink, by name.
func sinkTypes() map[string]sinkType {
	return map[string]sinkType{
		TypeSlack: sinkKind(2, func(c slack.Config, name string) slack.Config { c.Name = name; return c },
			slack.Config.Validate, func(c slack.Config, deps relay.SinkDeps, _ io.Writer) (*slack.Sink, error) {
				return slack.New(c, deps)
			}).withSources(slack.Sources),
		TypeDiscord: sinkKind(2, func(c discord.Config, name string) discord.Config { c.Name = name; return c },
			discord.Config.Validate, func(c discord.Config, deps relay.SinkDeps, _ io.Writer) (*discord.Sink, error) {
				return discord.New(c, deps)
			}).withSources(discord.Sources),
		TypeWebhook: sinkKind(16, func(c webhook.Config, name string) webhook.Config { c.Name = name; return c },
			webhook.Config.Validate, func(c webhook.Config, deps relay.SinkDeps, _ io.Writer) (*webhook.Sink, error) {
				return webhook.New(c, deps)
			}),
		// The console takes no keys of its own; it prints to stdout.
		TypeConsole: sinkKind(1, func(c consoleConfig, name string) consoleConfig { c.name = name; return c },
			nil, func(c consoleConfig, _ relay.SinkDeps, stdout io.Writer) (*console.Sink, error) {
				return console.New(c.name, stdout), nil
			}),
	}
}

// consoleConfig is the console sink's: no keys besides the common ones.
type consoleConfig struct{ name string }

// typeList names the sink types for a message: "slack, discord, …".
func typeList(types map[string]sinkType) string {
	names := slices.Sorted(maps.Keys(types))
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// decodeSinks decodes each sink's own keys (SinkConfig.Own) into its
// type's Config (Spec), with the *_file variants of its secrets read
// first. Each problem is under the sink's index: "sinks[1].url: …".
func decodeSinks(sinks []SinkConfig, readFile func(string) ([]byte, error)) []error {
	types := sinkTypes()
	var problems []error
	for i := range sinks {
		sc := &sinks[i]
		typ, ok := types[sc.Type]
		if !ok {
			continue // Validate names the type
		}
		prefix := fmt.Sprintf("sinks[%d].", i)
		own := sc.Own
		if own == nil {
			own = map[string]any{}
		}
		problems = append(problems, secretFiles(own, typ.config, strings.TrimSuffix(prefix, "."), readFile)...)
		spec := reflect.New(typ.config).Interface()
		problems = append(problems, decode(own, spec, prefix, func(path, k string) string {
			if path != "" { // in a section of the sink's own (reply:)
				return sectionUnknownKey(sc.Type, path, k, types)
			}
			return sinkUnknownKey(sc.Type, k, types)
		})...)
		sc.Spec, sc.Own = spec, nil
	}
	return problems
}

// sinkUnknownKey says that a sink of type typ takes no key k, and what was
// probably meant: a key of another type of sink is named as such.
func sinkUnknownKey(typ, k string, types map[string]sinkType) string {
	own := append(keysOf(reflect.TypeFor[SinkConfig]()), keysOf(types[typ].config)...)
	for name, other := range types {
		if name != typ && slices.Contains(secretKeys(other.config), k) {
			hint := ""
			if near := similarKey(k, own); near != "" {
				hint = "; did you mean " + near + "?"
			}
			return fmt.Sprintf("not a key of %s sinks%s", typ, hint)
		}
	}
	return "unknown key" + suggest(k, own) + "; see config.example.yaml for every key"
}

// sectionUnknownKey says that the section path (reply) of sinks of type
// typ takes no key k; a key the same section of another type has
// (signing_secret in a discord sink's reply:, a Slack key) is named as
// such, with the keys the section does take.
func sectionUnknownKey(typ, path, k string, types map[string]sinkType) string {
	own := keysOf(typeAt(types[typ].config, path))
	for _, name := range slices.Sorted(maps.Keys(types)) {
		if name != typ && slices.Contains(secretKeys(typeAt(types[name].config, path)), k) {
			return fmt.Sprintf("a key of %s sinks' %s, not of %s sinks' (they take %s); remove it",
				name, path, typ, strings.Join(own, ", "))
		}
	}
	return "unknown key" + suggest(k, own) + "; see config.example.yaml for every key"
}

// secretKeys lists the keys of a sink's Config, with the *_file variant of
// each secret.
func secretKeys(t reflect.Type) []string {
	keys := keysOf(t)
	for _, k := range keysOf(t) {
		if fieldType(t, k) == reflect.TypeFor[relay.Secret]() {
			keys = append(keys, k+"_file")
		}
	}
	return keys
}

// similarKey returns the key of keys that k most likely stands for: one
// that holds it or that it holds ("channel_id" for "channel", "url" for
// "webhook_url"), or one a typo away; "" when none is.
func similarKey(k string, keys []string) string {
	for _, key := range keys {
		if strings.Contains(key, k) || strings.Contains(k, key) {
			return key
		}
	}
	best, bestD := "", 3
	for _, key := range keys {
		if d := editDistance(k, key); d < bestD {
			best, bestD = key, d
		}
	}
	return best
}

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
	conf        SinkConfig
	concurrency int
	// paceEvery and paceBurst are the config's rate, which overrides the
	// sink's own pace (relay.Paced); zero: the sink's.
	paceEvery time.Duration
	paceBurst int
	logger    *slog.Logger
}

// defaultSinks is what embedded-default mode delivers to.
func defaultSinks(cfg *Config) []SinkConfig {
	if len(cfg.Sinks) == 0 && cfg.Embedded() {
		return []SinkConfig{{Name: "console", Type: TypeConsole}}
	}
	return cfg.Sinks
}

// buildSinks constructs every configured sink, collecting every problem
// (joined, one per key).
func buildSinks(cfg *Config, env sinkEnv) ([]builtSink, error) {
	types := sinkTypes()
	var out []builtSink
	var errs []error
	for i, sc := range defaultSinks(cfg) {
		typ, ok := types[sc.Type]
		if !ok {
			errs = append(errs, problem{key: fmt.Sprintf("sinks[%d].type", i), msg: fmt.Sprintf("%q is not a sink type; use %s", sc.Type, typeList(types))})
			continue
		}
		logger := env.logger.With("sink", sc.Name, "kind", sc.Type)
		concurrency := typ.concurrency
		if sc.Concurrency > 0 {
			concurrency = sc.Concurrency
		}
		deps := relay.SinkDeps{Logger: logger, KV: env.store.KV(sc.Name),
			Clock: env.clock, UserAgent: userAgent(), Transport: newTransport(concurrency)}
		sink, err := typ.build(sc.Name, sc.Spec, deps, env.stdout)
		if err != nil {
			errs = append(errs, sinkProblems(i, err)...)
			continue
		}
		if _, packs := sink.(relay.Packer); sc.Pack != nil && !packs {
			errs = append(errs, problem{key: fmt.Sprintf("sinks[%d].pack", i), msg: fmt.Sprintf("not a key of %s sinks: they send every turn alone", sc.Type)})
		}
		b := builtSink{sink: sink, conf: sc, concurrency: concurrency, logger: logger}
		if sc.Rate != "" {
			if every, burst, err := ParseRate(sc.Rate); err == nil { // else Validate said so
				b.paceEvery, b.paceBurst = every, burst
			}
		}
		out = append(out, b)
	}
	if b, err := buildChatData(cfg, env); err != nil {
		errs = append(errs, err)
	} else if b != nil {
		out = append(out, *b)
	}
	return out, errors.Join(errs...)
}

// sinkProblems puts a sink package's problems under the sink's keys: each
// line of its error starts with the sink's own key ("url: …"), which
// becomes "sinks[1].url: …".
func sinkProblems(i int, err error) []error {
	return under(fmt.Sprintf("sinks[%d].", i), err)
}

// under puts a package's problems (errors.Join of "key: problem; fix",
// keys relative to its section) under the section's prefix: "url: …"
// becomes "sinks[1].url: …". A line that starts with no key is about the
// section as a whole.
func under(prefix string, err error) []error {
	if err == nil {
		return nil
	}
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
			k, msg = "", l.Error() // not keyed: the section as a whole
		}
		key := strings.TrimSuffix(prefix, ".")
		if k != "" {
			key = prefix + k
		}
		out = append(out, problem{key: key, msg: msg})
	}
	return out
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

// probeKV gives every sink a throwaway in-memory key/value store:
// check-config --probe must not open (and lock) the real store.
type probeKV struct{}

func (probeKV) KV(string) relay.KV { return relay.NewMemKV() }
