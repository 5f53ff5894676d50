package discord

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
)

// TestGatewayOutageKeepsWarning: while the gateway cannot be opened
// (Discord unreachable), the operator is warned at the first failure and
// then once every gatewayWarnEvery while it lasts, not only once (the
// rest at DEBUG): a WARN from hours ago says nothing about now. A session
// that opens starts over.
func TestGatewayOutageKeepsWarning(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC))
	logger, logs := relaytest.NewLogger()
	g := &Gateway{s: &Sink{clock: clock, scrub: relay.NewScrubber()}, log: logger}
	down := errors.New("dial tcp: connection refused")
	var warned time.Time
	warnings := func() int { return strings.Count(logs.String(), "level=WARN") }
	steps := []struct {
		after time.Duration
		want  int // warnings so far
	}{
		{0, 1}, {30 * time.Second, 1}, {2 * time.Minute, 1}, {gatewayWarnEvery, 2}, {time.Minute, 2}, {gatewayWarnEvery, 3},
	}
	for i, s := range steps {
		clock.Advance(s.after)
		g.logOpenError(down, i, &warned)
		if got := warnings(); got != s.want {
			t.Fatalf("after failure %d (%s on): %d warnings, want %d:\n%s", i+1, s.after, got, s.want, logs)
		}
	}
	warned = time.Time{} // a session opened
	clock.Advance(time.Second)
	g.logOpenError(down, 0, &warned)
	if got := warnings(); got != 4 {
		t.Fatalf("the first failure after a session: %d warnings, want 4", got)
	}
}
