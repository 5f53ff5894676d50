package bolt_test

import (
	"testing"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay/storetest"
)

func TestHistory(t *testing.T) {
	t.Parallel()
	storetest.RunHistory(t, func(t *testing.T, clock *clockwork.FakeClock) storetest.Harness {
		s := open(t, t.TempDir(), clock)
		t.Cleanup(func() { _ = s.Close() })
		return storetest.Harness{Store: s, Clock: clock}
	})
}
