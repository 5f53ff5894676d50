package nats_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

// owned is what one replica's Own call returned.
type owned struct {
	replica int
	ctx     context.Context
	cancel  context.CancelFunc
	err     error
}

// TestOwnFollowsTheLease: of two replicas, Own returns on the one holding
// the exclusive sink's lease only; when that one closes, its context ends
// and the other's Own returns. A shared sink is owned by both at once, and
// Own gives up with its context.
func TestOwnFollowsTheLease(t *testing.T) {
	t.Parallel()
	ns := startServer(t, "", 0)
	opts := exclusiveOptions(ns.ClientURL())
	stores := []interface {
		relay.Owner
		Close() error
	}{open(t, opts), open(t, opts)}
	t.Cleanup(func() {
		for _, s := range stores {
			_ = s.Close()
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	got := make(chan owned, 2)
	for i, s := range stores {
		go func() {
			held, release, err := s.Own(ctx, "chan")
			got <- owned{replica: i, ctx: held, cancel: release, err: err}
		}()
	}
	first := <-got
	if first.err != nil {
		t.Fatalf("Own: %v", first.err)
	}
	defer first.cancel()
	// The other replica waits while the first holds the lease: it has
	// not returned after a few renewals.
	wait := time.NewTimer(4 * leaseEvery(opts))
	select {
	case o := <-got:
		t.Fatalf("replica %d owns the sink while replica %d does (err %v)", o.replica, first.replica, o.err)
	case <-wait.C:
	}

	// Shared: both own it at once.
	for i, s := range stores {
		held, release, err := s.Own(ctx, "hook")
		if err != nil || held.Err() != nil {
			t.Fatalf("replica %d does not own the shared sink: %v", i, err)
		}
		release()
	}

	if err := stores[first.replica].Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-first.ctx.Done():
	case <-ctx.Done():
		t.Fatal("the closed replica's ownership did not end")
	}
	second := <-got
	if second.err != nil {
		t.Fatalf("Own on the other replica: %v", second.err)
	}
	defer second.cancel()
	if second.ctx.Err() != nil {
		t.Fatal("the new owner's context has ended")
	}

	// Own on a closed store, and Own given up.
	if _, _, err := stores[first.replica].Own(ctx, "chan"); !errors.Is(err, relay.ErrClosed) {
		t.Fatalf("Own on a closed store: %v", err)
	}
	gone, stop := context.WithCancel(ctx)
	stop()
	if _, _, err := stores[first.replica].Own(gone, "hook"); err == nil {
		t.Fatal("Own with an ended context succeeded")
	}
}
