package bolt_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

const (
	crashChildEnv = "CHATRELAY_BOLT_CRASH_DIR"
	crashModeEnv  = "CHATRELAY_BOLT_CRASH_MODE"
)

// crashChild is the process the crash tests kill: it appends events from
// 8 goroutines and acks some deliveries, printing "ok <id>" for every
// append answered (durable) and "stop" once it reached the point its mode
// names, where it then stays until it is killed.
func crashChild(dir, mode string) {
	var out sync.Mutex
	say := func(format string, args ...any) {
		out.Lock()
		fmt.Printf(format+"\n", args...)
		out.Unlock()
	}
	var once sync.Once
	stop := func() {
		once.Do(func() { say("stop") })
		select {} // killed here
	}
	var afterWrite, beforeApply func()
	writes := 0
	// In the modes "..., past the first segment" events are 32 KB, and the
	// stop comes once 20 MB were answered and the log writes into a
	// segment file prepared ahead (zero-filled: 16 MiB from the start).
	pad, big := 500, strings.HasSuffix(mode, ", past the first segment")
	var answered atomic.Int64
	if big {
		pad = 32 << 10
	}
	due := func() bool { return !big || answered.Load()*int64(pad) > 20<<20 && inPreparedSegment(dir) }
	switch strings.TrimSuffix(mode, ", past the first segment") {
	case "between write and sync":
		afterWrite = func() {
			if writes++; writes >= 50 && due() {
				stop()
			}
		}
	case "between sync and apply":
		beforeApply = func() {
			if writes++; writes >= 3 && due() { // the database commits every 250 ms
				stop()
			}
		}
	}
	s, err := bolt.Open(dir, bolt.WithHooks(bolt.Options{}, afterWrite, beforeApply))
	if err != nil {
		say("open: %v", err)
		os.Exit(1)
	}
	ctx := context.Background()
	say("open")
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := newID()
				ev := &relay.Event{ID: id, Topic: relay.TopicChat, ReceivedAt: time.Now(),
					ConversationID: fmt.Sprint("c", g),
					Body:           fmt.Appendf(nil, `{"conversation_id":"c%d","n":%q,"pad":%q}`, g, id, strings.Repeat("x", pad))}
				acc, err := s.Append(ctx, ev, []string{"s"})
				if err != nil {
					say("append: %v", err)
					continue
				}
				answered.Add(1)
				say("ok %s", acc.ID)
			}
		})
	}
	wg.Go(func() {
		for {
			d, err := s.Queue("s").Next(ctx)
			if err != nil {
				say("next: %v", err)
				return
			}
			if err := d.Ack(ctx); err != nil {
				say("ack: %v", err)
			}
		}
	})
	wg.Wait()
}

// inPreparedSegment says whether the last segment of the intake log in dir
// is a file prepared ahead: 16 MiB from the start.
func inPreparedSegment(dir string) bool {
	segs, err := filepath.Glob(filepath.Join(dir, "intake", "*.log"))
	if err != nil || len(segs) < 2 {
		return false
	}
	st, err := os.Stat(segs[len(segs)-1])
	return err == nil && st.Size() == 16<<20
}

func newID() string {
	id, err := uuid.NewV7()
	if err != nil {
		panic(err)
	}
	return id.String()
}

// TestCrash kills a process that writes the store (SIGKILL) at the worst
// moments: between a group's write and its sync, between the sync and the
// database applying it (both also once the log runs in segments prepared
// ahead), and at random; three rounds each on the same store
// (fault/TestFaultRestartsUnderLoad kills the real binary five times under
// load).
// After each kill the store opens (a torn last record is cut off, durable
// records the database did not hold are applied) and every append that was
// answered is there, pending or delivered.
func TestCrash(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs child processes")
	}
	for _, mode := range []string{"between write and sync", "between sync and apply", "at random",
		"between write and sync, past the first segment", "between sync and apply, past the first segment"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			var answered []string
			for round := range 3 {
				answered = append(answered, crashRound(t, dir, mode, round)...)
				logger, logs := relaytest.NewLogger()
				s, err := bolt.Open(dir, bolt.Options{Logger: logger})
				if err != nil {
					t.Fatalf("round %d: the store does not open after the kill: %v", round+1, err)
				}
				for _, id := range answered {
					rec, err := s.Lookup(t.Context(), id)
					if err != nil {
						t.Fatalf("round %d: event %s was answered, and is not in the store: %v", round+1, id, err)
					}
					if st := rec.Deliveries[0].State; st != relay.StatePending && st != relay.StateDelivered {
						t.Fatalf("round %d: event %s is %s", round+1, id, st)
					}
				}
				checkUsageCountsEachEventOnce(t, s)
				st, err := s.Stats(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("round %d: %d events answered so far, all in the store; %d pending; %s", round+1, len(answered),
					st[0].Depth, strings.TrimSpace(logs.String()))
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// crashRound runs the child on dir until it reaches its stop point (or, at
// random, for a while), kills it, and returns the ids it answered.
func crashRound(t *testing.T, dir, mode string, round int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashModeEnv+"="+mode)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	kill := func() { _ = cmd.Process.Signal(syscall.SIGKILL) }
	var answered []string
	lines := bufio.NewScanner(stdout)
	var timer *time.Timer
	stopped := false
	for lines.Scan() {
		line := lines.Text()
		switch {
		case line == "open" && mode == "at random":
			timer = time.AfterFunc(time.Duration(50+rand.IntN(400))*time.Millisecond, kill)
		case line == "stop":
			stopped = true
			kill()
		case strings.HasPrefix(line, "ok "):
			answered = append(answered, strings.TrimPrefix(line, "ok "))
		case strings.HasPrefix(line, "open:"):
			t.Fatalf("round %d: child: %s", round+1, line)
		}
	}
	if timer != nil {
		timer.Stop()
	}
	kill()
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("round %d: the child was not killed: %v", round+1, err)
	}
	if !stopped && mode != "at random" {
		// Killed by the context's deadline: the moment the mode names
		// never came (for "..., past the first segment": the log never
		// wrote into a prepared segment).
		t.Fatalf("round %d: the child never reached the point %q", round+1, mode)
	}
	if len(answered) == 0 {
		t.Fatalf("round %d: the child answered no append before it was killed", round+1)
	}
	return answered
}

// TestTornLastRecord cuts the intake log's last record short, as a crash
// in the middle of a write leaves it: the store opens, drops that record
// (it was never answered) and keeps everything before it.
func TestTornLastRecord(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := bolt.Open(dir, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 20 {
		ev := storetest.NewEvent(t, "c", i)
		if _, err := s.Append(t.Context(), ev, []string{"s"}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.ID)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs, err := filepath.Glob(filepath.Join(dir, "intake", "*.log"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no intake segment: %v", err)
	}
	last := segs[len(segs)-1]
	// A record cut off after its header and part of its payload, then
	// the start of another.
	for _, tail := range [][]byte{
		{200, 0, 0, 0, 1, 2, 3, 4, 99, 0, 0, 0, 0, 0, 0, 0, '{', '"'},
		{7, 0, 0},
	} {
		f, err := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		before, _ := f.Seek(0, 2)
		if _, err := f.Write(tail); err != nil {
			t.Fatal(err)
		}
		f.Close()
		logger, logs := relaytest.NewLogger()
		s, err := bolt.Open(dir, bolt.Options{Logger: logger})
		if err != nil {
			t.Fatalf("a torn last record: %v", err)
		}
		if !strings.Contains(logs.String(), "dropped a record whose write did not complete") {
			t.Errorf("no warning about the torn record: %s", logs)
		}
		for _, id := range ids {
			if _, err := s.Lookup(t.Context(), id); err != nil {
				t.Fatalf("event %s lost with the torn record after it: %v", id, err)
			}
		}
		ev := storetest.NewEvent(t, "c", 99)
		if _, err := s.Append(t.Context(), ev, []string{"s"}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.ID)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if st, _ := os.Stat(last); st != nil && st.Size() < before {
			t.Fatalf("the log was cut before its last whole record: %d < %d", st.Size(), before)
		}
	}
}

// TestDamagedIntakeLog: a bad record followed by records the database
// already holds (so they were synced) is damage, not a torn write: the
// store refuses to start and says how to get going.
func TestDamagedIntakeLog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := bolt.Open(dir, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := s.Append(t.Context(), storetest.NewEvent(t, "c", i), []string{"s"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "intake", "*.log"))
	last := segs[len(segs)-1]
	b, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	b[20] ^= 0xff // in the first record's payload
	if err := os.WriteFile(last, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = bolt.Open(dir, bolt.Options{})
	if !errors.Is(err, bolt.ErrDamaged) {
		t.Fatalf("a damaged intake log: %v, want ErrDamaged", err)
	}
	for _, want := range []string{filepath.Join(dir, "intake"), "checksum", "backup", "mv "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
}

// TestFullDisk fills the file system under a store (a small tmpfs):
// appends are refused with ErrFull and leave nothing behind (the log is cut
// back to its last whole record, a refused event is not stored and not a
// duplicate when sent again), and once there is room again the store takes
// events as before, and keeps them across a restart.
func TestFullDisk(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("a real full disk needs a tmpfs mount, which needs root")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s)", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	dir := filepath.Join(mnt, "data")
	s, err := bolt.Open(dir, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	ctx := t.Context()
	var stored []string
	appendOne := func(i int) (*relay.Event, error) {
		ev := storetest.NewEvent(t, "c", i)
		ev.Body = append(ev.Body[:len(ev.Body)-1], []byte(`,"pad":"`+strings.Repeat("x", 4000)+`"}`)...)
		_, err := s.Append(ctx, ev, []string{"s"})
		if err == nil {
			stored = append(stored, ev.ID)
		}
		return ev, err
	}
	for i := range 20 {
		if _, err := appendOne(i); err != nil {
			t.Fatal(err)
		}
	}
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	f.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "intake", "*.log"))
	sizeOf := func() int64 {
		st, err := os.Stat(segs[len(segs)-1])
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	var refused *relay.Event
	for i := 20; i < 2000 && refused == nil; i++ {
		before := sizeOf()
		ev, err := appendOne(i)
		switch {
		case err == nil:
		case errors.Is(err, relay.ErrFull):
			refused = ev
			if after := sizeOf(); after != before {
				t.Errorf("a refused append left %d bytes in the log", after-before)
			}
		default:
			t.Fatalf("append on a full disk: %v, want ErrFull", err)
		}
	}
	if refused == nil {
		t.Fatal("the full disk never refused an append")
	}
	if err := s.Ready(ctx); !errors.Is(err, relay.ErrFull) {
		t.Errorf("Ready = %v, want ErrFull", err)
	}
	again := *refused
	if acc, err := s.Append(ctx, &again, []string{"s"}); err == nil || acc.Duplicate {
		t.Errorf("the refused event sent again: %+v, %v; want refused again", acc, err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second) // the store probes every 2 s
	for {
		if _, err := appendOne(5000); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the store never took events again after the disk had room")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = bolt.Open(dir, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range stored {
		if _, err := s.Lookup(ctx, id); err != nil {
			t.Errorf("event %s was stored and is gone after a restart: %v", id, err)
		}
	}
	if _, err := s.Lookup(ctx, refused.ID); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("the refused event is in the store: %v", err)
	}
	t.Logf("%d events stored, one refused with ErrFull and not stored", len(stored))
}

// TestIntakeLogStaysSmall: the log keeps only what the database does not
// hold yet: once a segment is full and applied, it is deleted, so the
// log's disk use stays at about two segments however much goes through
// (three with the next one's file, made ahead).
func TestIntakeLogStaysSmall(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := bolt.Open(dir, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pad := strings.Repeat("x", 4000)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1200 { // 8 × 1,200 × 4 KB: about 40 MB, 2.5 segments
				ev := storetest.NewEvent(t, fmt.Sprint("c", g), i)
				ev.Body = append(ev.Body[:len(ev.Body)-1], []byte(`,"pad":"`+pad+`"}`)...)
				if _, err := s.Append(t.Context(), ev, nil); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	// Reading waits until the database holds everything; the next write
	// deletes what it holds.
	if _, err := s.Recent(t.Context(), "", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(t.Context(), storetest.NewEvent(t, "last", 1), nil); err != nil {
		t.Fatal(err)
	}
	var size int64
	segs, _ := filepath.Glob(filepath.Join(dir, "intake", "*.log"))
	for _, sg := range segs {
		st, err := os.Stat(sg)
		if err != nil {
			t.Fatal(err)
		}
		size += st.Size()
	}
	t.Logf("about 40 MB went through the log; %d segments of %d bytes in all are left", len(segs), size)
	if len(segs) > 2 || size > 2*16<<20 {
		t.Errorf("the log keeps %d segments, %d bytes: applied segments are not deleted", len(segs), size)
	}
	// With the next segment's file, made ahead: three segments at most.
	all, _ := filepath.Glob(filepath.Join(dir, "intake", "*"))
	size = 0
	for _, f := range all {
		if st, err := os.Stat(f); err == nil {
			size += st.Size()
		}
	}
	if size > 3*16<<20 {
		t.Errorf("the log's directory holds %d bytes in %d files", size, len(all))
	}
}
