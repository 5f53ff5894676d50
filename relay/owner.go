package relay

import "context"

// Owner is implemented by stores on which one replica at a time owns an
// exclusive sink (relay/nats: the paced sinks' ownership lease, held by
// the replica that sends to the sink). What only one replica may do for
// a sink besides sending to it, such as holding the platform's event
// session (Discord's gateway: every session receives every message), it
// does while Own's context lives.
type Owner interface {
	// Own waits until this replica owns sink, and returns a context that
	// ends when it no longer does (the lease lost or not renewed in time,
	// the store closed) or ctx ends. For a sink that is not exclusive it
	// returns at once. Its error is ctx's, or ErrClosed.
	Own(ctx context.Context, sink string) (context.Context, context.CancelFunc, error)
}

// OwnerOf is store's Owner or, for a store of one process (relay/bolt),
// an Owner by which the process owns every sink for as long as the
// caller's context lives.
func OwnerOf(store any) Owner {
	if o, ok := store.(Owner); ok {
		return o
	}
	return processOwner{}
}

type processOwner struct{}

func (processOwner) Own(ctx context.Context, _ string) (context.Context, context.CancelFunc, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	held, cancel := context.WithCancel(ctx)
	return held, cancel, nil
}
