//go:build !race

package relaytest

// Race reports whether the race detector is on: it slows every memory
// access several times, so tests that measure work do fewer runs.
const Race = false
