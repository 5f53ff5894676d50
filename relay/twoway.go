package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/jonboulle/clockwork"
)

// ReplyConfig is the reply: section of a two-way sink (SPEC §10), the keys
// every platform takes alike; a platform's own Config adds what its
// connection needs (Slack: signing_secret or app_token). Without the
// section the sink only mirrors.
type ReplyConfig struct {
	// Prefix starts a thread message meant for the visitor (default
	// DefaultReplyPrefix); Mode says what the other messages are.
	Prefix string    `mapstructure:"prefix"`
	Mode   ReplyMode `mapstructure:"mode"`
	// RepageAfter is how long an escalation may stay unclaimed before it
	// is posted again with the sink's mention; 0 never re-pages.
	RepageAfter time.Duration `mapstructure:"repage_after"`
}

// Rule is the rule that decides which thread messages reach the visitor.
func (c ReplyConfig) Rule() ReplyRule { return ReplyRule{Mode: c.Mode, Prefix: c.Prefix} }

// Validate checks the section. Its errors start with the key under the
// sink ("reply.mode: …"), for the wiring to put under the sink's index.
func (c ReplyConfig) Validate() error {
	var errs []error
	if err := c.Rule().Validate(); err != nil {
		for _, e := range joined(err) {
			errs = append(errs, fmt.Errorf("reply.%w", e))
		}
	}
	if c.RepageAfter < 0 {
		errs = append(errs, fmt.Errorf("reply.repage_after: %s is negative; write how long an unclaimed escalation waits before it is posted again, like 10m (0: never)", c.RepageAfter))
	}
	return errors.Join(errs...)
}

// joined returns the errors err joins, or err alone.
func joined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// TwoWay is implemented by a sink (and by its Config) that can take
// replies from its threads: ok is true when its config has a reply:
// section. Two-way live chat needs the chatdata section (the replies'
// destination) and a sink in bot mode (replies are read from threads).
type TwoWay interface {
	Replies() (cfg ReplyConfig, ok bool)
}

// Source takes what agents write and click on a platform into the relay:
// Slack's Events API and Socket Mode, Discord's gateway. A platform's
// package builds its sources from its two-way sinks; they hand thread
// messages and clicks to the Inbox, which stores them before the source
// acknowledges the platform.
type Source interface {
	// Handlers returns what the source serves on the public listener, by
	// http.ServeMux pattern ("POST /slack/events"), or nil for a source
	// that connects out (Socket Mode, a gateway session).
	Handlers() map[string]http.Handler
	// Run runs what the source owns (a connection and its reader) until
	// ctx ends, and returns only once every goroutine it started has
	// exited. It returns nil when it has nothing to run, and an error only
	// when the relay cannot go on without it; a platform that refuses the
	// source's credentials is logged and leaves the relay mirroring.
	Run(ctx context.Context) error
}

// SourceDeps is what the wiring gives a platform's sources.
type SourceDeps struct {
	Inbox  *Inbox
	Logger *slog.Logger // already carries component=
	Clock  clockwork.Clock
	// MaxBody bounds a request's body on the public listener
	// (max_body_bytes).
	MaxBody   int64
	UserAgent string
	// Transport carries the sources' own HTTP requests (nil: a default
	// transport).
	Transport http.RoundTripper
	// Owner says when this replica may hold a sink's platform session
	// that only one replica may hold (Discord's gateway): OwnerOf the
	// store. nil: this process owns every sink.
	Owner Owner
	// Conversations tells which conversations were resolved (a source
	// that catches up on missed thread messages skips theirs); nil: none
	// is known to be.
	Conversations *Conversations
}

// WithDefaults fills what the caller left empty with working defaults.
func (d SourceDeps) WithDefaults() SourceDeps {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Clock == nil {
		d.Clock = clockwork.NewRealClock()
	}
	if d.UserAgent == "" {
		d.UserAgent = "chatrelay"
	}
	if d.Transport == nil {
		d.Transport = http.DefaultTransport
	}
	if d.Owner == nil {
		d.Owner = processOwner{}
	}
	if d.MaxBody <= 0 {
		d.MaxBody = 1 << 20
	}
	return d
}
