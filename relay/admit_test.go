package relay

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
)

type nopSink struct{}

func (nopSink) Name() string                           { return "nop" }
func (nopSink) Send(context.Context, *Event) error     { return nil }
func (nopSink) Pace() (every time.Duration, burst int) { return time.Second, 1 }

type nopQueue struct{}

func (nopQueue) Next(ctx context.Context) (*Delivery, error) { <-ctx.Done(); return nil, ctx.Err() }
func (nopQueue) TryNext(context.Context) (*Delivery, error)  { return nil, nil }

// admitting is a dispatcher of a sink paced at one send a second, on
// clock, for the tests of admit.
func admitting(t *testing.T, clock clockwork.Clock) *Dispatcher {
	t.Helper()
	d, err := NewDispatcher(DispatcherConfig{Sink: nopSink{}, Queue: nopQueue{}, Clock: clock,
		Retry:   RetryPolicy{Initial: time.Second, Max: time.Minute, MaxAge: time.Hour},
		Metrics: NewMetrics(prometheus.NewRegistry())})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestAdmitHoldStopsASendWaitingForItsSlot: a send that was waiting for
// its pace slot when another send got a 429 waits out the hold too; the
// whole sink pauses, as Retry-After asks. So it does when the sink went
// down meanwhile, and then goes as its probe.
func TestAdmitHoldStopsASendWaitingForItsSlot(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		block func(d *Dispatcher, now time.Time)
		until time.Duration // from the start: when the waiting send may go
		probe bool
	}{
		{"retry-after hold", func(d *Dispatcher, now time.Time) { d.hold.Until(now.Add(5 * time.Second)) }, 5 * time.Second, false},
		{"sink down", func(d *Dispatcher, now time.Time) { d.probes.close(now.Add(5 * time.Second)) }, 5 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := clockwork.NewFakeClock()
			start := clock.Now()
			d := admitting(t, clock)
			if _, err := d.admit(t.Context()); err != nil {
				t.Fatal(err)
			}
			got := make(chan Ticket, 1)
			go func() {
				tk, err := d.admit(t.Context())
				if err != nil {
					t.Error(err)
				}
				got <- tk
			}()
			if err := clock.BlockUntilContext(t.Context(), 1); err != nil { // waiting for its slot at +1s
				t.Fatal(err)
			}
			tc.block(d, clock.Now())
			clock.Advance(time.Second)
			// Its slot has come: it must now wait for the hold, not go.
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			waiting := make(chan error, 1)
			go func() { waiting <- clock.BlockUntilContext(ctx, 1) }()
			select {
			case <-got:
				t.Fatalf("the send went at +%s, inside the hold", clock.Since(start))
			case err := <-waiting:
				if err != nil {
					t.Fatal(err)
				}
			}
			clock.Advance(tc.until - time.Second)
			tk := <-got
			if tk.Probe != tc.probe {
				t.Errorf("ticket %+v, want probe %v", tk, tc.probe)
			}
		})
	}
}

// TestReadmitLeavesTheProbe: a send that already has its ticket and finds
// a hold (another send's 429) waits it out, and does not take the probe of
// a sink marked down meanwhile: that stays for one other send.
func TestReadmitLeavesTheProbe(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClock()
	start := clock.Now()
	d := admitting(t, clock)
	d.hold.Until(start.Add(5 * time.Second))
	d.probes.close(start.Add(2 * time.Second))
	if !d.hold.Held() {
		t.Fatal("Held() false during a hold")
	}
	done := make(chan error, 1)
	go func() { done <- d.readmit(t.Context()) }()
	if err := clock.BlockUntilContext(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(5 * time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d.hold.Held() {
		t.Fatal("Held() true after the hold")
	}
	tk, err := d.admit(t.Context())
	if err != nil || !tk.Probe {
		t.Fatalf("admit after readmit: %+v %v, want the sink's probe", tk, err)
	}
}
