package relay

import (
	"context"
	"sync"
)

// MemKV is a KV kept in memory, safe for concurrent use. It is meant for
// tests and for a single process running without a store: whatever it holds
// is lost when the process ends, so conversation threads and the progress of
// multi-message turns do not survive a restart, and replicas do not share
// it. It ignores contexts: nothing in it blocks. The zero value is ready to
// use.
type MemKV struct {
	mu sync.Mutex
	m  map[string]string
}

var _ Swapper = (*MemKV)(nil)

// NewMemKV returns an empty MemKV.
func NewMemKV() *MemKV { return &MemKV{} }

// Get implements KV.
func (k *MemKV) Get(_ context.Context, key string) (string, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.m[key]
	return v, ok, nil
}

// Put implements KV.
func (k *MemKV) Put(_ context.Context, key, value string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = make(map[string]string)
	}
	k.m[key] = value
	return nil
}

// Swap implements Swapper.
func (k *MemKV) Swap(_ context.Context, key, old, value string) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m[key] != old {
		return false, nil
	}
	if k.m == nil {
		k.m = make(map[string]string)
	}
	k.m[key] = value
	return true, nil
}
