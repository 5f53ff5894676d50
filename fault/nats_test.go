package fault

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/relay/relaytest"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The NATS section of the fault suite (issue 18): the chatrelay binary on
// store.driver nats against a real nats-server, built from the module
// cache, that the tests kill, restart and fill; chatrelay replicas killed
// and frozen. Each asserts counts: every event answered 2xx reaches every
// sink its routes select, no conversation goes back to an older turn,
// repeats stay within the deliveries in flight at the faults, no request
// storm, /readyz truthful.

// natsAckWait is the replicas' store.nats.ack_wait: short, so that the
// tests run in seconds.
const natsAckWait = 2 * time.Second

// buildNATS builds nats-server once per test run, from the version in
// go.mod.
var buildNATS = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(binDir, "nats-server")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput()
	if err != nil {
		return "", &buildError{err: err, out: string(out)}
	}
	return bin, nil
})

// natsProc is a nats-server process with JetStream, restartable on the
// same port and store directory.
type natsProc struct {
	t    *testing.T
	bin  string
	conf string
	port int
	logs *logBuffer

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// newNATS writes a server config (jetstream holds extra settings of the
// jetstream block, like max_file_store) and returns the server, not
// started.
func newNATS(t *testing.T, jetstream string) *natsProc {
	t.Helper()
	if testing.Short() {
		t.Skip("the fault suite runs nats-server; not in -short")
	}
	bin, err := buildNATS()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "listen: 127.0.0.1:%d\njetstream: {store_dir: %q %s}\n",
		port, filepath.Join(dir, "js"), jetstream), 0o600); err != nil {
		t.Fatal(err)
	}
	n := &natsProc{t: t, bin: bin, conf: conf, port: port, logs: newLogBuffer()}
	t.Cleanup(func() {
		n.mu.Lock()
		cmd, exited := n.cmd, n.exited
		n.mu.Unlock()
		if cmd == nil {
			return
		}
		select {
		case <-exited:
		default:
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("nats-server log (last 4 KiB):\n%s", tail(n.logs.String(), 4<<10))
		}
	})
	return n
}

func (n *natsProc) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// start runs the server and waits until it is ready.
func (n *natsProc) start() {
	n.t.Helper()
	from := n.logs.Len()
	cmd := exec.Command(n.bin, "-c", n.conf)
	cmd.Stdout, cmd.Stderr = n.logs, n.logs
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	exited := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.exited = cmd, exited
	n.mu.Unlock()
	go func() {
		_ = cmd.Wait() // how it ended is the test's doing; the log tells the rest
		close(exited)
	}()
	if _, err := n.logs.waitLine(from, "Server is ready", exited, 30*time.Second); err != nil {
		n.t.Fatalf("nats-server did not start: %v\n%s", err, tail(n.logs.String()[from:], 4<<10))
	}
}

// signal sends sig and waits for the process to exit.
func (n *natsProc) signal(sig syscall.Signal) {
	n.t.Helper()
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil {
		n.t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		n.t.Fatalf("nats-server did not exit on %v", sig)
	}
}

// jetStream is a client of the test's own, for what an operator would do
// by hand (purge a stream).
func (n *natsProc) jetStream() jetstream.JetStream {
	n.t.Helper()
	nc, err := natsgo.Connect(n.url())
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		n.t.Fatal(err)
	}
	return js
}

// freeze stops the relay process (SIGSTOP) as a paused VM or a stuck host
// would; thaw lets it run on (SIGCONT).
func (r *relayProc) freeze() { r.sendSignal(syscall.SIGSTOP) }
func (r *relayProc) thaw()   { r.sendSignal(syscall.SIGCONT) }

func (r *relayProc) sendSignal(sig syscall.Signal) {
	r.t.Helper()
	r.mu.Lock()
	cmd := r.cmd
	r.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil {
		r.t.Fatal(err)
	}
}

// natsStore is the store section of a relay on nats.
func natsStore(n *natsProc) string {
	return fmt.Sprintf("store: {driver: nats, retention: 2h, dedupe_window: 1h, nats: {url: %q, partitions: 4, ack_wait: %s}}\n",
		n.url(), natsAckWait)
}

// natsReplicas starts count relays (replicas) on one NATS with the same
// config, and a client. Their sinks: crm, a webhook to hook.
func natsReplicas(t *testing.T, n *natsProc, hook *hookServer, count int, secret, token string) ([]*relayProc, *client) {
	t.Helper()
	var rs []*relayProc
	for range count {
		r := newRelay(t, relayConfig{Secret: secret, AdminToken: token, Extra: natsStore(n) + fmt.Sprintf(`
retry: {initial: 50ms, max: 500ms, max_age: 1h}
sinks:
  - {name: crm, type: webhook, url: %q, concurrency: 4}
`, hook.srv.URL+"/in")})
		r.start()
		rs = append(rs, r)
	}
	return rs, newClient(t, token)
}

// alternate spreads a load's turns over the replicas, as a load balancer
// would, skipping those down says are down.
func alternate(rs []*relayProc, down func(*relayProc) bool) func(turn, int) *relayProc {
	return func(tu turn, attempt int) *relayProc {
		for i := range len(rs) {
			r := rs[(tu.conv+tu.n+attempt+i)%len(rs)]
			if !down(r) {
				return r
			}
		}
		return rs[0]
	}
}

// wait lets the test run for d (a phase of the scenario, not a
// synchronisation).
func wait(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-time.After(d):
	case <-t.Context().Done():
		t.Fatal("test ended")
	}
}

// checkDelivered asserts that every accepted turn reached the hook, none
// it never accepted did, no conversation went back to an older turn, and
// at most bound repeats.
func checkDelivered(t *testing.T, l *load, hook *hookServer, bound int) orderReport {
	t.Helper()
	want := l.turns(nil)
	relaytest.Eventually(t, 60*time.Second, "every accepted event at the sink", func() bool {
		return len(missing(want, hookTurns(hook.deliveries()))) == 0
	})
	got := hookTurns(hook.deliveries())
	known := map[turn]bool{}
	for _, tu := range want {
		known[tu] = true
	}
	for _, tu := range got {
		if !known[tu] {
			t.Errorf("the sink got turn %s, which never got a 2xx", tu)
		}
	}
	rep := checkOrder(got)
	for _, v := range rep.violations {
		t.Error(v)
	}
	if rep.duplicates > bound {
		t.Errorf("%d repeated deliveries; at most %d (the deliveries in flight at the faults) are expected", rep.duplicates, bound)
	}
	return rep
}

func TestFaultNATS(t *testing.T) {
	t.Parallel()
	t.Run("nats-server killed -9 and restarted under load", func(t *testing.T) {
		t.Parallel()
		natsKilledUnderLoad(t)
	})
	t.Run("graceful restart then a repeated body", func(t *testing.T) {
		t.Parallel()
		natsRestartThenRepeat(t)
	})
	t.Run("a replica killed after a NATS restart", func(t *testing.T) {
		t.Parallel()
		natsReplicaKilledAfterRestart(t)
	})
	t.Run("a replica frozen past the ack wait, then resumed", func(t *testing.T) {
		t.Parallel()
		natsReplicaFrozen(t)
	})
	t.Run("JetStream full with the sink refusing", func(t *testing.T) {
		t.Parallel()
		natsFullSinkRefusing(t)
	})
}

// natsKilledUnderLoad: one relay under a steady load; nats-server is
// killed -9 and started again on the same store. While it is gone the
// receiver answers 503 with Retry-After (the load sends again, as Chat
// Data would). Nothing answered 2xx is lost; repeats are at most the
// delivery in flight per conversation at the kill.
func natsKilledUnderLoad(t *testing.T) {
	const secret, token, convs = "nats-kill-signing-secret", "nats-kill-admin-token", 6
	n := newNATS(t, "")
	n.start()
	hook := newHookServer(t, nil)
	rs, c := natsReplicas(t, n, hook, 1, secret, token)
	l := newLoad(t, rs[0], c, secret, func(int) string { return "widget" })
	l.gap = 15 * time.Millisecond
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for conv := range convs {
		wg.Go(func() { l.run(conv, stop) })
	}
	wait(t, time.Second)
	n.signal(syscall.SIGKILL)
	relaytest.Eventually(t, 10*time.Second, "503 with Retry-After while NATS is gone", func() bool {
		_, _, unavailable, _ := l.snapshot()
		return unavailable > 0
	})
	if rep := c.get("http://" + mustAddr(rs[0]) + "/readyz"); rep.Code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while NATS is gone: %d, want 503", rep.Code)
	}
	n.start()
	wait(t, time.Second)
	close(stop)
	wg.Wait()
	rep := checkDelivered(t, l, hook, convs)
	acc, failures, unavailable, dups := l.snapshot()
	t.Logf("%d events accepted, %d deliveries, %d repeated; %d answers 503, %d requests unanswered, %d duplicates answered",
		len(acc), rep.deliveries, rep.duplicates, unavailable, failures, dups)
}

// natsRestartThenRepeat: an event delivered, nats-server stopped
// gracefully and started again, the same body posted again: it is answered
// "duplicate" with the first id and not delivered again (the queue's
// duplicate window lived in the server's memory; the store's own record
// says it was delivered).
func natsRestartThenRepeat(t *testing.T) {
	const secret, token = "nats-repeat-signing-secret", "nats-repeat-admin-token"
	n := newNATS(t, "")
	n.start()
	hook := newHookServer(t, nil)
	rs, c := natsReplicas(t, n, hook, 1, secret, token)
	addr := mustAddr(rs[0])
	first, second := turn{0, 0}, turn{0, 1}
	_, a1, err := c.postSigned(addr, secret, chatBody(first, "widget", 0))
	if err != nil || a1.Status != "accepted" {
		t.Fatalf("first post: %+v, %v", a1, err)
	}
	relaytest.Eventually(t, 20*time.Second, "the first turn delivered", func() bool {
		return len(missing([]turn{first}, hookTurns(hook.deliveries()))) == 0
	})
	n.signal(syscall.SIGTERM)
	n.start()
	relaytest.Eventually(t, 30*time.Second, "/readyz once NATS is back", func() bool {
		return c.get("http://"+addr+"/readyz").Code == http.StatusOK
	})
	_, again, err := c.postSigned(addr, secret, chatBody(first, "widget", 0))
	if err != nil || again.Status != "duplicate" || again.ID != a1.ID {
		t.Fatalf("the same body after the restart: %+v, %v; want duplicate of %s", again, err, a1.ID)
	}
	// The conversation's next turn: once it is delivered, a first turn
	// queued again would have come before it.
	if _, a2, err := c.postSigned(addr, secret, chatBody(second, "widget", 0)); err != nil || a2.Status != "accepted" {
		t.Fatalf("next turn: %+v, %v", a2, err)
	}
	relaytest.Eventually(t, 20*time.Second, "the next turn delivered", func() bool {
		return len(missing([]turn{second}, hookTurns(hook.deliveries()))) == 0
	})
	if rep := checkOrder(hookTurns(hook.deliveries())); rep.duplicates != 0 || len(rep.violations) != 0 {
		t.Fatalf("after the repeat: %d deliveries, %d repeated, %v", rep.deliveries, rep.duplicates, rep.violations)
	}
}

// natsReplicaKilledAfterRestart: two replicas share a steady load (about
// 100 events/s); nats-server restarts, and 1.5s later one replica is
// killed -9. The survivor takes over the dead one's deliveries and repairs
// its last appends: no older turn after a newer one, nothing accepted
// lost, repeats within the deliveries in flight at the two faults.
func natsReplicaKilledAfterRestart(t *testing.T) {
	const secret, token, convs = "nats-replica-signing-secret", "nats-replica-admin-token", 6
	n := newNATS(t, "")
	n.start()
	hook := newHookServer(t, nil)
	rs, c := natsReplicas(t, n, hook, 2, secret, token)
	var killed atomic.Bool
	l := newLoad(t, rs[0], c, secret, func(int) string { return "widget" })
	l.gap = 50 * time.Millisecond // 6 conversations: about 100 events/s
	l.pick = alternate(rs, func(r *relayProc) bool { return r == rs[1] && killed.Load() })
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for conv := range convs {
		wg.Go(func() { l.run(conv, stop) })
	}
	wait(t, time.Second)
	n.signal(syscall.SIGTERM)
	n.start()
	wait(t, 1500*time.Millisecond)
	killed.Store(true)
	rs[1].kill9()
	wait(t, 3*natsAckWait) // the survivor takes over what the dead one held
	close(stop)
	wg.Wait()
	rep := checkDelivered(t, l, hook, 2*convs)
	acc, _, unavailable, _ := l.snapshot()
	t.Logf("%d events accepted over 2 replicas, %d deliveries, %d repeated, %d answers 503", len(acc), rep.deliveries,
		rep.duplicates, unavailable)
	rs[0].stop(15 * time.Second)
}

// natsReplicaFrozen: a replica holds the head of every partition of a
// webhook sink (it runs alone at first; its one send hangs at the
// destination, so the other heads wait in its ready set) when it is frozen
// (SIGSTOP). A second replica starts, takes those heads once the ack wait
// has passed and sends the conversations on; then the destination answers
// the hanging send and the frozen replica runs again. It must neither send
// a head it held (an old turn after the newer ones) nor take its late
// answer for a delivery ("late acks accepted" in the audit). Each step
// waits for the state it needs (the heads handed out, the turns
// delivered, the frozen replica's give-ups), so the scenario happens on
// every run however loaded the machine.
func natsReplicaFrozen(t *testing.T) {
	const secret, token, convs = "nats-freeze-signing-secret", "nats-freeze-admin-token", 6
	n := newNATS(t, "")
	n.start()
	var (
		mu           sync.Mutex
		released     bool
		sentByFrozen int // requests from the frozen replica once the hanging one was answered
		hanging      = make(chan struct{})
		hangingOnce  sync.Once
		release      = make(chan struct{})
	)
	hook := newHookServer(t, func(_ int, w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/in/frozen" {
			return false
		}
		mu.Lock()
		done := released
		if done {
			sentByFrozen++
		}
		mu.Unlock()
		if done {
			return false // a delivery like any other, in the order it arrives
		}
		// The frozen replica's send in flight at the freeze: it hangs
		// until the test answers it, while the replica is stopped. The
		// other replica delivers the same turn again; this one is not
		// counted.
		hangingOnce.Do(func() { close(hanging) })
		select {
		case <-release:
			w.WriteHeader(http.StatusNoContent)
		case <-r.Context().Done():
		}
		return true
	})
	replica := func(name string) *relayProc {
		r := newRelay(t, relayConfig{Secret: secret, AdminToken: token, Extra: natsStore(n) + fmt.Sprintf(`
retry: {initial: 50ms, max: 500ms, max_age: 1h}
sinks:
  - {name: crm, type: webhook, url: %q, concurrency: 1, timeout: 5m}
`, hook.srv.URL+"/in/"+name)})
		r.start()
		return r
	}
	frozen := replica("frozen")
	c := newClient(t, token)
	l := newLoad(t, frozen, c, secret, func(int) string { return "widget" })
	for conv := range convs {
		if !l.send(turn{conv, 0}) {
			return
		}
	}
	// Every partition that has a delivery handed it to the frozen replica
	// (the only one running), and its send hangs.
	select {
	case <-hanging:
	case <-time.After(30 * time.Second):
		t.Fatal("the frozen replica sent nothing")
	}
	js := n.jetStream()
	held := 0
	relaytest.Eventually(t, 30*time.Second, "every partition's head handed to the frozen replica", func() bool {
		st, err := js.Stream(t.Context(), "CHATRELAY_QUEUE")
		if err != nil {
			return false
		}
		held = 0
		infos := st.ListConsumers(t.Context())
		all := true
		for ci := range infos.Info() {
			if ci.NumPending > 0 && ci.NumAckPending == 0 {
				all = false
			}
			held += ci.NumAckPending
		}
		return infos.Err() == nil && all && held > 0
	})
	frozen.freeze()
	thawed := false
	defer func() {
		if !thawed {
			frozen.thaw() // so that the cleanup can stop it
		}
	}()

	// The other replica takes the heads after the ack wait and sends the
	// conversations on; the load balancer sends there meanwhile.
	live := replica("live")
	l.r = live
	for tn := 1; tn <= 3; tn++ {
		for conv := range convs {
			if !l.send(turn{conv, tn}) {
				return
			}
		}
	}
	relaytest.Eventually(t, 60*time.Second, "turns 0-3 delivered by the other replica", func() bool {
		return len(missing(l.turns(nil), hookTurns(hook.deliveries()))) == 0
	})

	// The destination answers the hanging send, then the frozen replica
	// runs again. It gives up every head it held (were it not fenced, it
	// would take the answer for a delivery and send the other heads: wait
	// for either before checking).
	giveUps := func() int { return frozen.logs.count("gave up a delivery") }
	before := giveUps()
	mu.Lock()
	released = true
	mu.Unlock()
	close(release)
	frozen.thaw()
	thawed = true
	relaytest.Eventually(t, 30*time.Second, "the frozen replica gave up or sent every head it held", func() bool {
		mu.Lock()
		sent := sentByFrozen
		mu.Unlock()
		return giveUps()-before+sent >= held-1 // the hanging one's answer needs no request
	})
	// The conversations go on through both replicas.
	l.pick = alternate([]*relayProc{frozen, live}, func(*relayProc) bool { return false })
	for conv := range convs {
		if !l.send(turn{conv, 4}) {
			return
		}
	}
	rep := checkDelivered(t, l, hook, convs)
	// The hanging send's answer reached a replica that no longer held the
	// delivery: it must not count it, nor any head it held, as delivered.
	acc, _, _, _ := l.snapshot()
	for _, a := range acc {
		if a.n < 4 && loggedDelivered(frozen.logs.String(), a.id) {
			t.Errorf("the frozen replica logged turn %s (%s) delivered: it took a late answer for a delivery it no longer held", a.turn, a.id)
		}
	}
	mu.Lock()
	sent := sentByFrozen
	mu.Unlock()
	t.Logf("the frozen replica held %d heads; %d deliveries, %d repeated; it logged %d give-ups and sent %d requests after it ran again",
		held, rep.deliveries, rep.duplicates, giveUps()-before, sent)
}

// loggedDelivered reports whether a relay's JSON log has a "delivered" line
// for the event id.
func loggedDelivered(logs, id string) bool {
	for line := range strings.Lines(logs) {
		var l struct {
			Msg     string `json:"msg"`
			EventID string `json:"event_id"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "delivered" && l.EventID == id {
			return true
		}
	}
	return false
}

// natsFullSinkRefusing: the sink is down while events pile up until
// JetStream's storage is full; then it refuses them (400), and they cannot
// be parked in the dead letters. The sink must not get a request storm
// (the audit saw about a thousand requests a second), /readyz must agree
// with what an append gets, and once there is room everything is parked.
func natsFullSinkRefusing(t *testing.T) {
	const secret, token = "nats-full-signing-secret", "nats-full-admin-token"
	n := newNATS(t, ", max_file_store: 2MB")
	n.start()
	var mode atomic.Int32 // 0: down (503), 1: refusing (400)
	hook := newHookServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) bool {
		if mode.Load() == 0 {
			http.Error(w, "down", http.StatusServiceUnavailable)
		} else {
			http.Error(w, "no", http.StatusBadRequest)
		}
		return true
	})
	rs, c := natsReplicas(t, n, hook, 1, secret, token)
	addr := mustAddr(rs[0])
	post := func(i int) (reply, answer) {
		t.Helper()
		rep, a, err := c.postSigned(addr, secret, chatBody(turn{i % 8, i / 8}, "widget", 4096))
		if err != nil {
			t.Fatal(err)
		}
		return rep, a
	}
	readyz := func() int { return c.get("http://" + addr + "/readyz").Code }
	accepted := 0
	for ; ; accepted++ {
		if accepted > 20000 {
			t.Fatal("JetStream never filled up")
		}
		rep, a := post(accepted)
		if rep.Code == http.StatusServiceUnavailable {
			if rep.Header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			break
		}
		if a.Status != "accepted" {
			t.Fatalf("post %d: %d %s", accepted, rep.Code, rep.Body)
		}
	}
	if code := readyz(); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz right after an append was refused: %d, want 503", code)
	}

	mode.Store(1)
	before := hook.requests()
	const window = 5 * time.Second
	wait(t, window)
	sent := hook.requests() - before
	// Four partitions' heads, each back after a backoff growing from 100ms
	// to 5s: about 7 each in 5s. A plain nak hands a head out again at once.
	t.Logf("JetStream full after %d events; the sink refusing got %d requests in %s", accepted, sent, window)
	if sent > 60 {
		t.Errorf("%d requests in %s to a sink refusing what cannot be parked: a request storm", sent, window)
	}
	// /readyz says what an append gets: nothing was settled, so still full.
	if rep, _ := post(accepted); rep.Code != http.StatusServiceUnavailable {
		t.Errorf("an append on a full store: %d %s, want 503", rep.Code, rep.Body)
	}
	if code := readyz(); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with JetStream full: %d, want 503", code)
	}

	// Room again (an operator purges the event history): /readyz recovers
	// and what the sink refused is parked.
	st, err := n.jetStream().Stream(t.Context(), "CHATRELAY_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(t.Context()); err != nil {
		t.Fatal(err)
	}
	relaytest.Eventually(t, 30*time.Second, "/readyz once there is room", func() bool { return readyz() == http.StatusOK })
	relaytest.Eventually(t, 60*time.Second, "every refused delivery parked", func() bool {
		return len(c.deadLetters(rs[0])) == accepted
	})
	if depth := c.metrics(rs[0]).get(t, "chatrelay_queue_depth", "sink", "crm"); depth != 0 {
		t.Errorf("queue depth %v after every delivery was parked", depth)
	}
}
