// Package bolt is chatrelay's embedded store: one bbolt file, written by a
// single group-commit writer so that concurrent requests share one fsync,
// with an in-memory scheduler per sink rebuilt from disk at start.
package bolt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
	bbolt "go.etcd.io/bbolt"
	bberrors "go.etcd.io/bbolt/errors"

	"github.com/chatrelay/chatrelay/relay"
)

// FileName is the database file inside the store directory.
const FileName = "chatrelay.db"

// Options configure a Store.
type Options struct {
	// MaxSize bounds the database file in bytes (0: no bound). Past it,
	// Append fails with relay.ErrFull and the receiver answers 503.
	MaxSize int64
	// Retention is how long delivered events are kept (default 168h).
	Retention time.Duration
	// DedupeWindow is how long a repeated topic+body is answered
	// "duplicate" (default 24h).
	DedupeWindow time.Duration
	// KVRetention is how long a key/value entry (a conversation's thread)
	// is kept after it was last written (default 30 days).
	KVRetention time.Duration
	// PruneEvery is how often retention and dedupe pruning run (default 1m).
	PruneEvery time.Duration
	// MaxBatch bounds how many writes share one transaction (default 1024).
	MaxBatch int
	// LockTimeout is how long Open waits for another process's file lock
	// (default 1s).
	LockTimeout time.Duration
	Clock       clockwork.Clock
	Logger      *slog.Logger
}

func (o *Options) defaults() {
	if o.Retention <= 0 {
		o.Retention = 168 * time.Hour
	}
	if o.DedupeWindow <= 0 {
		o.DedupeWindow = 24 * time.Hour
	}
	if o.KVRetention <= 0 {
		o.KVRetention = 30 * 24 * time.Hour
	}
	if o.PruneEvery <= 0 {
		o.PruneEvery = time.Minute
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 1024
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = time.Second
	}
	if o.Clock == nil {
		o.Clock = clockwork.NewRealClock()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Store implements relay.Store on a bbolt file.
type Store struct {
	db    *bbolt.DB
	opts  Options
	clock clockwork.Clock
	log   *slog.Logger

	ops     chan *op
	quit    chan struct{}
	stopped chan struct{}
	closeMu sync.Once

	mu         sync.Mutex
	queues     map[string]*queue
	configured map[string]bool // set by Reconcile; nil until then
	health     error           // last write outcome
	pruneFrom  []byte          // where the retention scan resumes; writer goroutine only
	dedupeFrom []byte          // where the dedupe-expiry scan resumes; writer goroutine only
	dedupe     *dedupeIndex    // writer goroutine only (and init)
	recent     *recentEvents
	unrecorded []*op // acks and dead letters whose commit failed, retried by the writer; writer goroutine only
}

var _ relay.Store = (*Store)(nil)

// Open opens (or creates) the store in directory dir and starts its writer.
// A second process on the same directory gets a clear error instead of
// blocking. A damaged store file, or one that is empty or missing while the
// directory shows a store was kept there, is refused with an error that
// wraps ErrDamaged and says what to do (see vet); Open never panics on what
// it reads.
func Open(dir string, opts Options) (*Store, error) {
	opts.defaults()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store.path %s: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	inUse := fmt.Errorf("store.path %s: the store is in use by another chatrelay process "+
		"(its file lock is held); stop that process, or give this one another store.path", dir)
	if err := vet(dir, path, opts); err != nil {
		if errors.Is(err, errLocked) {
			return nil, inUse
		}
		return nil, fmt.Errorf("store.path %s: %w", dir, err)
	}
	var db *bbolt.DB
	err := guard(path, func() (err error) {
		db, err = bbolt.Open(path, 0o600, &bbolt.Options{
			Timeout:      opts.LockTimeout,
			MaxSize:      int(opts.MaxSize),
			FreelistType: bbolt.FreelistMapType,
			// The freelist is rebuilt at open instead of written on every
			// commit (as etcd does): fewer pages per fsync. Durability is
			// unchanged.
			NoFreelistSync: true,
		})
		return err
	})
	if err != nil {
		switch {
		case errors.Is(err, bberrors.ErrTimeout):
			return nil, inUse
		case errors.Is(err, bberrors.ErrInvalid), errors.Is(err, bberrors.ErrChecksum):
			err = damaged(path, "is damaged: "+err.Error())
		}
		return nil, fmt.Errorf("store.path %s: open %s: %w", dir, FileName, err)
	}
	s := &Store{
		db:      db,
		opts:    opts,
		clock:   opts.Clock,
		log:     opts.Logger,
		ops:     make(chan *op, 4*opts.MaxBatch),
		quit:    make(chan struct{}),
		stopped: make(chan struct{}),
		queues:  make(map[string]*queue),
		dedupe:  newDedupeIndex(),
		recent:  newRecentEvents(),
	}
	if err := guard(path, s.init); err != nil {
		_ = db.Close()
		if errors.Is(err, errUnreadable) {
			err = damaged(path, "is damaged: "+err.Error())
		}
		return nil, fmt.Errorf("store.path %s: %w", dir, err)
	}
	s.releaseMapped() // the rebuild read every pending delivery
	go s.writer()
	return s, nil
}

// vet checks the store file before bbolt sees it, under the file's lock:
//   - a file with content must pass checkFile;
//   - an empty (zero-length) file is refused: bbolt writes its first pages
//     as it creates the file, so only a first start killed within that
//     instant leaves one, and a store lost to a truncation looks the same;
//   - a missing file starts an empty store in an empty directory; in one
//     that holds other files (a store was kept here: the embedded mode's
//     signing secret, a store file moved aside) it is refused, unless the
//     operator moved the old file aside (FileName.<anything>), which is how
//     the way out of a damaged file reads.
func vet(dir, path string, opts Options) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		others, aside, err := dirEntries(dir)
		switch {
		case err != nil:
			return err
		case len(others) == 0:
			return nil
		case len(aside) > 0:
			opts.Logger.Warn("starting with an empty store: the previous store file was moved aside",
				"file", path, "moved_aside", strings.Join(aside, ","))
			return nil
		}
		return &damageError{path: path,
			what: fmt.Sprintf("is missing, but %s holds other files (%s): a store was kept here", dir, strings.Join(others, ", ")),
			fix: fmt.Sprintf("restore it from a backup; or, if it was removed on purpose, say so with "+
				"touch %s.removed and start again with an empty store", path)}
	}
	if err != nil {
		return err
	}
	defer f.Close() // releases the lock
	if err := lockFile(f, opts.LockTimeout); err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() == 0 {
		return damaged(path, "is empty (0 bytes): the store that was kept here is lost")
	}
	return checkFile(f, path)
}

// dirEntries lists the names in dir other than the store file, and those
// of them that are the store file moved aside (FileName.<suffix>).
func dirEntries(dir string) (others, aside []string, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	for _, e := range entries {
		name := e.Name()
		if name == FileName {
			continue
		}
		others = append(others, name)
		if strings.HasPrefix(name, FileName+".") && e.Type().IsRegular() {
			aside = append(aside, name)
		}
	}
	return others, aside, nil
}

// guard runs fn and turns a panic, or a memory fault on the file's mapping,
// into a damageError: the last line of defence behind checkFile for the
// goroutine that opens the store (bbolt's own goroutines are out of its
// reach, which is why checkFile runs first). bbolt may leave its file
// descriptor open after such a panic; the caller is about to exit.
func guard(path string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = damaged(path, fmt.Sprintf("is damaged: bbolt: %v", p))
		}
	}()
	return fn()
}

// errUnreadable marks a record the rebuild at open could not decode.
var errUnreadable = errors.New("unreadable record")

// init creates the buckets and rebuilds every sink's scheduler from disk.
func (s *Store) init() error {
	err := s.db.Update(func(tx *bbolt.Tx) error {
		for _, name := range []string{bMeta, bEvents, bDeliv, bQueues, bDead, bKV} {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				if errors.Is(err, bberrors.ErrIncompatibleValue) { // a plain value where a bucket belongs
					return fmt.Errorf("%w: bucket %s: %w", errUnreadable, name, err)
				}
				return err
			}
		}
		meta := tx.Bucket([]byte(bMeta))
		if v := meta.Get([]byte("schema")); v != nil && string(v) != fmt.Sprint(schemaVersion) {
			if _, err := strconv.Atoi(string(v)); err != nil {
				return fmt.Errorf("%w: schema version %q", errUnreadable, v)
			}
			return fmt.Errorf("store schema %s is not %d: this chatrelay cannot read it", v, schemaVersion)
		}
		return meta.Put([]byte("schema"), []byte(fmt.Sprint(schemaVersion)))
	})
	if err != nil {
		return err
	}
	return s.db.View(func(tx *bbolt.Tx) error {
		from, err := s.dedupe.load(tx, s.clock.Now(), s.opts.DedupeWindow)
		if err != nil {
			return err
		}
		s.dedupeFrom = from
		qs := tx.Bucket([]byte(bQueues))
		deliv := tx.Bucket([]byte(bDeliv))
		err = qs.ForEachBucket(func(name []byte) error {
			q := s.newQueue(string(name))
			err := qs.Bucket(name).ForEach(func(k, v []byte) error {
				var e queueEntry
				if err := json.Unmarshal(v, &e); err != nil {
					return fmt.Errorf("%w: queue %s: %w", errUnreadable, name, err)
				}
				id, err := uuid.Parse(e.EventID)
				if err != nil {
					return fmt.Errorf("%w: queue %s: event id %q: %w", errUnreadable, name, e.EventID, err)
				}
				it := &item{seq: beU64(k), id: id, received: e.Received, since: e.Since, due: e.Since}
				r, tried, err := getDeliv(deliv, e.EventID, q.sink)
				if err != nil {
					return err
				}
				if tried && r.State == relay.StatePending {
					it.since, it.due, it.attempts = r.Since, r.Due, r.Attempts
				}
				q.push(e.Key, it)
				return nil
			})
			s.queues[q.sink] = q
			return err
		})
		if err != nil {
			return err
		}
		dead := tx.Bucket([]byte(bDead))
		return dead.ForEachBucket(func(name []byte) error {
			q, ok := s.queues[string(name)]
			if !ok {
				q = s.newQueue(string(name))
				s.queues[q.sink] = q
			}
			q.dead = dead.Bucket(name).Stats().KeyN
			return nil
		})
	})
}

// Close stops the writer (after it has committed what was queued), wakes
// every waiting Next with ErrClosed and closes the file.
func (s *Store) Close() error {
	s.closeMu.Do(func() { close(s.quit) })
	<-s.stopped
	s.mu.Lock()
	for _, q := range s.queues {
		q.close()
	}
	s.mu.Unlock()
	return s.db.Close()
}

// op is one write: fn runs inside the shared transaction (and may run more
// than once, so it must set its results afresh each time); after runs once,
// in commit order, when the transaction is durable.
type op struct {
	fn     func(tx *bbolt.Tx) error
	after  func()
	failed func(error) // for writes nobody waits for: runs when the commit fails
	err    error
	done   chan struct{}
}

// write submits fn to the writer and waits until it is durable.
func (s *Store) write(ctx context.Context, fn func(*bbolt.Tx) error, after func()) error {
	return s.submit(ctx, &op{fn: fn, after: after, done: make(chan struct{})})
}

// writeOrRecordLater is write for a record that must land: if its commit
// fails, the writer keeps it and commits it again later (recordLater), and
// deferred is true.
func (s *Store) writeOrRecordLater(ctx context.Context, fn func(*bbolt.Tx) error, after func()) (deferred bool, err error) {
	o := &op{fn: fn, after: after, done: make(chan struct{})}
	o.failed = func(error) {
		deferred = true // written before done is closed, read after
		s.recordLater(fn, after)
	}
	err = s.submit(ctx, o)
	return deferred && err != nil, err
}

// submit hands o to the writer and waits until it is durable or failed.
func (s *Store) submit(ctx context.Context, o *op) error {
	select {
	case s.ops <- o:
	case <-s.quit:
		return relay.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-o.done:
		return o.err
	case <-s.stopped:
		select {
		case <-o.done:
			return o.err
		default:
			return relay.ErrClosed
		}
	}
}

// writeAsync submits fn without waiting for it: after runs once it is
// durable, failed if it cannot be written. It returns an error only if the
// write could not be submitted.
func (s *Store) writeAsync(ctx context.Context, fn func(*bbolt.Tx) error, after func(), failed func(error)) error {
	o := &op{fn: fn, after: after, failed: failed, done: make(chan struct{})}
	select {
	case s.ops <- o:
		return nil
	case <-s.quit:
		return relay.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// recordLater keeps a write that could not be committed (an ack: the
// delivery was made; a dead letter: the destination refused it) and commits
// it again at the writer's next probe tick, until it lands. Meanwhile its
// delivery stays in flight, so that a store that cannot write makes nobody
// send the same event again and again; if the process stops first, the
// delivery is sent once more at the next start. It runs on the writer
// goroutine (from a failed commit).
func (s *Store) recordLater(fn func(*bbolt.Tx) error, after func()) {
	s.unrecorded = append(s.unrecorded, &op{fn: fn, after: after, done: make(chan struct{}),
		failed: func(error) { s.recordLater(fn, after) }})
}

// writer owns every write transaction. It takes whatever writes are queued,
// applies them in one transaction, commits (one fsync for all), then
// answers each. Under load batches grow by themselves; idle, a lone write
// commits at once.
func (s *Store) writer() {
	defer close(s.stopped)
	prune := s.clock.NewTicker(s.opts.PruneEvery)
	defer prune.Stop()
	probe := s.clock.NewTicker(2 * time.Second)
	defer probe.Stop()
	release := s.clock.NewTicker(10 * time.Second)
	defer release.Stop()
	batch := make([]*op, 0, s.opts.MaxBatch)
	for {
		select {
		case o := <-s.ops:
			batch = append(batch[:0], o)
		fill:
			for len(batch) < s.opts.MaxBatch {
				select {
				case o := <-s.ops:
					batch = append(batch, o)
				default:
					break fill
				}
			}
			s.commit(batch)
		case <-prune.Chan():
			s.prune()
		case <-release.Chan():
			s.releaseMapped()
		case <-probe.Chan():
			if s.healthErr() != nil {
				s.commit([]*op{{fn: func(tx *bbolt.Tx) error {
					return tx.Bucket([]byte(bMeta)).Put([]byte("probe"), u64(uint64(s.clock.Now().UnixNano())))
				}, done: make(chan struct{})}})
			}
			if len(s.unrecorded) > 0 {
				retry := s.unrecorded
				s.unrecorded = nil
				s.commit(retry)
			}
		case <-s.quit:
			for {
				select {
				case o := <-s.ops:
					s.commit([]*op{o})
				default:
					return
				}
			}
		}
	}
}

type opError struct {
	op  *op
	err error
}

func (e *opError) Error() string { return e.err.Error() }
func (e *opError) Unwrap() error { return e.err }

func (s *Store) commit(batch []*op) {
	s.dedupe.begin()
	err := s.db.Update(func(tx *bbolt.Tx) error {
		for _, o := range batch {
			if err := o.fn(tx); err != nil {
				return &opError{op: o, err: err}
			}
		}
		return nil
	})
	var oe *opError
	if err != nil && errors.As(err, &oe) && len(batch) > 1 {
		s.dedupe.rollback()
		// One write failed on its own: run each alone so the others land.
		for _, o := range batch {
			s.commit([]*op{o})
		}
		return
	}
	if err != nil {
		s.dedupe.rollback()
		if errors.As(err, &oe) {
			// This one write is wrong, not the store: it fails alone, and
			// the store stays ready.
			err = fmt.Errorf("%w: %w", relay.ErrUnavailable, oe.err)
		} else {
			err = classifyWriteError(err)
			s.setHealth(err)
		}
		for _, o := range batch {
			o.err = err
			if o.failed != nil {
				o.failed(err)
			}
			close(o.done)
		}
		return
	}
	s.dedupe.commit()
	s.setHealth(nil)
	for _, o := range batch {
		if o.after != nil {
			o.after()
		}
		close(o.done)
	}
}

// classifyWriteError maps a failed commit to relay.ErrFull (size bound or
// disk full) or relay.ErrUnavailable.
func classifyWriteError(err error) error {
	if errors.Is(err, bberrors.ErrMaxSizeReached) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", relay.ErrFull, err)
	}
	return fmt.Errorf("%w: %w", relay.ErrUnavailable, err)
}

func (s *Store) setHealth(err error) {
	s.mu.Lock()
	prev := s.health
	s.health = err
	s.mu.Unlock()
	switch {
	case err != nil && prev == nil:
		s.log.Error("store cannot write; the receiver answers 503 until it can", "err", err)
	case err == nil && prev != nil:
		s.log.Info("store writes again")
	}
}

// Ready reports the outcome of the last write: nil, or why the store cannot
// write (relay.ErrFull, relay.ErrUnavailable).
func (s *Store) Ready(context.Context) error {
	select {
	case <-s.quit:
		return relay.ErrClosed
	default:
	}
	return s.healthErr()
}

func (s *Store) healthErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.health
}

// wait blocks for d (d < 0: no timeout), until changed is closed, or ctx
// ends.
func (s *Store) wait(ctx context.Context, d time.Duration, changed <-chan struct{}) error {
	var timeout <-chan time.Time
	if d >= 0 {
		t := s.clock.NewTimer(d)
		defer t.Stop()
		timeout = t.Chan()
	}
	select {
	case <-timeout:
	case <-changed:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// Append implements relay.Store. One event costs a write for the event
// and one queue entry per sink; the dedupe index is in memory (see
// dedupeIndex), and everything is encoded before it reaches the writer.
func (s *Store) Append(ctx context.Context, ev *relay.Event, sinks []string) (relay.Accepted, error) {
	id, err := uuid.Parse(ev.ID)
	if err != nil {
		return relay.Accepted{}, fmt.Errorf("event id %q is not a UUID: %w", ev.ID, err)
	}
	hash := relay.DedupeKey(ev.Topic, ev.Body)
	key := keyOf(hash[:])
	rec, err := encodeEvent(ev, sinks, hash[:])
	if err != nil {
		return relay.Accepted{}, err
	}
	now := s.clock.Now().UnixNano()
	received := ev.ReceivedAt.UnixNano()
	ordering := ev.OrderingKey()
	entry, err := json.Marshal(queueEntry{EventID: ev.ID, Key: ordering, Received: received, Since: now})
	if err != nil {
		return relay.Accepted{}, err
	}
	var acc relay.Accepted
	var items []queued
	err = s.write(ctx, func(tx *bbolt.Tx) error {
		acc, items = relay.Accepted{ID: ev.ID}, items[:0]
		if e, ok := s.dedupe.lookup(key); ok && time.Duration(now-e.at) < s.opts.DedupeWindow {
			acc = relay.Accepted{ID: e.id.String(), Duplicate: true}
			return nil
		}
		events := tx.Bucket([]byte(bEvents))
		events.FillPercent = 0.9
		if err := events.Put([]byte(ev.ID), rec); err != nil {
			return err
		}
		for _, sink := range sinks {
			qb, err := tx.Bucket([]byte(bQueues)).CreateBucketIfNotExists([]byte(sink))
			if err != nil {
				return err
			}
			qb.FillPercent = 0.9
			seq, err := qb.NextSequence()
			if err != nil {
				return err
			}
			if err := qb.Put(u64(seq), entry); err != nil {
				return err
			}
			items = append(items, queued{sink: sink, key: ordering, it: &item{seq: seq, id: id,
				received: received, since: now, due: now}})
		}
		s.dedupe.pending[key] = dedupeEntry{at: now, id: id}
		return nil
	}, func() {
		if len(items) > 0 {
			s.recent.put(id, ev)
		}
		for _, q := range items {
			s.queue(q.sink).add(q.key, q.it)
		}
	})
	if err != nil {
		return relay.Accepted{}, err
	}
	return acc, nil
}

// Queue implements relay.Store.
func (s *Store) Queue(sink string) relay.Queue { return s.queue(sink) }

func (s *Store) queue(sink string) *queue {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, ok := s.queues[sink]
	if !ok {
		q = s.newQueue(sink)
		s.queues[sink] = q
	}
	return q
}

// Reconcile implements relay.Store: pending deliveries of sinks that are no
// longer configured become dead letters with reason "sink removed".
func (s *Store) Reconcile(ctx context.Context, sinks []string) (int, error) {
	s.mu.Lock()
	s.configured = make(map[string]bool, len(sinks))
	for _, name := range sinks {
		s.configured[name] = true
	}
	var removed []*queue
	for name, q := range s.queues {
		if !slices.Contains(sinks, name) {
			removed = append(removed, q)
		}
	}
	s.mu.Unlock()
	moved := 0
	for _, q := range removed {
		n, err := q.parkAll(ctx, "sink removed")
		moved += n
		if err != nil {
			return moved, err
		}
	}
	return moved, nil
}

// Lookup implements relay.Store.
func (s *Store) Lookup(_ context.Context, id string) (*relay.EventRecord, error) {
	var rec *relay.EventRecord
	err := s.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket([]byte(bEvents)).Get([]byte(id))
		if v == nil {
			return relay.ErrNotFound
		}
		ev, meta, err := decodeEvent(id, v)
		if err != nil {
			return err
		}
		rec = &relay.EventRecord{Event: ev}
		deliv := tx.Bucket([]byte(bDeliv))
		for _, sink := range meta.Sinks {
			r, ok, err := getDeliv(deliv, id, sink)
			if err != nil {
				return err
			}
			if !ok { // never tried yet
				r = deliveryRecord{State: relay.StatePending, Since: meta.Received, Updated: meta.Received}
			}
			rec.Deliveries = append(rec.Deliveries, relay.DeliveryStatus{
				Sink: sink, State: r.State, Attempts: r.Attempts, LastError: r.LastErr,
				UpdatedAt: time.Unix(0, r.Updated).UTC(),
			})
		}
		return nil
	})
	return rec, err
}

// Recent implements relay.Store.
func (s *Store) Recent(_ context.Context, before string, limit int) ([]relay.EventSummary, error) {
	if limit <= 0 {
		limit = 50
	}
	var out []relay.EventSummary
	err := s.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket([]byte(bEvents)).Cursor()
		var k, v []byte
		if before == "" {
			k, v = c.Last()
		} else {
			k, v = c.Seek([]byte(before))
			if k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev()
			}
		}
		for ; k != nil && len(out) < limit; k, v = c.Prev() {
			m, _, err := decodeEventMeta(v)
			if err != nil {
				return err
			}
			out = append(out, relay.EventSummary{ID: string(k), Topic: m.Topic, ConversationID: m.Conv,
				ReceivedAt: time.Unix(0, m.Received).UTC(), Sinks: m.Sinks})
		}
		return nil
	})
	return out, err
}

// Stats implements relay.Store.
func (s *Store) Stats(context.Context) ([]relay.QueueStats, error) {
	s.mu.Lock()
	qs := make([]*queue, 0, len(s.queues))
	for _, q := range s.queues {
		qs = append(qs, q)
	}
	s.mu.Unlock()
	out := make([]relay.QueueStats, 0, len(qs))
	for _, q := range qs {
		out = append(out, q.stats())
	}
	slices.SortFunc(out, func(a, b relay.QueueStats) int {
		switch {
		case a.Sink < b.Sink:
			return -1
		case a.Sink > b.Sink:
			return 1
		}
		return 0
	})
	return out, nil
}

// KV implements relay.Store.
func (s *Store) KV(namespace string) relay.KV { return &kv{s: s, ns: namespace} }

type kv struct {
	s  *Store
	ns string
}

func (k *kv) key(key string) []byte { return []byte(k.ns + "\x00" + key) }

// A KV value is stored after the 8-byte time of its last Put, so that
// entries nobody wrote for Options.KVRetention can be pruned.
func (k *kv) Get(_ context.Context, key string) (string, bool, error) {
	var val string
	var ok bool
	err := k.s.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket([]byte(bKV)).Get(k.key(key))
		if len(v) >= 8 {
			val, ok = string(v[8:]), true
		}
		return nil
	})
	return val, ok, err
}

func (k *kv) Put(ctx context.Context, key, value string) error {
	v := append(u64(uint64(k.s.clock.Now().UnixNano())), value...)
	return k.s.write(ctx, func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte(bKV)).Put(k.key(key), v)
	}, nil)
}

func beU64(b []byte) uint64 {
	if len(b) < 8 {
		return 0
	}
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}
