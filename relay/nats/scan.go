package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	natsgo "github.com/nats-io/nats.go"
)

// Batched direct gets (ADR-31, nats-server 2.11+): one request returns up
// to batch messages on a subject filter from a sequence on, followed by an
// end-of-batch status that says how many more match. nats.go has no call
// for them, so the store speaks the request itself. They need AllowDirect,
// which every stream of the store has.

const (
	scanBatch    = 256
	scanMaxBytes = 8 << 20
)

type directGetRequest struct {
	Seq       uint64     `json:"seq,omitempty"`
	StartTime *time.Time `json:"start_time,omitempty"`
	NextFor   string     `json:"next_by_subj,omitempty"`
	Batch     int        `json:"batch,omitempty"`
	MaxBytes  int        `json:"max_bytes,omitempty"`
}

// stored is one message a direct get returned.
type stored struct {
	Seq     uint64
	Subject string
	Time    time.Time // when the stream stored it, by the server's clock
	Header  natsgo.Header
	Data    []byte
}

// directBatch returns up to n messages of stream matching filter from seq
// on, and how many more match after them.
func (s *Store) directBatch(ctx context.Context, stream, filter string, seq uint64, n int) ([]stored, uint64, error) {
	return s.direct(ctx, stream, directGetRequest{Seq: max(seq, 1), NextFor: filter, Batch: n, MaxBytes: scanMaxBytes})
}

// directFrom is directBatch from the first message stored at or after t.
func (s *Store) directFrom(ctx context.Context, stream, filter string, t time.Time, n int) ([]stored, uint64, error) {
	return s.direct(ctx, stream, directGetRequest{StartTime: &t, NextFor: filter, Batch: n, MaxBytes: scanMaxBytes})
}

func (s *Store) direct(ctx context.Context, stream string, r directGetRequest) ([]stored, uint64, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opts.Timeout)
		defer cancel()
	}
	req, err := json.Marshal(r)
	if err != nil {
		return nil, 0, err
	}
	inbox := s.nc.NewInbox()
	sub, err := s.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, 0, classify(err)
	}
	defer func() {
		if err := sub.Unsubscribe(); err != nil && s.nc.IsConnected() {
			s.log.Debug("could not unsubscribe a direct get's inbox", "err", err)
		}
	}()
	if err := s.nc.PublishRequest("$JS.API.DIRECT.GET."+stream, inbox, req); err != nil {
		return nil, 0, classify(err)
	}
	var out []stored
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, 0, classify(err)
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "404": // nothing (more) matches
			return out, 0, nil
		case "204": // end of batch
			left, err := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
			if err != nil {
				// Without the count a scan could stop short, unnoticed.
				return nil, 0, fmt.Errorf("direct get from %s: end of batch without a pending count: %w", stream, err)
			}
			return out, left, nil
		case "503":
			return nil, 0, classify(natsgo.ErrNoResponders)
		default:
			return nil, 0, classify(fmt.Errorf("direct get from %s: %s %s", stream, status, m.Header.Get("Description")))
		}
		sq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
		if err != nil {
			return nil, 0, errors.New("direct get: reply without a sequence")
		}
		at, err := time.Parse(time.RFC3339Nano, m.Header.Get("Nats-Time-Stamp"))
		if err != nil {
			return nil, 0, fmt.Errorf("direct get from %s: reply without a time stamp: %w", stream, err)
		}
		out = append(out, stored{Seq: sq, Subject: m.Header.Get("Nats-Subject"), Time: at, Header: m.Header, Data: m.Data})
	}
}

// scan calls fn for every message of stream matching filter, in stream
// order, until fn returns false.
func (s *Store) scan(ctx context.Context, stream, filter string, fn func(stored) (bool, error)) error {
	return s.scanFrom(ctx, stream, filter, time.Time{}, fn)
}

// scanFrom is scan from the first message stored at or after t (zero: the
// first message).
func (s *Store) scanFrom(ctx context.Context, stream, filter string, t time.Time, fn func(stored) (bool, error)) error {
	seq := uint64(1)
	for first := true; ; first = false {
		var msgs []stored
		var left uint64
		var err error
		if first && !t.IsZero() {
			msgs, left, err = s.directFrom(ctx, stream, filter, t, scanBatch)
		} else {
			msgs, left, err = s.directBatch(ctx, stream, filter, seq, scanBatch)
		}
		if err != nil {
			return err
		}
		for _, m := range msgs {
			more, err := fn(m)
			if err != nil || !more {
				return err
			}
			seq = m.Seq + 1
		}
		if left == 0 || len(msgs) == 0 {
			return nil
		}
	}
}

// countFirst returns how many messages of stream match filter, and the
// first of them.
func (s *Store) countFirst(ctx context.Context, stream, filter string) (uint64, *stored, error) {
	msgs, left, err := s.directBatch(ctx, stream, filter, 1, 1)
	if err != nil || len(msgs) == 0 {
		return 0, nil, err
	}
	return left + 1, &msgs[0], nil
}
