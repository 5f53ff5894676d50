package relay_test

import (
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
)

// TestErrorTextIsScrubbedBeforeItIsKept: a destination that echoes a
// configured credential in its answers leaves it in no last_error, dead
// letter reason or log line, and the errors keep their class.
func TestErrorTextIsScrubbedBeforeItIsKept(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const header = "Bearer crm-token-0123456789"
	const token = "crm-token-0123456789"
	synctest.Test(t, func(t *testing.T) {
		echo := fmt.Sprintf(`you sent {"Authorization":[%q]}`, header)
		sink := newFakeSink(func(n int, ev *relay.Event) error {
			se := &relay.StatusError{Status: 503, Body: echo}
			if n == 1 {
				return fmt.Errorf("webhook sink: %w", relay.Retryable(se, relay.ReasonServerError))
			}
			se.Status = 400
			return fmt.Errorf("webhook sink: %w", relay.Permanent(se, relay.ReasonClientError))
		})
		f := start(t, dir, sink, policy, 1, func(c *relay.DispatcherConfig) { c.Scrub = relay.NewScrubber(header) })
		defer f.stop(t)
		ev := f.append(t, "A", 1)
		synctest.Wait() // the first attempt failed; the retry is 1s away
		rec, err := f.store.Lookup(t.Context(), ev.ID)
		if err != nil || rec.Deliveries[0].State != relay.StatePending || rec.Deliveries[0].Attempts != 1 {
			t.Fatalf("after the first attempt: %+v, %v", rec, err)
		}
		pending := rec.Deliveries[0].LastError
		time.Sleep(2 * time.Second) // fake time: the retry, refused for good
		synctest.Wait()
		dead, err := f.store.ListDead(t.Context(), "", 0)
		if err != nil || len(dead) != 1 {
			t.Fatalf("dead letters %+v, %v", dead, err)
		}
		for what, text := range map[string]string{"last_error": pending, "reason": dead[0].Reason, "log": f.logs.String()} {
			relaytest.AssertNoSecret(t, what, text, token)
			if !strings.Contains(text, "[redacted]") {
				t.Errorf("%s has no [redacted] mark (did the failure happen?):\n%s", what, text)
			}
		}
		if !strings.Contains(dead[0].Reason, "HTTP 400") || dead[0].Attempts != 2 {
			t.Errorf("dead letter %+v: the permanent 400 should have parked it after 2 attempts", dead[0])
		}
		if !strings.Contains(pending, "HTTP 503") {
			t.Errorf("last_error %q lost the status", pending)
		}
	})
}
