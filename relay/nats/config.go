package nats

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

// Config is the store section of chatrelay's config as this driver reads
// it: the keys every store takes and, under nats, its own. Keys in errors
// are relative to the store section ("nats.partitions: …").
type Config struct {
	// MaxSize (max_size) optionally bounds the events stream: see
	// Options.MaxBytes. 0, the default: no bound of its own.
	MaxSize relay.ByteSize `mapstructure:"max_size"`
	// Retention is how long events are kept, delivered or not.
	Retention time.Duration `mapstructure:"retention"`
	// DedupeWindow is the events stream's duplicate window; at most
	// Retention.
	DedupeWindow time.Duration `mapstructure:"dedupe_window"`
	Server       `mapstructure:"nats"`
}

// Server is store.nats: where NATS is and how the streams are laid out.
type Server struct {
	URL        string        `mapstructure:"url"` // several servers separated by commas
	CredsFile  string        `mapstructure:"creds_file"`
	Token      relay.Secret  `mapstructure:"token"` // or token_file
	TLS        TLS           `mapstructure:"tls"`
	Replicas   int           `mapstructure:"replicas"`
	Partitions int           `mapstructure:"partitions"`
	AckWait    time.Duration `mapstructure:"ack_wait"`
}

// TLS configures a TLS connection to NATS (store.nats.tls).
type TLS struct {
	CAFile   string `mapstructure:"ca_file"`   // PEM roots to trust instead of the system's
	CertFile string `mapstructure:"cert_file"` // cert_file and key_file: a client certificate
	KeyFile  string `mapstructure:"key_file"`
}

// Defaults of the store section and of Options.
const (
	DefaultURL          = "nats://127.0.0.1:4222"
	DefaultPartitions   = 16
	MaxPartitions       = 1000
	DefaultAckWait      = 30 * time.Second
	MinAckWait          = 300 * time.Millisecond
	DefaultRetention    = 168 * time.Hour
	DefaultDedupeWindow = 24 * time.Hour
)

// DefaultConfig is the config of a store section that sets nothing.
func DefaultConfig() Config {
	return Config{
		Retention:    DefaultRetention,
		DedupeWindow: DefaultDedupeWindow,
		Server:       Server{URL: DefaultURL, Replicas: 1, Partitions: DefaultPartitions, AckWait: DefaultAckWait},
	}
}

// Options returns the options Open takes for c; the caller adds what is
// not configuration (Exclusive, Logger).
func (c Config) Options() Options {
	return Options{
		URL: c.URL, CredsFile: c.CredsFile, Token: c.Token, TLS: c.TLS,
		Replicas: c.Replicas, Partitions: c.Partitions, AckWait: c.AckWait,
		Retention: c.Retention, DedupeWindow: c.DedupeWindow, MaxBytes: int64(c.MaxSize),
	}
}

// Validate checks c and joins one error per problem, each "key: problem;
// fix" with the key relative to the store section. A URL is never echoed:
// it may carry credentials.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) { errs = append(errs, fmt.Errorf(key+": "+format, args...)) }
	if strings.TrimSpace(c.URL) == "" {
		bad("nats.url", "empty; set it to the NATS server, e.g. %s", DefaultURL)
	}
	for one := range strings.SplitSeq(c.URL, ",") {
		if u, err := url.Parse(strings.TrimSpace(one)); strings.TrimSpace(c.URL) != "" && (err != nil || u.Host == "") {
			bad("nats.url", "not a NATS URL (value hidden: it may carry credentials); set it like %s, comma-separating several servers", DefaultURL)
			break
		}
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		bad("nats.replicas", "%d; use 1 (single server) to 5, typically 3 on a cluster: JetStream allows 1 to 5", c.Replicas)
	}
	if c.Partitions < 1 || c.Partitions > MaxPartitions {
		bad("nats.partitions", "%d; use 1 to %d (default %d)", c.Partitions, MaxPartitions, DefaultPartitions)
	}
	if c.AckWait < MinAckWait {
		bad("nats.ack_wait", "%s is too short; use at least %s (default %s)", c.AckWait, MinAckWait, DefaultAckWait)
	}
	if c.CredsFile != "" && !c.Token.IsZero() {
		bad("nats.token", "set together with nats.creds_file; keep only one")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("nats.tls", "cert_file and key_file go together; set both or neither")
	}
	if c.MaxSize < 0 {
		bad("max_size", "%d is negative; leave it unset for no bound of its own", c.MaxSize)
	}
	if c.Retention <= 0 {
		bad("retention", "must be positive, like %s", DefaultRetention)
	}
	if c.DedupeWindow <= 0 {
		bad("dedupe_window", "must be positive, like %s", DefaultDedupeWindow)
	} else if c.DedupeWindow > c.Retention && c.Retention > 0 {
		bad("dedupe_window", "%s exceeds retention (%s); an event cannot be recognised after it is gone, so lower the window or raise retention",
			c.DedupeWindow, c.Retention)
	}
	return errors.Join(errs...)
}
