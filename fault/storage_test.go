package fault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/relay/relaytest"
	bbolt "go.etcd.io/bbolt"
)

// storeFault makes one relay's store unable to write, and gives the space
// back.
type storeFault struct {
	name string
	// setup returns the store's part of the config, called before the
	// relay starts.
	setup func(t *testing.T) (storeYAML string)
	// fill makes writes fail (or nothing, when events fill the store by
	// themselves).
	fill func(t *testing.T)
	// free gives the space back; it may restart the relay.
	free func(t *testing.T, r *relayProc) string
	// restarts says whether free restarts the relay.
	restarts bool
}

// TestFaultStoreFull makes the store unable to write while requests keep
// coming: the receiver answers 503 with Retry-After, /readyz fails, it
// accepts again once there is space, and every event it answered 2xx for
// was stored and is delivered.
func TestFaultStoreFull(t *testing.T) {
	t.Parallel()
	var faults []storeFault
	// A real disk-full: the store on a small tmpfs, filled by a file.
	var mnt string
	faults = append(faults, storeFault{
		name: "tmpfs full",
		setup: func(t *testing.T) string {
			mnt = mountTmpfs(t, "6m")
			return fmt.Sprintf("store: {path: %q}", filepath.Join(mnt, "data"))
		},
		fill: func(t *testing.T) {
			n, err := fillDisk(filepath.Join(mnt, "filler"))
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the tmpfs: %v", err)
			}
			t.Logf("filled the tmpfs with %d KiB", n>>10)
		},
		free: func(t *testing.T, _ *relayProc) string {
			if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
				t.Fatal(err)
			}
			return "deleted the filler file (no restart)"
		},
	})
	// store.max_size: the events themselves fill it; more room takes a
	// restart with a higher limit (pruning frees space only after
	// store.retention, checked once a minute).
	faults = append(faults, storeFault{
		name:     "store.max_size",
		restarts: true,
		setup: func(t *testing.T) string {
			return fmt.Sprintf("store: {path: %q, max_size: 1MiB}", filepath.Join(t.TempDir(), "data"))
		},
		fill: func(*testing.T) {},
		free: func(t *testing.T, r *relayProc) string {
			r.stop(15 * time.Second)
			r.rewriteConfig("max_size: 1MiB", "max_size: 64MiB")
			r.start()
			return "raised store.max_size to 64MiB and restarted (SIGTERM, clean exit)"
		},
	})
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			storeFull(t, f)
		})
	}
}

func storeFull(t *testing.T, f storeFault) {
	const secret, token = "full-signing-secret", "full-admin-token"
	storeYAML := f.setup(t)
	// The destination can be made to hold its answers, so that deliveries
	// are in flight when the store fills up and their acks find it full.
	var holding atomic.Bool
	release := make(chan struct{})
	hook := newHookServer(t, func(_ int, _ http.ResponseWriter, r *http.Request) bool {
		if holding.Load() {
			select {
			case <-release:
			case <-r.Context().Done():
				return true
			}
		}
		return false
	})
	// A destination that refuses every event (422: permanent), held the
	// same way: its dead letters are written while the store is full.
	refuser := newHookServer(t, func(_ int, w http.ResponseWriter, r *http.Request) bool {
		if holding.Load() {
			select {
			case <-release:
			case <-r.Context().Done():
				return true
			}
		}
		http.Error(w, "unprocessable", http.StatusUnprocessableEntity)
		return true
	})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	r := newRelay(t, relayConfig{Secret: secret, AdminToken: token, Extra: fmt.Sprintf(`%s
retry: {initial: 100ms, max: 1s, max_age: 1h}
sinks:
  - {name: crm, type: webhook, url: %q}
  - {name: refuser, type: webhook, url: %q}
`, storeYAML, hook.srv.URL, refuser.srv.URL)})
	c := newClient(t, token)
	r.start()

	const convs, pad = 4, 1 << 10
	next := map[int]int{} // next turn per conversation
	var ok []accepted
	var unavailable int
	// send posts turn tu once and records a 2xx; it returns the answer.
	padOf := map[turn]int{} // each turn is always resent as first sent
	send := func(tu turn) reply {
		t.Helper()
		p, known := padOf[tu]
		if !known {
			p = pad
			padOf[tu] = p
		}
		rep, a, err := c.postSigned(mustAddr(r), secret, chatBody(tu, "widget", p))
		if err != nil {
			t.Fatalf("turn %s: %v", tu, err)
		}
		switch rep.Code {
		case http.StatusOK:
			if a.ID == "" || (a.Status != "accepted" && a.Status != "duplicate") {
				t.Fatalf("turn %s: 200 %s", tu, rep.Body)
			}
			first := !slices.ContainsFunc(ok, func(a accepted) bool { return a.turn == tu })
			if first && a.Status == "duplicate" {
				// Only an earlier attempt could have stored it, and each
				// earlier attempt was answered 503: nothing half-written.
				t.Errorf("turn %s: answered 503 earlier, yet stored (now %s)", tu, rep.Body)
			}
			if first {
				ok = append(ok, accepted{turn: tu, id: a.ID, at: time.Now()})
			}
		case http.StatusServiceUnavailable:
			unavailable++
			if rep.Header.Get("Retry-After") == "" || !strings.Contains(rep.Body, `"unavailable"`) {
				t.Errorf("503 without Retry-After or status: %v %s", rep.Header, rep.Body)
			}
		default:
			t.Fatalf("turn %s: %d %s", tu, rep.Code, rep.Body)
		}
		return rep
	}
	// Normal operation first.
	for i := range 2 * convs {
		tu := turn{i % convs, next[i%convs]}
		next[tu.conv]++
		if send(tu).Code != http.StatusOK {
			t.Fatalf("turn %s refused before any fault", tu)
		}
	}
	// One turn per conversation whose delivery is held at the
	// destination while the store fills up.
	relaytest.Eventually(t, 10*time.Second, "the first turns delivered, and parked for the refuser", func() bool {
		return len(hook.deliveries()) >= len(ok) && c.metrics(r).get(t, "chatrelay_dead_letters", "sink", "refuser") == float64(len(ok))
	})
	holding.Store(true)
	var held []turn
	for conv := range convs {
		tu := turn{conv, next[conv]}
		next[conv]++
		if send(tu).Code != http.StatusOK {
			t.Fatalf("turn %s refused before any fault", tu)
		}
		held = append(held, tu)
	}
	relaytest.Eventually(t, 10*time.Second, "the held deliveries at both destinations", func() bool {
		return hook.requests() >= len(ok) && refuser.requests() >= len(ok)
	})
	f.fill(t)
	// Keep sending until the store refuses large events, then small ones
	// (the pages freed by refused writes are used up too).
	var refused turn
	for _, size := range []int{16 << 10, 0} {
		for i := 0; ; i++ {
			if i == 2000 {
				t.Fatalf("2000 events of %d bytes and the store never refused one", size)
			}
			tu := turn{i % convs, next[i%convs]}
			next[tu.conv]++
			padOf[tu] = size
			if send(tu).Code == http.StatusServiceUnavailable {
				refused = tu
				break
			}
		}
		t.Logf("%d events accepted, then turn %s of %d bytes was refused with 503", len(ok), refused, len(chatBody(refused, "widget", size)))
	}
	readyz := c.get("http://" + mustAddr(r) + "/readyz")
	if readyz.Code != http.StatusServiceUnavailable || readyz.Header.Get("Retry-After") == "" {
		t.Errorf("/readyz right after a 503 = %d %s, want 503 with Retry-After", readyz.Code, readyz.Body)
	}
	if h := c.get("http://" + mustAddr(r) + "/healthz"); h.Code != http.StatusOK {
		t.Errorf("/healthz = %d: the process is up", h.Code)
	}
	// The held deliveries now succeed, and their acks meet the full
	// store; the destination must not be flooded with repeats meanwhile.
	before, beforeRefused := len(hook.deliveries()), len(refuser.attempts())
	close(release)
	window := time.After(time.Second)
	// The sender retries the refused turn while the store stays full.
	var stillRefused int
	for range 20 {
		if send(refused).Code == http.StatusServiceUnavailable {
			stillRefused++
		} else {
			break // it found room (freed pages): stored, and checked below
		}
	}
	<-window
	var whileFull int
	for _, tu := range hookTurns(hook.deliveries()[before:]) {
		if slices.Contains(held, tu) {
			whileFull++
		}
	}
	t.Logf("%d held deliveries completed while the store was full: the destination got %d requests for them in 1s, the refusing one %d requests in all since",
		len(held), whileFull, len(refuser.attempts())-beforeRefused)
	if whileFull > 2*len(held) {
		t.Errorf("the destination got %d deliveries of %d held turns within 1s of a full store: repeats flood it", whileFull, len(held))
	}
	how := f.free(t, r)
	var recoveredIn time.Duration
	freed := time.Now()
	relaytest.Eventually(t, 20*time.Second, "the receiver to accept again", func() bool {
		return send(refused).Code == http.StatusOK
	})
	recoveredIn = time.Since(freed)
	if rz := c.get("http://" + mustAddr(r) + "/readyz"); rz.Code != http.StatusOK {
		t.Errorf("/readyz after an accepted event = %d %s", rz.Code, rz.Body)
	}
	for i := range 2 * convs {
		tu := turn{i % convs, next[i%convs]}
		next[tu.conv]++
		if send(tu).Code != http.StatusOK {
			t.Fatalf("turn %s refused after the space came back", tu)
		}
	}

	// Never a 2xx for an event that was not stored: every id is there
	// and is delivered.
	check := func(when string) {
		t.Helper()
		for _, a := range ok {
			rep := c.get("http://" + r.adminAddr() + "/api/v1/events/" + a.id)
			if rep.Code != http.StatusOK || !strings.Contains(rep.Body, a.marker()) {
				t.Errorf("%s: event %s (turn %s) answered 2xx but GET /api/v1/events/{id} = %d", when, a.id, a.turn, rep.Code)
			}
		}
	}
	check("before a restart")
	var want []turn
	for _, a := range ok {
		want = append(want, a.turn)
	}
	relaytest.Eventually(t, 30*time.Second, "every accepted event at the destination, and parked for the refuser", func() bool {
		return len(missing(want, hookTurns(hook.deliveries()))) == 0 &&
			c.metrics(r).get(t, "chatrelay_dead_letters", "sink", "refuser") == float64(len(want))
	})
	m := c.metrics(r)
	rep := checkOrder(hookTurns(hook.deliveries()))
	for _, v := range rep.violations {
		t.Error(v)
	}
	// A delivery that could not be recorded may repeat once when the relay
	// restarts before it can record it, never in a loop; without a restart
	// it does not repeat at all.
	bound := convs
	if !f.restarts {
		bound = 0
	}
	if rep.duplicates > bound {
		t.Errorf("%d duplicate deliveries, want at most %d", rep.duplicates, bound)
	}
	// The same for a refused event whose dead letter could not be written.
	refusals := checkOrder(refuser.attempts())
	if refusals.duplicates > bound {
		t.Errorf("the refusing destination got %d repeated requests (want at most %d): refused events whose dead letter "+
			"could not be written were sent again and again", refusals.duplicates, bound)
	}
	unrecorded := r.logs.count("could not record a delivery as done")
	// The store still opens after the episode, with everything in it.
	r.kill9()
	r.start()
	check("after kill -9 and restart")
	got := m.get(t, "chatrelay_events_received_total", "topic", "chat", "result", "unavailable")
	if f.name != "store.max_size" && got != float64(unavailable) {
		t.Errorf("events_received_total{unavailable} = %v, want the %d 503s answered", got, unavailable)
	}
	t.Logf("%d events accepted (all stored and delivered, %d duplicate deliveries, %d acks found the store full; "+
		"all parked for the refusing sink, %d repeated refusals), %d answered 503 with Retry-After "+
		"(%d retries of the refused turn while full); space back: %s; accepting again %s later",
		len(ok), rep.duplicates, unrecorded, refusals.duplicates, unavailable, stillRefused, how, recoveredIn.Round(time.Millisecond))
}

// mountTmpfs mounts a tmpfs of the given size in a temporary directory,
// unmounted when the test ends, or skips the test where mounting is not
// allowed.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a real disk-full needs a tmpfs mount, which needs root; store.max_size covers the same path")
	}
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s); store.max_size covers the same path", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fillDisk writes path until the file system is full; it returns how much
// it wrote and the error that stopped it.
func fillDisk(path string) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	var n int64
	for {
		w, err := f.Write(chunk)
		n += int64(w)
		if err != nil {
			return n, err
		}
		if w < len(chunk) {
			chunk = chunk[w:]
		}
	}
}

// TestFaultDamagedStore damages the store file of a relay that holds
// pending events, the ways the audit did, and starts it again: it exits
// non-zero at once with a message that names the file and the way out
// (never a panic, a fault or a crash loop, never a silent empty start), at
// every start; moving the file aside as the message says gets it going
// with an empty store.
func TestFaultDamagedStore(t *testing.T) {
	t.Parallel()
	garbage := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7919 + i>>8)
		}
		return b
	}
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
		says   string
	}{
		{"truncated", func(t *testing.T, path string) {
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, st.Size()/2); err != nil {
				t.Fatal(err)
			}
		}, "is truncated"},
		{"garbage over the data pages", func(t *testing.T, path string) {
			ps, _ := storePages(t, path)
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			overwrite(t, path, int64(2*ps), garbage(int(st.Size())-2*ps))
		}, "is damaged"},
		{"zeroed page", func(t *testing.T, path string) {
			ps, root := storePages(t, path)
			overwrite(t, path, root*int64(ps), make([]byte, ps))
		}, "is damaged"},
		{"zero-length", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}, "is empty (0 bytes)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			damagedStore(t, tc.damage, tc.says)
		})
	}
}

func damagedStore(t *testing.T, damage func(t *testing.T, path string), says string) {
	const secret = "damage-signing-secret"
	dir := filepath.Join(t.TempDir(), "data")
	// A destination that is gone (410): every event stays pending.
	gone := newHookServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) bool {
		w.WriteHeader(http.StatusGone)
		return true
	})
	r := newRelay(t, relayConfig{Secret: secret, AdminToken: "damage-admin-token", Extra: fmt.Sprintf(`
store: {path: %q}
sinks:
  - {name: crm, type: webhook, url: %q}
`, dir, gone.srv.URL)})
	c := newClient(t, "damage-admin-token")
	r.start()
	for i := range 200 {
		rep, _, err := c.postSigned(mustAddr(r), secret, chatBody(turn{i % 10, i / 10}, "widget", 1500))
		if err != nil || rep.Code != http.StatusOK {
			t.Fatalf("event %d: %v %d %s", i, err, rep.Code, rep.Body)
		}
	}
	r.stop(15 * time.Second)
	path := filepath.Join(dir, "chatrelay.db")
	damage(t, path)
	for start := range 2 {
		out, code := r.startFails(30 * time.Second)
		t.Logf("start %d: exit %d:\n%s", start+1, code, tail(out, 2<<10))
		if code <= 0 {
			t.Fatalf("start %d on a damaged store: exit %d, want an exit with a code > 0", start+1, code)
		}
		for _, bad := range []string{"panic", "goroutine ", "SIGSEGV", "SIGBUS", "fatal error"} {
			if strings.Contains(out, bad) {
				t.Errorf("start %d: the output has %q: a crash, not a message", start+1, bad)
			}
		}
		for _, want := range []string{path, says, "backup", "mv " + path + " " + path + ".damaged"} {
			if !strings.Contains(out, want) {
				t.Errorf("start %d: the output does not say %q", start+1, want)
			}
		}
	}
	// The way out the message gives: move the file aside.
	if err := os.Rename(path, path+".damaged"); err != nil {
		t.Fatal(err)
	}
	r.start()
	if n := r.logs.count("starting with an empty store: the previous store file was moved aside"); n != 1 {
		t.Errorf("%d warnings that the store starts empty, want 1", n)
	}
	rep, a, err := c.postSigned(mustAddr(r), secret, chatBody(turn{99, 0}, "widget", 10))
	if err != nil || rep.Code != http.StatusOK || a.Status != "accepted" {
		t.Fatalf("after moving the damaged store aside: %v %d %s", err, rep.Code, rep.Body)
	}
	r.stop(15 * time.Second)
}

// startFails runs serve and expects it to exit by itself within d; it
// returns what it printed and its exit code (-1 if it was still running).
func (r *relayProc) startFails(d time.Duration) (string, int) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.t.Context(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, "serve", "--config", r.cfg)
	cmd.Env = childEnv()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), -1
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		r.t.Fatal(err)
	}
	return string(out), 0
}

// storePages returns the page size of the store file at path and the root
// page of its events bucket (a page in use).
func storePages(t *testing.T, path string) (pageSize int, eventsRoot int64) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.View(func(tx *bbolt.Tx) error {
		eventsRoot = int64(tx.Bucket([]byte("events")).Root())
		return nil
	}); err != nil || eventsRoot == 0 {
		t.Fatalf("events bucket root %d: %v", eventsRoot, err)
	}
	return db.Info().PageSize, eventsRoot
}

func overwrite(t *testing.T, path string, off int64, b []byte) {
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
