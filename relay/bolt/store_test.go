package bolt_test

import (
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, dir string, clock *clockwork.FakeClock) *bolt.Store {
	t.Helper()
	s, err := bolt.Open(dir, bolt.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) storetest.Harness {
		dir := t.TempDir()
		s := open(t, dir, clock)
		cur := s
		t.Cleanup(func() { _ = cur.Close() })
		return storetest.Harness{
			Store: s,
			Clock: clock,
			Reopen: func(t *testing.T) relay.Store {
				if err := cur.Close(); err != nil {
					t.Fatal(err)
				}
				cur = open(t, dir, clock)
				return cur
			},
		}
	})
}

func TestSecondProcessGetsClearError(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir, clockwork.NewFakeClock())
	defer s.Close()
	_, err := bolt.Open(dir, bolt.Options{LockTimeout: 100 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "in use by another chatrelay process") {
		t.Fatalf("second Open: %v", err)
	}
}
