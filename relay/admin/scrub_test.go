package admin_test

import (
	"io"
	"net/http"
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

// TestAnswersAreScrubbed: error text stored before scrubbing existed (or by
// another replica's older version) is served without the configured
// secrets: dead-letter reasons and a delivery's last error.
func TestAnswersAreScrubbed(t *testing.T) {
	t.Parallel()
	const secret = "Bearer crm-token-0123456789"
	store, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	reg := prometheus.NewRegistry()
	srv := httptest.NewServer(admin.Handler(admin.Config{Store: store, Gatherer: reg, Metrics: relay.NewMetrics(reg),
		Sinks: []string{"a"}, Scrub: relay.NewScrubber(secret)}))
	t.Cleanup(srv.Close)

	echo := "HTTP 400 Bad Request: you sent Authorization: " + secret
	dead := storetest.NewEvent(t, "c1", 1)
	pending := storetest.NewEvent(t, "c2", 2)
	for _, ev := range []*relay.Event{dead, pending} {
		if _, err := store.Append(t.Context(), ev, []string{"a"}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		d, err := store.Queue("a").Next(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if d.Event.ID == dead.ID {
			err = d.Term(t.Context(), echo)
		} else {
			err = d.Nak(t.Context(), time.Hour, echo)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, path := range []string{"/api/v1/dlq", "/api/v1/dlq/" + relay.DeadLetterID(dead.ID, "a"),
		"/api/v1/events/" + dead.ID, "/api/v1/events/" + pending.ID} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
		if strings.Contains(string(body), "crm-token-0123456789") {
			t.Errorf("%s serves the secret:\n%s", path, body)
		}
		if !strings.Contains(string(body), "[redacted]") {
			t.Errorf("%s: no [redacted] mark; did the text get there?\n%s", path, body)
		}
	}
}
