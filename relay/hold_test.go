package relay_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

// chanQueue hands out the deliveries sent on its channel.
type chanQueue chan *relay.Delivery

func (q chanQueue) TryNext(context.Context) (*relay.Delivery, error) {
	select {
	case d := <-q:
		return d, nil
	default:
		return nil, nil
	}
}

func (q chanQueue) Next(ctx context.Context) (*relay.Delivery, error) {
	select {
	case d := <-q:
		return d, nil
	default:
	}
	select {
	case d := <-q:
		return d, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// heldSettler is a delivery's settler with a hold, as relay/nats gives:
// Hold fails once the hold is gone, and a send under it ends when it goes.
type heldSettler struct {
	gone    chan struct{} // closed when the store gives the delivery up
	settled chan string   // what the dispatcher did with it
	once    sync.Once
}

func newHeldSettler() *heldSettler {
	return &heldSettler{gone: make(chan struct{}), settled: make(chan string, 4)}
}

func (s *heldSettler) giveUp() { s.once.Do(func() { close(s.gone) }) }

func (s *heldSettler) Hold(ctx context.Context) (context.Context, context.CancelFunc, error) {
	select {
	case <-s.gone:
		return nil, nil, relay.ErrNotHeld
	default:
	}
	hctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-s.gone:
			cancel(relay.ErrNotHeld)
		case <-hctx.Done():
		}
	}()
	return hctx, func() { cancel(nil) }, nil
}

func (s *heldSettler) settle(what string) error {
	s.settled <- what
	select {
	case <-s.gone:
		return relay.ErrNotHeld
	default:
		return nil
	}
}

func (s *heldSettler) Ack(context.Context) error                        { return s.settle("ack") }
func (s *heldSettler) Nak(context.Context, time.Duration, string) error { return s.settle("nak") }
func (s *heldSettler) Term(context.Context, string) error               { return s.settle("term") }
func (s *heldSettler) Release(context.Context) error                    { return s.settle("release") }

// TestDispatcherRespectsHolds: a store that hands deliveries out for a
// limited time (relay.Holder) is asked right before each send. A delivery
// given up before its send is not sent; one given up during its send has
// the send cut short; neither is acked, retried or parked by this
// dispatcher (the store hands it out again), and a held one goes out as
// usual.
func TestDispatcherRespectsHolds(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		before   bool // given up before the send, else during it
		held     bool // never given up
		after    bool // given up once the destination answered, before the ack
		wantSent bool
		want     string // the settlement the dispatcher attempts
	}{
		{name: "held", held: true, wantSent: true, want: "ack"},
		{name: "given up before the send", before: true, want: "release"},
		{name: "given up during the send", wantSent: true, want: "release"},
		{name: "given up after the send", after: true, wantSent: true, want: "ack"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := newHeldSettler()
			if tc.before {
				st.giveUp()
			}
			sent := make(chan struct{}, 1)
			send := func(ctx context.Context, _ *relay.Event) error {
				sent <- struct{}{}
				if tc.held {
					return nil
				}
				if tc.after {
					st.giveUp() // the destination answered; the hold was gone by then
					return nil
				}
				st.giveUp() // the store gives it up mid-send
				<-ctx.Done()
				return ctx.Err()
			}
			q := make(chanQueue, 1)
			q <- &relay.Delivery{Event: storetest.NewEvent(t, "A", 1), Sink: "fake", Settler: st}
			logger, logs := relaytest.NewLogger()
			metrics := relay.NewMetrics(prometheus.NewRegistry())
			d, err := relay.NewDispatcher(relay.DispatcherConfig{
				Sink: sinkFunc{name: "fake", send: send}, Queue: q, Retry: policy, Concurrency: 1,
				Metrics: metrics, Logger: logger,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- d.Run(ctx) }()
			var got string
			select {
			case got = <-st.settled:
			case <-time.After(10 * time.Second):
				t.Fatal("the delivery was never settled nor handed back")
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
			if got != tc.want {
				t.Errorf("dispatcher %s the delivery, want %s\n%s", got, tc.want, logs.String())
			}
			select {
			case more := <-st.settled:
				t.Errorf("settled twice: %s after %s", more, got)
			default:
			}
			if wasSent := len(sent) > 0; wasSent != tc.wantSent {
				t.Errorf("sent: %v, want %v", wasSent, tc.wantSent)
			}
			if tc.after {
				// The ack was refused: a repeat, not a delivery, and no
				// error (nothing is lost; the store hands it out again).
				if n := testutil.ToFloat64(metrics.Deliveries.WithLabelValues("fake", relay.ResultDelivered)); n != 0 {
					t.Errorf("counted %v delivered after the store refused the ack", n)
				}
				if l := logs.String(); strings.Contains(l, "level=ERROR") || !strings.Contains(l, "store had given the delivery up") {
					t.Errorf("want a warning that the store had given the delivery up, no error:\n%s", l)
				}
			}
		})
	}
}

// sinkFunc is a sink made of a function.
type sinkFunc struct {
	name string
	send func(context.Context, *relay.Event) error
}

func (s sinkFunc) Name() string                                    { return s.name }
func (s sinkFunc) Send(ctx context.Context, ev *relay.Event) error { return s.send(ctx, ev) }
