package nats_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/goleak"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/nats"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startServer runs an in-process NATS server with JetStream on a random
// port, stored in dir (a new temporary directory when empty).
func startServer(t testing.TB, dir string, port int) *server.Server {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	if port == 0 {
		port = -1
	}
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	return ns
}

// testOptions are short waits for tests that run in real time, and 4
// partitions instead of 16: the server writes (and fsyncs) each durable
// consumer's config when it is created, and tests create many.
func testOptions(url string) nats.Options {
	return nats.Options{
		URL:           url,
		Partitions:    4,
		AckWait:       3 * time.Second,
		ReconnectWait: 20 * time.Millisecond,
		DedupeWindow:  time.Hour,
		Retention:     2 * time.Hour,
	}
}

func open(t testing.TB, opts nats.Options) *nats.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := nats.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, _ *clockwork.FakeClock) storetest.Harness {
		ns := startServer(t, "", 0)
		opts := testOptions(ns.ClientURL())
		cur := open(t, opts)
		t.Cleanup(func() { _ = cur.Close() })
		return storetest.Harness{
			Store: cur,
			Reopen: func(t *testing.T) relay.Store {
				if err := cur.Close(); err != nil {
					t.Fatal(err)
				}
				cur = open(t, opts)
				return cur
			},
		}
	})
}

func TestOpenValidates(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		opts nats.Options
	}{
		{"no url", nats.Options{}},
		{"window past retention", nats.Options{URL: "nats://127.0.0.1:1", DedupeWindow: 48 * time.Hour, Retention: 24 * time.Hour}},
		{"partitions", nats.Options{URL: "nats://127.0.0.1:1", Partitions: -1}},
		{"replicas", nats.Options{URL: "nats://127.0.0.1:1", Replicas: 7}},
		{"half a client cert", nats.Options{URL: "nats://127.0.0.1:1", TLS: nats.TLS{CertFile: "c.pem"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := nats.Open(t.Context(), tc.opts); err == nil {
				t.Fatal("Open accepted invalid options")
			}
		})
	}
}

func TestOpenWithoutServerHonoursContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	opts := testOptions("nats://user:hunter2@127.0.0.1:1")
	_, err := nats.Open(ctx, opts)
	if err == nil {
		t.Fatal("Open without a server succeeded")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Open: %v, want the context's deadline", err)
	}
	if msg := err.Error(); contains(msg, "hunter2") {
		t.Fatalf("error shows the password: %s", msg)
	}
}

func TestOpenErrorsHideCredentials(t *testing.T) {
	t.Parallel()
	for _, url := range []string{
		"nats://relay:hunter2-secret@127.0.0.1:bad-port", // a parse error quotes the URL
		"nats://hunter2-secret@127.0.0.1:1",
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		_, err := nats.Open(ctx, testOptions(url))
		cancel()
		if err == nil {
			t.Fatalf("Open(%s) succeeded", url)
		}
		if contains(err.Error(), "hunter2-secret") {
			t.Fatalf("error shows the secret: %v", err)
		}
	}
}

// TestReplicasStartTogether opens three stores at once on a fresh server:
// creating the streams, buckets and consumers must be idempotent.
func TestReplicasStartTogether(t *testing.T) {
	t.Parallel()
	ns := startServer(t, "", 0)
	opts := testOptions(ns.ClientURL())
	stores := make([]*nats.Store, 3)
	errs := make([]error, len(stores))
	var wg sync.WaitGroup
	for i := range stores {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			stores[i], errs[i] = nats.Open(ctx, opts)
			if errs[i] == nil {
				// The first append of a sink creates its consumers.
				_, errs[i] = stores[i].Append(ctx, storetest.NewEvent(t, fmt.Sprint("c", i), i), []string{"s"})
			}
		})
	}
	wg.Wait()
	for i, s := range stores {
		if s != nil {
			defer s.Close()
		}
		if errs[i] != nil {
			t.Errorf("replica %d: %v", i, errs[i])
		}
	}
}

func TestPartitionsAreFixed(t *testing.T) {
	t.Parallel()
	ns := startServer(t, "", 0)
	opts := testOptions(ns.ClientURL())
	s := open(t, opts)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	opts.Partitions = 8
	if s, err := nats.Open(t.Context(), opts); err == nil {
		_ = s.Close()
		t.Fatal("Open with another partition count succeeded")
	}
}

// TestAppendFullAnswersErrFull: when the server refuses to store more,
// Append answers relay.ErrFull (503 + Retry-After) and Ready says so too.
func TestAppendFullAnswersErrFull(t *testing.T) {
	t.Parallel()
	ns := fullServer(t, 256<<10)
	s := open(t, testOptions(ns.ClientURL()))
	defer s.Close()
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		_, err = s.Append(t.Context(), storetest.NewEvent(t, "A", i), []string{"s"})
	}
	if !errors.Is(err, relay.ErrFull) {
		t.Fatalf("Append on a full server: %v, want ErrFull", err)
	}
	if err := s.Ready(t.Context()); !errors.Is(err, relay.ErrFull) {
		t.Fatalf("Ready when full: %v, want ErrFull", err)
	}
}

// TestMaxBytesDropsOldestEvents (issue 18, finding 6): store.max_size bounds
// the events stream, the history that lookups and dedupe read. Past it the
// oldest events make room instead of every append being refused until they
// age out: appends go on, and no pending delivery is lost with its event.
func TestMaxBytesDropsOldestEvents(t *testing.T) {
	t.Parallel()
	ns := startServer(t, "", 0)
	opts := testOptions(ns.ClientURL())
	opts.MaxBytes = 16 << 10
	s := open(t, opts)
	defer s.Close()
	const n = 100 // about 30 KiB of events
	var ids []string
	for i := range n {
		ev := storetest.NewEvent(t, "A", i)
		mustAppend(t, s, ev, "s")
		ids = append(ids, ev.ID)
	}
	if err := s.Ready(t.Context()); err != nil {
		t.Fatalf("Ready past max_size: %v", err)
	}
	if _, err := s.Lookup(t.Context(), ids[0]); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("Lookup of the oldest event: %v, want it dropped (ErrNotFound)", err)
	}
	if _, err := s.Lookup(t.Context(), ids[n-1]); err != nil {
		t.Fatalf("Lookup of the newest event: %v", err)
	}
	for i, id := range ids {
		d := next(t, s, "s")
		if d.Event.ID != id {
			t.Fatalf("delivery %d: %s, want %s", i, d.Event.ID, id)
		}
		if err := d.Ack(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMaxSizeTooLargeNamesTheKey (issue 18, finding 6): a store.max_size the
// server cannot reserve fails Open with an error that names the key.
func TestMaxSizeTooLargeNamesTheKey(t *testing.T) {
	t.Parallel()
	ns := fullServer(t, 8<<20)
	opts := testOptions(ns.ClientURL())
	opts.MaxBytes = 1 << 30
	s, err := nats.Open(t.Context(), opts)
	if err == nil {
		_ = s.Close()
		t.Fatal("Open with a max_size larger than the server's storage succeeded")
	}
	if !strings.Contains(err.Error(), "store.max_size: 1GiB") {
		t.Fatalf("Open: %v; want an error naming store.max_size", err)
	}
	// Unset, the server's own limit governs, and Open works.
	opts.MaxBytes = 0
	if err := open(t, opts).Close(); err != nil {
		t.Fatal(err)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestOpenUpdatesChangedStreams reopens with a longer retention: the
// events stream takes it, though an unchanged stream is left alone.
func TestOpenUpdatesChangedStreams(t *testing.T) {
	t.Parallel()
	ns := startServer(t, "", 0)
	opts := testOptions(ns.ClientURL())
	for _, retention := range []time.Duration{2 * time.Hour, 3 * time.Hour} {
		opts.Retention = retention
		if err := open(t, opts).Close(); err != nil {
			t.Fatal(err)
		}
	}
	js := jetStreamClient(t, ns.ClientURL())
	st, err := js.Stream(t.Context(), "CHATRELAY_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxAge; got != 3*time.Hour {
		t.Fatalf("events stream MaxAge %s after reopening with retention 3h", got)
	}
}
