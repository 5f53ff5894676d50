package nats_test

import (
	"testing"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay/storetest"
)

func TestHistory(t *testing.T) {
	t.Parallel()
	storetest.RunHistory(t, func(t *testing.T, _ *clockwork.FakeClock) storetest.Harness {
		ns := startServer(t, "", 0)
		s := open(t, testOptions(ns.ClientURL()))
		t.Cleanup(func() { _ = s.Close() })
		return storetest.Harness{Store: s}
	})
}
