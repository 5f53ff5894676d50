package fault

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/slack/slacktest"
)

// TestFaultSinkOutage: Slack answers 503 for a long stretch, then 429 with
// Retry-After, while events keep arriving. When it comes back the backlog
// drains in conversation order, nothing is dead-lettered (the errors are
// retryable and retry.max_age is far), a 429 pauses the whole sink for its
// Retry-After, and the sink is never marked down.
func TestFaultSinkOutage(t *testing.T) {
	t.Parallel()
	const secret, token, convs = "outage-signing-secret", "outage-admin-token", 4
	slack := slacktest.NewServer(t)
	g := newGate(t, proxyTo(t, slack.URL), "2")
	r := newRelay(t, relayConfig{Secret: secret, AdminToken: token, Extra: fmt.Sprintf(`
retry: {initial: 100ms, max: 1s, max_age: 1h}
sinks:
  - {name: team, type: slack, webhook_url: %q, rate: 10/s}
`, g.srv.URL+slack.WebhookPath())})
	c := newClient(t, token)
	r.start()

	l := newLoad(t, r, c, secret, func(int) string { return "widget" })
	l.gap = 200 * time.Millisecond
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for conv := range convs {
		wg.Go(func() { l.run(conv, stop) })
	}
	phase := func(mode string, d time.Duration) {
		g.set(mode)
		start := time.Now()
		maxDepth, minUp := 0.0, 1.0
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for time.Since(start) < d {
			select {
			case <-tick.C:
			case <-t.Context().Done():
				t.Fatal("test ended")
			}
			m := c.metrics(r)
			maxDepth = max(maxDepth, m.get(t, "chatrelay_queue_depth", "sink", "team"))
			minUp = min(minUp, m.get(t, "chatrelay_sink_up", "sink", "team"))
		}
		acc, _, _, _ := l.snapshot()
		t.Logf("after %s %s: %d events accepted, %d turns in the channel, largest backlog %v", mode, d, len(acc), len(slackTurns(slack)), maxDepth)
		if minUp != 1 {
			t.Errorf("phase %s: chatrelay_sink_up went to %v: 503 and 429 are not a broken destination", mode, minUp)
		}
	}
	phase(gateUp, 500*time.Millisecond)
	phase(gateDown, 3*time.Second)
	phase(gateLimited, 4500*time.Millisecond)
	g.set(gateUp)
	backOnline := time.Now()
	phase(gateUp, 500*time.Millisecond)
	close(stop)
	wg.Wait()

	want := l.turns(nil)
	relaytest.Eventually(t, 30*time.Second, "the backlog to drain into Slack", func() bool {
		return len(missing(want, slackTurns(slack))) == 0
	})
	drained := time.Since(backOnline)
	// Slack records a message before it answers; the relay counts it once
	// the answer is back.
	relaytest.Eventually(t, 10*time.Second, "every delivery counted", func() bool {
		return c.metrics(r).get(t, "chatrelay_deliveries_total", "sink", "team", "result", "delivered") >= float64(len(want))
	})
	rep := checkOrder(slackTurns(slack))
	for _, v := range rep.violations {
		t.Error(v)
	}
	if rep.duplicates != 0 {
		t.Errorf("%d duplicates: a refused request was not posted, so none may repeat", rep.duplicates)
	}
	m := c.metrics(r)
	if dl := c.deadLetters(r); len(dl) != 0 {
		t.Errorf("%d dead letters for retryable errors within retry.max_age, e.g. %+v", len(dl), dl[0])
	}
	retried := m.get(t, "chatrelay_deliveries_total", "sink", "team", "result", "retried")
	limited := m.get(t, "chatrelay_deliveries_total", "sink", "team", "result", "rate_limited")
	for name, v := range map[string]float64{
		"deliveries_total{result=retried}":      retried,
		"deliveries_total{result=rate_limited}": limited,
		"rate_limited_total":                    m.get(t, "chatrelay_rate_limited_total", "sink", "team"),
		"delivery_failures_total{server_error}": m.failures("team", "server_error"),
	} {
		if v < 1 {
			t.Errorf("chatrelay_%s = %v, want at least 1", name, v)
		}
	}
	if got := m.get(t, "chatrelay_deliveries_total", "sink", "team", "result", "dead"); got != 0 {
		t.Errorf("deliveries_total{result=dead} = %v", got)
	}
	if got, n := m.get(t, "chatrelay_deliveries_total", "sink", "team", "result", "delivered"), float64(len(want)); got != n {
		t.Errorf("deliveries_total{result=delivered} = %v, want %v (one per accepted event)", got, n)
	}
	// A 429's Retry-After pauses the whole sink: no request of any
	// conversation may start before it is over. A request that arrives
	// within 300ms of the 429 may have been sent before the relay read the
	// 429 (concurrency 2, on a busy machine), and is not held against it;
	// without the hold, the sink's pace (10/s) would send one every 100ms.
	const inFlight = 300 * time.Millisecond
	hits := g.hits()
	var n503, n429 int
	for _, h := range hits {
		switch h.status {
		case http.StatusServiceUnavailable:
			n503++
		case http.StatusTooManyRequests:
			n429++
			for _, o := range hits {
				if gap := o.start.Sub(h.end); gap > inFlight && gap < 2*time.Second-20*time.Millisecond {
					t.Errorf("a request started %s after a 429 with Retry-After: 2 was answered", gap.Round(time.Millisecond))
				}
			}
		}
	}
	acc, _, unavailable, _ := l.snapshot()
	t.Logf("accepted %d events in 4 conversations (%d receiver 503s); Slack answered %d×503 and %d×429 (Retry-After 2); "+
		"%v retries, %v rate-limit holds; backlog drained %s after Slack came back, in %d messages, no dead letters",
		len(acc), unavailable, n503, n429, retried, limited, drained.Round(time.Millisecond), len(slack.Messages()))
	if n429 == 0 || n503 == 0 {
		t.Errorf("the outage did not happen as planned: %d×503, %d×429", n503, n429)
	}
}

// TestFaultRetryExpiryAndReplay: with a short retry.max_age, a Slack that
// keeps answering 503 sends every delivery to the dead letters (never the
// healthy webhook beside it); once Slack is back, "chatrelay dlq replay"
// brings them back and they are delivered, each conversation in order.
func TestFaultRetryExpiryAndReplay(t *testing.T) {
	t.Parallel()
	const secret, token, convs, turns = "expiry-signing-secret", "expiry-admin-token", 3, 4
	slack := slacktest.NewServer(t)
	g := newGate(t, proxyTo(t, slack.URL), "1")
	g.set(gateDown)
	hook := newHookServer(t, nil)
	r := newRelay(t, relayConfig{Secret: secret, AdminToken: token, Extra: fmt.Sprintf(`
retry: {initial: 50ms, max: 200ms, max_age: 1s}
sinks:
  - {name: team, type: slack, webhook_url: %q, rate: 20/s}
  - {name: crm, type: webhook, url: %q}
`, g.srv.URL+slack.WebhookPath(), hook.srv.URL)})
	c := newClient(t, token)
	r.start()
	var want []turn
	for n := range turns {
		for conv := range convs {
			tu := turn{conv, n}
			rep, a, err := c.postSigned(mustAddr(r), secret, chatBody(tu, "widget", 0))
			if err != nil || rep.Code != http.StatusOK || a.Status != "accepted" {
				t.Fatalf("turn %s: %v %d %s", tu, err, rep.Code, rep.Body)
			}
			want = append(want, tu)
		}
	}
	relaytest.Eventually(t, 20*time.Second, "every delivery to Slack in the dead letters", func() bool {
		return c.metrics(r).get(t, "chatrelay_dead_letters", "sink", "team") == float64(len(want))
	})
	expired := time.Now()
	dead := c.deadLetters(r)
	for _, d := range dead {
		if d.Sink != "team" || !strings.Contains(d.Reason, "retry.max_age") {
			t.Errorf("dead letter %+v: want sink team and a retry.max_age reason", d)
		}
	}
	m := c.metrics(r)
	if got := m.get(t, "chatrelay_sink_up", "sink", "team"); got != 1 {
		t.Errorf("sink_up{team} = %v: a 503 is retryable, not a broken destination", got)
	}
	if got := m.get(t, "chatrelay_dead_letters", "sink", "crm"); got != 0 {
		t.Errorf("the healthy sink has %v dead letters", got)
	}
	if got := hookTurns(hook.deliveries()); len(missing(want, got)) != 0 {
		t.Errorf("the healthy sink lacks %v", missing(want, got))
	}

	// Slack is back; the operator replays with the CLI.
	g.set(gateUp)
	out, err := r.runCLI("dlq", "list", "--sink", "team", "--json")
	if err != nil {
		t.Fatalf("dlq list: %v\n%s", err, out)
	}
	var listed int
	for line := range strings.Lines(out) {
		var d relay.DeadLetter
		if json.Unmarshal([]byte(line), &d) == nil && d.Sink == "team" {
			listed++
		}
	}
	if listed != len(want) {
		t.Errorf("dlq list --json printed %d dead letters, want %d:\n%s", listed, len(want), out)
	}
	// The table: one line per dead letter, nothing else (not a terminal).
	out, err = r.runCLI("dlq", "list", "--sink", "team")
	if lines := strings.Count(out, "\n"); err != nil || lines != len(want) || !strings.Contains(out, " team ") {
		t.Errorf("dlq list printed %d lines for %d dead letters (%v):\n%s", lines, len(want), err, out)
	}
	out, err = r.runCLI("dlq", "replay", "--all", "--sink", "team")
	if err != nil || !strings.Contains(out, fmt.Sprintf("requeued %d deliveries", len(want))) {
		t.Fatalf("dlq replay: %v\n%s", err, out)
	}
	relaytest.Eventually(t, 20*time.Second, "the replayed deliveries in Slack", func() bool {
		return len(missing(want, slackTurns(slack))) == 0
	})
	rep := checkOrder(slackTurns(slack))
	for _, v := range rep.violations {
		t.Error(v)
	}
	relaytest.Eventually(t, 10*time.Second, "the replay to be counted", func() bool {
		return c.metrics(r).get(t, "chatrelay_deliveries_total", "sink", "team", "result", "delivered") == float64(len(want))
	})
	m = c.metrics(r)
	if got := m.get(t, "chatrelay_deliveries_total", "sink", "team", "result", "replayed"); got != float64(len(want)) {
		t.Errorf("deliveries_total{replayed} = %v, want %d", got, len(want))
	}
	if left := c.deadLetters(r); len(left) != 0 {
		t.Errorf("%d dead letters left after the replay", len(left))
	}
	t.Logf("%d events: all %d Slack deliveries parked after retry.max_age 1s (%d Slack requests, all 503), the webhook beside got all %d; "+
		"replay requeued %d and all were delivered %s later, %d duplicates",
		len(want), len(dead), len(g.hits())-len(slack.Requests()), len(hookTurns(hook.deliveries())), len(want),
		time.Since(expired).Round(time.Millisecond), rep.duplicates)
}

// mustAddr returns the receiver's current address.
func mustAddr(r *relayProc) string {
	addr, _ := r.addr()
	return addr
}
