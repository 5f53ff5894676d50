package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/relay/relaytest"
)

// TestEchoedHeaderNeverStoredOrServed: a destination that echoes the
// request's headers in its error answers (as many frameworks' error pages
// do) gets the configured Authorization header; the dead letter, a pending
// delivery's last error, the admin API, dlq list and the log never show it.
func TestEchoedHeaderNeverStoredOrServed(t *testing.T) {
	t.Parallel()
	const token = "crm-bearer-7f3e9a1b2c4d"
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		status := http.StatusBadRequest // permanent: parked
		if bytes.Contains(b, []byte(`"retry-me"`)) {
			status = http.StatusServiceUnavailable // retried: last_error
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, "rejected %s %s; headers: Authorization=%s X-Tenant=%s",
			r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("X-Tenant"))
	}))
	t.Cleanup(echo.Close)
	listen, admin, logs := serveFor(t, fmt.Sprintf(`
signing_secrets: [echo-signing-secret]
log: {level: debug, format: json}
retry: {initial: 1h, max: 1h, max_age: 24h}
sinks:
  - name: crm
    type: webhook
    url: "%s/in"
    headers: {Authorization: "Bearer %s", X-Tenant: "tenant-ab12cd34"}
`, echo.URL, token))
	postSigned(t, listen, "echo-signing-secret", []byte(`{"conversation_id":"parked","messages":[{"role":"user","content":"hi"}]}`))
	postSigned(t, listen, "echo-signing-secret", []byte(`{"conversation_id":"retry-me","messages":[{"role":"user","content":"hi"}]}`))

	base := "http://" + admin + "/api/v1"
	var dlq, events string
	relaytest.Eventually(t, 60*time.Second, "one dead letter and one retried delivery", func() bool {
		_, m := httpGet(t, "http://"+admin+"/metrics", "")
		return strings.Contains(m, `chatrelay_deliveries_total{result="dead",sink="crm"} 1`) &&
			strings.Contains(m, `chatrelay_deliveries_total{result="retried",sink="crm"} 1`)
	})
	_, dlq = httpGet(t, base+"/dlq", "")
	_, events = httpGet(t, base+"/events", "")
	served := []string{dlq}
	for _, id := range idsIn(events) {
		_, ev := httpGet(t, base+"/events/"+id, "")
		served = append(served, ev)
		_, dl := httpGet(t, base+"/dlq/"+id+".crm", "")
		served = append(served, dl)
	}
	var out, errOut bytes.Buffer
	cfg := writeConfig(t, "admin: {listen: "+admin+"}\n")
	if code := run(t.Context(), []string{"dlq", "list", "--config", cfg}, nil, &out, &errOut, os.Getenv); code != 0 {
		t.Fatalf("dlq list exit %d: %s", code, errOut.String())
	}
	served = append(served, out.String())
	all := strings.Join(served, "\n")
	if !strings.Contains(all, "HTTP 400") || !strings.Contains(all, "HTTP 503") || !strings.Contains(all, "[redacted]") {
		t.Fatalf("the echo did not reach the dead letter and last_error (the test proves nothing):\n%s", all)
	}
	for what, text := range map[string]string{"admin API and dlq list": all, "log": logs.String()} {
		for _, secret := range []string{token, "tenant-ab12cd34"} {
			if strings.Contains(text, secret) {
				t.Errorf("%s shows %q:\n%s", what, secret, text)
			}
		}
	}
}

// idsIn returns the event ids of an /api/v1/events answer.
func idsIn(list string) []string {
	var ids []string
	for line := range strings.Lines(list) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), `"id": "`); ok {
			ids = append(ids, strings.TrimSuffix(strings.TrimSuffix(v, ","), `"`))
		}
	}
	return ids
}
