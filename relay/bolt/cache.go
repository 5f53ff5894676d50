package bolt

import (
	"sync"

	"github.com/google/uuid"

	"github.com/chatrelay/chatrelay/relay"
)

// The recent-events cache holds at most this many events and about this
// many bytes of bodies (parsed copies included), whichever comes first.
const (
	recentCapacity = 2048
	recentBytes    = 16 << 20
)

// recentEvents keeps the last accepted events as the receiver parsed them,
// so that a dispatcher keeping up (the usual case) hands them out without
// reading and parsing them again. An older backlog is read from disk as
// usual. Events are read-only once accepted, so the same value serves every
// sink.
type recentEvents struct {
	mu    sync.Mutex
	m     map[uuid.UUID]*relay.Event
	order []uuid.UUID // oldest first
	bytes int
}

func newRecentEvents() *recentEvents {
	return &recentEvents{m: make(map[uuid.UUID]*relay.Event, recentCapacity)}
}

// cost estimates the memory an event takes: its body twice (raw and parsed).
func cost(ev *relay.Event) int { return 2*len(ev.Body) + 256 }

func (r *recentEvents) put(id uuid.UUID, ev *relay.Event) {
	c := cost(ev)
	if c > recentBytes/4 {
		return // a huge event is read from disk when its turn comes
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.order) > 0 && (len(r.order) >= recentCapacity || r.bytes+c > recentBytes) {
		old := r.order[0]
		r.order = r.order[1:]
		if e, ok := r.m[old]; ok {
			r.bytes -= cost(e)
			delete(r.m, old)
		}
	}
	r.order = append(r.order, id)
	r.m[id] = ev
	r.bytes += c
}

func (r *recentEvents) get(id uuid.UUID) (*relay.Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev, ok := r.m[id]
	return ev, ok
}
