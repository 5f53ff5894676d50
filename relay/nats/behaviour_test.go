package nats_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/nats"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

func next(t *testing.T, s relay.Store, sink string) *relay.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	d, err := s.Queue(sink).Next(ctx)
	if err != nil {
		t.Fatalf("Next(%s): %v", sink, err)
	}
	return d
}

func nothingDue(t *testing.T, s relay.Store, sink string, wait time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	if d, err := s.Queue(sink).Next(ctx); err == nil {
		t.Fatalf("Next(%s) gave %s, want nothing due", sink, d.Event.ID)
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next(%s): %v", sink, err)
	}
}

func mustAppend(t *testing.T, s relay.Store, ev *relay.Event, sinks ...string) relay.Accepted {
	t.Helper()
	acc, err := s.Append(t.Context(), ev, sinks)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return acc
}

// TestHalfWrittenEventIsQueuedOnce stores an event the way an Append that
// failed after its first step leaves it: in the events stream, with no
// delivery queued. The sender's retry (a duplicate) must answer the first
// id and queue the delivery, once.
func TestHalfWrittenEventIsQueuedOnce(t *testing.T) {
	t.Parallel()
	ns := startServer(t, "", 0)
	opts := testOptions(ns.ClientURL())
	s := open(t, opts)
	defer s.Close()

	ev := storetest.NewEvent(t, "A", 1)
	js := jetStreamClient(t, ns.ClientURL())
	// Partition 3 is where conversation A falls with 4 partitions.
	m := natsgo.NewMsg("chatrelay.ev.003." + ev.ID)
	m.Data = ev.Body
	m.Header.Set("Chatrelay-Id", ev.ID)
	m.Header.Set("Chatrelay-Topic", ev.Topic)
	m.Header.Set("Chatrelay-Received", strconv.FormatInt(ev.ReceivedAt.UnixNano(), 10))
	m.Header.Set("Chatrelay-Conversation", "A")
	m.Header.Add("Chatrelay-Sink", "s")
	key := relay.DedupeKey(ev.Body)
	if _, err := js.PublishMsg(t.Context(), m, jetstream.WithMsgID(hex.EncodeToString(key[:]))); err != nil {
		t.Fatal(err)
	}

	retry := *ev
	retry.ID = storetest.NewEvent(t, "A", 1).ID
	if acc := mustAppend(t, s, &retry, "s"); !acc.Duplicate || acc.ID != ev.ID {
		t.Fatalf("retry answered %+v, want duplicate of %s", acc, ev.ID)
	}
	d := next(t, s, "s")
	if d.Event.ID != ev.ID || d.Event.ConversationID != "A" {
		t.Fatalf("delivered %s (%s), want %s", d.Event.ID, d.Event.ConversationID, ev.ID)
	}
	if err := d.Ack(t.Context()); err != nil {
		t.Fatal(err)
	}
	nothingDue(t, s, "s", 500*time.Millisecond)
}

// TestDeadReplicasAppendsAreRequeued plays a replica that died between the
// two steps of an Append, with a sender that never retried: its lease goes
// stale, and a live replica must queue the event it left behind.
func TestDeadReplicasAppendsAreRequeued(t *testing.T) {
	t.Parallel()
	ns := startServer(t, "", 0)
	opts := testOptions(ns.ClientURL())
	opts.AckWait = 600 * time.Millisecond // leases renew every 200ms
	logger, logs := relaytest.NewLogger()
	opts.Logger = logger
	s := open(t, opts)
	defer s.Close()

	js := jetStreamClient(t, ns.ClientURL())
	leases, err := js.KeyValue(t.Context(), "CHATRELAY_REPLICAS")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leases.Put(t.Context(), "ghost", []byte("ghost-host")); err != nil {
		t.Fatal(err)
	}
	ev := storetest.NewEvent(t, "A", 1)
	m := natsgo.NewMsg("chatrelay.ev.003." + ev.ID)
	m.Data = ev.Body
	m.Header.Set("Chatrelay-Id", ev.ID)
	m.Header.Set("Chatrelay-Topic", ev.Topic)
	m.Header.Set("Chatrelay-Received", strconv.FormatInt(ev.ReceivedAt.UnixNano(), 10))
	m.Header.Set("Chatrelay-Replica", "ghost")
	m.Header.Add("Chatrelay-Sink", "s")
	if _, err := js.PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	// A second event of the dead replica got through both steps: its
	// delivery is queued, and the repair must leave it (and not count it).
	ev2 := storetest.NewEvent(t, "B", 1)
	p2 := fmt.Sprintf("%03d", fnv32a("c:B")%4)
	for _, subj := range []string{"chatrelay.ev." + p2 + "." + ev2.ID, "chatrelay.q.s." + p2 + "." + ev2.ID} {
		m := natsgo.NewMsg(subj)
		m.Data = ev2.Body
		m.Header.Set("Chatrelay-Id", ev2.ID)
		m.Header.Set("Chatrelay-Topic", ev2.Topic)
		m.Header.Set("Chatrelay-Received", strconv.FormatInt(ev2.ReceivedAt.UnixNano(), 10))
		m.Header.Set("Chatrelay-Conversation", "B")
		m.Header.Set("Chatrelay-Replica", "ghost")
		m.Header.Add("Chatrelay-Sink", "s")
		if _, err := js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]int{}
	for range 2 {
		d := next(t, s, "s")
		got[d.Event.ID]++
		if err := d.Ack(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if got[ev.ID] != 1 || got[ev2.ID] != 1 {
		t.Fatalf("delivered %v, want each of the dead replica's events once", got)
	}
	nothingDue(t, s, "s", 3*opts.AckWait)
	if _, err := leases.Get(t.Context(), "ghost"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the dead replica's lease: %v, want it reaped", err)
	}
	// The repair is logged once its scan returns, which may be after the
	// delivery was handed out. It names the replica (its lease key) and
	// its host, and counts what it queued (issue 18, finding 7).
	relaytest.Eventually(t, 20*time.Second, "the repair's log line", func() bool {
		return strings.Contains(logs.String(), "queued the deliveries its last appends had not")
	})
	if line := logs.String(); !strings.Contains(line, "replica=ghost host=ghost-host") || !strings.Contains(line, "queued=1") {
		t.Fatalf("repair log: %s; want the replica, its host and queued=1", line)
	}
}

// TestHeldDeliveryIsRenewed holds a delivery on one replica for three
// times AckWait: the other replica must not get it meanwhile.
func TestHeldDeliveryIsRenewed(t *testing.T) {
	t.Parallel()
	ns := startServer(t, "", 0)
	opts := testOptions(ns.ClientURL())
	opts.AckWait = 1500 * time.Millisecond
	logger, logs := relaytest.NewLogger()
	opts.Logger = logger
	defer func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	}()
	s1, s2 := open(t, opts), open(t, opts)
	defer s1.Close()
	defer s2.Close()
	ev := storetest.NewEvent(t, "A", 1)
	mustAppend(t, s1, ev, "s")
	d := next(t, s1, "s")
	nothingDue(t, s2, "s", 3*opts.AckWait)
	if err := d.Ack(t.Context()); err != nil {
		t.Fatalf("Ack after holding it 3×AckWait: %v", err)
	}
	nothingDue(t, s2, "s", 300*time.Millisecond)
}

// TestLongDisconnectionGivesUpHeldDeliveries cuts a replica off from NATS
// while it holds a conversation's head, for longer than AckWait: the other
// replica takes the head and acks it. When the first comes back, its late
// ack must fail rather than settle a delivery another replica owns, and
// the conversation's next turn goes on in order.
func TestLongDisconnectionGivesUpHeldDeliveries(t *testing.T) {
	t.Parallel()
	ns := startServer(t, "", 0)
	opts := testOptions(ns.ClientURL())
	opts.AckWait = 600 * time.Millisecond
	cut := newProxy(t, ns.Addr().String())
	viaProxy := opts
	viaProxy.URL = cut.url()
	s1, s2 := open(t, viaProxy), open(t, opts)
	defer s1.Close()
	defer s2.Close()
	a1, a2 := storetest.NewEvent(t, "A", 1), storetest.NewEvent(t, "A", 2)
	mustAppend(t, s2, a1, "s")
	mustAppend(t, s2, a2, "s")
	held := next(t, s1, "s")
	if held.Event.ID != a1.ID {
		t.Fatalf("s1 got %s, want %s", held.Event.ID, a1.ID)
	}

	cut.pause()
	taken := next(t, s2, "s") // after AckWait, the server hands a1 to s2
	if taken.Event.ID != a1.ID {
		t.Fatalf("s2 got %s, want %s again", taken.Event.ID, a1.ID)
	}
	cut.resume()
	relaytest.Eventually(t, 20*time.Second, "s1 reconnects", func() bool { return s1.Ready(t.Context()) == nil })
	if err := held.Ack(t.Context()); !errors.Is(err, relay.ErrUnavailable) {
		t.Fatalf("late Ack on the replica that was away: %v, want ErrUnavailable", err)
	}
	// s1 pulls again since it is back, and could take a2 (a live replica
	// may): it closes, so that a2 is s2's to check.
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := taken.Ack(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := next(t, s2, "s"); d.Event.ID != a2.ID {
		t.Fatalf("next turn %s, want %s", d.Event.ID, a2.ID)
	} else if err := d.Ack(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestRequeueGoesToTheEnd parks a conversation's head, lets a later turn
// queue behind it, and replays the head: it comes after the later turn,
// with a fresh Since and the old reason as its last error.
func TestRequeueGoesToTheEnd(t *testing.T) {
	t.Parallel()
	ns := startServer(t, "", 0)
	s := open(t, testOptions(ns.ClientURL()))
	defer s.Close()
	a1, a2 := storetest.NewEvent(t, "A", 1), storetest.NewEvent(t, "A", 2)
	mustAppend(t, s, a1, "s")
	d := next(t, s, "s")
	if err := d.Nak(t.Context(), 0, "HTTP 502"); err != nil {
		t.Fatal(err)
	}
	d = next(t, s, "s")
	if d.Attempts != 1 || d.LastError != "HTTP 502" {
		t.Fatalf("after a nak: attempts %d, last error %q", d.Attempts, d.LastError)
	}
	firstSince := d.Since
	if err := d.Term(t.Context(), "HTTP 400: no"); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, a2, "s")
	d2 := next(t, s, "s") // a2, now the head
	before := time.Now()
	if n, err := s.Requeue(t.Context(), []string{relay.DeadLetterID(a1.ID, "s")}); err != nil || n != 1 {
		t.Fatalf("Requeue = %d, %v", n, err)
	}
	nothingDue(t, s, "s", 200*time.Millisecond) // a1 waits behind a2
	if err := d2.Ack(t.Context()); err != nil {
		t.Fatal(err)
	}
	d = next(t, s, "s")
	if d.Event.ID != a1.ID || d.Attempts != 0 || !d.Since.After(firstSince) || d.Since.Before(before.Add(-time.Second)) ||
		!strings.Contains(d.LastError, "HTTP 400: no") {
		t.Fatalf("replayed: %s attempts %d since %s (first %s) last error %q", d.Event.ID, d.Attempts, d.Since, firstSince, d.LastError)
	}
	if err := d.Ack(t.Context()); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Lookup(t.Context(), a1.ID)
	if err != nil || len(rec.Deliveries) != 1 || rec.Deliveries[0].State != relay.StateDelivered || rec.Deliveries[0].Attempts != 1 {
		t.Fatalf("Lookup after replay = %+v, %v", rec, err)
	}
}

func TestLookupStates(t *testing.T) {
	t.Parallel()
	ns := startServer(t, "", 0)
	s := open(t, testOptions(ns.ClientURL()))
	defer s.Close()
	ev := storetest.NewEvent(t, "A", 1)
	mustAppend(t, s, ev, "ok", "retry", "dead", "purged")
	states := func() map[string]relay.DeliveryStatus {
		t.Helper()
		rec, err := s.Lookup(t.Context(), ev.ID)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]relay.DeliveryStatus{}
		for _, d := range rec.Deliveries {
			out[d.Sink] = d
		}
		return out
	}
	for sink, st := range states() {
		if st.State != relay.StatePending {
			t.Fatalf("before any attempt %s is %s", sink, st.State)
		}
	}
	if err := next(t, s, "ok").Ack(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := next(t, s, "retry").Nak(t.Context(), time.Hour, "HTTP 503"); err != nil {
		t.Fatal(err)
	}
	for _, sink := range []string{"dead", "purged"} {
		if err := next(t, s, sink).Term(t.Context(), "HTTP 400"); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.Purge(t.Context(), []string{relay.DeadLetterID(ev.ID, "purged")}); err != nil || n != 1 {
		t.Fatalf("Purge = %d, %v", n, err)
	}
	got := states()
	want := map[string]relay.DeliveryStatus{
		"ok":     {State: relay.StateDelivered, Attempts: 1},
		"retry":  {State: relay.StatePending, Attempts: 1, LastError: "HTTP 503"},
		"dead":   {State: relay.StateDead, Attempts: 0, LastError: "HTTP 400"},
		"purged": {State: relay.StatePurged, Attempts: 0, LastError: "HTTP 400"},
	}
	for sink, w := range want {
		g := got[sink]
		if g.State != w.State || g.Attempts != w.Attempts || g.LastError != w.LastError {
			t.Errorf("%s: %+v, want %+v", sink, g, w)
		}
	}
}

func TestRecentPages(t *testing.T) {
	t.Parallel()
	ns := startServer(t, "", 0)
	s := open(t, testOptions(ns.ClientURL()))
	defer s.Close()
	var ids []string
	for i := range 7 {
		ev := storetest.NewEvent(t, fmt.Sprintf("c%d", i%3), i)
		mustAppend(t, s, ev)
		ids = append(ids, ev.ID)
	}
	var got []string
	before := ""
	for page := 0; page < 5; page++ {
		sums, err := s.Recent(t.Context(), before, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(sums) == 0 {
			break
		}
		for _, e := range sums {
			got = append(got, e.ID)
		}
		before = sums[len(sums)-1].ID
	}
	for i, j := 0, len(ids)-1; i < j; i, j = i+1, j-1 {
		ids[i], ids[j] = ids[j], ids[i]
	}
	if strings.Join(got, " ") != strings.Join(ids, " ") {
		t.Fatalf("pages gave\n%v\nwant newest first\n%v", got, ids)
	}
}

// TestCredentialsNeverLogged connects with a token and with a password in
// the URL, and fails to connect with wrong ones: no log line and no error
// may show either.
func TestCredentialsNeverLogged(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		server server.Options
		opts   func(url string) nats.Options
		wrong  func(url string) nats.Options
		secret []string
	}{
		{
			name:   "token",
			server: server.Options{Authorization: "tok-s3cr3t-value"},
			opts: func(url string) nats.Options {
				o := testOptions(url)
				o.Token = "tok-s3cr3t-value"
				return o
			},
			wrong: func(url string) nats.Options {
				o := testOptions(url)
				o.Token = "tok-wrong-value"
				return o
			},
			secret: []string{"tok-s3cr3t-value", "tok-wrong-value"},
		},
		{
			name:   "password in url",
			server: server.Options{Username: "relay", Password: "pa55-w0rd-value"},
			opts: func(url string) nats.Options {
				return testOptions(strings.Replace(url, "nats://", "nats://relay:pa55-w0rd-value@", 1))
			},
			wrong: func(url string) nats.Options {
				return testOptions(strings.Replace(url, "nats://", "nats://relay:wr0ng-pa55-value@", 1))
			},
			secret: []string{"pa55-w0rd-value", "wr0ng-pa55-value"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			so := tc.server
			so.Host, so.Port, so.JetStream, so.StoreDir, so.NoLog, so.NoSigs = "127.0.0.1", -1, true, t.TempDir(), true, true
			ns, err := server.NewServer(&so)
			if err != nil {
				t.Fatal(err)
			}
			ns.Start()
			t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
			if !ns.ReadyForConnections(10 * time.Second) {
				t.Fatal("nats not ready")
			}
			logger, logs := relaytest.NewLogger()
			opts := tc.opts(ns.ClientURL())
			opts.Logger = logger
			s := open(t, opts)
			mustAppend(t, s, storetest.NewEvent(t, "A", 1), "s")
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			wrong := tc.wrong(ns.ClientURL())
			wrong.Logger = logger
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			defer cancel()
			_, err = nats.Open(ctx, wrong)
			if err == nil {
				t.Fatal("Open with wrong credentials succeeded")
			}
			relaytest.AssertNoSecret(t, "error", err.Error(), tc.secret...)
			relaytest.AssertNoSecret(t, "log", logs.String(), tc.secret...)
			if !strings.Contains(logs.String(), "store ready") {
				t.Fatalf("expected lifecycle logs, got:\n%s", logs.String())
			}
		})
	}
}

// fnv32a is FNV-1a, the store's partition hash.
func fnv32a(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}
