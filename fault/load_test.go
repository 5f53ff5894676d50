package fault

import (
	"net/http"
	"sync"
	"testing"
	"time"
)

// accepted is one turn the receiver answered 2xx for.
type accepted struct {
	turn
	id string
	at time.Time // when the 2xx arrived
}

// load sends turns of several conversations to a relay, each conversation
// sequentially (so its acceptance order is its turn order). A turn whose
// request fails is sent again, as Chat Data does, until it gets a 2xx
// ("accepted", or "duplicate" when the first attempt was stored after all).
type load struct {
	t      *testing.T
	r      *relayProc
	c      *client
	secret string
	source func(conv int) string
	gap    time.Duration // between two turns of one conversation
	// pick chooses the replica for one attempt to send a turn (nil: r),
	// as a load balancer in front of several would.
	pick func(tu turn, attempt int) *relayProc

	mu          sync.Mutex
	accepted    []accepted
	ids         map[turn]string
	failures    int // requests that got no answer (the relay was down)
	unavailable int // 503 answers
	duplicates  int // "duplicate" answers: the lost answer's event was stored
}

func newLoad(t *testing.T, r *relayProc, c *client, secret string, source func(int) string) *load {
	return &load{t: t, r: r, c: c, secret: secret, source: source, ids: map[turn]string{}}
}

// run sends turns of conversation conv until stop is closed, then returns
// after the turn in progress got its 2xx.
func (l *load) run(conv int, stop <-chan struct{}) {
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		tu := turn{conv, n}
		if !l.send(tu) {
			return
		}
		if l.gap > 0 {
			select {
			case <-stop:
				return
			case <-time.After(l.gap):
			}
		}
	}
}

// send sends one turn until it gets a 2xx. It reports false if the test
// ended first.
func (l *load) send(tu turn) bool {
	body := chatBody(tu, l.source(tu.conv), 0)
	giveUp := time.Now().Add(30 * time.Second)
	for attempt := 0; ; attempt++ {
		if time.Now().After(giveUp) {
			l.t.Errorf("turn %s got no 2xx within 30s", tu)
			return false
		}
		r := l.r
		if l.pick != nil {
			r = l.pick(tu, attempt)
		}
		addr, up := r.addr()
		rep, a, err := l.c.postSigned(addr, l.secret, body)
		switch {
		case err == nil && rep.Code == http.StatusOK && (a.Status == "accepted" || a.Status == "duplicate") && a.ID != "":
			l.mu.Lock()
			if a.Status == "duplicate" {
				l.duplicates++
			}
			if prev, ok := l.ids[tu]; ok && prev != a.ID {
				l.t.Errorf("turn %s got two ids: %s and %s", tu, prev, a.ID)
			}
			if _, ok := l.ids[tu]; !ok {
				l.ids[tu] = a.ID
				l.accepted = append(l.accepted, accepted{turn: tu, id: a.ID, at: time.Now()})
			}
			l.mu.Unlock()
			return true
		case err == nil && rep.Code == http.StatusServiceUnavailable:
			l.mu.Lock()
			l.unavailable++
			l.mu.Unlock()
		case err == nil:
			l.t.Errorf("turn %s: answer %d %s", tu, rep.Code, rep.Body)
			return false
		default:
			l.mu.Lock()
			l.failures++
			l.mu.Unlock()
		}
		if l.t.Context().Err() != nil {
			return false
		}
		// The relay is down or busy: try again once it restarted, or
		// after a short pause, as a sender with retries would.
		select {
		case <-up:
		case <-time.After(50 * time.Millisecond):
		case <-l.t.Context().Done():
			return false
		}
	}
}

// turns returns the accepted turns, optionally only those keep selects.
func (l *load) turns(keep func(turn) bool) []turn {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []turn
	for _, a := range l.accepted {
		if keep == nil || keep(a.turn) {
			out = append(out, a.turn)
		}
	}
	return out
}

func (l *load) snapshot() (acc []accepted, failures, unavailable, duplicates int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]accepted(nil), l.accepted...), l.failures, l.unavailable, l.duplicates
}
