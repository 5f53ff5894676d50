package relay_test

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatrelay/chatrelay/relay"
)

// errRefused is a send to a closed port, as net/http reports it (URL
// redacted, as the sinks do).
var errRefused = fmt.Errorf("webhook sink %q: post: %w", "fake", &url.Error{Op: "Post", URL: "[redacted]",
	Err: &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}})

// lines returns the log lines whose msg starts with prefix.
func lines(logs, prefix string) []string {
	var out []string
	for l := range strings.Lines(logs) {
		if strings.Contains(l, `msg="`+prefix) {
			out = append(out, l)
		}
	}
	return out
}

// TestUnreachableDestinationTripsTheBreaker: a destination that refuses
// connections is marked down after 5 failures in a row (across
// conversations); then a backlog of 100 conversations costs one probe at a
// time with backoff up to retry.max, not a retry per delivery; the log says
// so once, then every 5 minutes, then once when it is back; and the
// backlog is delivered, nothing dead-lettered.
func TestUnreachableDestinationTripsTheBreaker(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		const convs = 100
		var mu sync.Mutex
		refusing, inflight, maxInflight := true, 0, 0
		sink := newFakeSink(func(int, *relay.Event) error {
			mu.Lock()
			inflight++
			maxInflight = max(maxInflight, inflight)
			r := refusing
			mu.Unlock()
			time.Sleep(50 * time.Millisecond) // a connect attempt takes a while
			mu.Lock()
			inflight--
			mu.Unlock()
			if r {
				return errRefused
			}
			return nil
		})
		retry := relay.RetryPolicy{Initial: time.Second, Max: time.Minute, MaxAge: 24 * time.Hour}
		f := start(t, dir, sink, retry, 4)
		defer f.stop(t)
		for i := range convs {
			f.append(t, fmt.Sprintf("c%03d", i), 0)
		}
		time.Sleep(time.Second / 2)
		synctest.Wait()
		if up := testutil.ToFloat64(f.metrics.SinkUp.WithLabelValues("fake")); up != 0 {
			t.Fatalf("sink_up = %v after every send was refused", up)
		}
		sink.mu.Lock()
		first := len(sink.calls)
		sink.mu.Unlock()
		// The breaker trips on the 5th failure; sends already under way
		// (concurrency 4) may still fail after it.
		if first < relay.BreakerThreshold || first > relay.BreakerThreshold+3 {
			t.Fatalf("%d sends before the sink was marked down, want %d..%d", first, relay.BreakerThreshold, relay.BreakerThreshold+3)
		}
		h := f.d.Health()
		if h.Up || h.DownCause != relay.DownUnreachable || !strings.Contains(h.LastError, "connection refused") || h.DownSince.IsZero() {
			t.Fatalf("Health while down = %+v", h)
		}
		down := lines(f.logs.String(), "sink marked down")
		if len(down) != 1 || !strings.Contains(down[0], "level=WARN") || !strings.Contains(down[0], "pending=100") ||
			!strings.Contains(down[0], "reachable from this host") || !strings.Contains(down[0], "connection refused") {
			t.Fatalf("want one WARN naming the cause, the pending count and what to check; got:\n%s", f.logs.String())
		}

		// An hour down: probes only, one at a time, with backoff up to
		// retry.max (jitter 0.5: 1s, 1.5s, 2.5s, 4.5s, 8.5s, 16.5s, 32.5s,
		// then 30.5s each).
		time.Sleep(time.Hour)
		synctest.Wait()
		sink.mu.Lock()
		probes := sink.calls[first:]
		sink.mu.Unlock()
		if n, most := len(probes), int(time.Hour/(30*time.Second))+8; n < 100 || n > most {
			t.Fatalf("%d sends in an hour down, want about %d probes (one per 30.5s once backed off), not a retry per delivery", n, most)
		}
		for i := 7; i < len(probes); i++ {
			if gap := probes[i].at.Sub(probes[i-1].at); gap < 30*time.Second {
				t.Fatalf("probes %d and %d %s apart; the backoff should have reached retry.max/2..retry.max", i-1, i, gap)
			}
		}
		mu.Lock()
		if maxInflight > 4 {
			t.Errorf("%d sends at once", maxInflight)
		}
		maxInflight = 0
		mu.Unlock()
		still := lines(f.logs.String(), "sink still down")
		if len(still) != 12 {
			t.Fatalf("%d 'still down' lines in an hour, want one every 5 minutes (12):\n%s", len(still), strings.Join(still, ""))
		}
		for _, l := range still {
			for _, want := range []string{"level=WARN", "pending=100", "oldest_pending=", "last_error=", "connection refused", "down_for="} {
				if !strings.Contains(l, want) {
					t.Errorf("still-down line lacks %q: %s", want, l)
				}
			}
		}
		if dead, _ := f.store.ListDead(t.Context(), "", 0); len(dead) != 0 {
			t.Fatalf("%d dead letters; an unreachable sink holds its deliveries", len(dead))
		}

		// Back: the next probe gets through and the backlog drains.
		mu.Lock()
		refusing = false
		mu.Unlock()
		for range convs {
			<-sink.sent
		}
		synctest.Wait()
		if up := testutil.ToFloat64(f.metrics.SinkUp.WithLabelValues("fake")); up != 1 {
			t.Fatalf("sink_up = %v after recovery", up)
		}
		if h := f.d.Health(); !h.Up || !h.DownSince.IsZero() {
			t.Fatalf("Health after recovery = %+v", h)
		}
		logs := f.logs.String()
		back := lines(logs, "sink is up again")
		if len(back) != 1 || !strings.Contains(back[0], "level=INFO") || !regexp.MustCompile(`down_for=1h0m[0-9]+s`).MatchString(back[0]) {
			t.Fatalf("want one INFO saying how long it was down:\n%s", strings.Join(back, ""))
		}
		caught := lines(logs, "sink caught up")
		if len(caught) != 1 || !strings.Contains(caught[0], "drained=") {
			t.Fatalf("want one INFO saying how much it drained:\n%s", strings.Join(caught, ""))
		}
		if n := len(lines(logs, "sink marked down")); n != 1 {
			t.Fatalf("%d 'sink marked down' lines", n)
		}
	})
}

// TestBreakerCountsOnlyUnreachableInARow: answers from the destination
// (5xx, a success) reset the streak, so only 5 unreachable failures in a
// row mark a sink down.
func TestBreakerCountsOnlyUnreachableInARow(t *testing.T) {
	t.Parallel()
	e503 := relay.Retryable(&relay.StatusError{Status: 503}, relay.ReasonServerError)
	for _, tc := range []struct {
		name   string
		script []error // one per send, in order (concurrency 1, one conversation per event)
		down   bool
	}{
		{"5 refused", []error{errRefused, errRefused, errRefused, errRefused, errRefused}, true},
		{"4 refused", []error{errRefused, errRefused, errRefused, errRefused, nil}, false},
		{"4 refused, a 503, 4 refused", []error{errRefused, errRefused, errRefused, errRefused, e503,
			errRefused, errRefused, errRefused, errRefused, nil}, false},
		{"4 refused, a success, 4 refused", []error{errRefused, errRefused, errRefused, errRefused, nil,
			errRefused, errRefused, errRefused, errRefused, nil}, false},
		{"503s forever", []error{e503, e503, e503, e503, e503, e503, e503}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			synctest.Test(t, func(t *testing.T) {
				var mu sync.Mutex
				n := 0
				sink := newFakeSink(func(int, *relay.Event) error {
					mu.Lock()
					defer mu.Unlock()
					n++
					if n <= len(tc.script) {
						return tc.script[n-1]
					}
					return nil
				})
				// Long backoff: each event fails once, then the next
				// conversation goes, all within the first second.
				f := start(t, dir, sink, relay.RetryPolicy{Initial: time.Hour, Max: time.Hour, MaxAge: 24 * time.Hour}, 1)
				defer f.stop(t)
				for i := range len(tc.script) {
					f.append(t, fmt.Sprintf("c%02d", i), 0)
				}
				time.Sleep(time.Minute)
				synctest.Wait()
				up := testutil.ToFloat64(f.metrics.SinkUp.WithLabelValues("fake"))
				if down := up == 0; down != tc.down {
					t.Fatalf("down = %v after %d sends, want %v\n%s", down, n, tc.down, f.logs.String())
				}
			})
		})
	}
}

// TestParkedDeliveryNamesTheReplayCommand: the ERROR of a dead letter says
// how to replay it.
func TestParkedDeliveryNamesTheReplayCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		sink := newFakeSink(func(int, *relay.Event) error {
			return relay.Permanent(errors.New("HTTP 400: bad"), relay.ReasonClientError)
		})
		f := start(t, dir, sink, policy, 1)
		defer f.stop(t)
		ev := f.append(t, "c", 0)
		time.Sleep(time.Second)
		synctest.Wait()
		parked := lines(f.logs.String(), "delivery parked")
		want := fmt.Sprintf(`replay="chatrelay dlq replay %s.fake"`, ev.ID)
		if len(parked) != 1 || !strings.Contains(parked[0], want) || !strings.Contains(parked[0], "level=ERROR") {
			t.Fatalf("want an ERROR with %s:\n%s", want, f.logs.String())
		}
	})
}
