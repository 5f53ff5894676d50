package main

import (
	"fmt"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/viper"

	"github.com/chatrelay/chatrelay/relay"
)

// Config is chatrelay's configuration (SPEC §3). Keys are the YAML keys;
// every scalar can be overridden by CHATRELAY_<KEY> (dots become _).
type Config struct {
	Listen           string         `mapstructure:"listen"`
	Admin            AdminConfig    `mapstructure:"admin"`
	SigningSecrets   []relay.Secret `mapstructure:"signing_secrets"` // or signing_secrets_file: one per line
	MaxBodyBytes     ByteSize       `mapstructure:"max_body_bytes"`
	MaxInflightBytes ByteSize       `mapstructure:"max_inflight_bytes"`
	ShutdownTimeout  time.Duration  `mapstructure:"shutdown_timeout"`
	Log              LogConfig      `mapstructure:"log"`
	Store            StoreConfig    `mapstructure:"store"`
	Retry            RetryConfig    `mapstructure:"retry"`
	Sinks            []SinkConfig   `mapstructure:"sinks"`
	Routes           []RouteConfig  `mapstructure:"routes"`
	TLS              HTTPSConfig    `mapstructure:"tls"`

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

// StoreConfig selects and configures the store.
type StoreConfig struct {
	Driver       string        `mapstructure:"driver"`
	Path         string        `mapstructure:"path"`
	MaxSize      ByteSize      `mapstructure:"max_size"`
	Retention    time.Duration `mapstructure:"retention"`
	DedupeWindow time.Duration `mapstructure:"dedupe_window"`
	NATS         NATSConfig    `mapstructure:"nats"`
}

// NATSConfig is store.nats.
type NATSConfig struct {
	URL        string        `mapstructure:"url"`
	CredsFile  string        `mapstructure:"creds_file"`
	Token      relay.Secret  `mapstructure:"token"` // or token_file
	TLS        TLSConfig     `mapstructure:"tls"`
	Replicas   int           `mapstructure:"replicas"`
	Partitions int           `mapstructure:"partitions"`
	AckWait    time.Duration `mapstructure:"ack_wait"`
}

// TLSConfig is store.nats.tls.
type TLSConfig struct {
	CAFile   string `mapstructure:"ca_file"`
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
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

// ByteSize is a size in bytes written as 1048576, 512KiB, 1GiB or 10MB
// (go-humanize's ParseBytes: binary and decimal units, case and spaces
// aside).
type ByteSize int64

// UnmarshalText implements encoding.TextUnmarshaler.
func (b *ByteSize) UnmarshalText(text []byte) error {
	n, err := humanize.ParseBytes(string(text))
	if err != nil || n > 1<<62 {
		return fmt.Errorf("not a size: %q; write it like 1048576, 512KiB or 1GiB", string(text))
	}
	*b = ByteSize(n)
	return nil
}

// Sink types, as "type:" names them (see sinkTypes).
const (
	TypeSlack   = "slack"
	TypeDiscord = "discord"
	TypeWebhook = "webhook"
	TypeConsole = "console"
)

// defaults are the values of every key not set; they are also what
// embedded-default mode runs on.
func setDefaults(v *viper.Viper) {
	v.SetDefault("listen", "127.0.0.1:8080")
	v.SetDefault("admin.listen", "127.0.0.1:9090")
	v.SetDefault("admin.token", "")
	v.SetDefault("admin.token_file", "")
	v.SetDefault("signing_secrets", []string{})
	v.SetDefault("signing_secrets_file", "")
	v.SetDefault("max_body_bytes", "1MiB")
	v.SetDefault("max_inflight_bytes", "64MiB")
	v.SetDefault("shutdown_timeout", "15s")
	v.SetDefault("log.level", "info")
	v.SetDefault("log.format", "auto")
	v.SetDefault("store.driver", "bolt")
	v.SetDefault("store.path", "./chatrelay-data")
	v.SetDefault("store.max_size", "0") // the driver's default: defaultBoltMaxSize, none on nats
	v.SetDefault("store.retention", "168h")
	v.SetDefault("store.dedupe_window", "24h")
	v.SetDefault("store.nats.url", "nats://127.0.0.1:4222")
	v.SetDefault("store.nats.creds_file", "")
	v.SetDefault("store.nats.token", "")
	v.SetDefault("store.nats.token_file", "")
	v.SetDefault("store.nats.tls.ca_file", "")
	v.SetDefault("store.nats.tls.cert_file", "")
	v.SetDefault("store.nats.tls.key_file", "")
	v.SetDefault("store.nats.replicas", 1)
	v.SetDefault("store.nats.partitions", 16)
	v.SetDefault("store.nats.ack_wait", "30s")
	v.SetDefault("retry.initial", "1s")
	v.SetDefault("retry.max", "5m")
	v.SetDefault("retry.max_age", "24h")
	setTLSDefaults(v)
}

// defaultBoltMaxSize is store.max_size on bolt when it is not set. On nats
// an unset max_size leaves the events stream without a limit of its own.
const defaultBoltMaxSize ByteSize = 1 << 30

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
// signing secrets, tokens, webhook URLs and every extra header value (a
// header's name says too little about what its value is).
func (c *Config) Secrets() []string {
	out := secretsIn(reflect.ValueOf(c))
	for _, one := range strings.Split(c.Store.NATS.URL, ",") {
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
// and in each sink's Spec, whatever its type.
func secretsIn(v reflect.Value) []string {
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
