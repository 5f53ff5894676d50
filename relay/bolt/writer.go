package bolt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"syscall"
	"time"

	"github.com/jonboulle/clockwork"
	bbolt "go.etcd.io/bbolt"
	bberrors "go.etcd.io/bbolt/errors"

	"github.com/chatrelay/chatrelay/relay"
)

// Writes take two goroutines, a pipeline:
//
//   - the logger owns the intake log: it takes every write that is waiting,
//     builds their records in order (deciding duplicates and queue sequence
//     numbers there), appends them with one write and one fdatasync, answers
//     each (durable), and passes the records on; the next group gathers
//     while this one syncs;
//   - the applier owns bbolt's write transactions: it applies the records it
//     was passed, as many as are waiting, in one transaction that also
//     records the last one's sequence number, and commits (bbolt's two
//     syncs), off the callers' path. It also prunes.
//
// Reads of what a caller was told is durable wait until the applier has
// caught up (caughtUp); deliveries are handed out from memory (the queues,
// the recent-events cache) as soon as their records are durable.

// entry is one write on its way through the logger.
type entry struct {
	// build returns the write's record; it runs on the logger in log order
	// (and again if the write is retried). false: nothing to write (a
	// duplicate), the entry succeeds as it is.
	build func() ([]byte, bool)
	// after runs once the record is durable, on the logger, in log order,
	// before done is closed.
	after func()
	// failed runs when the record could not be written, for writes nobody
	// waits for.
	failed func(error)
	err    error
	done   chan struct{}
}

// logged is a durable record on its way to the applier.
type logged struct {
	seq uint64
	rec []byte
}

// write submits a record and waits until it is durable.
func (s *Store) write(ctx context.Context, build func() ([]byte, bool), after func()) error {
	return s.submit(ctx, &entry{build: build, after: after, done: make(chan struct{})})
}

// writeOrRecordLater is write for a record that must land: if it cannot be
// written, the logger keeps it and writes it again later (recordLater), and
// deferred is true.
func (s *Store) writeOrRecordLater(ctx context.Context, build func() ([]byte, bool), after func()) (deferred bool, err error) {
	e := &entry{build: build, after: after, done: make(chan struct{})}
	e.failed = func(error) {
		deferred = true // written before done is closed, read after
		s.recordLater(build, after)
	}
	err = s.submit(ctx, e)
	return deferred && err != nil, err
}

// writeAsync submits a record without waiting for it: after runs once it is
// durable, failed if it cannot be written. It returns an error only if the
// write could not be submitted.
func (s *Store) writeAsync(ctx context.Context, build func() ([]byte, bool), after func(), failed func(error)) error {
	e := &entry{build: build, after: after, failed: failed, done: make(chan struct{})}
	select {
	case s.entries <- e:
		return nil
	case <-s.quit:
		return relay.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store) submit(ctx context.Context, e *entry) error {
	select {
	case s.entries <- e:
	case <-s.quit:
		return relay.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-e.done:
		return e.err
	case <-s.stopped:
		select {
		case <-e.done:
			return e.err
		default:
			return relay.ErrClosed
		}
	}
}

// record returns a build function for a fixed record.
func record(o *ops) func() ([]byte, bool) { return func() ([]byte, bool) { return o.b, true } }

// recordLater keeps a write that could not be made durable (an ack: the
// delivery was made; a dead letter: the destination refused it) and writes
// it again at the logger's next probe tick, until it lands. Meanwhile its
// delivery stays in flight, so that a store that cannot write makes nobody
// send the same event again and again; if the process stops first, the
// delivery is sent once more at the next start. It runs on the logger
// goroutine (from a failed write).
func (s *Store) recordLater(build func() ([]byte, bool), after func()) {
	s.unrecorded = append(s.unrecorded, &entry{build: build, after: after, done: make(chan struct{}),
		failed: func(error) { s.recordLater(build, after) }})
}

// logger owns the intake log (see above), and probe (every 2 s), made by
// Open.
func (s *Store) logger(probe clockwork.Ticker) {
	defer close(s.applyCh)
	defer probe.Stop()
	batch := make([]*entry, 0, s.opts.MaxBatch)
	var buf []byte
	for {
		select {
		case e := <-s.entries:
			batch = append(batch[:0], e)
		fill:
			for len(batch) < s.opts.MaxBatch {
				select {
				case e := <-s.entries:
					batch = append(batch, e)
				default:
					break fill
				}
			}
			buf = s.logBatch(batch, buf)
		case <-probe.Chan():
			if s.logHealth() != nil {
				buf = s.logBatch([]*entry{{build: func() ([]byte, bool) { return nil, true }, done: make(chan struct{})}}, buf)
			}
			if len(s.unrecorded) > 0 {
				retry := s.unrecorded
				s.unrecorded = nil
				buf = s.logBatch(retry, buf)
			}
		case <-s.quit:
			for {
				select {
				case e := <-s.entries:
					buf = s.logBatch([]*entry{e}, buf)
				default:
					return
				}
			}
		}
	}
}

// wakeAfterGroup has q's waiters told, once the afters of the group being
// written have run, that it changed: once per group rather than once per
// delivery added or settled. Logger goroutine only (an entry's after).
func (s *Store) wakeAfterGroup(q *queue) {
	if !slices.Contains(s.woken, q) {
		s.woken = append(s.woken, q)
	}
}

// maxGroupBytes bounds what one write of the log carries.
const maxGroupBytes = 8 << 20

// logBatch makes the entries durable: one write and one sync for all of
// them (more if they exceed maxGroupBytes). It returns buf for reuse.
func (s *Store) logBatch(batch []*entry, buf []byte) []byte {
	if s.nearMaxSize() {
		// The database may not have room for what the log holds: let it
		// apply all of it first, so that a full database refuses this
		// batch rather than the log taking in up to maxUnapplied more
		// than store.max_size allows.
		s.applyAll()
	}
	if err := s.applyHealth(); err != nil {
		// The database cannot take more: nothing new is accepted until it
		// can (the records already durable wait in the log).
		s.fail(batch, err)
		return buf
	}
	for len(batch) > 0 {
		buf = buf[:0]
		recs := make([]logged, 0, len(batch))
		written := make([]bool, len(batch))
		next := s.intake.next
		s.dedupe.begin()
		clear(s.kvGroup)
		n := 0
		for ; n < len(batch) && len(buf) < maxGroupBytes; n++ {
			rec, ok := batch[n].build()
			if !ok {
				continue
			}
			seq := next + uint64(len(recs))
			buf = frame(buf, seq, rec)
			recs = append(recs, logged{seq: seq, rec: rec})
			written[n] = true
		}
		group := batch[:n]
		batch = batch[n:]
		if len(recs) > 0 && !s.intake.fits(len(buf)) {
			if err := s.intake.rollover(); err != nil {
				s.log.Warn("intake log: could not start a new segment; writing on in the current one", "err", err)
			}
		}
		if len(recs) > 0 {
			if err := s.intake.write(buf, len(recs)); err != nil {
				s.dedupe.rollback()
				err = classifyWriteError(err)
				s.setLogHealth(err)
				s.fail(group, err)
				continue
			}
			s.durable.Store(recs[len(recs)-1].seq)
		}
		s.dedupe.commit()
		s.setLogHealth(nil)
		// Handed on before the callers hear back, so that whatever a caller
		// does next (a read, a pruning it waits for) finds the record at
		// the applier.
		if len(recs) > 0 {
			s.handOff(recs)
		}
		for i, e := range group {
			if written[i] && e.after != nil {
				e.after()
			}
		}
		for _, q := range s.woken {
			q.wake()
		}
		clear(s.woken)
		s.woken = s.woken[:0]
		for _, e := range group {
			close(e.done)
		}
		if err := s.intake.drop(s.applied.Load()); err != nil {
			s.log.Warn("intake log: could not delete applied segments", "err", err)
		}
	}
	return buf
}

// preparer makes the intake log's next segment file ahead of its use (see
// prepareSegment) when the logger asks for it. If it cannot, the log
// starts its next segment in an empty file, as the first one.
func (s *Store) preparer() {
	defer close(s.prepared)
	for {
		select {
		case <-s.intake.want:
		case <-s.quit:
			return
		}
		f, err := prepareSegment(s.intake.dir, s.quit)
		if err != nil {
			select {
			case <-s.quit:
				return
			default:
			}
			s.log.Warn("intake log: could not prepare the next segment; it starts empty", "err", err)
			f = nil // the answer: none
		}
		select {
		case s.intake.spare <- f: // one asked for at a time: there is room
		case <-s.quit:
			if f != nil {
				_ = f.Close()
				_ = os.Remove(f.Name())
			}
			return
		}
	}
}

// maxUnapplied bounds the bytes of durable records the database has not
// applied yet (they are held in memory until it has): past it, the logger
// waits for the applier, and so do the callers.
const maxUnapplied = 16 << 20

// handOff passes durable records on to the applier.
func (s *Store) handOff(recs []logged) {
	n := 0
	for _, r := range recs {
		n += len(r.rec)
	}
	for s.unapplied.Load() > maxUnapplied {
		s.mu.Lock()
		changed, stuck := s.appliedCh, s.applyErr != nil
		s.mu.Unlock()
		if stuck || s.unapplied.Load() <= maxUnapplied {
			break
		}
		s.nudge()
		<-changed
	}
	s.unapplied.Add(int64(n))
	s.applyCh <- recs
}

func (s *Store) fail(batch []*entry, err error) {
	for _, e := range batch {
		e.err = err
		if e.failed != nil {
			e.failed(err)
		}
		close(e.done)
	}
}

// applier owns bbolt's write transactions (see above). It stops once the
// logger has stopped and everything it passed on is applied (or, if the
// database cannot take it, left in the log for the next start). Its
// tickers, made by Open: prune (every PruneEvery), probe (2 s), release
// (10 s).
func (s *Store) applier(prune, probe, release clockwork.Ticker) {
	defer close(s.stopped)
	defer prune.Stop()
	defer probe.Stop()
	defer release.Stop()
	var pending []logged
	// The database commits at most every ApplyEvery or 8 MiB of records
	// (bbolt syncs twice per commit, and those syncs share the disk with the
	// log's), sooner when a reader waits for it (wantApply). This pacing is
	// I/O batching, on the real clock, like bbolt's own batch delay.
	var due <-chan time.Time
	var dueTimer *time.Timer
	var pendingBytes int
	last := time.Now()
	commit := func() {
		if dueTimer != nil {
			dueTimer.Stop()
			dueTimer, due = nil, nil
		}
		if len(pending) > 0 && s.applyHealth() == nil {
			pending = s.apply(pending)
		}
		pendingBytes = 0
		for _, r := range pending {
			pendingBytes += len(r.rec)
		}
		last = time.Now()
	}
	for {
		select {
		case recs, ok := <-s.applyCh:
			if !ok {
				if len(pending) > 0 {
					s.apply(pending)
				}
				return
			}
			pending = append(pending, recs...)
			for _, r := range recs {
				pendingBytes += len(r.rec)
			}
			switch wait := s.opts.ApplyEvery - time.Since(last); {
			case wait <= 0 || len(pending) >= 8*s.opts.MaxBatch || pendingBytes >= 8<<20:
				commit()
			case due == nil:
				dueTimer = time.NewTimer(wait)
				due = dueTimer.C
			}
		case <-due:
			dueTimer, due = nil, nil
			commit()
		case <-s.wantApply:
		drainWanted:
			for {
				select {
				case recs, ok := <-s.applyCh:
					if !ok {
						break drainWanted // seen again at the top
					}
					pending = append(pending, recs...)
				default:
					break drainWanted
				}
			}
			commit()
		case <-probe.Chan():
			switch {
			case len(pending) > 0:
				pending = s.apply(pending)
			case s.applyHealth() != nil:
				// Nothing waits (a pruning failed): see whether the database
				// takes a write again.
				err := s.db.Update(func(tx *bbolt.Tx) error {
					return tx.Bucket([]byte(bMeta)).Put([]byte("probe"), u64(uint64(s.clock.Now().UnixNano())))
				})
				if err != nil {
					err = classifyWriteError(err)
				}
				s.setApplyHealth(err)
			}
		case <-prune.Chan():
			// Apply what is durable first: pruning judges what the
			// database holds.
		drain:
			for {
				select {
				case recs, ok := <-s.applyCh:
					if !ok {
						break drain // seen again at the top
					}
					pending = append(pending, recs...)
				default:
					break drain
				}
			}
			if len(pending) > 0 && s.applyHealth() == nil {
				pending = s.apply(pending)
			}
			if s.applyHealth() == nil {
				s.prune()
			}
		case <-release.Chan():
			s.releaseMapped()
		}
	}
}

type recordError struct {
	seq uint64
	err error
}

func (e *recordError) Error() string { return fmt.Sprintf("intake record %d: %v", e.seq, e.err) }
func (e *recordError) Unwrap() error { return e.err }

// apply applies recs in one transaction and returns what is left to apply:
// nothing, or all of them when the database cannot take them now (full,
// I/O error; retried at the probe tick). A record that can never be applied
// (it does not fit the database's shape) is skipped with an error log.
func (s *Store) apply(recs []logged) []logged {
	if s.opts.hooks != nil && s.opts.hooks.beforeApply != nil {
		s.opts.hooks.beforeApply()
	}
	err := s.commitRecords(recs)
	var re *recordError
	if err != nil && errors.As(err, &re) && !resourceError(re.err) {
		for _, r := range recs {
			if err = s.commitRecords([]logged{r}); err != nil && errors.As(err, &re) && !resourceError(re.err) {
				s.log.Error("intake log: a record cannot be applied to the database; skipping it", "record", r.seq, "err", re.err)
				if err = s.commitRecords([]logged{{seq: r.seq}}); err == nil {
					s.unapplied.Add(-int64(len(r.rec)))
				}
			}
			if err != nil {
				break
			}
		}
	}
	if err != nil {
		s.setApplyHealth(classifyWriteError(err))
		return recs
	}
	s.setApplyHealth(nil)
	return nil
}

func (s *Store) commitRecords(recs []logged) error {
	last := recs[len(recs)-1].seq
	if last <= s.applied.Load() {
		return nil // applied before a failed batch was split
	}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		for i, r := range recs {
			if r.seq <= s.applied.Load() {
				continue
			}
			if err := applyRecord(tx, r.rec); err != nil {
				return &recordError{seq: r.seq, err: err}
			}
			if i%applyYield == applyYield-1 {
				// A commit applies thousands of records; without a pause
				// it holds one of the process's few Ps for milliseconds,
				// and the requests waiting for the logger wait with it.
				runtime.Gosched()
			}
		}
		return tx.Bucket([]byte(bMeta)).Put([]byte(keyApplied), u64(last))
	})
	if err != nil {
		return err
	}
	s.applied.Store(last)
	s.measureInUse()
	n := 0
	for _, r := range recs {
		n += len(r.rec)
	}
	s.unapplied.Add(-int64(n))
	s.mu.Lock()
	for k, v := range s.kvPending {
		if v.seq <= last {
			delete(s.kvPending, k)
		}
	}
	close(s.appliedCh)
	s.appliedCh = make(chan struct{})
	s.mu.Unlock()
	return nil
}

// nearMaxSize says whether the records not applied yet might not fit in
// the database under store.max_size: their bytes counted twice (a record
// takes more room in the database, with its indexes and page overhead,
// than in the log) on top of what the database uses.
func (s *Store) nearMaxSize() bool {
	return s.opts.MaxSize > 0 && s.dbInUse.Load()+2*s.unapplied.Load() >= s.opts.MaxSize
}

// applyAll waits until the database holds every durable record, or cannot
// take more (its health says why), or the store stops.
func (s *Store) applyAll() {
	for {
		s.mu.Lock()
		changed, stuck := s.appliedCh, s.applyErr != nil
		s.mu.Unlock()
		if stuck || s.unapplied.Load() <= 0 {
			return
		}
		s.nudge()
		select {
		case <-changed:
		case <-s.stopped:
			return
		}
	}
}

// measureInUse records how much of the database file is in use: its size
// less its free pages, which bbolt fills before it grows the file (and
// store.max_size bounds the file).
func (s *Store) measureInUse() {
	err := s.db.View(func(tx *bbolt.Tx) error {
		s.dbInUse.Store(tx.Size() - int64(s.db.Stats().FreeAlloc))
		return nil
	})
	if err != nil {
		s.log.Debug("could not measure the database's size", "err", err)
	}
}

// applyYield is how many records the applier applies between two chances
// for other goroutines to run.
const applyYield = 128

// keyApplied is where the meta bucket keeps the sequence number of the last
// intake record applied.
const keyApplied = "applied"

// resourceError says whether err is the database running out of room or
// failing I/O (apply again later) rather than a record that does not fit.
func resourceError(err error) bool {
	return errors.Is(err, bberrors.ErrMaxSizeReached) || errors.Is(err, syscall.ENOSPC) ||
		errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EIO) || errors.Is(err, bberrors.ErrDatabaseNotOpen)
}

// caughtUp waits until the database holds every record that was durable
// when it was called, so that a read sees what callers were told is
// stored. If the database cannot apply them now, it returns at once (the
// read sees what the database holds).
func (s *Store) caughtUp(ctx context.Context) error {
	target := s.durable.Load()
	for {
		s.mu.Lock()
		changed, stuck := s.appliedCh, s.applyErr != nil
		s.mu.Unlock()
		if s.applied.Load() >= target || stuck {
			return nil
		}
		s.nudge()
		select {
		case <-changed:
		case <-s.stopped:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// nudge asks the applier to commit what it holds now.
func (s *Store) nudge() {
	select {
	case s.wantApply <- struct{}{}:
	default:
	}
}

// classifyWriteError maps a failed write to relay.ErrFull (size bound or
// disk full) or relay.ErrUnavailable.
func classifyWriteError(err error) error {
	if errors.Is(err, relay.ErrFull) || errors.Is(err, relay.ErrUnavailable) {
		return err
	}
	if errors.Is(err, bberrors.ErrMaxSizeReached) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", relay.ErrFull, err)
	}
	return fmt.Errorf("%w: %w", relay.ErrUnavailable, err)
}

func (s *Store) setLogHealth(err error)   { s.setHealth(&s.logErr, err) }
func (s *Store) setApplyHealth(err error) { s.setHealth(&s.applyErr, err) }

func (s *Store) logHealth() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logErr
}

func (s *Store) applyHealth() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applyErr
}

// setHealth records the outcome of the last log write or database commit
// and logs when the store stops or starts writing again.
func (s *Store) setHealth(slot *error, err error) {
	s.mu.Lock()
	before := s.logErr != nil || s.applyErr != nil
	if (*slot == nil) == (err == nil) && err == nil {
		s.mu.Unlock()
		return
	}
	*slot = err
	after := s.logErr != nil || s.applyErr != nil
	if slot == &s.applyErr {
		close(s.appliedCh) // a caughtUp waiting for a stuck database returns
		s.appliedCh = make(chan struct{})
	}
	s.mu.Unlock()
	switch {
	case after && !before:
		s.log.Error("store cannot write; the receiver answers 503 until it can", "err", err)
	case !after && before:
		s.log.Info("store writes again")
	}
}

// Ready reports whether the store can write: nil, or why not
// (relay.ErrFull, relay.ErrUnavailable).
func (s *Store) Ready(context.Context) error {
	select {
	case <-s.quit:
		return relay.ErrClosed
	default:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logErr != nil {
		return s.logErr
	}
	return s.applyErr
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
