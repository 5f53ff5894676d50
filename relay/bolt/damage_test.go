package bolt_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jonboulle/clockwork"
	bbolt "go.etcd.io/bbolt"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

// filledStore writes a store with events spread over many pages: pending,
// delivered and dead deliveries on two sinks and key/value entries. It
// returns the store directory and the ids of the events.
func filledStore(t testing.TB, events int) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	s, err := bolt.Open(dir, bolt.Options{Clock: clockwork.NewFakeClock()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	pad := strings.Repeat("p", 1500)
	var ids []string
	for i := range events {
		ev := storetest.NewEvent(t, fmt.Sprint("conv-", i%20), i)
		ev.Body = append(ev.Body[:len(ev.Body)-1], []byte(`,"pad":"`+pad+`"}`)...)
		if _, err := s.Append(ctx, ev, []string{"crm", "team"}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.ID)
	}
	for i := range 20 {
		d, err := s.Queue("crm").Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if i%4 == 0 {
			err = d.Term(ctx, "refused")
		} else {
			err = d.Ack(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := s.KV("team").Put(ctx, fmt.Sprint("conv-", i), "thread"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, ids
}

// pageOf returns the page size and the root page of the events bucket of
// the store file at path.
func pageOf(t *testing.T, path string) (pageSize int, eventsRoot int64) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bbolt.Tx) error {
		eventsRoot = int64(tx.Bucket([]byte("events")).Root())
		return nil
	})
	if err != nil || eventsRoot == 0 {
		t.Fatalf("events bucket root: %d, %v", eventsRoot, err)
	}
	return db.Info().PageSize, eventsRoot
}

func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func truncate(t *testing.T, path string, size func(int64) int64) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size(st.Size())); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedStoreIsRefused damages a store file the ways the audit did
// (and a few more) and opens it: never a panic or a fault, always an error
// that wraps ErrDamaged, names the file and says how to get going again;
// and the way out it gives works.
func TestDamagedStoreIsRefused(t *testing.T) {
	t.Parallel()
	type damage struct {
		name  string
		apply func(t *testing.T, dir, path string)
		// way is the way out the message gives: restore or move aside
		// (default), or the note that the file was removed on purpose.
		removed bool
		says    string
	}
	garbage := func(n int, seed uint64) []byte {
		b := make([]byte, n)
		r := rand.New(rand.NewPCG(seed, seed))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	for _, tc := range []damage{
		{name: "truncated to half", says: "is truncated", apply: func(t *testing.T, _, path string) {
			truncate(t, path, func(n int64) int64 { return n / 2 })
		}},
		{name: "truncated by one page", says: "is truncated", apply: func(t *testing.T, _, path string) {
			ps, _ := pageOf(t, path)
			db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			var inUse int64
			_ = db.View(func(tx *bbolt.Tx) error { inUse = tx.Size(); return nil })
			db.Close()
			truncate(t, path, func(int64) int64 { return inUse - int64(ps) })
		}},
		{name: "truncated within the meta pages", says: "is truncated", apply: func(t *testing.T, _, path string) {
			truncate(t, path, func(int64) int64 { return 1000 })
		}},
		{name: "garbage over the data pages", says: "is damaged", apply: func(t *testing.T, _, path string) {
			ps, _ := pageOf(t, path)
			st, _ := os.Stat(path)
			writeAt(t, path, int64(2*ps), garbage(int(st.Size())-2*ps, 1))
		}},
		{name: "garbage over one page of events", says: "is damaged", apply: func(t *testing.T, _, path string) {
			ps, root := pageOf(t, path)
			writeAt(t, path, root*int64(ps), garbage(ps, 2))
		}},
		{name: "zeroed page", says: "is damaged", apply: func(t *testing.T, _, path string) {
			ps, root := pageOf(t, path)
			writeAt(t, path, root*int64(ps), make([]byte, ps))
		}},
		{name: "both meta pages zeroed", says: "neither of its meta pages is valid", apply: func(t *testing.T, _, path string) {
			ps, _ := pageOf(t, path)
			writeAt(t, path, 0, make([]byte, 2*ps))
		}},
		{name: "zero-length", says: "is empty (0 bytes)", apply: func(t *testing.T, _, path string) {
			truncate(t, path, func(int64) int64 { return 0 })
		}},
		{name: "zero-length alone in its directory", says: "is empty (0 bytes)", apply: func(t *testing.T, dir, path string) {
			truncate(t, path, func(int64) int64 { return 0 })
			if err := os.Remove(filepath.Join(dir, "signing-secret")); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "missing", says: "is missing", removed: true, apply: func(t *testing.T, _, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir, ids := filledStore(t, 300)
			// The embedded mode keeps its signing secret next to the store:
			// the directory shows a store was kept here.
			if err := os.WriteFile(filepath.Join(dir, "signing-secret"), []byte("s\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, bolt.FileName)
			tc.apply(t, dir, path)
			for range 2 { // refused again at every start, not only the first
				s, err := bolt.Open(dir, bolt.Options{})
				if err == nil {
					s.Close()
					t.Fatal("opened a damaged store")
				}
				if !errors.Is(err, bolt.ErrDamaged) {
					t.Fatalf("error does not wrap ErrDamaged: %v", err)
				}
				msg := err.Error()
				for _, want := range []string{path, tc.says, "backup"} {
					if !strings.Contains(msg, want) {
						t.Errorf("error %q does not say %q", msg, want)
					}
				}
				t.Log(msg)
			}
			// The way out: move the file aside (or say it was removed on
			// purpose), and the store starts empty and works.
			if tc.removed {
				if err := os.WriteFile(path+".removed", nil, 0o600); err != nil {
					t.Fatal(err)
				}
			} else {
				if !strings.Contains(mustFail(t, dir), "mv "+path+" "+path+".damaged") {
					t.Fatal("the message does not give the command that moves the file aside")
				}
				if err := os.Rename(path, path+".damaged"); err != nil {
					t.Fatal(err)
				}
			}
			s, err := bolt.Open(dir, bolt.Options{})
			if err != nil {
				t.Fatalf("after the way out: %v", err)
			}
			defer s.Close()
			if _, err := s.Lookup(t.Context(), ids[0]); !errors.Is(err, relay.ErrNotFound) {
				t.Errorf("a fresh store has an old event: %v", err)
			}
			if _, err := s.Append(t.Context(), storetest.NewEvent(t, "c", 1), []string{"crm"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func mustFail(t *testing.T, dir string) string {
	t.Helper()
	s, err := bolt.Open(dir, bolt.Options{})
	if err == nil {
		s.Close()
		t.Fatal("opened a damaged store")
	}
	return err.Error()
}

// TestStoreFileThatIsNoDamage: what bbolt leaves is not damage: a missing
// file in an empty directory (a first start), and a torn meta page (a
// commit interrupted: bbolt uses the other one).
func TestStoreFileThatIsNoDamage(t *testing.T) {
	t.Parallel()
	t.Run("torn meta page", func(t *testing.T) {
		t.Parallel()
		dir, ids := filledStore(t, 50)
		path := filepath.Join(dir, bolt.FileName)
		ps, _ := pageOf(t, path)
		for meta := range 2 {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			torn := bytes.Clone(b)
			copy(torn[meta*ps+40:], []byte("torn write"))
			if err := os.WriteFile(path, torn, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := bolt.Open(dir, bolt.Options{})
			if err != nil {
				t.Fatalf("meta page %d torn: %v", meta, err)
			}
			if _, err := s.Lookup(t.Context(), ids[0]); err != nil {
				t.Errorf("meta page %d torn: %v", meta, err)
			}
			s.Close()
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// FuzzOpenDamagedStore writes bytes over a store file at any place and
// opens it: Open never panics or faults; it refuses the file with
// ErrDamaged, or what it opens can be read, written and closed.
func FuzzOpenDamagedStore(f *testing.F) {
	dir, _ := filledStore(f, 120)
	orig, err := os.ReadFile(filepath.Join(dir, bolt.FileName))
	if err != nil {
		f.Fatal(err)
	}
	for i, off := range []int{0, 20, 4096, 4096 + 60, 8192, 12288, 16384 + 8, len(orig) / 3, len(orig) / 2, len(orig) - 4096} {
		f.Add(uint32(off), uint16(16+i*97), uint64(i), i%3 == 0)
	}
	f.Fuzz(func(t *testing.T, off uint32, n uint16, seed uint64, zero bool) {
		b := bytes.Clone(orig)
		start := int(off) % len(b)
		end := min(start+int(n), len(b))
		r := rand.New(rand.NewPCG(seed, ^seed))
		for i := start; i < end; i++ {
			if zero {
				b[i] = 0
			} else {
				b[i] = byte(r.Uint32())
			}
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, bolt.FileName), b, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := bolt.Open(dir, bolt.Options{})
		if err != nil {
			if !errors.Is(err, bolt.ErrDamaged) {
				t.Fatalf("bytes %d-%d damaged: error without ErrDamaged: %v", start, end, err)
			}
			return
		}
		ctx := t.Context()
		recent, _ := s.Recent(ctx, "", 1000)
		for _, e := range recent {
			_, _ = s.Lookup(ctx, e.ID)
		}
		_, _ = s.ListDead(ctx, "", 0)
		_, _ = s.Stats(ctx)
		_, _ = s.Append(ctx, storetest.NewEvent(t, "c", 1), []string{"crm"})
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	})
}
