package natskv

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startJetStream runs an in-process NATS server with JetStream and returns
// a client.
func startJetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	return connect(t, ns.ClientURL())
}

func connect(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := natsgo.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func newStorage(t testing.TB, js jetstream.JetStream, opts Options) *Storage {
	t.Helper()
	s, err := New(t.Context(), js, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func TestEscapeRoundTrip(t *testing.T) {
	t.Parallel()
	for _, p := range []string{
		"certificates/acme-v02.api.letsencrypt.org-directory/relay.example.com/relay.example.com.crt",
		"acme/127.0.0.1_14000-dir/users/ops@example.com/ops.json",
		"certificates/x/wildcard_.example.com/a+b=c%d",
		"a//b", "ünïcode/日本", "last_clean.json",
	} {
		k := dataKey(p)
		if !validKey(k) {
			t.Errorf("%q -> %q is not a valid bucket key", p, k)
		}
		back, ok := pathOf(k)
		if !ok || back != p {
			t.Errorf("%q -> %q -> %q (%v)", p, k, back, ok)
		}
	}
	for _, bad := range []string{"data.=4", "data.=ZZ", "lock.x"} {
		if _, ok := pathOf(bad); ok {
			t.Errorf("pathOf(%q) accepted", bad)
		}
	}
}

// validKey is nats.go's rule for key/value keys.
func validKey(k string) bool {
	if k == "" || k[0] == '.' || k[len(k)-1] == '.' {
		return false
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-/_=.", c)) {
			return false
		}
	}
	return true
}

func FuzzEscape(f *testing.F) {
	for _, s := range []string{"", "a", "relay.example.com", "ops@example.com", "=41", "日本", "a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := escape(s)
		if strings.ContainsAny(e, "./") || !validKey("x."+e) {
			t.Fatalf("escape(%q) = %q: not one key component", s, e)
		}
		back, ok := unescape(e)
		if !ok || back != s {
			t.Fatalf("unescape(escape(%q)) = %q, %v", s, back, ok)
		}
	})
}

// TestStorageFileSemantics checks certmagic's Storage contract: files,
// implicit directories, List with and without recursion, Delete of a
// directory, fs.ErrNotExist for what is not there.
func TestStorageFileSemantics(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := newStorage(t, startJetStream(t), Options{})
	files := map[string]string{
		"certificates/ca.example-directory/relay.example.com/relay.example.com.crt":  "cert",
		"certificates/ca.example-directory/relay.example.com/relay.example.com.key":  "key",
		"certificates/ca.example-directory/relay.example.com/relay.example.com.json": "{}",
		"certificates/ca.example-directory/other.example.com/other.example.com.crt":  "cert2",
		"acme/ca.example-directory/users/ops@example.com/ops.json":                   "account",
		"last_clean.json": "clean",
	}
	for k, v := range files {
		if err := s.Store(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range files {
		got, err := s.Load(ctx, k)
		if err != nil || string(got) != v {
			t.Fatalf("Load(%s) = %q, %v", k, got, err)
		}
		info, err := s.Stat(ctx, k)
		if err != nil || !info.IsTerminal || info.Size != int64(len(v)) || info.Key != k || info.Modified.IsZero() {
			t.Fatalf("Stat(%s) = %+v, %v", k, info, err)
		}
	}
	if err := s.Store(ctx, "last_clean.json", []byte("again")); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Load(ctx, "last_clean.json"); string(got) != "again" {
		t.Fatalf("overwrite: %q", got)
	}

	dir := "certificates/ca.example-directory"
	if info, err := s.Stat(ctx, dir); err != nil || info.IsTerminal {
		t.Fatalf("Stat(dir) = %+v, %v", info, err)
	}
	for _, k := range []string{"certificates", dir, dir + "/relay.example.com", "last_clean.json"} {
		if !s.Exists(ctx, k) {
			t.Errorf("Exists(%s) = false", k)
		}
	}
	for _, k := range []string{"nope", "certificates/ca", dir + "/relay.example.com/relay.example.com"} {
		if s.Exists(ctx, k) {
			t.Errorf("Exists(%s) = true", k)
		}
		if _, err := s.Load(ctx, k); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load(%s): %v, want fs.ErrNotExist", k, err)
		}
		if _, err := s.Stat(ctx, k); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Stat(%s): %v, want fs.ErrNotExist", k, err)
		}
	}

	list := func(path string, recursive bool) []string {
		t.Helper()
		got, err := s.List(ctx, path, recursive)
		if err != nil {
			t.Fatalf("List(%s, %v): %v", path, recursive, err)
		}
		slices.Sort(got)
		return got
	}
	if got, want := list(dir, false), []string{dir + "/other.example.com", dir + "/relay.example.com"}; !slices.Equal(got, want) {
		t.Errorf("List(dir) = %v, want %v", got, want)
	}
	if got, want := list("", false), []string{"acme", "certificates", "last_clean.json"}; !slices.Equal(got, want) {
		t.Errorf("List(root) = %v, want %v", got, want)
	}
	wantAll := []string{
		dir + "/other.example.com", dir + "/other.example.com/other.example.com.crt",
		dir + "/relay.example.com", dir + "/relay.example.com/relay.example.com.crt",
		dir + "/relay.example.com/relay.example.com.json", dir + "/relay.example.com/relay.example.com.key",
	}
	if got := list(dir, true); !slices.Equal(got, wantAll) {
		t.Errorf("List(dir, recursive) = %v, want %v", got, wantAll)
	}
	if _, err := s.List(ctx, "nope", true); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("List(nope): %v, want fs.ErrNotExist", err)
	}

	// Deleting a directory deletes everything under it; deleting what is
	// not there is no error.
	if err := s.Delete(ctx, dir+"/relay.example.com"); err != nil {
		t.Fatal(err)
	}
	if s.Exists(ctx, dir+"/relay.example.com") || s.Exists(ctx, dir+"/relay.example.com/relay.example.com.key") {
		t.Fatal("a deleted directory still exists")
	}
	if !s.Exists(ctx, dir+"/other.example.com/other.example.com.crt") {
		t.Fatal("Delete removed a sibling")
	}
	if got, want := list(dir, false), []string{dir + "/other.example.com"}; !slices.Equal(got, want) {
		t.Errorf("after delete List(dir) = %v, want %v", got, want)
	}
	if err := s.Delete(ctx, "last_clean.json"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "last_clean.json"); err != nil {
		t.Fatalf("deleting a missing key: %v", err)
	}
	if _, err := s.Load(ctx, "last_clean.json"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load after Delete: %v", err)
	}
	// A deleted key can be stored again.
	if err := s.Store(ctx, "last_clean.json", []byte("back")); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Load(ctx, "last_clean.json"); string(got) != "back" {
		t.Fatalf("store after delete: %q", got)
	}
}

// TestLockSharedAcrossReplicas: two replicas (two connections, two
// Storage values) on one bucket; the second waits until the first unlocks,
// and a lock held across several refresh periods stays held.
func TestLockSharedAcrossReplicas(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	opts := Options{LockRefresh: 50 * time.Millisecond, LockStale: 10 * time.Second}
	a := newStorage(t, connect(t, ns.ClientURL()), opts)
	b := newStorage(t, connect(t, ns.ClientURL()), opts)

	if err := a.Lock(ctx, "issue_cert_relay.example.com"); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { got <- b.Lock(ctx, "issue_cert_relay.example.com") }()

	// Held across several refreshes: b stays blocked. The refreshes are
	// what the wait watches; count them rather than sleep.
	w, err := a.kv.Watch(ctx, lockKey("issue_cert_relay.example.com"), jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		select {
		case <-w.Updates():
		case err := <-got:
			t.Fatalf("the second replica got a held lock: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("the lock is not refreshed")
		}
	}
	_ = w.Stop()
	select {
	case err := <-got:
		t.Fatalf("the second replica got a held lock: %v", err)
	default:
	}

	// Another name is independent.
	if err := b.Lock(ctx, "issue_cert_other.example.com"); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(ctx, "issue_cert_other.example.com"); err != nil {
		t.Fatal(err)
	}

	if err := a.Unlock(ctx, "issue_cert_relay.example.com"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second replica did not get the lock after it was released")
	}
	if err := b.Unlock(ctx, "issue_cert_relay.example.com"); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(ctx, "issue_cert_relay.example.com"); err == nil {
		t.Fatal("unlocking a lock not held succeeded")
	}
}

// TestLockStaleIsTakenOver: a lock whose holder died (no refreshes) is
// taken over after LockStale; a waiter honours its context meanwhile.
func TestLockStaleIsTakenOver(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	js := startJetStream(t)
	s := newStorage(t, js, Options{LockRefresh: 20 * time.Millisecond, LockStale: 300 * time.Millisecond})
	// A dead replica's lock: written once, never refreshed.
	if _, err := s.kv.Create(ctx, lockKey("renew_cert_x"), []byte(`{"owner":"dead"}`)); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Lock(short, "renew_cert_x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock with a canceled context: %v", err)
	}
	if err := s.Lock(ctx, "renew_cert_x"); err != nil {
		t.Fatal(err)
	}
	e, err := s.kv.Get(ctx, lockKey("renew_cert_x"))
	if err != nil || !strings.Contains(string(e.Value()), s.owner) {
		t.Fatalf("the lock holds %s, %v; want this replica", e.Value(), err)
	}
	if err := s.Unlock(ctx, "renew_cert_x"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.kv.Get(ctx, lockKey("renew_cert_x")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the lock is still there after Unlock: %v", err)
	}
}

// TestUnlockAfterTakeOverLeavesTheNewHolder: a holder that stalled past
// LockStale and lost its lock does not delete the new holder's lock.
func TestUnlockAfterTakeOverLeavesTheNewHolder(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	js := startJetStream(t)
	s := newStorage(t, js, Options{LockRefresh: time.Hour, LockStale: 2 * time.Hour})
	if err := s.Lock(ctx, "l"); err != nil {
		t.Fatal(err)
	}
	// Another replica takes it over (as after LockStale).
	e, err := s.kv.Get(ctx, lockKey("l"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.kv.Update(ctx, lockKey("l"), []byte(`{"owner":"other"}`), e.Revision()); err != nil {
		t.Fatal(err)
	}
	if err := s.Unlock(ctx, "l"); err != nil {
		t.Fatal(err)
	}
	e, err = s.kv.Get(ctx, lockKey("l"))
	if err != nil || string(e.Value()) != `{"owner":"other"}` {
		t.Fatalf("the new holder's lock: %v %v", e, err)
	}
}
