package bolt

import (
	"cmp"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

// Config is the store section of chatrelay's config as this driver reads
// it. Keys in errors are relative to the store section ("path: …").
type Config struct {
	// Path is the directory of the database file (Open's dir).
	Path string `mapstructure:"path"`
	// MaxSize bounds the database file: past it the receiver answers 503
	// (0: DefaultMaxSize).
	MaxSize relay.ByteSize `mapstructure:"max_size"`
	// Retention is how long delivered events are kept.
	Retention time.Duration `mapstructure:"retention"`
	// DedupeWindow is how long a repeated body is answered "duplicate".
	DedupeWindow time.Duration `mapstructure:"dedupe_window"`
}

// Defaults of the store section.
const (
	DefaultPath         = "./chatrelay-data"
	DefaultMaxSize      = relay.ByteSize(1 << 30)
	MinMaxSize          = relay.ByteSize(1 << 20)
	DefaultRetention    = 168 * time.Hour
	DefaultDedupeWindow = 24 * time.Hour
)

// DefaultConfig is the config of a store section that sets nothing.
func DefaultConfig() Config {
	return Config{Path: DefaultPath, MaxSize: DefaultMaxSize, Retention: DefaultRetention, DedupeWindow: DefaultDedupeWindow}
}

// Options returns the options Open takes for c; the caller adds what is
// not configuration (Clock, Logger).
func (c Config) Options() Options {
	return Options{MaxSize: int64(cmp.Or(c.MaxSize, DefaultMaxSize)), Retention: c.Retention, DedupeWindow: c.DedupeWindow}
}

// Validate checks c and joins one error per problem, each "key: problem;
// fix" with the key relative to the store section.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) { errs = append(errs, fmt.Errorf(key+": "+format, args...)) }
	if strings.TrimSpace(c.Path) == "" {
		bad("path", "empty; set it to a directory, like %s", DefaultPath)
	}
	if c.MaxSize != 0 && c.MaxSize < MinMaxSize {
		bad("max_size", "%d bytes is too small; use at least 1MiB (default 1GiB)", c.MaxSize)
	}
	if c.Retention <= 0 {
		bad("retention", "must be positive, like %s", DefaultRetention)
	}
	if c.DedupeWindow <= 0 {
		bad("dedupe_window", "must be positive, like %s", DefaultDedupeWindow)
	}
	return errors.Join(errs...)
}
