package bolt

import (
	"sync"

	"github.com/google/uuid"

	"github.com/chatrelay/chatrelay/relay"
)

// recentCapacity bounds the events kept parsed in memory.
const recentCapacity = 2048

// recentEvents keeps the last accepted events as the receiver parsed them,
// so that a dispatcher keeping up (the usual case) hands them out without
// reading and parsing them again. A backlog older than the last 2,048
// events is read from disk as usual. Events are read-only once accepted,
// so the same value serves every sink.
type recentEvents struct {
	mu   sync.Mutex
	m    map[uuid.UUID]*relay.Event
	ring [recentCapacity]uuid.UUID
	next int
}

func newRecentEvents() *recentEvents {
	return &recentEvents{m: make(map[uuid.UUID]*relay.Event, recentCapacity)}
}

func (r *recentEvents) put(id uuid.UUID, ev *relay.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.ring[r.next]; old != (uuid.UUID{}) {
		delete(r.m, old)
	}
	r.ring[r.next] = id
	r.next = (r.next + 1) % recentCapacity
	r.m[id] = ev
}

func (r *recentEvents) get(id uuid.UUID) (*relay.Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev, ok := r.m[id]
	return ev, ok
}
