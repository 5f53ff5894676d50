// Package bolt is chatrelay's embedded store: an intake log, where a write
// becomes durable with one sequential append and one fdatasync per group of
// concurrent writes, in front of one bbolt file that applies the log's
// records in the background; with an in-memory scheduler per sink rebuilt
// from disk at start.
package bolt

import (
	"context"
	"encoding/binary"
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
	"sync/atomic"
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
	// DedupeWindow is how long a repeated body is answered
	// "duplicate" (default 24h).
	DedupeWindow time.Duration
	// KVRetention is how long a key/value entry (a conversation's thread)
	// is kept after it was last written (default 30 days).
	KVRetention time.Duration
	// PruneEvery is how often retention and dedupe pruning run (default 1m).
	PruneEvery time.Duration
	// MaxBatch bounds how many writes share one write and sync of the intake
	// log (default 1024).
	MaxBatch int
	// ApplyEvery is how often at most the database commits the records of
	// the intake log (default 250ms, or every 8 MiB of records; sooner when
	// a read waits for them).
	ApplyEvery time.Duration
	// LockTimeout is how long Open waits for another process's file lock
	// (default 1s).
	LockTimeout time.Duration
	Clock       clockwork.Clock
	Logger      *slog.Logger

	hooks *hooks // tests only
}

// hooks let the crash tests stop the process at chosen points.
type hooks struct {
	afterLogWrite func() // the group is written, not yet synced
	beforeApply   func() // the group is synced, not yet applied
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
	if o.ApplyEvery <= 0 {
		o.ApplyEvery = 250 * time.Millisecond
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

// Store implements relay.Store on a bbolt file with an intake log in front
// of it (see writer.go and intake.go).
type Store struct {
	db    *bbolt.DB
	opts  Options
	clock clockwork.Clock
	log   *slog.Logger

	intake    *intakeLog    // logger goroutine only (and Open, Close)
	entries   chan *entry   // writes, to the logger
	applyCh   chan []logged // durable records, logger to applier
	wantApply chan struct{} // a reader waits for the applier
	quit      chan struct{}
	stopped   chan struct{} // the applier (and so the logger) has stopped
	prepared  chan struct{} // the preparer has stopped
	closeMu   sync.Once

	durable   atomic.Uint64 // sequence number of the last durable record
	applied   atomic.Uint64 // sequence number of the last record the database holds
	unapplied atomic.Int64  // bytes of durable records handed to the applier and not applied yet
	dbInUse   atomic.Int64  // bytes of the database file in use (its size less its free pages), as of the last commit

	mu         sync.Mutex
	queues     map[string]*queue
	configured map[string]bool // set by Reconcile; nil until then
	logErr     error           // last log write outcome
	applyErr   error           // last database commit outcome
	appliedCh  chan struct{}   // closed and replaced when applied or applyErr changes
	kvPending  map[string]kvValue
	kvGroup    map[string][]byte // key/value writes of the group being built; logger goroutine only
	pruneFrom  []byte            // where the retention scan resumes; applier goroutine only
	dedupeFrom []byte            // where the dedupe-expiry scan resumes; applier goroutine only
	seqs       map[string]uint64 // last queue sequence number per sink; logger goroutine only (and Open)
	dedupe     *dedupeIndex
	recent     *recentEvents
	unrecorded []*entry   // acks and dead letters whose write failed, retried by the logger; logger goroutine only
	woken      []*queue   // queues the group's afters changed, told once they have run; logger goroutine only
	adminMu    sync.Mutex // one dead-letter replay or purge at a time
}

// kvValue is a key/value entry durable in the log and not yet applied.
type kvValue struct {
	v   []byte
	seq uint64
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
			// bbolt keeps its syncs (no NoSync, even though the intake log
			// already makes every write durable): a commit writes its pages,
			// syncs, then writes the meta page that points at them, and
			// pages carry no checksum. Without the first sync, a power loss
			// can leave a meta page on disk whose pages are not, and the file
			// opens with a damaged tree the log cannot repair (a replay starts
			// from the applied position in that same file). A kill -9 cannot
			// show this (the page cache survives it). Measured in one session
			// (BENCHMARKS.md, issue 17): NoSync gave no gain, as the commits
			// are off the request's path, every 250 ms.
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
		db:        db,
		opts:      opts,
		clock:     opts.Clock,
		log:       opts.Logger,
		entries:   make(chan *entry, 4*opts.MaxBatch),
		applyCh:   make(chan []logged, 64), // and at most maxUnapplied bytes
		wantApply: make(chan struct{}, 1),
		quit:      make(chan struct{}),
		stopped:   make(chan struct{}),
		prepared:  make(chan struct{}),
		queues:    make(map[string]*queue),
		appliedCh: make(chan struct{}),
		kvPending: make(map[string]kvValue),
		kvGroup:   make(map[string][]byte),
		seqs:      make(map[string]uint64),
		dedupe:    newDedupeIndex(),
		recent:    newRecentEvents(),
	}
	if err := guard(path, func() error { return s.init(dir) }); err != nil {
		if cerr := db.Close(); cerr != nil {
			s.log.Warn("closing the store after it could not start", "err", cerr)
		}
		if errors.Is(err, errUnreadable) {
			err = damaged(path, "is damaged: "+err.Error())
		}
		return nil, fmt.Errorf("store.path %s: %w", dir, err)
	}
	s.releaseMapped() // the rebuild read every pending delivery
	// The tickers are made here, not in the goroutines: they exist once
	// Open returns, so that a fake clock advanced right after Open moves
	// them (the goroutines may not have run yet on a loaded machine).
	go s.logger(s.clock.NewTicker(2 * time.Second))
	go s.applier(s.clock.NewTicker(s.opts.PruneEvery), s.clock.NewTicker(2*time.Second), s.clock.NewTicker(10*time.Second))
	go s.preparer()
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

// init creates the buckets, applies the intake log's records that the
// database does not hold yet, and rebuilds every sink's scheduler from
// disk.
func (s *Store) init(dir string) error {
	fresh := false
	err := s.db.Update(func(tx *bbolt.Tx) error {
		for _, name := range bucketNames {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				if errors.Is(err, bberrors.ErrIncompatibleValue) { // a plain value where a bucket belongs
					return fmt.Errorf("%w: bucket %s: %w", errUnreadable, name, err)
				}
				return err
			}
		}
		meta := tx.Bucket([]byte(bMeta))
		v := meta.Get([]byte("schema"))
		if v != nil && string(v) != fmt.Sprint(schemaVersion) {
			if _, err := strconv.Atoi(string(v)); err != nil {
				return fmt.Errorf("%w: schema version %q", errUnreadable, v)
			}
			return fmt.Errorf("store schema %s is not %d: this chatrelay cannot read it", v, schemaVersion)
		}
		fresh = v == nil
		return meta.Put([]byte("schema"), []byte(fmt.Sprint(schemaVersion)))
	})
	if err != nil {
		return err
	}
	logDir := filepath.Join(dir, intakeDirName)
	if fresh {
		if err := s.setAsideOldLog(logDir); err != nil {
			return err
		}
	}
	var applied uint64
	if err := s.db.View(func(tx *bbolt.Tx) error {
		applied = beU64(tx.Bucket([]byte(bMeta)).Get([]byte(keyApplied)))
		return nil
	}); err != nil {
		return err
	}
	s.applied.Store(applied)
	var batch []logged
	var batchBytes int
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := s.commitRecords(batch)
		var re *recordError
		if err != nil && errors.As(err, &re) && !resourceError(re.err) {
			err = nil
			for _, r := range batch {
				if err = s.commitRecords([]logged{r}); err != nil && errors.As(err, &re) && !resourceError(re.err) {
					s.log.Error("intake log: a record cannot be applied to the database; skipping it", "record", r.seq, "err", re.err)
					err = s.commitRecords([]logged{{seq: r.seq}})
				}
				if err != nil {
					break
				}
			}
		}
		if err != nil {
			return fmt.Errorf("applying the intake log's records to the database: %w; "+
				"if the store is full, raise store.max_size or free disk space", classifyWriteError(err))
		}
		batch, batchBytes = batch[:0], 0
		return nil
	}
	replayed := 0
	l, torn, err := openIntake(logDir, applied, s.log, func(seq uint64, rec []byte) error {
		batch = append(batch, logged{seq: seq, rec: rec})
		batchBytes += len(rec)
		replayed++
		if len(batch) >= 1024 || batchBytes >= 4<<20 {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.intake = l
	if s.opts.hooks != nil {
		l.afterWrite = s.opts.hooks.afterLogWrite
	}
	if err := flush(); err != nil {
		return errors.Join(err, l.close())
	}
	if torn > 0 {
		s.log.Warn("intake log: dropped a record whose write did not complete (a stop between write and sync); "+
			"it was never answered", "bytes", torn)
	}
	if replayed > 0 {
		s.log.Info("intake log: applied the records the database did not hold yet", "records", replayed)
	}
	s.durable.Store(s.intake.next - 1)
	s.unapplied.Store(0) // the replay applied records it never counted
	s.measureInUse()
	if err := s.intake.drop(s.applied.Load()); err != nil {
		s.log.Warn("intake log: could not delete applied segments", "err", err)
	}
	err = s.db.View(func(tx *bbolt.Tx) error {
		from, err := s.dedupe.load(tx, s.clock.Now(), s.opts.DedupeWindow)
		if err != nil {
			return err
		}
		s.dedupeFrom = from
		qs := tx.Bucket([]byte(bQueues))
		deliv := tx.Bucket([]byte(bDeliv))
		err = qs.ForEachBucket(func(name []byte) error {
			q := s.newQueue(string(name))
			qb := qs.Bucket(name)
			s.seqs[q.sink] = qb.Sequence()
			if k, _ := qb.Cursor().Last(); k != nil {
				s.seqs[q.sink] = max(s.seqs[q.sink], beU64(k))
			}
			err := qb.ForEach(func(k, v []byte) error {
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
	if err != nil {
		return errors.Join(err, s.intake.close())
	}
	return nil
}

// setAsideOldLog moves an intake log away from a database that was just
// created: it belongs to a store file that was moved aside or removed, and
// its records mean nothing to a new one.
func (s *Store) setAsideOldLog(logDir string) error {
	segs, err := listSegments(logDir)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && len(segs) == 0) {
		return nil
	}
	if err != nil {
		return err
	}
	aside := fmt.Sprintf("%s.aside-%d", logDir, s.clock.Now().Unix())
	if err := os.Rename(logDir, aside); err != nil {
		return err
	}
	s.log.Warn("intake log: the store file is new, so the intake log of the previous one was set aside", "moved_to", aside)
	return nil
}

// Close stops the logger (after it has written what was queued) and the
// applier (after it has applied what was written), wakes every waiting Next
// with ErrClosed and closes the files.
func (s *Store) Close() error {
	s.closeMu.Do(func() { close(s.quit) })
	<-s.stopped
	<-s.prepared
	s.mu.Lock()
	for _, q := range s.queues {
		q.close()
	}
	s.mu.Unlock()
	if err := s.intake.drop(s.applied.Load()); err != nil {
		s.log.Warn("intake log: could not delete applied segments", "err", err)
	}
	err := s.intake.close()
	return errors.Join(s.db.Close(), err)
}

// Append implements relay.Store. One event is one record of the intake log:
// the event, one queue entry per sink, and what it adds to its minute's
// usage figures (usageOps). The dedupe index is in memory
// (see dedupeIndex), and everything is encoded before it reaches the
// logger, which only decides duplicates and numbers the queue entries.
func (s *Store) Append(ctx context.Context, ev *relay.Event, sinks []string) (relay.Accepted, error) {
	id, err := uuid.Parse(ev.ID)
	if err != nil {
		return relay.Accepted{}, fmt.Errorf("event id %q is not a UUID: %w", ev.ID, err)
	}
	hash := ev.DedupeKey()
	key := keyOf(hash[:])
	now := s.clock.Now().UnixNano()
	received := ev.ReceivedAt.UnixNano()
	ordering := ev.OrderingKey()
	entry, err := json.Marshal(queueEntry{EventID: ev.ID, Key: ordering, Received: received, Since: now})
	if err != nil {
		return relay.Accepted{}, err
	}
	var o ops
	seqAt, err := o.appendRecord(ev, sinks, hash[:], entry)
	if err != nil {
		return relay.Accepted{}, err
	}
	o.b = append(o.b, usageOps(ev, s.clock.Now()).b...)
	var acc relay.Accepted
	var items []queued
	err = s.write(ctx, func() ([]byte, bool) {
		acc, items = relay.Accepted{ID: ev.ID}, items[:0]
		if e, ok := s.dedupe.lookup(key); ok && time.Duration(now-e.at) < s.opts.DedupeWindow {
			acc = relay.Accepted{ID: e.id.String(), Duplicate: true}
			return nil, false
		}
		for i, sink := range sinks {
			s.seqs[sink]++
			seq := s.seqs[sink]
			binary.BigEndian.PutUint64(o.b[seqAt[i]:], seq)
			items = append(items, queued{sink: sink, key: ordering, it: &item{seq: seq, id: id,
				received: received, since: now, due: now}})
		}
		s.dedupe.add(key, dedupeEntry{at: now, id: id})
		return o.b, true
	}, func() {
		if len(items) > 0 {
			s.recent.put(id, ev)
		}
		for _, q := range items {
			q.it.written = s.intake.next - 1
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
func (s *Store) Lookup(ctx context.Context, id string) (*relay.EventRecord, error) {
	if err := s.caughtUp(ctx); err != nil {
		return nil, err
	}
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
func (s *Store) Recent(ctx context.Context, before string, limit int) ([]relay.EventSummary, error) {
	if err := s.caughtUp(ctx); err != nil {
		return nil, err
	}
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
			k, _ = c.Seek([]byte(before))
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
// entries nobody wrote for Options.KVRetention can be pruned. A value that
// is durable but not yet applied is answered from memory.
func (k *kv) Get(_ context.Context, key string) (string, bool, error) {
	full := k.key(key)
	k.s.mu.Lock()
	p, pending := k.s.kvPending[string(full)]
	k.s.mu.Unlock()
	if pending {
		return string(p.v[8:]), true, nil
	}
	var val string
	var ok bool
	err := k.s.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket([]byte(bKV)).Get(full)
		if len(v) >= 8 {
			val, ok = string(v[8:]), true
		}
		return nil
	})
	return val, ok, err
}

func (k *kv) Put(ctx context.Context, key, value string) error {
	full, v, rec := k.put(key, value)
	return k.s.write(ctx, func() ([]byte, bool) {
		k.s.kvGroup[string(full)] = v // for a Swap later in the group
		return rec, true
	}, k.pending(full, v))
}

// put returns the full key, the stored value and the record of a write of
// value under key.
func (k *kv) put(key, value string) (full, v, rec []byte) {
	full = k.key(key)
	v = append(u64(uint64(k.s.clock.Now().UnixNano())), value...)
	var o ops
	o.put(bKV, "", full, v)
	return full, v, o.b
}

// pending answers Get with v until the database holds it.
func (k *kv) pending(full, v []byte) func() {
	return func() {
		k.s.mu.Lock()
		k.s.kvPending[string(full)] = kvValue{v: v, seq: k.s.intake.next - 1}
		k.s.mu.Unlock()
	}
}

var _ relay.Swapper = (*kv)(nil)

// Swap implements relay.Swapper. The comparison is made on the logger,
// which builds every write's record in log order, against the value the
// writes before it leave (the group's own, then those durable but not yet
// applied, then the database's): no write can come between the
// comparison and this one.
func (k *kv) Swap(ctx context.Context, key, old, value string) (bool, error) {
	full, v, rec := k.put(key, value)
	var swapped bool
	var readErr error
	err := k.s.write(ctx, func() ([]byte, bool) {
		cur, err := k.s.kvLatest(full)
		swapped, readErr = err == nil && cur == old, err
		if !swapped {
			return nil, false
		}
		k.s.kvGroup[string(full)] = v
		return rec, true
	}, k.pending(full, v))
	if err == nil {
		err = readErr
	}
	if err != nil {
		return false, err
	}
	return swapped, nil
}

// kvLatest is what a write built now would find under full: the group's
// own write, one durable but not applied, or the database's. It runs on
// the logger.
func (s *Store) kvLatest(full []byte) (string, error) {
	if v, ok := s.kvGroup[string(full)]; ok {
		return string(v[8:]), nil
	}
	s.mu.Lock()
	p, pending := s.kvPending[string(full)]
	s.mu.Unlock()
	if pending {
		return string(p.v[8:]), nil
	}
	var val string
	err := s.db.View(func(tx *bbolt.Tx) error {
		if v := tx.Bucket([]byte(bKV)).Get(full); len(v) >= 8 {
			val = string(v[8:])
		}
		return nil
	})
	return val, err
}

func beU64(b []byte) uint64 {
	if len(b) < 8 {
		return 0
	}
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}
