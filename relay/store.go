package relay

import (
	"context"
	"errors"
	"time"
)

// Errors a store returns. The receiver answers 503 + Retry-After for
// ErrUnavailable and ErrFull; the dispatcher stops on ErrClosed.
var (
	ErrUnavailable = errors.New("store unavailable")
	ErrFull        = errors.New("store full")
	ErrClosed      = errors.New("store closed")
	ErrNotFound    = errors.New("not found")
	// ErrNotHeld: the store gave a delivery up (see Holder); nothing may
	// be sent for it, and its settlement is refused.
	ErrNotHeld = errors.New("delivery no longer held")
)

// Reason codes of a store that is not ready, as /readyz answers them.
const (
	ReadyStoreFull        = "store_full"        // disk full, store.max_size or the stream's limit reached
	ReadyStoreUnavailable = "store_unavailable" // cannot write (I/O error, NATS unreachable, …)
	ReadyStoreTimeout     = "store_timeout"     // did not answer the readiness check in time
	ReadyStoreClosed      = "store_closed"      // shutting down
)

// ReadyReason maps the error of Store.Ready to a reason code: a short,
// fixed string that is safe to show to anyone (no path, host or error
// text), for /readyz.
func ReadyReason(err error) string {
	switch {
	case errors.Is(err, ErrFull):
		return ReadyStoreFull
	case errors.Is(err, ErrClosed):
		return ReadyStoreClosed
	case errors.Is(err, context.DeadlineExceeded):
		return ReadyStoreTimeout
	}
	return ReadyStoreUnavailable
}

// Accepted is the store's answer to Append.
type Accepted struct {
	ID        string // the event's id; for a duplicate, the first event's id
	Duplicate bool
}

// Store is everything chatrelay keeps: events, a queue of deliveries per
// sink, dead letters and a small key/value facility. relay/bolt (embedded)
// and relay/nats (JetStream) implement it; relay/storetest checks both
// against the same contract.
//
// Its delivery side is shaped like JetStream: Next hands out a delivery, and
// the caller settles it with Ack (done), Nak with a delay (try again then) or
// Term (dead letter, with a reason).
type Store interface {
	// Append makes ev durable together with one pending delivery per sink,
	// or finds that the same event (Event.DedupeKey: the body alone,
	// whatever the topic; an agent reply's platform message id) was
	// accepted within the dedupe window. It returns only after the write
	// is durable.
	Append(ctx context.Context, ev *Event, sinks []string) (Accepted, error)
	// Queue returns the delivery queue of one sink.
	Queue(sink string) Queue
	// Reconcile is called once at start with the configured sinks: pending
	// deliveries of any other sink are moved to the dead letters with reason
	// "sink removed".
	Reconcile(ctx context.Context, sinks []string) (moved int, err error)

	DeadLetters
	History
	// Lookup returns an event and where each of its deliveries stands.
	Lookup(ctx context.Context, id string) (*EventRecord, error)
	// Recent lists the most recent events, newest first, up to limit, older
	// than the event before (all when before is "").
	Recent(ctx context.Context, before string, limit int) ([]EventSummary, error)
	// KV returns the key/value facility namespaced to one sink.
	KV(namespace string) KV
	// Stats returns each sink's queue depth, oldest pending event and dead
	// letter count.
	Stats(ctx context.Context) ([]QueueStats, error)
	// Ready reports whether the store can accept writes now.
	Ready(ctx context.Context) error
	Close() error
}

// Queue hands out the deliveries of one sink. Deliveries of one conversation
// come one at a time in acceptance order: the next is handed out only after
// the previous one was settled.
type Queue interface {
	// Next blocks until a delivery is due, ctx is done (ctx.Err()) or the
	// store closes (ErrClosed). Once ctx is done it does not wait: it
	// returns a delivery that is due at once, if there is one, else
	// ctx.Err().
	Next(ctx context.Context) (*Delivery, error)
	// TryNext returns a delivery that is due now, or nil when none is;
	// it never waits. The dispatcher gathers with it what may share a
	// packed message.
	TryNext(ctx context.Context) (*Delivery, error)
}

// Delivery is one event on its way to one sink.
type Delivery struct {
	Event     *Event
	Sink      string
	Attempts  int       // failed attempts so far
	Since     time.Time // start of retry.max_age: acceptance, or the last replay
	LastError string    // the previous attempt's error, if any

	Settler
}

// Settler settles a delivery; exactly one of its methods is called, once.
type Settler interface {
	// Ack records the delivery as done.
	Ack(ctx context.Context) error
	// Nak schedules the delivery again after delay and counts a failed
	// attempt with its error text.
	Nak(ctx context.Context, delay time.Duration, lastErr string) error
	// Term moves the delivery to the dead letters with a reason; the
	// attempt that led to it counts as made.
	Term(ctx context.Context, reason string) error
	// Release hands the delivery back untried (shutdown, or a wait that was
	// interrupted): it stays due and no attempt is counted.
	Release(ctx context.Context) error
}

// Holder is an optional capability of a Settler, for a store that hands a
// delivery out for a limited time and may hand it to another consumer once
// that time lapses without news (relay/nats: another replica, after its ack
// wait). The dispatcher calls Hold right before each send. The context it
// returns ends when the store gives the delivery up (the send is then cut
// short); an error wrapping ErrNotHeld means it is given up already:
// nothing is sent, and the store refuses to settle it (it goes out again
// from the store, to whoever holds it next).
type Holder interface {
	Hold(ctx context.Context) (context.Context, context.CancelFunc, error)
}

// DeadLetter is a delivery that was parked: a permanent error, or
// retry.max_age passed.
type DeadLetter struct {
	ID             string    `json:"id"` // <event id>.<sink>
	EventID        string    `json:"event_id"`
	Sink           string    `json:"sink"`
	ConversationID string    `json:"conversation_id,omitempty"`
	Topic          string    `json:"topic"`
	Attempts       int       `json:"attempts"`
	ReceivedAt     time.Time `json:"received_at"`
	ParkedAt       time.Time `json:"parked_at"`
	Reason         string    `json:"reason"`
}

// DeadLetterID is the id of the dead letter of event on sink.
func DeadLetterID(eventID, sink string) string { return eventID + "." + sink }

// DeadLetters is the dead-letter side of a store.
type DeadLetters interface {
	// ListDead lists dead letters, of one sink or ("") all, oldest first.
	ListDead(ctx context.Context, sink string, limit int) ([]DeadLetter, error)
	// GetDead returns one dead letter and its event.
	GetDead(ctx context.Context, id string) (DeadLetter, *Event, error)
	// Requeue puts dead letters back in their sink's queue with a fresh
	// retry.max_age; ids that are not dead letters are skipped.
	Requeue(ctx context.Context, ids []string) (int, error)
	// RequeueAll requeues every dead letter of one sink or ("") all.
	RequeueAll(ctx context.Context, sink string) (int, error)
	// Purge deletes dead letters for good.
	Purge(ctx context.Context, ids []string) (int, error)
	// PurgeAll deletes every dead letter of one sink or ("") all.
	PurgeAll(ctx context.Context, sink string) (int, error)
}

// Delivery states, as Lookup reports them.
const (
	StatePending   = "pending"
	StateDelivered = "delivered"
	StateDead      = "dead"
	StatePurged    = "purged"
)

// EventRecord is an event with where each of its deliveries stands.
type EventRecord struct {
	Event      *Event
	Deliveries []DeliveryStatus
}

// EventSummary is one line of the event list.
type EventSummary struct {
	ID             string    `json:"id"`
	Topic          string    `json:"topic"`
	ConversationID string    `json:"conversation_id,omitempty"`
	ReceivedAt     time.Time `json:"received_at"`
	Sinks          []string  `json:"sinks"`
}

// DeliveryStatus is where one delivery of an event stands.
type DeliveryStatus struct {
	Sink      string    `json:"sink"`
	State     string    `json:"state"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// QueueStats describes one sink's queue.
type QueueStats struct {
	Sink   string
	Depth  int       // pending deliveries
	Oldest time.Time // acceptance time of the oldest pending delivery (zero if none)
	Dead   int       // dead letters
}
