package nats

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Leases: how a replica's half-done appends are found after it dies.
//
// Append stores an event, then queues its deliveries. A replica that dies
// between the two leaves an event nobody will deliver, unless the sender
// retries (the retry is a duplicate, and Append queues the original's
// deliveries). For a sender that never retries, every replica holds a
// lease: a key in the replicas bucket that it rewrites every leaseEvery,
// and tags each event it appends with its instance id. A replica whose
// lease is older than staleAfter (judged by the server's clock: the
// newest lease is now) is taken for dead; the first replica to delete its
// lease (compare-and-delete on the revision) re-queues that replica's
// events from the few seconds around its last heartbeat, which is every
// Append that can have been in flight when it died. A graceful Close
// deletes its own lease.
//
// This costs one small write per replica every leaseEvery, instead of
// reading every event again.

// leaseEvery is how often a replica renews its lease.
func (s *Store) leaseEvery() time.Duration {
	return min(max(s.opts.AckWait/3, 100*time.Millisecond), 5*time.Second)
}

// staleAfter is how long a lease may go unrenewed before its replica is
// taken for dead.
func (s *Store) staleAfter() time.Duration { return 3 * s.leaseEvery() }

// kvStream and kvSubject name a key/value bucket's stream and subjects.
func kvStream(bucket string) string { return "KV_" + bucket }
func kvPrefix(bucket string) string { return "$KV." + bucket + "." }
func kvOperation(h map[string][]string) string {
	if v := h["KV-Operation"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// leases renews this replica's lease and reaps the leases of replicas that
// stopped renewing theirs.
func (s *Store) leases() {
	defer s.wg.Done()
	t := time.NewTicker(s.leaseEvery())
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := s.opCtx()
		if err := s.renewLease(ctx); err == nil {
			s.reapLeases(ctx)
		}
		cancel()
	}
}

func (s *Store) renewLease(ctx context.Context) error {
	_, err := s.replicas.Put(ctx, s.instance, []byte(s.hostname))
	return err
}

// reapLeases finds stale leases, claims each, and re-queues the claimed
// replica's appends around its last heartbeat.
func (s *Store) reapLeases(ctx context.Context) {
	// After an outage every lease looks old until its replica has renewed
	// it: judge none before they all had the time to.
	if time.Since(time.Unix(0, s.connectedAt.Load())) < s.staleAfter()+s.leaseEvery() {
		return
	}
	// Replica leases are the one-token keys; sink.<sink> keys are the
	// exclusive sinks' ownership leases (own.go).
	entries, _, err := s.directBatch(ctx, kvStream(s.l.replicas), kvPrefix(s.l.replicas)+"*", 1, scanBatch)
	if err != nil {
		return
	}
	var now time.Time // the server's clock: the newest lease
	for _, e := range entries {
		if e.Time.After(now) {
			now = e.Time
		}
	}
	for _, e := range entries {
		id := e.Subject[len(kvPrefix(s.l.replicas)):]
		if id == s.instance || kvOperation(e.Header) != "" || now.Sub(e.Time) < s.staleAfter() {
			continue
		}
		// Only the replica whose delete matches the revision repairs.
		if err := s.replicas.Delete(ctx, id, jetstream.LastRevision(e.Seq)); err != nil {
			continue
		}
		n, err := s.repairAppends(ctx, id, e.Time)
		if err != nil {
			s.log.Error("a replica stopped without closing; could not re-queue its last appends",
				"replica", id, "host", string(e.Data), "err", err)
			continue
		}
		s.log.Warn("a replica stopped without closing; queued the deliveries its last appends had not",
			"replica", id, "host", string(e.Data), "last_seen", e.Time, "queued", n)
	}
}

// repairAppends re-queues the deliveries of the events replica appended
// from Timeout before its last heartbeat to staleAfter after it.
func (s *Store) repairAppends(ctx context.Context, replica string, lastSeen time.Time) (int, error) {
	from := lastSeen.Add(-s.opts.Timeout - time.Second)
	until := lastSeen.Add(s.staleAfter() + time.Second)
	n := 0
	err := s.scanFrom(ctx, s.l.events, s.l.eventsAll(), from, func(m stored) (bool, error) {
		if m.Time.After(until) {
			return false, nil
		}
		if m.Header.Get(hdrReplica) != replica {
			return true, nil
		}
		k, err := s.queueMissing(ctx, m)
		n += k
		return err == nil, err
	})
	return n, err
}
