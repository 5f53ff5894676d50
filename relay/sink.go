package relay

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/jonboulle/clockwork"
)

// Sink delivers events to one destination. It formats and posts one event and
// returns nil or a classified error (Permanent, Broken, RetryAfter; anything
// else is retried). It never sleeps, retries, reorders, buffers or
// dead-letters: the dispatcher does all of that, once, for every sink.
type Sink interface {
	Name() string                              // the configured name; the metric label
	Send(ctx context.Context, ev *Event) error // ev is read-only
}

// Packer is implemented by sinks that can put several pending events (heads
// of different conversations) into one message when the destination's pace
// cannot keep up: a busy chatbot then still mirrors in near real time into a
// channel that takes one message per second. The dispatcher discovers it.
type Packer interface {
	Sink
	// MaxPack is how many events one packed message may hold.
	MaxPack() int
	// CanPack reports whether ev may share a message with events of other
	// conversations. In bot mode with threads, a turn whose conversation
	// already has a thread cannot: it goes alone, into its thread.
	CanPack(ctx context.Context, ev *Event) bool
	// SendPacked posts, as one message in order, the longest prefix of evs
	// (2..MaxPack events, each CanPack) that fits the platform's limits
	// without cutting a turn, and returns how many it posted: at least one
	// when err is nil. The events after them were not sent and go in a
	// later message. A non-nil error is classified and applies to every
	// event in evs.
	SendPacked(ctx context.Context, evs []*Event) (sent int, err error)
}

// Prober is implemented by sinks that can check their credentials without
// posting a message (chatrelay check-config --probe).
type Prober interface {
	Probe(ctx context.Context) error
}

// Paced is implemented by sinks whose platform publishes a sending pace (for
// example about one message per second for a Slack channel). The dispatcher
// spaces sends accordingly so that steady traffic causes no 429.
type Paced interface {
	Pace() (every time.Duration, burst int)
}

// Budgeted is implemented by sinks one of whose sends may take several
// requests (a long turn continues in follow-up messages; a thread is
// started), each bounded by the sink's own timeout: SendTimeout is the
// deadline the dispatcher gives one send. Without it a send gets
// DefaultTimeout.
type Budgeted interface {
	SendTimeout() time.Duration
}

// Throttle is how a sink reports what a platform's rate-limit headers said
// on a successful answer (X-RateLimit-Remaining 0, Reset-After 1.5): the
// dispatcher sends nothing more to the sink before t.
type Throttle interface {
	HoldUntil(t time.Time)
}

// KV is a small durable key/value facility, namespaced to one sink, that
// sinks use to remember conversation → thread mappings across restarts and
// replicas.
type KV interface {
	Get(ctx context.Context, key string) (value string, ok bool, err error)
	Put(ctx context.Context, key, value string) error
}

// SinkDeps is what the wiring gives every sink's constructor.
type SinkDeps struct {
	Logger    *slog.Logger // already carries sink= and kind=
	KV        KV
	Throttle  Throttle
	Clock     clockwork.Clock
	UserAgent string
	// Transport carries the sink's HTTP requests (nil: a default
	// transport). Tests wrap it to watch what the sink sends and whether it
	// drains every response.
	Transport http.RoundTripper
}

// WithDefaults fills what the caller left empty with working defaults.
func (d SinkDeps) WithDefaults() SinkDeps {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Clock == nil {
		d.Clock = clockwork.NewRealClock()
	}
	if d.Throttle == nil {
		d.Throttle = noThrottle{}
	}
	if d.UserAgent == "" {
		d.UserAgent = "chatrelay"
	}
	if d.Transport == nil {
		d.Transport = http.DefaultTransport
	}
	return d
}

type noThrottle struct{}

func (noThrottle) HoldUntil(time.Time) {}
