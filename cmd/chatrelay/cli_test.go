package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/admin"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

// cli runs one chatrelay command in-process.
func cli(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(t.Context(), args, nil, &out, &errOut, env(nil))
	return code, out.String(), errOut.String()
}

// adminAPI is a running admin API over a bolt store holding dead letters,
// with a config file that points the CLI at it.
type adminAPI struct {
	cfg   string
	store *bolt.Store
	dead  []string // dead-letter ids of sink crm, oldest first
	gone  string   // a dead letter of a sink no longer configured
}

type fixedHealth relay.SinkHealth

func (h fixedHealth) Health() relay.SinkHealth { return relay.SinkHealth(h) }

func newAdminAPI(t *testing.T, states map[string]admin.SinkState) *adminAPI {
	t.Helper()
	store, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	a := &adminAPI{store: store}
	park := func(sink, conv, reason string) string {
		ev := storetest.NewEvent(t, conv, 0)
		if _, err := store.Append(t.Context(), ev, []string{sink}); err != nil {
			t.Fatal(err)
		}
		d, err := store.Queue(sink).Next(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Term(t.Context(), reason); err != nil {
			t.Fatal(err)
		}
		return relay.DeadLetterID(ev.ID, sink)
	}
	long := "retry.max_age (24h0m0s) exceeded after 57 attempts; last error: webhook sink \"crm\": post: " +
		"Post \"[redacted]\": dial tcp 127.0.0.1:28999: connect: connection refused"
	a.dead = append(a.dead, park("crm", "c1", long), park("crm", "c2", "HTTP 400 Bad Request: no"))
	a.gone = park("old", "c3", "HTTP 400 Bad Request: no")
	if _, err := store.Reconcile(t.Context(), []string{"crm"}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	size := int64(3 << 20)
	srv := httptest.NewServer(admin.Handler(admin.Config{Store: store, Gatherer: reg, Metrics: relay.NewMetrics(reg),
		Sinks: []string{"crm"}, States: states, Version: "9.9.9",
		StoreInfo: func(context.Context) admin.StoreInfo {
			return admin.StoreInfo{Driver: "bolt", Path: "/var/lib/chatrelay/chatrelay.db", SizeBytes: &size}
		}}))
	t.Cleanup(srv.Close)
	a.cfg = writeConfig(t, fmt.Sprintf(`
admin: {listen: %s}
signing_secrets: [cli-test-signing-secret]
sinks: [{name: crm, type: webhook, url: "http://127.0.0.1:1/in"}]
`, strings.TrimPrefix(srv.URL, "http://")))
	return a
}

// TestExitCodes: 0 success, 1 the operation failed, 2 a usage or config
// error, for every command (SPEC §9).
func TestExitCodes(t *testing.T) {
	t.Parallel()
	api := newAdminAPI(t, nil)
	// Port 1: nothing listens there, and no other test can take it meanwhile
	// (a port that was free a moment ago can be).
	closed := writeConfig(t, "admin: {listen: 127.0.0.1:1}\nsigning_secrets: [x-secret-1]\nsinks: [{name: c, type: console}]\n")
	bad := writeConfig(t, "sinks: [{name: c, type: nope}]\n")
	for _, tc := range []struct {
		args []string
		code int
		says string // on stderr
	}{
		{[]string{"version"}, 0, ""},
		{[]string{"bogus"}, 2, `unknown command "bogus"`},
		{[]string{"--bogus"}, 2, "unknown flag: --bogus"},
		{[]string{"dlq"}, 2, "missing subcommand"},
		{[]string{"dlq", "bogus"}, 2, `unknown command "bogus" for "chatrelay dlq"`},
		{[]string{"dlq", "list", "--bogus"}, 2, "unknown flag"},
		{[]string{"dlq", "show"}, 2, "accepts 1 arg(s), received 0"},
		{[]string{"dlq", "show", "a", "b"}, 2, "accepts 1 arg(s)"},
		{[]string{"dlq", "replay"}, 2, "give dead-letter ids, or --all"},
		{[]string{"dlq", "replay", "x", "--sink", "crm"}, 2, "not both"},
		{[]string{"dlq", "purge", "x", "--reason", "404"}, 2, "not both"},
		{[]string{"version", "extra"}, 2, "unknown command"},
		{[]string{"check-config", "--config", bad}, 2, "sinks[0].type"},
		{[]string{"check-config", "--config", "/nonexistent/chatrelay.yaml"}, 2, "/nonexistent/chatrelay.yaml"},
		{[]string{"dlq", "list", "--config", api.cfg}, 0, ""},
		{[]string{"dlq", "show", "--config", api.cfg, api.dead[0]}, 0, ""},
		{[]string{"dlq", "show", "--config", api.cfg, "nope.crm"}, 1, `no dead letter with id "nope.crm"`},
		{[]string{"dlq", "replay", "--config", api.cfg, "0190d6a4-0000-7000-8000-000000000000.crm"}, 1, "not a dead letter: 0190d6a4-0000-7000-8000-000000000000.crm"},
		{[]string{"dlq", "replay", "--config", api.cfg, api.gone}, 1, "is no longer configured"},
		{[]string{"dlq", "replay", "--config", api.cfg, "--all", "--sink", "nosuch"}, 1, "--sink nosuch: no sink of that name"},
		{[]string{"dlq", "purge", "--config", api.cfg, "nope.crm"}, 1, "not a dead letter: nope.crm"},
		{[]string{"dlq", "list", "--config", closed}, 1, "cannot reach the admin API"},
		{[]string{"status", "--config", closed}, 2, "cannot reach the admin API"},
	} {
		code, _, stderr := cli(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.says) {
			t.Errorf("chatrelay %s: exit %d, stderr %q; want exit %d saying %q", strings.Join(tc.args, " "), code, stderr, tc.code, tc.says)
		}
	}
	// The replay that works, after those that did not.
	code, out, stderr := cli(t, "dlq", "replay", "--config", api.cfg, api.dead[1])
	if code != 0 || !strings.Contains(out, "requeued 1 delivery") {
		t.Errorf("replay of a dead letter: exit %d %q %q", code, out, stderr)
	}
}

// TestDLQListKeepsTheCause: the reason is never cut, so the last error at
// its end (the cause) is shown.
func TestDLQListKeepsTheCause(t *testing.T) {
	t.Parallel()
	api := newAdminAPI(t, nil)
	code, out, stderr := cli(t, "dlq", "list", "--config", api.cfg, "--sink", "crm")
	if code != 0 || strings.Count(out, "\n") != 2 {
		t.Fatalf("exit %d, %q %q", code, out, stderr)
	}
	if !strings.Contains(out, "dial tcp 127.0.0.1:28999: connect: connection refused") {
		t.Fatalf("dlq list cut the cause off:\n%s", out)
	}
}

// TestCellEscapesControlCharacters: text shown in dlq list and status
// tables comes from outside (a destination's answer, an event's fields);
// whitespace is flattened to one line and other control characters, such
// as the start of a terminal escape sequence, are shown escaped.
func TestCellEscapesControlCharacters(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"", "-"},
		{"HTTP 400 Bad Request: no", "HTTP 400 Bad Request: no"},
		{"chat\r\nX-Evil: 1\t2", "chat X-Evil: 1 2"},
		{"HTTP 500: \x1b[2J\x1b[31mall good\x1b[0m", `HTTP 500: \x1b[2J\x1b[31mall good\x1b[0m`},
		{"bell\x07 and C1 \u009b", `bell\x07 and C1 \x9b`},
		{"émoji 👍 stay", "émoji 👍 stay"},
	} {
		if got := cell(tc.in); got != tc.want {
			t.Errorf("cell(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestStatusCommand: one line per sink with its state, pending, oldest,
// rate-limit hold and last error, the store and the version; exit 1 when a
// sink is down, 0 when all are up; --json gives the API's answer.
func TestStatusCommand(t *testing.T) {
	t.Parallel()
	now := time.Now()
	down := newAdminAPI(t, map[string]admin.SinkState{"crm": fixedHealth{
		DownSince: now.Add(-12 * time.Minute), DownCause: relay.DownUnreachable,
		LastError: `webhook sink "crm": post: dial tcp 127.0.0.1:28999: connect: connection refused`, LastErrorAt: now.Add(-3 * time.Second)}})
	code, out, stderr := cli(t, "status", "--config", down.cfg)
	if code != 1 || !strings.Contains(stderr, "1 sink down: crm") {
		t.Fatalf("status with a sink down: exit %d, stderr %q", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "chatrelay 9.9.9") || !strings.Contains(lines[0], "/var/lib/chatrelay/chatrelay.db (3.0 MiB)") {
		t.Fatalf("status printed:\n%s", out)
	}
	for _, want := range []string{"crm", "DOWN 12m0s (unreachable)", "3s ago: ", "connection refused"} {
		if !strings.Contains(lines[2], want) {
			t.Errorf("sink line lacks %q: %s", want, lines[2])
		}
	}
	code, out, _ = cli(t, "status", "--config", down.cfg, "--json")
	var st admin.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 1 || len(st.Sinks) != 1 || st.Sinks[0].Up ||
		st.Sinks[0].DownCause != "unreachable" || st.Store.Path != "/var/lib/chatrelay/chatrelay.db" || st.Version != "9.9.9" {
		t.Fatalf("status --json: exit %d %v\n%s", code, err, out)
	}

	up := newAdminAPI(t, map[string]admin.SinkState{"crm": fixedHealth{Up: true, HeldUntil: now.Add(time.Minute)}})
	code, out, stderr = cli(t, "status", "--config", up.cfg)
	if code != 0 || !strings.Contains(out, " up ") || !strings.Contains(out, "held ") {
		t.Fatalf("status with every sink up: exit %d %q %q", code, out, stderr)
	}
}

// TestHelpNamesWhatTwoWayNeeds: the help of the commands a two-way user
// runs names the endpoint Slack posts to and what --probe checks, so
// that the set-up can be found from the binary alone.
func TestHelpNamesWhatTwoWayNeeds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		says []string
	}{
		{[]string{"--help"}, []string{"two-way live chat", "reply:"}},
		{[]string{"serve", "--help"}, []string{"POST /webhook", "POST /slack/events", "reply.app_token", "slack-manifest", "embedded defaults"}},
		{[]string{"check-config", "--help"}, []string{"--probe", "/api/v2/current-plan", "scopes", "Message Content intent"}},
		{[]string{"slack-manifest", "--help"}, []string{"/slack/events", "--socket-mode"}},
	} {
		code, out, errOut := cli(t, tc.args...)
		if code != 0 {
			t.Errorf("%v: exit %d\n%s", tc.args, code, errOut)
		}
		for _, s := range tc.says {
			if !strings.Contains(out, s) {
				t.Errorf("%v: the help does not say %q:\n%s", tc.args, s, out)
			}
		}
	}
}
