package nats

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chatrelay/chatrelay/relay"
)

// The operator's queries (relay.History).

var _ relay.History = (*Store)(nil)

// receivedSlack is how far before a time a scan by Event.ReceivedAt starts
// in a stream: the stream's timestamps are the server's clock,
// Event.ReceivedAt the receiving replica's, and the two may run apart.
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
	var ids []string
	total := 0
	err := s.scanHeaders(ctx, jetstream.ConsumerConfig{FilterSubject: s.l.subj + ".ev." + part(p) + ".*"},
		func(m jetstream.Msg, _ *jetstream.MsgMetadata) {
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

// scanHeaders calls fn with the headers and metadata of each message of the
// events stream that cc selects (its filter and deliver policy; all
// messages by default), in stream order, through a short-lived ephemeral
// consumer that delivers headers only. It reads until none is pending.
// Each fetch asks for what is pending, so none waits for messages that will
// not come.
func (s *Store) scanHeaders(ctx context.Context, cc jetstream.ConsumerConfig, fn func(jetstream.Msg, *jetstream.MsgMetadata)) error {
	cc.AckPolicy = jetstream.AckNonePolicy
	cc.HeadersOnly = true
	cc.MemoryStorage = true
	cc.Replicas = 1
	cc.InactiveThreshold = time.Minute
	cons, err := s.events.CreateConsumer(ctx, cc)
	if err != nil {
		return classify(err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.Timeout)
		defer cancel()
		if err := s.events.DeleteConsumer(dctx, cons.CachedInfo().Name); err != nil {
			// It goes by itself after InactiveThreshold.
			s.log.Debug("could not delete a scan's consumer", "err", err)
		}
	}()
	left := cons.CachedInfo().NumPending
	for left > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := cons.Fetch(int(min(left, 1024)), jetstream.FetchMaxWait(s.opts.Timeout))
		if err != nil {
			return classify(err)
		}
		n := 0
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("a message without metadata: %w", err)
			}
			n++
			left = md.NumPending
			fn(m, md)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return classify(err)
		}
		if n == 0 {
			return nil
		}
	}
	return nil
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

// The usage figures (relay.History.Usage). Append writes a chat event's
// usage (chatbot, first turn, credits, score) into a header of the event's
// own message, so the figures are stored in the same write as the event,
// by whichever replica took it. Each replica reads them through a
// headers-only consumer (no body crosses the wire, none is decoded), only
// when asked (the console asks while someone looks), and only once: it
// keeps the minutes read so far and the stream sequence to go on from. The
// stream is in commit order, so an event committed late is read once, in
// its turn, and counted in the minute it was received. The first call
// after a start reads the headers of the last UsageKept.

// usageMargin is how much longer than relay.UsageKept a replica keeps the
// minutes it read.
const usageMargin = time.Hour

// usageHeader describes a chat event's usage on its message in url query
// encoding (no CR or LF can reach the header): v=1 (the format; the
// header is never empty), the chatbot as its relay.LabelOf (left out when
// unknown), new=1 on a first turn, credits and score when there are.
func usageHeader(h natsgo.Header, ev *relay.Event) {
	u := relay.UsageOf(ev)
	if !u.Counted {
		return
	}
	v := url.Values{}
	if bot := relay.LabelOf(u.Chatbot); bot != relay.LabelUnknown {
		v.Set("bot", bot)
	}
	if u.NewConversation {
		v.Set("new", "1")
	}
	if u.Credits > 0 {
		v.Set("credits", strconv.FormatFloat(u.Credits, 'g', -1, 64))
	}
	if u.HasScore {
		v.Set("score", strconv.FormatFloat(u.Score, 'g', -1, 64))
	}
	h.Set(hdrUsage, "v=1&"+v.Encode())
}

// usageOf reads what usageHeader wrote: nothing counted without it.
func usageOf(h natsgo.Header) relay.Usage {
	raw := h.Get(hdrUsage)
	if raw == "" {
		return relay.Usage{}
	}
	v, err := url.ParseQuery(raw)
	if err != nil {
		return relay.Usage{}
	}
	u := relay.Usage{Counted: true, Chatbot: v.Get("bot"), NewConversation: v.Get("new") == "1"}
	if c, err := strconv.ParseFloat(v.Get("credits"), 64); err == nil && c > 0 && !math.IsInf(c, 0) {
		u.Credits = c
	}
	if sc, err := strconv.ParseFloat(v.Get("score"), 64); err == nil && !math.IsNaN(sc) && !math.IsInf(sc, 0) {
		u.HasScore, u.Score = true, sc
	}
	return u
}

// usageRollup is what a replica has read of the usage figures.
type usageRollup struct {
	turn    chan struct{} // held by the one Usage reading
	next    uint64        // the stream sequence to read from; 0: by time, from from
	from    time.Time     // the minutes from here on are whole
	minutes map[int64]*relay.UsageMinute
}

func newUsageRollup() usageRollup {
	return usageRollup{turn: make(chan struct{}, 1), minutes: map[int64]*relay.UsageMinute{}}
}

// Usage implements relay.History: it reads the headers of the events
// stored since the last call, and answers from the minutes read.
func (s *Store) Usage(ctx context.Context, since time.Time) ([]relay.UsageMinute, error) {
	r := &s.usage
	select {
	case r.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-r.turn }()
	keep := time.Now().Add(-relay.UsageKept - usageMargin).Truncate(time.Minute)
	want := since.Truncate(time.Minute)
	if want.Before(keep) {
		want = keep
	}
	if r.from.IsZero() || want.Before(r.from) {
		r.next, r.from, r.minutes = 0, want, map[int64]*relay.UsageMinute{}
	}
	cc := jetstream.ConsumerConfig{FilterSubject: s.l.eventsAll()}
	if r.next > 0 {
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, r.next
	} else {
		start := r.from.Add(-receivedSlack)
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	// What was read counts even if the scan fails: the next call goes on
	// from there.
	err := s.scanHeaders(ctx, cc, func(m jetstream.Msg, md *jetstream.MsgMetadata) {
		r.next = md.Sequence.Stream + 1
		h := m.Headers()
		received := parseNanos(h.Get(hdrReceived))
		if received.Before(r.from) {
			return
		}
		minute := received.Truncate(time.Minute).Unix() / 60
		um := r.minutes[minute]
		if um == nil {
			um = relay.NewUsageMinute(received)
			r.minutes[minute] = um
		}
		um.Add(unescape(h.Get(hdrTopic)), usageOf(h))
	})
	for k, um := range r.minutes {
		if um.Start.Before(keep) {
			delete(r.minutes, k)
		}
	}
	if r.from.Before(keep) {
		r.from = keep
	}
	if err != nil {
		return nil, fmt.Errorf("usage figures: %w", err)
	}
	first := since.Truncate(time.Minute)
	out := make([]relay.UsageMinute, 0, len(r.minutes))
	for _, um := range r.minutes {
		if !um.Start.Before(first) {
			out = append(out, um.Clone())
		}
	}
	slices.SortFunc(out, func(a, b relay.UsageMinute) int { return a.Start.Compare(b.Start) })
	return out, nil
}
