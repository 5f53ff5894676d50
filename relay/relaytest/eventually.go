package relaytest

import (
	"testing"
	"time"
)

// Eventually polls cond until it holds, and fails the test, naming what it
// waited for, when d passes first. It is the last resort, for a state that
// nothing announces (a fake that records into a slice, another process, a
// store that publishes asynchronously): where there is a channel, the
// injected clock or a synctest bubble to wait on, wait on that instead.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		select {
		case <-tick.C:
		case <-t.Context().Done():
			t.Fatalf("the test ended while waiting for %s", what)
		}
	}
}
