package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/chatrelay/chatrelay/relay"
)

// Config is chatrelay's configuration (SPEC §3). Keys are the YAML keys;
// every scalar can be overridden by CHATRELAY_<KEY> (dots become _).
type Config struct {
	Listen             string        `mapstructure:"listen"`
	Admin              AdminConfig   `mapstructure:"admin"`
	SigningSecrets     []string      `mapstructure:"signing_secrets"`
	SigningSecretsFile string        `mapstructure:"signing_secrets_file"`
	MaxBodyBytes       ByteSize      `mapstructure:"max_body_bytes"`
	MaxInflightBytes   ByteSize      `mapstructure:"max_inflight_bytes"`
	ShutdownTimeout    time.Duration `mapstructure:"shutdown_timeout"`
	Log                LogConfig     `mapstructure:"log"`
	Store              StoreConfig   `mapstructure:"store"`
	Retry              RetryConfig   `mapstructure:"retry"`
	Sinks              []SinkConfig  `mapstructure:"sinks"`
	Routes             []RouteConfig `mapstructure:"routes"`
	TLS                HTTPSConfig   `mapstructure:"tls"`

	// ChatData is the destination of agent replies (SPEC §10).
	ChatData ChatDataConfig `mapstructure:"chatdata"`

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
	Listen    string `mapstructure:"listen"`
	Token     string `mapstructure:"token"`
	TokenFile string `mapstructure:"token_file"`
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
	Token      string        `mapstructure:"token"`
	TokenFile  string        `mapstructure:"token_file"`
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

// SinkConfig is one sink: common keys and every type's own keys; Validate
// rejects keys that do not belong to the sink's type.
type SinkConfig struct {
	Name string `mapstructure:"name"`
	Type string `mapstructure:"type"`

	WebhookURL     string            `mapstructure:"webhook_url"`
	WebhookURLFile string            `mapstructure:"webhook_url_file"`
	Token          string            `mapstructure:"token"`
	TokenFile      string            `mapstructure:"token_file"`
	Channel        string            `mapstructure:"channel"`
	ChannelID      string            `mapstructure:"channel_id"`
	APIURL         string            `mapstructure:"api_url"`
	ThreadName     string            `mapstructure:"thread_name"`
	URL            string            `mapstructure:"url"`
	Secret         string            `mapstructure:"secret"`
	SecretFile     string            `mapstructure:"secret_file"`
	Headers        map[string]string `mapstructure:"headers"`
	Mention        string            `mapstructure:"mention"`
	Redact         []string          `mapstructure:"redact"`
	Timeout        time.Duration     `mapstructure:"timeout"`
	Concurrency    int               `mapstructure:"concurrency"`
	Rate           string            `mapstructure:"rate"`
	Template       string            `mapstructure:"template"`
	Pack           *bool             `mapstructure:"pack"`
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

// ByteSize is a size in bytes written as 1048576, 512KiB, 1GiB or 10MB.
type ByteSize int64

// UnmarshalText implements encoding.TextUnmarshaler.
func (b *ByteSize) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("not a size: %q; write it like 1048576, 512KiB or 1GiB", string(text))
	}
	*b = ByteSize(n * float64(mult))
	return nil
}

// Sink types.
const (
	TypeSlack   = "slack"
	TypeDiscord = "discord"
	TypeWebhook = "webhook"
	TypeConsole = "console"
)

// sinkKeys lists the keys each sink type takes besides the common ones.
func sinkKeys(typ string) []string {
	switch typ {
	case TypeSlack:
		return []string{"webhook_url", "webhook_url_file", "token", "token_file", "channel", "api_url", "mention", "template"}
	case TypeDiscord:
		return []string{"webhook_url", "webhook_url_file", "token", "token_file", "channel_id", "api_url", "thread_name", "mention", "template"}
	case TypeWebhook:
		return []string{"url", "secret", "secret_file", "headers"}
	case TypeConsole:
		return nil
	}
	return nil
}

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
	setChatDataDefaults(v)
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

// LoadConfig reads the config: the file (or, with none, the embedded
// defaults), ${ENV} expansion, CHATRELAY_* overrides, *_file secrets. It
// fails only when the file cannot be read or is not YAML; every other
// problem is kept for Validate, which reports them all together.
func LoadConfig(path string, explicit bool, getenv func(string) string) (*Config, error) {
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
		return parseConfig(path, raw, getenv, os.ReadFile)
	case errors.Is(err, os.ErrNotExist) && !explicit:
		return parseConfig("", nil, getenv, os.ReadFile) // embedded defaults
	}
	return nil, fmt.Errorf("--config %s: %w", path, err)
}

// parseConfig is LoadConfig on the file's bytes (source "" and no bytes:
// the embedded defaults); readFile reads the *_file secrets.
func parseConfig(source string, raw []byte, getenv func(string) string, readFile func(string) ([]byte, error)) (*Config, error) {
	v := viper.New()
	setDefaults(v)
	v.SetConfigType("yaml")
	v.SetEnvPrefix("CHATRELAY")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()

	cfg := &Config{Source: source}
	var problems []error
	if source != "" {
		expanded, envProblems, err := expandEnv(raw, getenv)
		if err != nil {
			return nil, fmt.Errorf("%s: not valid YAML: %w", source, err)
		}
		problems = append(problems, envProblems...)
		var tree map[string]any
		if err := yaml.Unmarshal(expanded, &tree); err != nil {
			return nil, fmt.Errorf("%s: not valid YAML: %w", source, err)
		}
		// Unknown keys are found here, against the Config type, so that
		// every one is named with a suggestion; the decoder below then
		// ignores them (viper's UnmarshalExact would stop at the first
		// problem of any kind).
		problems = append(problems, unknownKeys(tree)...)
		if err := v.ReadConfig(bytes.NewReader(expanded)); err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
	}
	hook := mapstructure.ComposeDecodeHookFunc(
		durationHook,
		mapstructure.TextUnmarshallerHookFunc(),
		mapstructure.StringToSliceHookFunc(","),
	)
	if err := v.Unmarshal(cfg, viper.DecodeHook(hook)); err != nil {
		problems = append(problems, decodeProblems(err)...)
	}
	problems = append(problems, cfg.readSecretFiles(readFile)...)
	cfg.loadProblems = problems
	return cfg, nil
}

// durationHook reads a duration, naming the value and the way to write it
// when it is not one. A bare number is refused: "timeout: 10" would
// otherwise mean ten nanoseconds.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeFor[time.Duration]() {
		return data, nil
	}
	switch from.Kind() {
	case reflect.String:
		text := data.(string)
		d, err := time.ParseDuration(strings.TrimSpace(text))
		if err != nil {
			return nil, errors.New(durationProblem(text))
		}
		return d, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return nil, fmt.Errorf("%v is a bare number, not a duration; write %vs", data, data)
	}
	return data, nil
}

// durationUnits maps the unit words people write to Go's.
var durationUnits = map[string]struct {
	unit string
	mult float64
}{
	"ns": {"ns", 1}, "nanosecond": {"ns", 1}, "nanoseconds": {"ns", 1},
	"us": {"us", 1}, "µs": {"us", 1}, "microsecond": {"us", 1}, "microseconds": {"us", 1},
	"ms": {"ms", 1}, "msec": {"ms", 1}, "msecs": {"ms", 1}, "milli": {"ms", 1}, "millis": {"ms", 1},
	"millisecond": {"ms", 1}, "milliseconds": {"ms", 1},
	"s": {"s", 1}, "sec": {"s", 1}, "secs": {"s", 1}, "second": {"s", 1}, "seconds": {"s", 1},
	"m": {"m", 1}, "min": {"m", 1}, "mins": {"m", 1}, "minute": {"m", 1}, "minutes": {"m", 1},
	"h": {"h", 1}, "hr": {"h", 1}, "hrs": {"h", 1}, "hour": {"h", 1}, "hours": {"h", 1},
	"d": {"h", 24}, "day": {"h", 24}, "days": {"h", 24},
	"w": {"h", 168}, "wk": {"h", 168}, "week": {"h", 168}, "weeks": {"h", 168},
}

var durationTerm = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([a-zµ]*)$`)

// durationProblem says that text is not a duration and how to write what
// it most likely means: "5mins" → write 5m, "2 days" → write 48h.
func durationProblem(text string) string {
	msg := fmt.Sprintf("%q is not a duration; ", text)
	t := strings.ToLower(strings.TrimSpace(text))
	if d, err := time.ParseDuration(strings.Join(strings.Fields(t), "")); err == nil && t != "" {
		return msg + "write " + d.String() // "1h 30m", "5M"
	}
	if m := durationTerm.FindStringSubmatch(t); m != nil {
		n, _ := strconv.ParseFloat(m[1], 64)
		if u, ok := durationUnits[m[2]]; ok || m[2] == "" {
			if m[2] == "" {
				u.unit, u.mult = "s", 1
			}
			return msg + "write " + strconv.FormatFloat(n*u.mult, 'f', -1, 64) + u.unit
		}
	}
	return msg + "write it with a unit, like 500ms, 30s, 5m or 24h"
}

// decodeProblems turns the decoder's errors into one problem per key. A
// value is echoed only where it cannot be a secret (a number or a word
// that failed to parse).
func decodeProblems(err error) []error {
	var out []error
	var walk func(error)
	walk = func(e error) {
		if joined, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range joined.Unwrap() {
				walk(x)
			}
			return
		}
		de, ok := e.(*mapstructure.DecodeError)
		if !ok {
			if inner := errors.Unwrap(e); inner != nil {
				walk(inner) // "decoding failed due to the following error(s): %w"
				return
			}
			out = append(out, problem{key: "config", msg: e.Error()})
			return
		}
		inner := de.Unwrap()
		if joined, ok := inner.(interface{ Unwrap() []error }); ok {
			walk(joined.(error))
			return
		}
		var ute *mapstructure.UnconvertibleTypeError
		var pe *mapstructure.ParseError
		msg := inner.Error()
		switch {
		case errors.As(inner, &ute):
			msg = fmt.Sprintf("%s where %s goes", kindOf(reflect.TypeOf(ute.Value)), kindOf(ute.Expected.Type()))
		case errors.As(inner, &pe):
			v, _ := relay.Truncate(fmt.Sprint(pe.Value), 40)
			msg = fmt.Sprintf("%q is not %s", v, kindOf(pe.Expected.Type()))
		}
		out = append(out, problem{key: de.Name(), msg: msg})
	}
	walk(err)
	return out
}

// kindOf names a type as a config's reader knows it.
func kindOf(t reflect.Type) string {
	if t == nil {
		return "nothing"
	}
	switch t.Kind() {
	case reflect.String:
		return "text"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping of keys"
	case reflect.Pointer:
		return kindOf(t.Elem())
	}
	return t.String()
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

// envRef is a reference to an environment variable: ${NAME}, or
// ${NAME:-default} (the default, possibly empty, when NAME is unset or
// empty).
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`)

// envSlot stands in for one ${NAME} reference while the file is parsed:
// letters and digits only, so it is a valid plain scalar anywhere a
// reference may stand (block, flow, quoted).
var envSlot = regexp.MustCompile(`zzchatrelayenv([0-9]+)zz`)

// expandEnv replaces ${NAME} in the file's values with the environment
// variable's value. A ${NAME} whose variable is unset (or empty) is a
// problem naming the key and the variable: a secret left out must not
// silently become "no secret" (an unsigned webhook). ${NAME:-} allows it
// empty, ${NAME:-default} gives a default. The value goes into the parsed
// document, not the text: a value holding "#", ": ", quotes or a newline
// stays one string, whatever the YAML around the reference. Only the
// braced form is expanded, so a "$" inside a secret stays as written.
func expandEnv(raw []byte, getenv func(string) string) ([]byte, []error, error) {
	if !envRef.Match(raw) {
		return raw, nil, nil
	}
	type ref struct {
		name, def string
		hasDef    bool
	}
	var refs []ref
	slotted := envRef.ReplaceAllFunc(raw, func(m []byte) []byte {
		sub := envRef.FindSubmatch(m)
		r := ref{name: string(sub[1])}
		if len(sub[2]) > 0 {
			r.def, r.hasDef = string(sub[2][2:]), true
		}
		refs = append(refs, r)
		return fmt.Appendf(nil, "zzchatrelayenv%dzz", len(refs)-1)
	})
	var doc yaml.Node
	if err := yaml.Unmarshal(slotted, &doc); err != nil {
		return nil, nil, err
	}
	if doc.Kind == 0 {
		return raw, nil, nil // references only in comments
	}
	var problems []error
	var walk func(n *yaml.Node, key string)
	walk = func(n *yaml.Node, key string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, key)
			}
			return
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := keyName(n.Content[i].Value)
				if key != "" {
					k = key + "." + k
				}
				walk(n.Content[i], key)
				walk(n.Content[i+1], k)
			}
			return
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", key, i))
			}
			return
		case yaml.AliasNode, yaml.ScalarNode:
		}
		if n.Kind != yaml.ScalarNode || !envSlot.MatchString(n.Value) {
			return
		}
		whole := n.Style == 0 && envSlot.FindString(n.Value) == n.Value
		n.Value = envSlot.ReplaceAllStringFunc(n.Value, func(m string) string {
			i, _ := strconv.Atoi(envSlot.FindStringSubmatch(m)[1])
			r := refs[i]
			val := getenv(r.name)
			switch {
			case val != "":
			case r.hasDef:
				val = r.def
			default:
				where := key
				if where == "" {
					where = "config"
				}
				problems = append(problems, problem{key: where, msg: fmt.Sprintf(
					"${%s} is not set; set the environment variable %s, or write ${%s:-} to leave it empty on purpose",
					r.name, r.name, r.name)})
			}
			return val
		})
		if whole && n.Value == "" {
			// "key: ${NAME:-}" is a key without a value, as if the line
			// said "key:": its default applies.
			n.Tag, n.Style, n.Value = "!!null", 0, "null"
			return
		}
		// A string it stays ("${PORT}" was one); a number, duration or
		// boolean in it is read as from any quoted value.
		n.Tag, n.Style = "!!str", yaml.DoubleQuotedStyle
	}
	walk(&doc, "")
	out, err := yaml.Marshal(&doc)
	return out, problems, err
}

// readSecretFiles resolves the *_file variants of secret keys.
func (c *Config) readSecretFiles(readFile func(string) ([]byte, error)) []error {
	var errs []error
	read := func(key, path string, dst *string) {
		if path == "" {
			return
		}
		if *dst != "" {
			errs = append(errs, problem{key: key, msg: "set together with " + strings.TrimSuffix(key, "_file") + "; keep only one"})
			return
		}
		b, err := readFile(path)
		if err != nil {
			errs = append(errs, problem{key: key, msg: err.Error() + "; point it at a readable file holding the secret"})
			return
		}
		*dst = strings.TrimSpace(string(b))
		if *dst == "" {
			// As an unset ${NAME}: an empty secret would quietly mean
			// none (a webhook posted unsigned, an admin API without a
			// token).
			errs = append(errs, problem{key: key, msg: path + " is empty; put the secret in it, or remove " +
				key[strings.LastIndex(key, ".")+1:] + " if this one is to have none"})
		}
	}
	read("admin.token_file", c.Admin.TokenFile, &c.Admin.Token)
	read("store.nats.token_file", c.Store.NATS.TokenFile, &c.Store.NATS.Token)
	read("chatdata.api_key_file", c.ChatData.APIKeyFile, &c.ChatData.APIKey)
	if c.SigningSecretsFile != "" {
		b, err := readFile(c.SigningSecretsFile)
		if err != nil {
			errs = append(errs, problem{key: "signing_secrets_file", msg: err.Error() + "; point it at a file with one secret per line"})
		} else {
			for _, line := range strings.Split(string(b), "\n") {
				if s := strings.TrimSpace(line); s != "" && !strings.HasPrefix(s, "#") {
					c.SigningSecrets = append(c.SigningSecrets, s)
				}
			}
		}
	}
	for i := range c.Sinks {
		s := &c.Sinks[i]
		p := fmt.Sprintf("sinks[%d].", i)
		read(p+"webhook_url_file", s.WebhookURLFile, &s.WebhookURL)
		read(p+"token_file", s.TokenFile, &s.Token)
		read(p+"secret_file", s.SecretFile, &s.Secret)
	}
	return errs
}

// Secrets returns every secret value in the config, for the scrubber that
// keeps them out of logs, stored error text and API answers (SPEC §9):
// signing secrets, tokens, webhook URLs and every extra header value (a
// header's name says too little about what its value is).
func (c *Config) Secrets() []string {
	out := slices.Clone(c.SigningSecrets)
	out = append(out, c.Admin.Token, c.Store.NATS.Token, c.ChatData.APIKey)
	for _, one := range strings.Split(c.Store.NATS.URL, ",") {
		if u, err := url.Parse(strings.TrimSpace(one)); err == nil && u.User != nil {
			out = append(out, u.User.String(), u.User.Username())
			if p, ok := u.User.Password(); ok {
				out = append(out, p)
			}
		}
	}
	for _, s := range c.Sinks {
		out = append(out, s.WebhookURL, s.Token, s.Secret)
		if s.Type == TypeWebhook {
			out = append(out, s.URL)
			for _, v := range s.Headers {
				out = append(out, v)
			}
		}
	}
	return slices.DeleteFunc(out, func(s string) bool { return len(s) < 6 })
}

// minAdminToken is the shortest admin.token accepted off loopback (SPEC §9).
const minAdminToken = 16

// Validate checks everything that can be checked without the network and
// returns every problem, each naming the key and the fix.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, problem{key: key, msg: fmt.Sprintf(format, args...)})
	}
	if err := checkHostPort(c.Listen); err != nil {
		bad("listen", "%v; set it to an address like 127.0.0.1:8080", err)
	}
	if err := checkHostPort(c.Admin.Listen); err != nil {
		bad("admin.listen", "%v; set it to an address like 127.0.0.1:9090", err)
	} else if c.Admin.Token == "" && !isLoopback(c.Admin.Listen) {
		bad("admin.token", "required because admin.listen %q is not a loopback address; set admin.token "+
			"(or CHATRELAY_ADMIN_TOKEN), or listen on 127.0.0.1", c.Admin.Listen)
	} else if len(c.Admin.Token) < minAdminToken && c.Admin.Token != "" && !isLoopback(c.Admin.Listen) {
		bad("admin.token", "shorter than %d characters, too easy to guess on a listener that is not loopback (%q); "+
			"use a random one, e.g. from: openssl rand -hex 24", minAdminToken, c.Admin.Listen)
	}
	if !c.Embedded() && len(c.SigningSecrets) == 0 {
		bad("signing_secrets", "none set; set at least one: the signing secret Chat Data shows under Settings → Webhooks "+
			"(e.g. signing_secrets: [\"${CHAT_DATA_SIGNING_SECRET}\"])")
	}
	for i, s := range c.SigningSecrets {
		if strings.TrimSpace(s) == "" {
			bad(fmt.Sprintf("signing_secrets[%d]", i), "empty; set it to the signing secret Chat Data shows under Settings → Webhooks")
		}
	}
	if c.MaxBodyBytes < 1024 {
		bad("max_body_bytes", "%d is too small; use at least 1KiB (default 1MiB)", c.MaxBodyBytes)
	}
	if c.MaxInflightBytes < c.MaxBodyBytes {
		bad("max_inflight_bytes", "%d is below max_body_bytes %d, so a body of the largest size could never be read; "+
			"make it at least max_body_bytes (default 64MiB)", c.MaxInflightBytes, c.MaxBodyBytes)
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout", "must be positive, like 15s")
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		bad("log.level", "%q is not a level; use debug, info, warn or error", c.Log.Level)
	}
	if !slices.Contains([]string{"auto", "text", "json"}, c.Log.Format) {
		bad("log.format", "%q is not a format; use auto, text or json", c.Log.Format)
	}
	switch c.Store.Driver {
	case "bolt":
		if strings.TrimSpace(c.Store.Path) == "" {
			bad("store.path", "empty; set it to a directory, like ./chatrelay-data")
		}
		if c.Store.MaxSize != 0 && c.Store.MaxSize < 1<<20 {
			bad("store.max_size", "%d bytes is too small; use at least 1MiB (default 1GiB)", c.Store.MaxSize)
		}
	case "nats":
		for _, one := range strings.Split(c.Store.NATS.URL, ",") {
			if u, err := url.Parse(strings.TrimSpace(one)); err != nil || u.Host == "" {
				bad("store.nats.url", "not a NATS URL (value hidden: it may carry credentials); set it like nats://127.0.0.1:4222, "+
					"comma-separating several servers")
				break
			}
		}
		if c.Store.NATS.Replicas < 1 || c.Store.NATS.Replicas > 5 {
			bad("store.nats.replicas", "%d; use 1 (single server) to 5, typically 3 on a cluster", c.Store.NATS.Replicas)
		}
		if c.Store.NATS.Partitions < 1 || c.Store.NATS.Partitions > 1024 {
			bad("store.nats.partitions", "%d; use 1 to 1024 (default 16)", c.Store.NATS.Partitions)
		}
		if c.Store.NATS.AckWait < 300*time.Millisecond {
			bad("store.nats.ack_wait", "%s is too short; use at least 300ms (default 30s)", c.Store.NATS.AckWait)
		}
		if c.Store.NATS.CredsFile != "" && c.Store.NATS.Token != "" {
			bad("store.nats.token", "set together with store.nats.creds_file; keep only one")
		}
		tls := c.Store.NATS.TLS
		if (tls.CertFile == "") != (tls.KeyFile == "") {
			bad("store.nats.tls", "cert_file and key_file go together; set both or neither")
		}
	default:
		bad("store.driver", "%q is not a store; use bolt (embedded, the default) or nats (JetStream, for several replicas)", c.Store.Driver)
	}
	if c.Store.Retention <= 0 {
		bad("store.retention", "must be positive, like 168h")
	}
	if c.Store.DedupeWindow <= 0 {
		bad("store.dedupe_window", "must be positive, like 24h")
	}
	if c.Retry.Initial <= 0 {
		bad("retry.initial", "must be positive, like 1s")
	}
	if c.Retry.Max < c.Retry.Initial {
		bad("retry.max", "%s is below retry.initial %s; make it at least as long", c.Retry.Max, c.Retry.Initial)
	}
	if c.Retry.MaxAge < c.Retry.Max {
		bad("retry.max_age", "%s is below retry.max %s; make it longer, like 24h", c.Retry.MaxAge, c.Retry.Max)
	}
	if !c.Embedded() && len(c.Sinks) == 0 {
		bad("sinks", "none configured; add at least one sink (slack, discord, webhook or console; see config.example.yaml)")
	}
	names := map[string]int{}
	for i, s := range c.Sinks {
		errs = append(errs, s.validate(i, names)...)
	}
	errs = append(errs, c.validateChatData()...)
	errs = append(errs, c.validateRoutes(names)...)
	errs = append(errs, c.TLS.validate()...)
	return joinProblems(append(slices.Clone(c.loadProblems), errs...))
}

// joinProblems joins problems one per line, in key order, keeping the
// first of several about the same key: a key that could not be loaded (an
// unset ${NAME}, a value of the wrong type) is not also reported as
// missing or out of range.
func joinProblems(problems []error) error {
	seen := map[string]bool{}
	var out []error
	for _, p := range problems {
		k := keyOf(p)
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, p)
	}
	slices.SortStableFunc(out, func(a, b error) int { return compareKeys(keyOf(a), keyOf(b)) })
	return errors.Join(out...)
}

// keyOf is the key a problem is about: what comes before its first ": ".
func keyOf(err error) string {
	var p problem
	if errors.As(err, &p) {
		return p.key
	}
	k, _, _ := strings.Cut(err.Error(), ": ")
	return k
}

// compareKeys orders keys as they read, with indexes as numbers
// (sinks[2] before sinks[10]).
func compareKeys(a, b string) int {
	for a != "" && b != "" {
		ia, ib := strings.IndexAny(a, "0123456789"), strings.IndexAny(b, "0123456789")
		if ia < 0 || ib < 0 || a[:ia] != b[:ib] {
			return strings.Compare(a, b)
		}
		a, b = a[ia:], b[ib:]
		ea, eb := len(a)-len(strings.TrimLeft(a, "0123456789")), len(b)-len(strings.TrimLeft(b, "0123456789"))
		na, _ := strconv.Atoi(a[:ea])
		nb, _ := strconv.Atoi(b[:eb])
		if na != nb {
			return na - nb
		}
		a, b = a[ea:], b[eb:]
	}
	return strings.Compare(a, b)
}

// Check is Validate plus each sink's own checks (what its constructor
// refuses), all reported together, one line per key.
func (c *Config) Check() error {
	err := c.Validate()
	var problems []error
	if err != nil {
		problems = err.(interface{ Unwrap() []error }).Unwrap()
	}
	for i, sc := range defaultSinks(c) {
		switch sc.Type {
		case TypeSlack, TypeDiscord, TypeWebhook, TypeConsole:
		default:
			continue // Validate named the type
		}
		_, _, err := newSink(sc, relay.SinkDeps{KV: relay.NewMemKV()}.WithDefaults(), io.Discard)
		if err != nil {
			problems = append(problems, sinkProblems(i, err)...)
		}
	}
	return joinProblems(problems)
}

var sinkName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)

func (s SinkConfig) validate(i int, names map[string]int) []error {
	var errs []error
	key := func(k string) string { return fmt.Sprintf("sinks[%d].%s", i, k) }
	bad := func(k, format string, args ...any) {
		errs = append(errs, problem{key: key(k), msg: fmt.Sprintf(format, args...)})
	}
	switch {
	case s.Name == "":
		bad("name", "missing; give the sink a name (letters, digits, - and _), used in routes, logs and metrics")
	case !sinkName.MatchString(s.Name):
		bad("name", "%q: use letters, digits, - and _ only (up to 63), starting with a letter or digit", s.Name)
	default:
		if j, dup := names[s.Name]; dup {
			bad("name", "%q is already the name of sinks[%d]; sink names must be unique", s.Name, j)
		}
		names[s.Name] = i
	}
	switch s.Type {
	case TypeSlack, TypeDiscord:
		p := s.platform()
		switch {
		case s.WebhookURL != "" && s.Token != "":
			bad("token", "set together with webhook_url; a %s sink uses either a %s or a bot token + %s", s.Type, p.webhook, p.channelKey)
		case s.WebhookURL != "":
			checkURL(&errs, key("webhook_url"), s.WebhookURL, p.webhookURL)
			if p.channel != "" {
				bad(p.channelKey, "only for bot mode (token); a webhook posts to the channel it was created for")
			}
		case s.Token != "":
			if p.channel == "" {
				bad(p.channelKey, "missing; bot mode needs %s", p.channelHow)
			}
		default:
			bad("webhook_url", "missing: a %s sink needs webhook_url (%s) or token + %s (bot); "+
				"if you wrote ${%s}, that variable is empty", s.Type, p.webhook, p.channelKey, p.env)
		}
		if s.APIURL != "" {
			checkURL(&errs, key("api_url"), s.APIURL, "a base URL like "+p.apiURL)
		}
	case TypeWebhook:
		if s.URL == "" {
			bad("url", "missing; set it to the http(s) URL that receives the events")
		} else {
			checkURL(&errs, key("url"), s.URL, "the http(s) URL that receives the events")
		}
		if s.Secret != "" && !strings.HasPrefix(s.Secret, "whsec_") {
			bad("secret", `not a Standard Webhooks secret; it must look like whsec_<base64> (generate one with: echo "whsec_$(head -c 32 /dev/urandom | base64)")`)
		}
	case TypeConsole:
	case "":
		bad("type", "missing; use slack, discord, webhook or console")
	default:
		bad("type", "%q is not a sink type; use slack, discord, webhook or console", s.Type)
	}
	if s.Type != "" {
		errs = append(errs, s.foreignKeys(i)...)
	}
	if s.Timeout < 0 {
		bad("timeout", "must be positive, like 10s")
	}
	if s.Concurrency < 0 || s.Concurrency > 256 {
		bad("concurrency", "%d; use 1 to 256", s.Concurrency)
	}
	if s.Rate != "" {
		if _, _, err := ParseRate(s.Rate); err != nil {
			bad("rate", "%v", err)
		}
	}
	if s.Template != "" {
		if _, err := relay.ParseTemplate(s.Name, s.Template); err != nil {
			bad("template", "%v; see text/template and the helper functions in config.example.yaml", err)
		}
	}
	for j, r := range s.Redact {
		if err := relay.CheckRedactPath(r); err != nil {
			bad(fmt.Sprintf("redact[%d]", j), "%v", err)
		}
	}
	return errs
}

// platform is what configuring a Slack or Discord sink takes, for messages.
type platform struct {
	channelKey, channel string // bot mode's channel key and its value
	webhook, webhookURL string // what the webhook is called, and its URL form
	channelHow, apiURL  string
	env                 string // the variable the example config reads the webhook URL from
}

func (s SinkConfig) platform() platform {
	if s.Type == TypeSlack {
		return platform{channelKey: "channel", channel: s.Channel, webhook: "incoming webhook",
			webhookURL: "the incoming webhook URL Slack shows (https://hooks.slack.com/services/…)",
			channelHow: "the channel ID (C0123456), found under the channel's details",
			apiURL:     "https://slack.com/api/", env: "SLACK_WEBHOOK_URL"}
	}
	return platform{channelKey: "channel_id", channel: s.ChannelID, webhook: "channel webhook",
		webhookURL: "the channel's webhook URL (https://discord.com/api/webhooks/…)",
		channelHow: "the channel's ID (Developer Mode → right-click the channel → Copy ID)",
		apiURL:     "https://discord.com/api/v10", env: "DISCORD_WEBHOOK_URL"}
}

// foreignKeys reports keys set on a sink that its type does not take.
func (s SinkConfig) foreignKeys(i int) []error {
	allowed := append([]string{"name", "type", "redact", "timeout", "concurrency", "rate"}, sinkKeys(s.Type)...)
	if s.Type == TypeSlack || s.Type == TypeDiscord {
		allowed = append(allowed, "pack")
	}
	var errs []error
	val := reflect.ValueOf(s)
	typ := val.Type()
	for f := range typ.NumField() {
		tag := typ.Field(f).Tag.Get("mapstructure")
		if tag == "" || slices.Contains(allowed, tag) || val.Field(f).IsZero() {
			continue
		}
		hint := ""
		switch {
		case tag == "channel" && s.Type == TypeDiscord:
			hint = "; did you mean channel_id?"
		case tag == "channel_id" && s.Type == TypeSlack:
			hint = "; did you mean channel?"
		case tag == "url" && s.Type != TypeWebhook:
			hint = "; did you mean webhook_url?"
		case tag == "webhook_url" && s.Type == TypeWebhook:
			hint = "; did you mean url?"
		}
		errs = append(errs, fmt.Errorf("sinks[%d].%s: not a key of %s sinks%s", i, tag, s.Type, hint))
	}
	return errs
}

func (c *Config) validateRoutes(names map[string]int) []error {
	var errs []error
	for i, r := range c.Routes {
		key := fmt.Sprintf("routes[%d]", i)
		m := r.Match
		if m.toMatch().Empty() {
			errs = append(errs, fmt.Errorf("%s.match: empty; give at least one of topic, chatbot_id, source, min_score, max_score "+
				"(to send every event to a sink, list it in no route and drop routes, or add a topic list)", key))
		}
		for _, sc := range []struct {
			k string
			v *float64
		}{{"min_score", m.MinScore}, {"max_score", m.MaxScore}} {
			if sc.v != nil && (*sc.v < 0 || *sc.v > 1) {
				errs = append(errs, fmt.Errorf("%s.match.%s: %g is outside 0..1, the range of answer scores", key, sc.k, *sc.v))
			}
		}
		if m.MinScore != nil && m.MaxScore != nil && *m.MinScore > *m.MaxScore {
			errs = append(errs, fmt.Errorf("%s.match: min_score %g is above max_score %g; no event could match", key, *m.MinScore, *m.MaxScore))
		}
		for j, t := range m.Topic {
			if strings.TrimSpace(t) == "" {
				errs = append(errs, fmt.Errorf("%s.match.topic[%d]: empty", key, j))
			}
		}
		if len(r.Sinks) == 0 {
			errs = append(errs, fmt.Errorf("%s.sinks: empty; list the sinks this route sends to", key))
		}
		for j, s := range r.Sinks {
			if _, ok := names[s]; !ok {
				errs = append(errs, fmt.Errorf("%s.sinks[%d]: no sink named %q; use one of: %s", key, j, s, strings.Join(sortedKeys(names), ", ")))
			}
		}
	}
	return errs
}

func (m MatchConfig) toMatch() relay.Match {
	return relay.Match{Topic: m.Topic, ChatbotID: m.ChatbotID, Source: m.Source, MinScore: m.MinScore, MaxScore: m.MaxScore}
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b string) int { return m[a] - m[b] })
	return out
}

// checkURL accepts any absolute http or https URL. The value is never
// echoed: URLs of webhooks carry tokens.
func checkURL(errs *[]error, key, raw, what string) {
	u, err := url.Parse(strings.TrimSpace(raw))
	switch {
	case err != nil || u.Host == "":
		*errs = append(*errs, fmt.Errorf("%s: not a URL (value hidden: it may carry a token); set it to %s", key, what))
	case u.Scheme != "http" && u.Scheme != "https":
		*errs = append(*errs, fmt.Errorf("%s: scheme %q is not http or https; set it to %s", key, u.Scheme, what))
	}
}

func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has no valid port", addr)
	}
	return nil
}

// isLoopback reports whether addr listens only on a loopback interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ParseRate reads a sink's rate: "1/s", "5/2s", "30/m", "2/1m30s". It
// returns the spacing between sends and the burst (always 1: evenly spaced
// sends never exceed a window limit).
func ParseRate(s string) (time.Duration, int, error) {
	n, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	count, err := strconv.Atoi(strings.TrimSpace(n))
	if !ok || err != nil || count < 1 {
		return 0, 0, fmt.Errorf("%q is not a rate; write it as messages/period, like 1/s, 5/2s or 30/m", s)
	}
	per = strings.TrimSpace(per)
	switch per {
	case "s", "m", "h":
		per = "1" + per
	}
	d, err := time.ParseDuration(per)
	if err != nil || d <= 0 {
		return 0, 0, fmt.Errorf("%q is not a rate; write it as messages/period, like 1/s, 5/2s or 30/m", s)
	}
	return d / time.Duration(count), 1, nil
}

// unknownKeys walks the YAML tree against Config and names every key that
// does not exist, with a suggestion when one is close.
func unknownKeys(tree map[string]any) []error {
	var errs []error
	walkKeys(tree, reflect.TypeFor[Config](), "", &errs)
	return errs
}

func walkKeys(node any, t reflect.Type, path string, errs *[]error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := node.(map[string]any)
		if !ok {
			return // type errors are reported by the decoder
		}
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			tag := t.Field(i).Tag.Get("mapstructure")
			if tag != "" && tag != "-" {
				fields[tag] = t.Field(i).Type
			}
		}
		for k, v := range m {
			ft, ok := fields[k]
			key := keyName(k)
			if path != "" {
				key = path + "." + key
			}
			if !ok {
				*errs = append(*errs, fmt.Errorf("%s: unknown key%s; see config.example.yaml for every key", key, suggest(k, fields)))
				continue
			}
			walkKeys(v, ft, key, errs)
		}
	case reflect.Slice:
		items, ok := node.([]any)
		if !ok {
			return
		}
		for i, it := range items {
			walkKeys(it, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
		}
	}
}

// keyName is a key as written in a message: quoted when it holds anything
// but letters, digits, "_" and "-" (a newline, ": "), so that every problem
// stays one line that starts with its key.
func keyName(k string) string {
	if k != "" && strings.IndexFunc(k, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-')
	}) < 0 {
		return k
	}
	return strconv.Quote(k)
}

func suggest(k string, fields map[string]reflect.Type) string {
	best, bestD := "", 3
	for f := range fields {
		if d := editDistance(k, f); d < bestD {
			best, bestD = f, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
