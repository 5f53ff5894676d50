package certs

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// toolDir holds the pebble binary built for this test run.
var toolDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chatrelay-certs-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	toolDir = dir
	code := m.Run()
	os.RemoveAll(dir)
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
