package relaytest

import (
	"runtime"
	"testing"
	"time"
)

// Work returns the least CPU time f took on its thread over three runs
// (one under the race detector; on Linux, wall time elsewhere). CPU time,
// not wall time: on a loaded machine a run waits for the CPU as long as it
// likes, and that is no work; the least of a few runs is the one the caches
// and the collector disturbed least.
func Work(f func()) time.Duration {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	runs := 3
	if Race {
		runs = 1
	}
	best := time.Duration(1<<63 - 1)
	for range runs {
		runtime.GC() // each run starts from a collected heap, and pays for its own garbage only
		start := threadTime()
		f()
		best = min(best, threadTime()-start)
	}
	return best
}

// AssertLinear fails the test when doing f on an input scale times larger
// (large) costs more than 2.25·scale times the work of the smaller (small):
// linear growth costs about scale times as much, quadratic scale² times.
// Work below floor is too small to compare and passes.
func AssertLinear(t testing.TB, name string, scale float64, small, large func(), floor time.Duration) {
	t.Helper()
	ws, wl := Work(small), Work(large)
	ratio := float64(wl) / float64(max(ws, time.Microsecond))
	t.Logf("%-24s %10s → %10s: ×%.1f for ×%.0f the input", name, ws, wl, ratio, scale)
	if ratio > 2.25*scale && wl > floor {
		t.Errorf("%s: %.0f× the input took %.1f× the work (%s → %s): not linear", name, scale, ratio, ws, wl)
	}
}
