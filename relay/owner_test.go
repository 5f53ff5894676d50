package relay_test

import (
	"context"
	"testing"

	"github.com/chatrelay/chatrelay/relay"
)

// TestOwnWithoutOwner: a store of one process owns every sink, for as
// long as the caller's context lives.
func TestOwnWithoutOwner(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	owner := relay.OwnerOf(struct{}{})
	held, release, err := owner.Own(ctx, "chan")
	if err != nil || held.Err() != nil {
		t.Fatalf("Own: %v", err)
	}
	defer release()
	cancel()
	<-held.Done()
	if _, _, err := owner.Own(ctx, "chan"); err == nil {
		t.Fatal("Own with an ended context succeeded")
	}
}
