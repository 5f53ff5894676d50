package main

import (
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/spf13/viper"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	natsstore "github.com/chatrelay/chatrelay/relay/nats"
	"github.com/chatrelay/chatrelay/sinks/chatdata"
)

// Config is chatrelay's configuration (SPEC §3). Keys are the YAML keys;
// every scalar can be overridden by CHATRELAY_<KEY> (dots become _).
type Config struct {
	Listen           string         `mapstructure:"listen"`
	Admin            AdminConfig    `mapstructure:"admin"`
	SigningSecrets   []relay.Secret `mapstructure:"signing_secrets"` // or signing_secrets_file: one per line
	MaxBodyBytes     relay.ByteSize `mapstructure:"max_body_bytes"`
	MaxInflightBytes relay.ByteSize `mapstructure:"max_inflight_bytes"`
	ShutdownTimeout  time.Duration  `mapstructure:"shutdown_timeout"`
	Log              LogConfig      `mapstructure:"log"`
	Store            StoreConfig    `mapstructure:"store"`
	Retry            RetryConfig    `mapstructure:"retry"`
	Sinks            []SinkConfig   `mapstructure:"sinks"`
	Routes           []RouteConfig  `mapstructure:"routes"`
	TLS              HTTPSConfig    `mapstructure:"tls"`
	// ChatData is the destination of agent replies (SPEC §10); its
	// package owns its keys.
	ChatData chatdata.Config `mapstructure:"chatdata"`

	// Source says where the config came from: a file path, or "" for the
	// embedded defaults.
	Source string `mapstructure:"-"`
	// loadProblems are what LoadConfig found wrong (an unset ${NAME}, an
	// unknown key, a value of the wrong type, an unreadable *_file);
	// Validate reports them with its own.
	loadProblems []error
}

// AdminConfig is the admin listener.
type AdminConfig struct {
	Listen string       `mapstructure:"listen"`
	Token  relay.Secret `mapstructure:"token"` // or token_file
}

// LogConfig is the logger.
type LogConfig struct {
	Level  string `mapstructure:"level"`
	Format string `mapstructure:"format"`
}

// StoreConfig selects and configures the store. Each driver decodes the
// store section as it reads it (both take max_size, retention and
// dedupe_window; bolt takes path, nats its own section nats), and checks
// it.
type StoreConfig struct {
	Driver string           `mapstructure:"driver"` // bolt | nats
	Bolt   bolt.Config      `mapstructure:",squash"`
	NATS   natsstore.Config `mapstructure:",squash"`
}

// RetryConfig is the retry policy.
type RetryConfig struct {
	Initial time.Duration `mapstructure:"initial"`
	Max     time.Duration `mapstructure:"max"`
	MaxAge  time.Duration `mapstructure:"max_age"`
}

// SinkConfig is one sink: the keys every sink takes (what the relay does
// with its deliveries), and the keys of its type, which its package's
// Config owns: decodeSinks decodes them into Spec, and that package checks
// them. No key of any one type is named here.
type SinkConfig struct {
	Name        string   `mapstructure:"name"`
	Type        string   `mapstructure:"type"`
	Redact      []string `mapstructure:"redact"`
	Concurrency int      `mapstructure:"concurrency"`
	Rate        string   `mapstructure:"rate"`
	Pack        *bool    `mapstructure:"pack"`

	// Own holds the type's own keys as written, until decodeSinks decodes
	// them into Spec.
	Own map[string]any `mapstructure:",remain"`
	// Spec is the type's Config (a pointer to it: *slack.Config, …), as
	// decoded; nil until decodeSinks ran, and for a type that is not
	// known.
	Spec any `mapstructure:"-"`
}

// RouteConfig is one routing rule.
type RouteConfig struct {
	Match MatchConfig `mapstructure:"match"`
	Sinks []string    `mapstructure:"sinks"`
}

// MatchConfig is a route's match.
type MatchConfig struct {
	Topic     []string `mapstructure:"topic"`
	ChatbotID []string `mapstructure:"chatbot_id"`
	Source    []string `mapstructure:"source"`
	MinScore  *float64 `mapstructure:"min_score"`
	MaxScore  *float64 `mapstructure:"max_score"`
}

// Sink types, as "type:" names them (see sinkTypes).
const (
	TypeSlack   = "slack"
	TypeDiscord = "discord"
	TypeWebhook = "webhook"
	TypeConsole = "console"
)

// defaultConfig is the value of every key a config does not set, and
// what embedded-default mode runs on. The stores' defaults are their
// drivers'; a sink's are its package's.
func defaultConfig() *Config {
	return &Config{
		Listen:           "127.0.0.1:8080",
		Admin:            AdminConfig{Listen: "127.0.0.1:9090"},
		MaxBodyBytes:     1 << 20,
		MaxInflightBytes: 64 << 20,
		ShutdownTimeout:  15 * time.Second,
		Log:              LogConfig{Level: "info", Format: "auto"},
		Store:            StoreConfig{Driver: "bolt", Bolt: bolt.DefaultConfig(), NATS: natsstore.DefaultConfig()},
		Retry:            RetryConfig{Initial: time.Second, Max: 5 * time.Minute, MaxAge: 24 * time.Hour},
	}
}

// bindEnv lets CHATRELAY_<KEY> (dots become _) set every key of t that
// holds a value or a list of values, and the *_file variant of each secret.
func bindEnv(v *viper.Viper, t reflect.Type, prefix string) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("mapstructure")
		name, opts, _ := strings.Cut(tag, ",")
		if tag == "-" || !f.IsExported() {
			continue
		}
		if opts == "squash" {
			bindEnv(v, f.Type, prefix)
			continue
		}
		if name == "" {
			continue // the sinks' own keys (",remain")
		}
		key := prefix + name
		ft := f.Type
		switch {
		case ft.Kind() == reflect.Struct:
			bindEnv(v, ft, key+".")
			continue
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct,
			ft.Kind() == reflect.Map, ft.Kind() == reflect.Interface:
			continue // lists of sections (sinks, routes): no variable can set those
		case ft == reflect.TypeFor[relay.Secret](), ft == reflect.TypeFor[[]relay.Secret]():
			v.MustBindEnv(key + "_file")
		}
		v.MustBindEnv(key)
	}
}

// DefaultConfigFile is read when --config is not given and it exists;
// else DefaultConfigFiles' other names, in order.
const DefaultConfigFile = "chatrelay.yaml"

// DefaultConfigFiles are the names looked for without --config.
var DefaultConfigFiles = []string{DefaultConfigFile, "chatrelay.yml"}

// defaultConfigPath returns the first of DefaultConfigFiles that exists
// (DefaultConfigFile when none does, which then means embedded defaults).
func defaultConfigPath() string {
	for _, name := range DefaultConfigFiles {
		if _, err := os.Stat(name); err == nil {
			return name
		}
	}
	return DefaultConfigFile
}

// problem is one thing wrong with the config, under its key
// ("sinks[1].url").
type problem struct{ key, msg string }

func (p problem) Error() string { return p.key + ": " + p.msg }

func (c *Config) sourceName() string {
	if c.Source == "" {
		return "config (embedded defaults)"
	}
	return c.Source
}

// Embedded reports whether chatrelay runs on its embedded defaults.
func (c *Config) Embedded() bool { return c.Source == "" }

// Secrets returns every secret value in the config, for the scrubber that
// keeps them out of logs, stored error text and API answers (SPEC §9):
// signing secrets, tokens, webhook URLs and the extra header values that
// may be credentials (relay.CredentialHeader).
func (c *Config) Secrets() []string {
	out := secretsIn(reflect.ValueOf(c))
	for one := range strings.SplitSeq(c.Store.NATS.URL, ",") {
		if u, err := url.Parse(strings.TrimSpace(one)); err == nil && u.User != nil {
			out = append(out, u.User.String(), u.User.Username())
			if p, ok := u.User.Password(); ok {
				out = append(out, p)
			}
		}
	}
	return slices.DeleteFunc(out, func(s string) bool { return len(s) < relay.MinScrubLen })
}

// secretsIn returns every relay.Secret in v: in fields, lists and maps,
// and in each sink's Spec, whatever its type; a value that is a
// relay.SecretHolder says itself which of its values are secrets.
func secretsIn(v reflect.Value) []string {
	if v.CanInterface() {
		if h, ok := v.Interface().(relay.SecretHolder); ok && (v.Kind() != reflect.Pointer || !v.IsNil()) {
			return h.SecretValues()
		}
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return secretsIn(v.Elem())
	case reflect.Struct:
		var out []string
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				out = append(out, secretsIn(v.Field(i))...)
			}
		}
		return out
	case reflect.Slice, reflect.Array:
		var out []string
		for i := range v.Len() {
			out = append(out, secretsIn(v.Index(i))...)
		}
		return out
	case reflect.Map:
		var out []string
		for it := v.MapRange(); it.Next(); {
			out = append(out, secretsIn(it.Value())...)
		}
		return out
	case reflect.String:
		if v.Type() == reflect.TypeFor[relay.Secret]() {
			return []string{v.String()}
		}
	}
	return nil
}
