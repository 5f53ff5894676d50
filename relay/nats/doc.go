// Package nats is chatrelay's NATS JetStream store (store.driver: nats): it
// implements relay.Store so that several chatrelay replicas behind one load
// balancer share one set of events, queues, dead letters and thread
// mappings, and a replica that dies loses nothing.
//
// # Layout
//
// With the default name CHATRELAY (Options.Name) the store keeps, all file
// storage with Options.Replicas replicas:
//
//   - Stream CHATRELAY_EVENTS, subjects chatrelay.ev.<partition>.<event id>:
//     every accepted event, raw body as the payload, id, topic, receive time,
//     conversation, routed sinks and, for a chat event, its usage figures
//     (Chatrelay-Usage, read by the console: console.go) in Chatrelay-*
//     headers. Limits retention
//     with MaxAge = store.retention: events are kept that long whether
//     delivered or not, for Lookup and Recent. Duplicates = store.dedupe_window.
//     With Options.MaxBytes (store.max_size; none by default) the oldest
//     events make room (discard old): the stream is history, and nothing
//     pending depends on it.
//   - Stream CHATRELAY_QUEUE, subjects chatrelay.q.<sink>.<partition>.<event id>:
//     pending deliveries, each with its own copy of the body. Work-queue
//     retention: a delivery is removed when acked or terminated, so what the
//     stream holds is exactly what is pending, and nothing pending expires.
//   - Stream CHATRELAY_DEAD, subjects chatrelay.dead.<sink>.<event id>: dead
//     letters (body, attempts, reason, parked-at), one per delivery
//     (MaxMsgsPerSubject 1), kept until purged.
//   - Key/value bucket CHATRELAY_STATE: per delivery, what JetStream does not
//     know in chatrelay's terms: failed attempts, the start of
//     retry.max_age, the last error, the outcome (delivered, dead, purged).
//     TTL store.retention. It is the durable record that a delivery was
//     made: the queue stream forgets a delivery once it is acked, and its
//     duplicate window lives in the server's memory.
//   - Key/value bucket CHATRELAY_KV: the sinks' relay.KV (conversation →
//     Slack thread ts or Discord thread), shared by every replica.
//   - Key/value bucket CHATRELAY_REPLICAS: one lease per running replica
//     (its instance id), and one per exclusive sink (sink.<sink>), held by
//     the replica that sends to that sink; and each replica's readiness
//     probe (probe.<instance id>).
//   - Durable pull consumers q_<sink>_<partition> on the queue stream, one
//     per sink and partition, MaxAckPending 1.
//
// Sink names become subject tokens as they are when made of a-z, 0-9 and
// '-', else as '_' and their hex. The partition of a conversation is
// FNV-1a of relay.Event.OrderingKey modulo Options.Partitions (default 16);
// the count is recorded on the events stream and cannot change later.
//
// # Invariants, and what enforces each
//
//   - An event answered 2xx is stored and each of its deliveries queued:
//     Append answers only after both steps (below). An Append that stopped
//     between them answered no 2xx; the sender's retry (a duplicate), or
//     for a dead replica its lease's repair, queues each delivery that was
//     never queued, however late: "never queued" is read from the queue,
//     the state bucket and the dead letters (queuedBefore), never from a
//     time window or the server's in-memory duplicate window.
//   - A delivery made is not made again: Ack records it in the state bucket
//     before it acks, park records a dead letter, Purge records before it
//     deletes. A copy that comes out of the queue again (a redelivery, or a
//     repair's copy marked Chatrelay-Repeat) is checked against that record
//     and dropped if it was settled. A repeated body is answered duplicate
//     by the events stream's window, which the server rebuilds from the
//     events it keeps (they outlive the window unless store.max_size pushed
//     them out).
//   - A conversation's deliveries to a sink go one at a time, in the order
//     they were queued: each partition's consumer has MaxAckPending 1, so
//     the next is handed out only once the head is acked or terminated, by
//     whichever replica.
//   - An older turn never goes out after a newer one: only the holder of a
//     delivery sends and settles it, and a replica holds it only while NATS
//     confirms its renewals (see "Holding a delivery"): a replica cut off
//     or frozen past the ack wait neither sends the old head nor lets its
//     late ack, nak or term land on the head another replica took since.
//   - Nothing pending expires or is dropped for room: the queue and
//     dead-letter streams have no limits of their own; only the events
//     stream (history) may drop its oldest events, and deliveries carry
//     their own copy of the body.
//   - The store never spins: a failed pull and a delivery that cannot be
//     parked (JetStream full) come back after Options.Backoff
//     (relay.RetryPolicy), growing with each failure.
//   - Ready says what an append would get (see "Append").
//
// # Append
//
// Append publishes the event with Nats-Msg-Id = hex(Event.DedupeKey) and
// waits for the stream's ack (the event is stored, on a quorum of replicas).
// A duplicate within the window is answered with the original's sequence;
// the store reads the original back and answers its id. Append then
// publishes one delivery per routed sink to the queue stream (message id
// "<event id>.<sink>") and only then answers. So a conversation's events
// that Chat Data sends one after the other are queued in that order,
// whichever replica took each. If Append fails in between, the receiver
// answers 503 and the sender retries: the retry is a duplicate, and Append
// queues each delivery of the original that was never queued (not in the
// queue, no record in the state bucket, no dead letter), however much
// later; such a copy is marked as a repeat and dropped when it comes out
// if its record shows it settled meanwhile. For a process that dies between
// the steps, with a sender that never retries, replicas hold leases: each
// rewrites its key in the replicas bucket every AckWait/3 (at most 5s) and
// tags the events it appends with its instance id. When a lease goes
// three renewals without one, the first replica to delete it (a
// compare-and-delete on its revision) queues again the deliveries of that
// replica's events from Timeout before its last renewal on, which covers
// every Append it can have had in flight. Replicas that all die together
// are covered when the first of them starts again.
//
// A lost connection fails Append at once (no reconnect buffer) with
// relay.ErrUnavailable; a full stream (Options.MaxBytes, account or server
// limits) fails it with relay.ErrFull. The receiver answers 503 with
// Retry-After either way, and Ready reports the same: an account's or a
// server's storage limit shows in no stream's state (a server's in nothing
// an account can read), so Ready answers with the outcome of the last
// write, an Append's or, when none came within the last second, that of a
// probe (a 64 KiB value it writes into the replicas bucket).
//
// # Delivery and order
//
// Queue(sink) starts one puller per partition on this replica; each keeps a
// pull request open on the partition's durable consumer, renewing it every
// AckWait/4 (for an exclusive sink, only while this replica owns it: see
// below). The consumers are
// shared by all replicas and have MaxAckPending 1, so the server hands a
// partition's head to one replica at a time and the next one only after
// the head is acked or terminated: conversation order holds across
// replicas, and conversations that share a partition share its order
// (hence more partitions). Heads that arrive wait in a ready set, at most
// one per partition, and Next hands out the one queued first; before the
// first Next, every partition is asked once without waiting, so the heads
// present at start go out in queue order. A replica may hold up to one head
// per partition that its dispatcher has not taken yet.
//
// Settling maps onto JetStream: Ack records the outcome, then acks and
// waits for the server to confirm (DoubleAck); Nak records the failed
// attempt and last error in the state bucket, then NakWithDelay(delay),
// for backoff and rate-limit waits alike (a record that cannot be written
// is only warned about: the retry is scheduled); Term writes the dead
// letter and records it, then terminates the message and waits for the server to confirm, as
// Ack does (if the dead letter cannot be
// written, on a full server, the message is handed back after a delay from
// Options.Backoff that grows with each time it came back, so the sink is
// not asked again at once); Release is a plain Nak, with nothing recorded. JetStream's own delivery
// count and MaxDeliver play no part (MaxDeliver is unlimited): the
// dispatcher's retry.max_age decides when to give up, from the Since the
// store reports. A delivery whose record says it is due later than it came
// back (its replica died between the record and the nak) is put back for
// the rest of its delay.
//
// # Holding a delivery
//
// While a replica holds a delivery (waiting in its ready set, waiting for
// the sink's pace or a rate-limit hold, or being sent) it renews it every
// AckWait/8 with a progress ack sent as a request, whose reply confirms
// the server has it. A replica that dies stops renewing; after AckWait
// (default 30s) the server hands its deliveries to another replica. So
// after a crash at most the one delivery in flight per partition and sink
// is sent twice, and never after a newer one. Close hands back everything
// the replica holds (Nak) so others take it at once.
//
// The server does not fence a replica that was away past AckWait (cut off,
// or frozen: SIGSTOP, a paused VM): it takes an ack, nak or renewal naming
// the message's stream sequence from anyone, also while another replica
// holds the message. So each replica fences itself (hold.go): a delivery is
// its own for 3/4 AckWait after its anchor, the send time of the last
// renewal the server confirmed (at first, the send time of the pull request
// it came on; pull requests live AckWait/4 at most). The server stamped it
// no earlier, so no one else can have it before the anchor plus AckWait; the
// last quarter is the margin for a settlement's way to the server. Past that
// the delivery is given up: Next skips it, the dispatcher's check right
// before each send (relay.Holder) fails and a send under way is cut short,
// and every settlement of it is refused with relay.ErrNotHeld (an Ack still
// records the delivery, so the copy the server hands out again is dropped if
// it comes out after). A replica that receives again a delivery it holds
// gives the old one up. The one window left: a replica frozen between that
// last check and the first byte of its request can still post an old turn
// after a newer one.
//
// # Exclusive sinks
//
// Each replica's dispatcher paces a sink on its own, so N replicas sharing
// a Slack or Discord channel's queue would post up to N times the
// channel's pace. The sinks Options.Exclusive names are sent to by one
// replica at a time: the one holding the sink's ownership lease, key
// sink.<sink> in the replicas bucket, whose value names the replica and
// its host. Only that replica pulls the sink's partitions and hands out
// its deliveries; Next on any other waits (ctx still ends it). Shared
// sinks (webhooks, the console) are consumed by every replica as above.
//
// With the lease period L = AckWait/3 (at least 100ms, at most 5s: the
// replica leases' period):
//
//   - Claim: a replica opening an exclusive queue creates the key if it
//     is absent (create is a compare-and-set on "no such key"); one
//     replica wins.
//   - Renew: the owner rewrites the key every L, compare-and-set on its
//     last revision. It hands out for 2L after sending its last
//     successful renewal and no longer, and its pull requests expire then
//     on the server too.
//   - Take over: a replica that sees the key's revision unchanged for 3L,
//     timed on its own clock from when it first saw that revision (no two
//     clocks are compared), replaces it with a compare-and-set on that
//     revision. The old owner stopped handing out at least L earlier.
//     After a crash this takes at most about 5L (25s with the default
//     AckWait of 30s), and the heads the dead owner held come back after
//     AckWait, as for any crash.
//   - Release: Close hands back what the replica holds, then deletes its
//     ownership keys (compare-and-delete). Every replica's owners loop
//     subscribes to the keys' subject, so another claims the sink within
//     milliseconds.
//   - Loss: an owner whose renewal finds another revision, or that could
//     not renew within 2L, ends its term: it stops pulling, hands back
//     untried (a plain nak, no attempt counted) the heads waiting in its
//     ready set, and contends again like any other replica.
//
// Order holds across owners because each partition's consumer has
// MaxAckPending 1: a head handed back is the partition's next delivery,
// to whichever replica owns the sink next, and a delivery that the old
// owner's dispatcher already holds keeps its partition from everyone else
// until it is settled. Such a delivery is still sent and settled by the
// old owner (a send in progress cannot be recalled). So when a live owner
// loses its lease (only if it cannot reach NATS, or stalls, for 2L), up
// to its dispatcher's concurrency of sends may overlap the new owner's;
// on a clean handover or a crash the two never overlap. A rate-limit hold
// (Retry-After) is the old owner's; the new owner learns of it from its
// first 429, if any.
//
// # Dead letters
//
// ListDead reads the dead-letter stream in order (the order they were
// parked in) with batched direct gets; GetDead reads one by subject.
// Requeue writes a fresh record (no attempts, Since now, the old reason as
// last error), publishes the delivery at the end of its partition of the
// sink's queue, then deletes the dead letter. Purge deletes it and records
// the delivery as purged. Reconcile moves every pending delivery of a sink
// that is no longer configured to the dead letters with reason "sink
// removed"; dead letters of such sinks are not requeued.
//
// # Lookups and stats
//
// Lookup finds an event by id (a direct get on chatrelay.ev.*.<id>) and,
// per routed sink, reports pending while the delivery is in the queue, dead
// while it has a dead letter, else the recorded outcome, else pending (not
// queued yet: a delivery is reported made only when a record says so). Recent reads the
// events stream backwards. Stats covers every sink that has consumers (every
// sink that ever had a delivery), plus those this replica consumes or has
// configured; per sink it counts the queue's messages (depth, including
// deliveries in flight), the first one's acceptance time (oldest, in queue
// order), and the dead letters, each with one batched direct get.
//
// # Failure behaviour
//
// The connection reconnects forever, with a backoff from
// Options.ReconnectWait doubling to 16 times as much (at most 10s), plus
// jitter. While disconnected, Append and Ready fail at once, settlements
// fail (the deliveries come back after AckWait), and pullers wait. On
// reconnect every pull request is renewed at once (they may have gone with
// the old server), and so is every delivery the replica still holds; those
// whose hold lapsed meanwhile were given up (see "Holding a delivery"), and
// their settlement fails with relay.ErrUnavailable and relay.ErrNotHeld.
// Credentials (token, creds file, a password or token in the URL) never
// appear in logs or errors the store writes.
//
// # Retention
//
// Events stay in the events stream for store.retention (its MaxAge),
// delivered or not; that is what Lookup and Recent can see. A pending
// delivery and a dead letter each carry their own copy of the body, so
// neither expires with its event: deliveries leave the queue when settled,
// dead letters when requeued or purged. Delivery records (attempts, last
// error, outcome) expire after store.retention too. The dedupe window may
// not exceed store.retention.
//
// Durability: with replicas 1, a nats-server by default writes each message
// to the operating system at once but fsyncs only every 2 minutes, so a
// power loss (not a process crash) can lose the latest accepted events.
// Run replicas 3 on a cluster, or set sync_interval: always on a single
// server (much slower: every publish is its own fsync).
//
// Requirements: nats-server 2.11 or later (batched direct gets), JetStream
// enabled, and an account allowed six streams (three of them key/value
// buckets) and 16 consumers per sink with the default partitions.
//
// # What the server's own coordination was tried for (issue 12, step 6)
//
// Measured 2026-12-06 with nats-server 2.15.2 (in-process) and nats.go
// 1.55.0 on the 2-core development VM; neither was adopted.
//
//   - Pinned consumers (PriorityPolicyPinned, PinnedTTL) to replace own.go's
//     ownership leases: the server pins each consumer to whichever client
//     asks first, and a sink has one consumer per partition (MaxAckPending
//     1 each, for order). Two replicas pulling a sink's 4 partitions ended
//     pinned on two each (A: 0 and 2, B: 1 and 3), so both would pace the
//     same channel, which is what exclusive sinks exist to prevent; one
//     consumer per sink would lose per-partition order. Nor do pins fence:
//     a replica that held partition 0's head past AckWait and PinnedTTL
//     acked it late, after the other replica had been handed it again, and
//     the server took the ack (the other's hold was gone, its own ack also
//     answered OK): the server acks by stream sequence alone
//     (consumer.go, processAckMsg). Hence the fencing in hold.go.
//   - A single-publish append (atomic batch publish, AllowAtomicPublish,
//     nats-server 2.12+) of the event and its deliveries into one stream,
//     to remove lease.go's repair: correct, but with replicas 1 on file
//     storage the server stages every batch in a file store of its own,
//     created, fsynced and deleted per batch (jetstream_batching.go,
//     newBatchStore). BenchmarkAppendShape, two runs: 110 to 260 times
//     slower than the two publishes (one appender 7.7-19.3ms against
//     69-75µs per append; 16 appenders 10.6-15.0ms against 42-108µs). It
//     also limits a stream to 50
//     batches in flight and answers a duplicate without the original's
//     sequence. The two-step append stays, made safe by the durable
//     records above.
package nats
