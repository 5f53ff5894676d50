package nats

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chatrelay/chatrelay/relay"
)

// The operator's queries (relay.History).

var _ relay.History = (*Store)(nil)

// receivedSlack is how far before a time the scan of Received starts: the
// stream's timestamps are the server's clock, Event.ReceivedAt the
// receiving replica's, and the two may run apart.
const receivedSlack = 5 * time.Minute

// Conversation implements relay.History. A conversation's events are all on
// its partition's subjects: a headers-only consumer reads the partition's
// headers (not the bodies) to find them, then each is looked up as Lookup
// does.
func (s *Store) Conversation(ctx context.Context, id string, limit int) ([]relay.EventRecord, int, error) {
	if id == "" {
		return nil, 0, nil
	}
	p := s.l.partitionOf((&relay.Event{ConversationID: id}).OrderingKey())
	filter := s.l.subj + ".ev." + part(p) + ".*"
	count, _, err := s.countFirst(ctx, s.l.events, filter)
	if err != nil {
		return nil, 0, fmt.Errorf("conversation %q: %w", id, err)
	}
	var ids []string
	total := 0
	if count > 0 {
		err = s.scanHeaders(ctx, filter, count, func(m jetstream.Msg) {
			if unescape(m.Headers().Get(hdrConv)) != id {
				return
			}
			total++
			ids = append(ids, m.Headers().Get(hdrID))
			if limit > 0 && len(ids) > limit {
				ids = ids[1:]
			}
		})
		if err != nil {
			return nil, 0, fmt.Errorf("conversation %q: %w", id, err)
		}
	}
	out := make([]relay.EventRecord, 0, len(ids))
	for _, eid := range ids {
		rec, err := s.Lookup(ctx, eid)
		if errors.Is(err, relay.ErrNotFound) { // expired since the scan
			total--
			continue
		}
		if err != nil {
			return nil, 0, fmt.Errorf("conversation %q: %w", id, err)
		}
		out = append(out, *rec)
	}
	return out, total, nil
}

// scanHeaders calls fn with the headers of every message of the events
// stream on filter (about count of them), in stream order, through a
// short-lived ephemeral consumer that delivers headers only. Each fetch
// asks for what is left, so none waits for messages that will not come.
func (s *Store) scanHeaders(ctx context.Context, filter string, count uint64, fn func(jetstream.Msg)) error {
	cons, err := s.events.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject:     filter,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		HeadersOnly:       true,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return classify(err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.Timeout)
		defer cancel()
		_ = s.events.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := cons.Fetch(int(min(count, 256)), jetstream.FetchMaxWait(s.opts.Timeout))
		if err != nil {
			return classify(err)
		}
		n := 0
		left := uint64(0)
		for m := range batch.Messages() {
			n++
			fn(m)
			if md, err := m.Metadata(); err == nil {
				left = md.NumPending
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return classify(err)
		}
		if n == 0 || left == 0 {
			return nil
		}
		count = left
	}
}

// FindDead implements relay.History: the dead-letter stream (of one sink,
// when the filter names it) from the first letter stored at its Since on.
func (s *Store) FindDead(ctx context.Context, f relay.DeadFilter, offset, limit int) (relay.DeadPage, error) {
	filter := s.l.deadAll()
	if f.Sink != "" {
		filter = s.l.deadSinkFilter(encodeSink(f.Sink))
	}
	var from time.Time
	if !f.Since.IsZero() {
		from = f.Since.Add(-receivedSlack)
	}
	var matched []relay.DeadLetter
	err := s.scanFrom(ctx, s.l.dead, filter, from, func(m stored) (bool, error) {
		if dl := deadLetterOf(m.Header); f.Match(dl) {
			matched = append(matched, dl)
		}
		return true, nil
	})
	if err != nil {
		return relay.DeadPage{}, fmt.Errorf("dead letters: %w", err)
	}
	return relay.PageOf(matched, offset, limit), nil
}

// Received implements relay.History: the events stream from the first
// event stored receivedSlack before since.
func (s *Store) Received(ctx context.Context, since time.Time, fn func(*relay.Event) (bool, error)) error {
	var from time.Time
	if !since.IsZero() {
		from = since.Add(-receivedSlack)
	}
	err := s.scanFrom(ctx, s.l.events, s.l.eventsAll(), from, func(m stored) (bool, error) {
		ev, _ := eventOf(m.Header, m.Data)
		if !since.IsZero() && ev.ReceivedAt.Before(since) {
			return true, nil
		}
		return fn(ev)
	})
	if err != nil {
		return fmt.Errorf("received events: %w", err)
	}
	return nil
}
