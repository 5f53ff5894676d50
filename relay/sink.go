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

// Poster is implemented by sinks that post an event as one or more
// messages, in order, into its conversation's thread. The dispatcher
// drives it (Post): the sink renders the event into a Turn, which says
// what to post and how; the relay posts it and keeps the books (which
// thread a conversation has, how far a long turn got: Books); what the
// send reports paces the sink.
type Poster interface {
	Sink
	// Turn renders ev into what Post posts.
	Turn(ctx context.Context, ev *Event) (*Turn, error)
}

// Post sends ev to p: its Turn, delivered through the sink's books. A
// Poster's Send is Post without the report.
func Post(ctx context.Context, p Poster, ev *Event) (Report, error) {
	t, err := p.Turn(ctx, ev)
	if err != nil {
		return Report{}, err
	}
	return t.Deliver(ctx)
}

// Report is what a send learned besides its outcome, for the
// dispatcher's pacing.
type Report struct {
	// Posts is how many messages the send posted. Each after the first
	// takes a slot of the sink's pace, as the send itself took one.
	Posts int
	// HoldUntil is set when the destination's rate-limit headers said
	// that nothing more may be sent before then (a bucket emptied): the
	// dispatcher sends nothing to the sink until then.
	HoldUntil time.Time
}

// Hold notes that the destination asked for nothing before t; the latest
// such time wins.
func (r *Report) Hold(t time.Time) {
	if t.After(r.HoldUntil) {
		r.HoldUntil = t
	}
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
	// event in evs. The report is as Post's.
	SendPacked(ctx context.Context, evs []*Event) (sent int, rep Report, err error)
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

// KV is a small durable key/value facility, namespaced to one sink, that
// sinks use to remember conversation → thread mappings across restarts and
// replicas.
type KV interface {
	Get(ctx context.Context, key string) (value string, ok bool, err error)
	Put(ctx context.Context, key, value string) error
}

// Swapper is a KV that can also set a key only if it still holds what the
// caller read: a compare-and-set, atomic across every process that shares
// the store (relay/bolt applies it on its one writer, relay/nats with the
// key's revision). Two agents clicking Claim at once: exactly one wins.
type Swapper interface {
	KV
	// Swap sets key to value if it holds old now (a key never written
	// holds ""), and reports whether it did. false means another write
	// came first: read again, and decide again.
	Swap(ctx context.Context, key, old, value string) (bool, error)
}

// SinkDeps is what the wiring gives every sink's constructor.
type SinkDeps struct {
	Logger    *slog.Logger // already carries sink= and kind=
	KV        KV
	Clock     clockwork.Clock
	UserAgent string
	// Transport carries the sink's HTTP requests (nil: a default
	// transport). Tests wrap it to watch what the sink sends and whether it
	// drains every response.
	Transport http.RoundTripper
}

// Client returns a sink's HTTP client: its Transport, timeout bounding each
// request, and redirects never followed (a destination is posted to exactly
// as configured; a redirect is an answer).
func (d SinkDeps) Client(timeout time.Duration) *http.Client {
	return &http.Client{
		Transport:     d.Transport,
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// WithDefaults fills what the caller left empty with working defaults.
func (d SinkDeps) WithDefaults() SinkDeps {
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
	return d
}
