package main

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
)

const everyType = `
signing_secrets: [abc-secret-123]
sinks:
  - {name: team, type: slack, webhook_url: "https://hooks.slack.com/services/T0/B0/x"}
  - {name: monitor, type: discord, webhook_url: "https://discord.com/api/webhooks/1/abc"}
  - {name: crm, type: webhook, url: "https://example.com/in"}
  - {name: term, type: console}
`

func buildFrom(t *testing.T, yaml string) []builtSink {
	t.Helper()
	cfg, err := LoadConfig(writeConfig(t, yaml), true, env(nil))
	if err == nil {
		err = cfg.Check()
	}
	if err != nil {
		t.Fatal(err)
	}
	sinks, err := buildSinks(cfg, sinkEnv{stdout: io.Discard, logger: slog.New(slog.DiscardHandler),
		clock: clockwork.NewRealClock(), store: probeKV{}})
	if err != nil {
		t.Fatal(err)
	}
	return sinks
}

// TestSendTimeoutIsTheSinksOwn: one request has relay.DefaultTimeout on
// every sink unless the config says otherwise, and each sink says how many
// requests one send may take. (cmd used to multiply a 10s default by
// counts of its own, while the webhook sink's own requests waited 15s.)
func TestSendTimeoutIsTheSinksOwn(t *testing.T) {
	t.Parallel()
	want := map[string]time.Duration{
		"team":    5 * relay.DefaultTimeout, // four messages, and one again at top level when the thread is gone
		"monitor": 6 * relay.DefaultTimeout, // four messages, the channel's type, a thread
		"crm":     relay.DefaultTimeout,
	}
	for _, s := range buildFrom(t, everyType) {
		b, ok := s.sink.(relay.Budgeted)
		if !ok {
			if _, listed := want[s.conf.Name]; listed {
				t.Errorf("%s: not budgeted", s.conf.Name)
			}
			continue
		}
		if got := b.SendTimeout(); got != want[s.conf.Name] {
			t.Errorf("%s: a send may take %s, want %s", s.conf.Name, got, want[s.conf.Name])
		}
	}
	for _, s := range buildFrom(t, strings.ReplaceAll(everyType, `"}`, `", timeout: 3s}`)) {
		if b, ok := s.sink.(relay.Budgeted); ok && b.SendTimeout()%(3*time.Second) != 0 {
			t.Errorf("%s: timeout 3s gives sends %s", s.conf.Name, b.SendTimeout())
		}
	}
}

// TestExclusiveByCapability: on NATS one replica at a time sends to a
// sink whose platform paces it (relay.Paced), whatever its type is called.
func TestExclusiveByCapability(t *testing.T) {
	t.Parallel()
	paced := pacedSinks{}
	paced.add(buildFrom(t, everyType))
	for name, want := range map[string]bool{"team": true, "monitor": true, "crm": false, "term": false} {
		if paced.has(name) != want {
			t.Errorf("%s: exclusive %v, want %v", name, paced.has(name), want)
		}
	}
}

// TestPackNeedsAPacker: pack is a key of the sinks that pack turns.
func TestPackNeedsAPacker(t *testing.T) {
	t.Parallel()
	cfg, err := LoadConfig(writeConfig(t, minimal+"    pack: false\n"), true, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Check(); err == nil || !strings.Contains(err.Error(), "sinks[0].pack: not a key of webhook sinks") {
		t.Fatalf("pack on a webhook sink: %v", err)
	}
}
