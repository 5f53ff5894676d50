package bolt

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The log's segments after the first are written into files zero-filled
// ahead of time: records written there, in a segment before the last and
// in the last, read back in order at open, and the log goes on right after
// the last record, not at the end of the file.
func TestPreparedSegments(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A next segment's file half made when the process stopped: not a
	// segment, and removed at open.
	if err := os.WriteFile(filepath.Join(dir, preparedName), make([]byte, 5000), 0o600); err != nil {
		t.Fatal(err)
	}
	l, torn, err := openIntake(dir, 0, slog.New(slog.DiscardHandler), func(uint64, []byte) error { t.Fatal("replay of an empty log"); return nil })
	if err != nil || torn != 0 {
		t.Fatalf("open: %v, torn %d", err, torn)
	}
	var want []string
	write := func(n int) {
		t.Helper()
		var buf []byte
		for i := range n {
			p := fmt.Sprintf("record %d", int(l.next)+i)
			buf = frame(buf, l.next+uint64(i), []byte(p))
			want = append(want, p)
		}
		if err := l.write(buf, n); err != nil {
			t.Fatal(err)
		}
	}
	rollover := func() {
		t.Helper()
		f, err := prepareSegment(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := f.Stat(); err != nil || st.Size() != segmentBytes {
			t.Fatalf("prepared segment: %v, %d bytes, want %d", err, st.Size(), segmentBytes)
		}
		l.spare <- f
		l.wanted = true
		if err := l.rollover(); err != nil {
			t.Fatal(err)
		}
		if l.wanted || len(l.spare) != 0 {
			t.Fatal("the prepared segment was not taken")
		}
	}
	write(3)
	rollover()
	write(5)
	write(2)
	rollover()
	write(4)
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	segs, err := listSegments(dir)
	if err != nil || len(segs) != 3 {
		t.Fatalf("segments: %v, %v", segs, err)
	}
	for _, sg := range segs[1:] {
		b, err := os.ReadFile(sg.path)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != segmentBytes || !zeros(b[len(b)-1<<20:]) {
			t.Fatalf("%s: %d bytes, not a prepared segment", filepath.Base(sg.path), len(b))
		}
	}
	if _, err := os.Stat(filepath.Join(dir, preparedName)); !os.IsNotExist(err) {
		t.Fatalf("the prepared file is left under its own name: %v", err)
	}

	var got []string
	l, torn, err = openIntake(dir, 0, slog.New(slog.DiscardHandler), func(seq uint64, p []byte) error {
		if want := fmt.Sprintf("record %d", seq); string(p) != want {
			t.Errorf("record %d reads %q", seq, p)
		}
		got = append(got, string(p))
		return nil
	})
	if err != nil || torn != 0 {
		t.Fatalf("reopen: %v, torn %d", err, torn)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("replayed %q, want %q", got, want)
	}
	end := l.off
	write(1)
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(segs[2].path)
	if err != nil {
		t.Fatal(err)
	}
	if rec := frame(nil, 15, []byte("record 15")); !bytes.Equal(b[end:end+int64(len(rec))], rec) {
		t.Fatalf("the log went on at byte %d of %d: %q", end, len(b), b[end:end+32])
	}
	got = got[:0]
	l, _, err = openIntake(dir, 12, slog.New(slog.DiscardHandler), func(_ uint64, p []byte) error { got = append(got, string(p)); return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	if want := []string{"record 13", "record 14", "record 15"}; !slices.Equal(got, want) {
		t.Fatalf("replayed after record 12: %q, want %q", got, want)
	}
}

// Bytes other than zeros in a prepared segment's tail: in the last
// segment, a write that did not complete (cut off, nothing after it was
// answered); in a segment before the last, damage.
func TestPreparedSegmentTail(t *testing.T) {
	t.Parallel()
	junk := []byte{9, 0, 0, 0, 1, 2, 3, 4, 7}
	tests := []struct {
		name    string
		segment int    // which of the two segments gets the bytes
		at      int    // where, from the end of the segment's last record
		bytes   []byte // written there
		damage  bool
		records int   // replayed, when not damage
		torn    int64 // bytes reported torn: up to the last one not zero
	}{
		{"last segment, right after its last record", 1, 0, junk, false, 6, 9},
		{"last segment, further on", 1, 5000, junk, false, 6, 5009},
		// A write cut short: the last record's payload (7 bytes) partly
		// zeros, or its header not written while what follows it was.
		{"last segment, its last record's end not written", 1, -4, make([]byte, 4), false, 5, 19},
		{"last segment, its last record's header not written", 1, -23, make([]byte, frameHeader), false, 5, 23},
		{"segment before the last, right after its last record", 0, 0, junk, true, 0, 0},
		{"segment before the last, further on", 0, 5000, junk, true, 0, 0},
		{"segment before the last, its last record's end zeroed", 0, -4, make([]byte, 4), true, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			l, _, err := openIntake(dir, 0, slog.New(slog.DiscardHandler), func(uint64, []byte) error { return nil })
			if err != nil {
				t.Fatal(err)
			}
			var ends []int64
			for range 2 {
				f, err := prepareSegment(dir, nil)
				if err != nil {
					t.Fatal(err)
				}
				l.spare <- f
				if err := l.rollover(); err != nil {
					t.Fatal(err)
				}
				var buf []byte
				for i := range 3 {
					buf = frame(buf, l.next+uint64(i), []byte("payload"))
				}
				if err := l.write(buf, 3); err != nil {
					t.Fatal(err)
				}
				ends = append(ends, l.off)
			}
			if err := l.close(); err != nil {
				t.Fatal(err)
			}
			segs, err := listSegments(dir)
			if err != nil {
				t.Fatal(err)
			}
			segs = segs[len(segs)-2:] // the first one, empty, was replaced
			f, err := os.OpenFile(segs[tt.segment].path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(tt.bytes, ends[tt.segment]+int64(tt.at)); err != nil {
				t.Fatal(err)
			}
			f.Close()
			n := 0
			l, torn, err := openIntake(dir, 0, slog.New(slog.DiscardHandler), func(uint64, []byte) error { n++; return nil })
			if tt.damage {
				if _, ok := err.(*damageError); !ok {
					t.Fatalf("open: %v, want damage", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer l.close()
			end := ends[1] - int64(6-tt.records)*(frameHeader+7) // a record of "payload" is 23 bytes
			if n != tt.records || torn != tt.torn || l.off != end {
				t.Fatalf("%d records replayed (want %d), %d torn bytes (want %d), the log goes on at %d (want %d)",
					n, tt.records, torn, tt.torn, l.off, end)
			}
			if st, err := os.Stat(segs[1].path); err != nil || st.Size() != end {
				t.Fatalf("the last segment after the cut: %v, want %d bytes (the tail and its zeros cut off)", err, end)
			}
		})
	}
}

// BenchmarkIntakeWrite measures one group's write and fdatasync (32
// records of 300 bytes, about what a group holds at 32 connections) in a
// segment that grows with every write and in one prepared ahead
// (zero-filled): the wall time per group is the latency every caller of
// the group waits for. Each segment is made before the timer runs.
func BenchmarkIntakeWrite(b *testing.B) {
	for _, prepared := range []bool{false, true} {
		b.Run(map[bool]string{false: "growing", true: "prepared"}[prepared], func(b *testing.B) {
			dir := b.TempDir()
			l, _, err := openIntake(dir, 0, slog.New(slog.DiscardHandler), func(uint64, []byte) error { return nil })
			if err != nil {
				b.Fatal(err)
			}
			defer l.close()
			if prepared { // the first segment too
				f, err := prepareSegment(dir, nil)
				if err != nil {
					b.Fatal(err)
				}
				l.spare <- f
				l.wanted = true
				if err := l.rollover(); err != nil {
					b.Fatal(err)
				}
			}
			payload := bytes.Repeat([]byte("x"), 300)
			var buf []byte
			for b.Loop() {
				buf = buf[:0]
				for i := range 32 {
					buf = frame(buf, l.next+uint64(i), payload)
				}
				if !l.fits(len(buf)) {
					b.StopTimer()
					<-l.want // asked for at half full; answered here, off the clock
					l.wanted = false
					if prepared {
						f, err := prepareSegment(dir, nil)
						if err != nil {
							b.Fatal(err)
						}
						l.spare <- f
						l.wanted = true
					}
					if err := l.rollover(); err != nil {
						b.Fatal(err)
					}
					if err := l.drop(l.next - 1); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				if err := l.write(buf, 32); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
