package relay_test

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
)

// TestPacerHoldStopsASendWaitingForItsSlot: a send that was waiting for its
// pace slot when another send got a 429 waits out the hold too; the whole
// sink pauses, as Retry-After asks.
func TestPacerHoldStopsASendWaitingForItsSlot(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		block func(p *relay.Pacer, now time.Time)
		until time.Duration // from the start: when the waiting send may go
		probe bool
	}{
		{"retry-after hold", func(p *relay.Pacer, now time.Time) { p.HoldUntil(now.Add(5 * time.Second)) }, 5 * time.Second, false},
		{"sink down", func(p *relay.Pacer, now time.Time) { p.Down(now.Add(5 * time.Second)) }, 5 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := clockwork.NewFakeClock()
			start := clock.Now()
			p := relay.NewPacer(clock)
			p.SetPace(time.Second, 1)
			if _, err := p.Acquire(t.Context()); err != nil {
				t.Fatal(err)
			}
			got := make(chan relay.Ticket, 1)
			go func() {
				tk, err := p.Acquire(t.Context())
				if err != nil {
					t.Error(err)
				}
				got <- tk
			}()
			if err := clock.BlockUntilContext(t.Context(), 1); err != nil { // waiting for its slot at +1s
				t.Fatal(err)
			}
			tc.block(p, clock.Now())
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

// TestReacquireLeavesTheProbe: a send that already has its ticket and finds
// a hold (another send's 429) waits it out, and does not take the probe of
// a sink marked down meanwhile: that stays for one other send.
func TestReacquireLeavesTheProbe(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClock()
	start := clock.Now()
	p := relay.NewPacer(clock)
	p.HoldUntil(start.Add(5 * time.Second))
	p.Down(start.Add(2 * time.Second))
	if !p.Held() {
		t.Fatal("Held() false during a hold")
	}
	done := make(chan error, 1)
	go func() { done <- p.Reacquire(t.Context()) }()
	if err := clock.BlockUntilContext(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(5 * time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if p.Held() {
		t.Fatal("Held() true after the hold")
	}
	tk, err := p.Acquire(t.Context())
	if err != nil || !tk.Probe {
		t.Fatalf("Acquire after Reacquire: %+v %v, want the sink's probe", tk, err)
	}
}
