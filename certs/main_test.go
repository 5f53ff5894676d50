package certs

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		// certmagic keeps one rate limiter per CA account for the life of
		// the process (a package-level map), and its file storage refreshes
		// a released lock file once more before it notices; neither is ours
		// to stop. Everything else must be gone.
		if err := goleak.Find(
			goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.(*RingBufferRateLimiter).loop"),
			goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
