package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The intake log is where a write becomes durable: every store operation is
// appended to it as one framed record, and a group of records waiting
// together is written with one write and synced with one fdatasync. The
// database then applies the records in log order, off the request's path,
// committing with its own syncs at its own pace (bbolt's commit writes
// pages at scattered offsets and syncs twice; the log's is one sequential
// append). The database keeps the sequence number of the last record it
// applied, in the same transaction; at start, the records past it are
// applied again (replay).
//
// A record: payload length (u32), CRC-32C of the rest (u32), sequence
// number (u64), payload (the operations, see ops.go). Sequence numbers
// follow each other without gaps across segments. Segments are files
// named after the sequence number of their first record; once the
// database has applied (and synced) every record of a segment that is not
// the last, the segment is deleted.
//
// Segments after the first are written into files made ahead of time,
// zero-filled to segmentBytes and synced (prepareSegment): a write then
// overwrites blocks that are allocated and initialized, and its fdatasync
// flushes data alone, without a journal commit of the file's size and
// block map (on ext4, measured: 130-140 us and 50-56 us of CPU per write
// and sync of 10 KB instead of 190-260 us and 80-100 us when the file
// grows). A segment's records therefore end either at the end of the file
// or where zeros run to its end; a record header is never all zeros.

const (
	intakeDirName = "intake"
	segmentExt    = ".log"
	// preparedName is the next segment's file while it is made.
	preparedName = "prepared.tmp"
	frameHeader  = 16
	// segmentBytes is where a segment ends and the next one starts.
	segmentBytes = 16 << 20
	// maxRecordBytes bounds one record (an event of max_body_bytes and its
	// meta fit many times over): a length beyond it is damage.
	maxRecordBytes = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// frame appends the framed record seq, payload to b.
func frame(b []byte, seq uint64, payload []byte) []byte {
	var h [frameHeader]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(len(payload)))
	binary.LittleEndian.PutUint64(h[8:], seq)
	crc := crc32.Update(crc32.Checksum(h[8:16], castagnoli), castagnoli, payload)
	binary.LittleEndian.PutUint32(h[4:], crc)
	b = append(b, h[:]...)
	return append(b, payload...)
}

type segment struct {
	first uint64 // sequence number of its first record
	path  string
}

// intakeLog is the log's files. Only the logger goroutine uses it once the
// store is open.
type intakeLog struct {
	dir  string
	segs []segment // oldest first; the last is the one written
	f    *os.File  // the last segment
	off  int64     // end of its last synced record
	next uint64    // sequence number of the next record

	// The next segment's file, made by the store's preparer goroutine:
	// asked for on want once the current segment is half full, handed over
	// on spare (nil: it could not be made). One at a time.
	want   chan struct{}
	spare  chan *os.File
	wanted bool // asked for, and the answer not taken yet

	afterWrite func() // tests: between write and sync
	log        *slog.Logger
}

func segmentName(first uint64) string { return fmt.Sprintf("%020d%s", first, segmentExt) }

// listSegments returns the segments in dir, oldest first.
func listSegments(dir string) ([]segment, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var segs []segment
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, segmentExt) {
			continue
		}
		first, err := strconv.ParseUint(strings.TrimSuffix(name, segmentExt), 10, 64)
		if err != nil {
			continue
		}
		segs = append(segs, segment{first: first, path: filepath.Join(dir, name)})
	}
	slices.SortFunc(segs, func(a, b segment) int {
		switch {
		case a.first < b.first:
			return -1
		case a.first > b.first:
			return 1
		}
		return 0
	})
	return segs, nil
}

// logDamage is the error for a damaged intake log.
func logDamage(dir, what string) error {
	return &damageError{path: dir, what: "(the intake log) " + what, fix: fmt.Sprintf(
		"restore the store directory from a backup, or move the log aside (mv %s %s.damaged) to start "+
			"from what the database holds; the events it accepted last, if not yet in the database, are then lost", dir, dir)}
}

// openIntake opens the log in dir (creating it), calls replay for every
// record after applied in order, truncates a torn last record, and leaves
// the log ready to append. A damaged log (a bad record before the last
// one, records missing between the database and the log) is a damageError.
func openIntake(dir string, applied uint64, logger *slog.Logger, replay func(seq uint64, payload []byte) error) (_ *intakeLog, torn int64, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, 0, err
	}
	segs, err := listSegments(dir)
	if err != nil {
		return nil, 0, err
	}
	// A next segment's file that was being made when the process stopped.
	if err := os.Remove(filepath.Join(dir, preparedName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, 0, err
	}
	l := &intakeLog{dir: dir, next: applied + 1, log: logger, want: make(chan struct{}, 1), spare: make(chan *os.File, 1)}
	prev := uint64(0) // sequence number of the last record read
	for i, sg := range segs {
		last := i == len(segs)-1
		if prev != 0 && sg.first != prev+1 {
			return nil, 0, logDamage(dir, fmt.Sprintf("segment %s starts at record %d, after record %d", filepath.Base(sg.path), sg.first, prev))
		}
		b, err := os.ReadFile(sg.path)
		if err != nil {
			return nil, 0, err
		}
		off := 0
		expect := sg.first
		for off < len(b) {
			if zeros(b[off:min(off+frameHeader, len(b))]) && zeros(b[off:]) {
				break // the rest of a prepared segment, never written
			}
			bad := ""
			var seq uint64
			var payload []byte
			switch {
			case len(b)-off < frameHeader:
				bad = "a cut-off record header"
			default:
				h := b[off : off+frameHeader]
				n := uint64(binary.LittleEndian.Uint32(h[0:]))
				seq = binary.LittleEndian.Uint64(h[8:])
				switch {
				case n > maxRecordBytes || n > uint64(len(b)-off-frameHeader):
					bad = "a cut-off record"
				default:
					payload = b[off+frameHeader : off+frameHeader+int(n)]
					crc := crc32.Update(crc32.Checksum(h[8:16], castagnoli), castagnoli, payload)
					if crc != binary.LittleEndian.Uint32(h[4:]) {
						bad = "a record whose checksum does not match"
					} else if seq != expect {
						bad = fmt.Sprintf("record %d where record %d belongs", seq, expect)
					}
				}
			}
			if bad != "" {
				if !last || syncedAfter(b, off, applied) {
					return nil, 0, logDamage(dir, fmt.Sprintf("segment %s has %s at byte %d", filepath.Base(sg.path), bad, off))
				}
				// The last write did not complete (a crash between write and
				// sync, a full disk): nothing after it was ever answered.
				// The rest of the file goes (a prepared segment's zeros
				// with it: this one grows as it is written).
				// What it reports as torn ends at the last byte that is not
				// zero.
				torn = int64(len(bytes.TrimRight(b[off:], "\x00")))
				if err := truncateSync(sg.path, int64(off)); err != nil {
					return nil, 0, err
				}
				break
			}
			if seq > applied {
				if prev < applied && seq != applied+1 {
					return nil, 0, logDamage(dir, fmt.Sprintf("records %d to %d are missing", applied+1, seq-1))
				}
				if err := replay(seq, payload); err != nil {
					return nil, 0, err
				}
			}
			prev, expect = seq, seq+1
			off += frameHeader + len(payload)
		}
		if last {
			l.off = int64(off) // zeros may follow, up to the prepared size
		}
	}
	if prev > applied {
		l.next = prev + 1
	} else if prev != 0 && prev < applied {
		// The database is ahead of the log: the log's last records were
		// applied and synced, then the log lost them (it was restored from
		// an older copy). Start a new segment past what the database holds.
		segs = append(segs, segment{first: applied + 1, path: filepath.Join(dir, segmentName(applied+1))})
		l.off = 0
	} else if len(segs) > 0 && prev == 0 && segs[len(segs)-1].first != applied+1 {
		// Only empty segments, named for another position.
		segs = append(segs, segment{first: applied + 1, path: filepath.Join(dir, segmentName(applied+1))})
		l.off = 0
	}
	if len(segs) == 0 {
		segs = append(segs, segment{first: applied + 1, path: filepath.Join(dir, segmentName(applied+1))})
	}
	l.segs = segs
	active := segs[len(segs)-1]
	f, err := os.OpenFile(active.path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, 0, err
	}
	l.f = f
	if err := syncDir(dir); err != nil {
		return nil, 0, errors.Join(err, f.Close())
	}
	return l, torn, nil
}

// zeros says whether b is all zero bytes.
func zeros(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// syncedAfter says whether a whole record the database already holds (so
// it was synced) follows the bad bytes at off: then they are damage, not
// the tail of a write that a crash cut short.
func syncedAfter(b []byte, off int, applied uint64) bool {
	for i := off + 1; i+frameHeader <= len(b); i++ {
		h := b[i : i+frameHeader]
		n := int(binary.LittleEndian.Uint32(h[0:]))
		seq := binary.LittleEndian.Uint64(h[8:])
		if seq == 0 || seq > applied || n > len(b)-i-frameHeader {
			continue
		}
		crc := crc32.Update(crc32.Checksum(h[8:16], castagnoli), castagnoli, b[i+frameHeader:i+frameHeader+n])
		if crc == binary.LittleEndian.Uint32(h[4:]) {
			return true
		}
	}
	return false
}

func truncateSync(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Sync()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// write appends buf (framed records starting at l.next, n of them) and syncs
// it. On failure the segment is cut back to its last synced record, so that
// nothing of a write the callers were told failed can come back at a
// replay; if even that fails, the error says so and the log is not written
// again until a later write (the probe) finds it whole.
func (l *intakeLog) write(buf []byte, n int) error {
	if _, err := l.f.WriteAt(buf, l.off); err != nil {
		return l.undo(err)
	}
	if l.afterWrite != nil {
		l.afterWrite()
	}
	if err := fdatasync(l.f); err != nil {
		return l.undo(err)
	}
	l.off += int64(len(buf))
	l.next += uint64(n)
	return nil
}

func (l *intakeLog) undo(cause error) error {
	if err := l.f.Truncate(l.off); err != nil {
		return fmt.Errorf("%w (and cutting the log back failed: %w)", cause, err)
	}
	return cause
}

// fits says whether n more bytes fit in the current segment (an empty one
// takes anything), and asks for the next segment's file once it is half
// full.
func (l *intakeLog) fits(n int) bool {
	if l.off >= segmentBytes/2 && !l.wanted {
		select {
		case l.want <- struct{}{}:
			l.wanted = true
		default:
		}
	}
	return l.off == 0 || l.off+int64(n) <= segmentBytes
}

// rollover starts a new segment at the next record: in the prepared file
// if it is ready, else in a new empty one.
func (l *intakeLog) rollover() error {
	sg := segment{first: l.next, path: filepath.Join(l.dir, segmentName(l.next))}
	var f *os.File
	select {
	case f = <-l.spare:
		l.wanted = false
		if f != nil {
			if err := os.Rename(f.Name(), sg.path); err != nil {
				_ = f.Close()
				_ = os.Remove(f.Name())
				f = nil
			}
		}
	default:
	}
	if f == nil {
		var err error
		if f, err = os.OpenFile(sg.path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600); err != nil {
			return err
		}
	}
	if err := syncDir(l.dir); err != nil {
		return errors.Join(err, f.Close(), os.Remove(sg.path))
	}
	// The old segment is synced: a failed close loses nothing.
	if err := l.f.Close(); err != nil {
		l.log.Warn("intake log: closing a full segment", "err", err)
	}
	l.f, l.off = f, 0
	l.segs = append(l.segs, sg)
	return nil
}

// prepareSegment makes the next segment's file in dir: zero-filled to
// segmentBytes a MiB at a time, each synced before the next is written
// (one flush of 16 MiB would hold up the log's syncs behind it for tens of
// milliseconds), and synced whole. quit stops it.
func prepareSegment(dir string, quit <-chan struct{}) (_ *os.File, err error) {
	path := filepath.Join(dir, preparedName)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(path)
		}
	}()
	chunk := make([]byte, 1<<20)
	for off := int64(0); off < segmentBytes; off += int64(len(chunk)) {
		select {
		case <-quit:
			return nil, errors.New("stopped")
		default:
		}
		if _, err := f.WriteAt(chunk, off); err != nil {
			return nil, err
		}
		if err := fdatasync(f); err != nil {
			return nil, err
		}
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	return f, nil
}

// drop deletes the segments whose records the database has all applied
// and synced.
func (l *intakeLog) drop(applied uint64) error {
	// Segment i holds records up to segs[i+1].first-1.
	drop := 0
	for drop < len(l.segs)-1 && l.segs[drop+1].first-1 <= applied {
		if err := os.Remove(l.segs[drop].path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			break
		}
		drop++
	}
	l.segs = l.segs[drop:]
	return nil
}

// close closes the current segment, and a prepared one nobody took.
func (l *intakeLog) close() error {
	select {
	case f := <-l.spare:
		if f != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	default:
	}
	return l.f.Close()
}
