package main

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test here that starts serve stops it; no goroutine may outlive the
// tests, except certmagic's rate limiter: it keeps one per CA account for
// the life of the process (a package-level map), which is not ours to stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.(*RingBufferRateLimiter).loop"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"))
}
