package nats

import (
	"context"
	"fmt"
	"strconv"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/chatrelay/chatrelay/relay"
)

// Holds: how a replica knows a delivery it received is still its own
// (package doc, "Holding a delivery").
//
// The server hands a partition's head to one replica and gives it to
// another once AckWait passes without news from the first; it then takes
// an ack, nak or renewal from either (acks name the stream sequence only),
// so nothing on the server fences a replica that was away too long. Each
// replica fences itself. A delivery is held from its anchor, the time of
// the last renewal the server confirmed (sent as a request, so the reply
// proves it arrived), for holdFor = 3/4 AckWait: the server stamped the
// delivery no earlier than that renewal was sent, so it cannot hand it to
// anyone else before the anchor plus AckWait. A delivery that goes holdFor
// without a confirmed renewal is given up: not handed out, not sent (the
// dispatcher asks right before each send: relay.Holder), not settled; the
// server hands it out again after AckWait. That covers a replica cut off
// from NATS, one whose renewals fail, and one frozen (SIGSTOP, a VM
// pause): its clock runs on while it is frozen, so once it runs again
// every hold it had is long past holdFor.
//
// A delivery's first anchor is when the pull request it came on was sent:
// the server cannot have sent it before it had the request, however long
// the delivery then took to arrive (a link that went silent and came back,
// a process frozen with it unread in its socket). Pull requests live
// AckWait/4 at most (Store.pullWait), so a delivery arriving on one has
// most of its hold left, and the next renewal extends it. What holdFor
// leaves of AckWait (a quarter) is the margin for a settlement's way to
// the server.

// holdFor is how long a delivery stays held after its anchor.
func (s *Store) holdFor() time.Duration { return s.opts.AckWait * 3 / 4 }

// renewEvery is the keepalive loop's period: six renewals per holdFor, so
// that a server slow to answer (a loaded machine) costs no hold.
func (s *Store) renewEvery() time.Duration { return max(s.opts.AckWait/8, 20*time.Millisecond) }

// mono is the store's monotonic clock: nanoseconds since Open.
func (s *Store) mono() int64 { return int64(time.Since(s.opened)) }

// errLost answers the settlement of a delivery given up.
var errLost = fmt.Errorf("%w (%w): no renewal confirmed by NATS within three quarters of the ack wait; "+
	"the server hands it out again", relay.ErrUnavailable, relay.ErrNotHeld)

// valid reports whether h is still held at now (mono); one that is not is
// given up.
func (h *held) valid(now int64) bool {
	if h.lost.Load() {
		return false
	}
	if now-h.renewed.Load() < int64(h.q.s.holdFor()) {
		return true
	}
	h.q.s.giveUp(h)
	return false
}

// giveUp forgets a delivery whose hold lapsed: no settlement of it will go
// to the server (nor its renewals), and a send under it is cut short.
func (s *Store) giveUp(h *held) {
	if !h.lost.CompareAndSwap(false, true) {
		return
	}
	h.settled.Store(true)
	h.end(relay.ErrNotHeld)
	q := h.q
	q.mu.Lock()
	delete(q.held, h)
	if q.bySeq[h.seq] == h {
		delete(q.bySeq, h.seq)
	}
	q.ready.Remove(h)
	q.mu.Unlock()
	s.log.Warn("gave up a delivery: NATS confirmed no renewal of it within three quarters of the ack wait "+
		"(this replica was cut off, or stalled); the server hands it out again",
		"sink", q.sink, "event_id", h.del.Event.ID, "held_for", time.Duration(s.mono()-h.renewed.Load()).Round(time.Millisecond))
}

// Hold implements relay.Holder.
func (h *held) Hold(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if h.settled.Load() && !h.lost.Load() {
		return nil, nil, errSettled
	}
	if !h.valid(h.q.s.mono()) {
		return nil, nil, errLost
	}
	hctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(h.life, func() { cancel(errLost) })
	return hctx, func() { stop(); cancel(nil) }, nil
}

// renewal is a renewal request on its way.
type renewal struct {
	h    *held
	sent int64 // mono
}

// keepalive renews every delivery this replica holds (waiting in ready,
// waiting for the sink's pace, being sent) every renewEvery, with requests
// whose replies confirm them, and gives up those whose hold lapsed.
func (s *Store) keepalive() {
	defer s.wg.Done()
	replies := make(chan *natsgo.Msg, 4096)
	inbox := s.nc.NewInbox()
	sub, err := s.nc.ChanSubscribe(inbox+".*", replies)
	if err != nil {
		// Without confirmations every hold lapses after holdFor: slow,
		// never wrong.
		s.log.Error("cannot receive renewal confirmations from NATS; deliveries will be given up after three quarters of the ack wait",
			"err", err)
	} else {
		defer func() {
			if err := sub.Unsubscribe(); err != nil && s.nc.IsConnected() {
				s.log.Debug("could not unsubscribe from renewal confirmations", "err", err)
			}
		}()
	}
	inflight := map[string]renewal{}
	var next uint64
	t := time.NewTicker(s.renewEvery())
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case m := <-replies:
			token := m.Subject[len(inbox)+1:]
			if r, ok := inflight[token]; ok {
				delete(inflight, token)
				r.h.confirm(r.sent)
			}
			continue
		case <-s.renewNow:
		case <-t.C:
		}
		now := s.mono()
		for token, r := range inflight {
			if now-r.sent > int64(s.holdFor()) {
				delete(inflight, token) // no answer: that renewal failed
			}
		}
		failed := 0
		var lastErr error
		for _, h := range s.heldList() {
			if !h.valid(now) {
				continue
			}
			next++
			token := strconv.FormatUint(next, 36)
			if err := s.nc.PublishRequest(h.msg.Reply(), inbox+"."+token, ackProgress); err != nil {
				failed, lastErr = failed+1, err
				continue
			}
			inflight[token] = renewal{h: h, sent: now}
		}
		if failed > 0 && s.nc.IsConnected() {
			s.log.Warn("could not renew held deliveries", "count", failed, "err", lastErr)
		}
	}
}

var ackProgress = []byte("+WPI")

// confirm moves h's anchor to sent, the time a renewal the server
// confirmed was sent.
func (h *held) confirm(sent int64) {
	for {
		cur := h.renewed.Load()
		if sent <= cur || h.renewed.CompareAndSwap(cur, sent) {
			return
		}
	}
}

// heldList returns every delivery held and not settled.
func (s *Store) heldList() []*held {
	var out []*held
	for _, q := range s.queueList() {
		q.mu.Lock()
		for h := range q.held {
			if !h.settled.Load() {
				out = append(out, h)
			}
		}
		q.mu.Unlock()
	}
	return out
}
