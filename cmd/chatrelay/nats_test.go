package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/nats-io/nats-server/v2/server"
)

// TestServeOnNATS runs serve with store.driver nats against an in-process
// JetStream server: an event is accepted and delivered byte for byte.
func TestServeOnNATS(t *testing.T) {
	t.Parallel()
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
	hook := newHookReceiver(t, 0)
	listen, admin, logs := serveFor(t, fmt.Sprintf(`
signing_secrets: [nats-secret]
log: {level: info, format: json}
store:
  driver: nats
  nats: {url: "%s", partitions: 4}
sinks:
  - {name: crm, type: webhook, url: "%s/in"}
`, ns.ClientURL(), hook.srv.URL))
	body := []byte(`{"conversation_id":"c1","messages":[{"role":"user","content":"on nats"}]}`)
	postSigned(t, listen, "nats-secret", body)
	select {
	case <-hook.got:
	case <-time.After(20 * time.Second):
		t.Fatalf("not delivered through NATS:\n%s", logs.String())
	}
	hook.mu.Lock()
	got := string(hook.bodies[0])
	hook.mu.Unlock()
	if got != string(body) {
		t.Fatalf("destination got %s", got)
	}
	relaytest.Eventually(t, 30*time.Second, "the delivery to be recorded", func() bool {
		_, m := httpGet(t, "http://"+admin+"/metrics", "")
		return strings.Contains(m, `chatrelay_deliveries_total{result="delivered",sink="crm"} 1`)
	})
	if !strings.Contains(logs.String(), `"store":"nats (4 partitions, 1 replicas)"`) {
		t.Errorf("start-up log does not name the store:\n%s", logs.String())
	}
}
