package fault

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/slack/slacktest"
)

// healthyBound is how late the healthy sink beside a broken one may
// deliver. The never-answering sink's timeout is this long: a healthy sink
// that waited for it would take at least that.
const healthyBound = 5 * time.Second

// sinkCase is one case of TestFaultSlowAndBrokenSinks.
type sinkCase struct {
	name   string
	retry  string
	turns  []turn
	target func(t *testing.T) brokenSink
}

// brokenSink is the sink under test in one case.
type brokenSink struct {
	yaml   string         // the sink's config, named "target"
	turns  func() []turn  // what the destination shows, in order
	hangs  bool           // nothing is ever settled: no drain to wait for
	during func(*sinkRun) // runs right after the turns were accepted
	check  func(*sinkRun) // the error class, seen in metrics, dead letters and logs
	extra  func() string  // a line for the report
	stop   func()         // lets a blocked fake go
}

// sinkRun is one running case.
type sinkRun struct {
	t    *testing.T
	r    *relayProc
	c    *client
	want []turn
}

func (s *sinkRun) metrics() metrics {
	s.t.Helper()
	return s.c.metrics(s.r)
}

// TestFaultSlowAndBrokenSinks runs one sink that misbehaves in one way
// beside a healthy webhook sink, and checks that the error gets its class
// (metrics, dead letters, sink up or down) and that the healthy sink keeps
// delivering promptly.
func TestFaultSlowAndBrokenSinks(t *testing.T) {
	t.Parallel()
	cases := []sinkCase{
		{
			name: "never answers",
			// Shorter than the sink's timeout: a send in flight at
			// SIGTERM is cut off by the shutdown.
			retry: "retry: {initial: 100ms, max: 500ms, max_age: 1h}\nshutdown_timeout: 1s",
			turns: []turn{{0, 0}, {1, 0}, {0, 1}, {1, 1}},
			target: func(t *testing.T) brokenSink {
				release := make(chan struct{})
				h := newHookServer(t, func(_ int, _ http.ResponseWriter, r *http.Request) bool {
					select {
					case <-r.Context().Done():
					case <-release:
					}
					return true
				})
				return brokenSink{
					yaml:  fmt.Sprintf("{name: target, type: webhook, url: %q, timeout: %s}", h.srv.URL, healthyBound),
					turns: func() []turn { return hookTurns(h.deliveries()) },
					stop:  func() { close(release) },
					hangs: true,
					check: func(s *sinkRun) {
						// Each conversation's head times out once (5s), then
						// is retried. A failure is counted when the send
						// fails, "retried" once the retry is scheduled in
						// the store: wait for both.
						relaytest.Eventually(s.t, 20*time.Second, "two timeouts, both scheduled for retry", func() bool {
							m := s.metrics()
							return m.failures("target", "timeout") >= 2 &&
								m.get(t, "chatrelay_deliveries_total", "sink", "target", "result", "retried") >= 2
						})
						if n := s.metrics().failures("target", "network"); n != 0 {
							t.Errorf("delivery_failures_total{target,network} = %v: a destination that never answers is a timeout", n)
						}
						m := s.c.metrics(s.r)
						for _, c := range []struct {
							what string
							got  float64
							ok   bool
						}{
							{"retried", m.get(t, "chatrelay_deliveries_total", "sink", "target", "result", "retried"), true},
							{"delivered", m.get(t, "chatrelay_deliveries_total", "sink", "target", "result", "delivered"), false},
							{"dead", m.get(t, "chatrelay_deliveries_total", "sink", "target", "result", "dead"), false},
						} {
							if (c.got > 0) != c.ok {
								t.Errorf("deliveries_total{target,%s} = %v", c.what, c.got)
							}
						}
						if up := m.get(t, "chatrelay_sink_up", "sink", "target"); up != 1 {
							t.Errorf("sink_up{target} = %v: a timeout is retryable, not a broken destination", up)
						}
						if d := m.get(t, "chatrelay_queue_depth", "sink", "target"); d != float64(len(s.want)) {
							t.Errorf("queue_depth{target} = %v, want all %d held for retry", d, len(s.want))
						}
						// SIGTERM while a send hangs: it gets shutdown_timeout
						// (1s), then chatrelay exits.
						n := h.requests()
						relaytest.Eventually(t, 10*time.Second, "a send in flight", func() bool { return h.requests() > n })
						start := time.Now()
						s.r.stop(10 * time.Second)
						t.Logf("SIGTERM with sends hanging: exited after %s", time.Since(start).Round(time.Millisecond))
					},
					extra: func() string { return fmt.Sprintf("%d requests hung until the sink's timeout", h.requests()) },
				}
			},
		},
		{
			name:  "closes the connection mid-response",
			retry: "retry: {initial: 50ms, max: 200ms, max_age: 1h}",
			turns: []turn{{0, 0}, {0, 1}, {0, 2}},
			target: func(t *testing.T) brokenSink {
				const cut = 3
				h := newHookServer(t, func(n int, w http.ResponseWriter, _ *http.Request) bool {
					if n >= cut {
						return false
					}
					conn, buf, err := http.NewResponseController(w).Hijack()
					if err != nil {
						t.Errorf("hijack: %v", err)
						return true
					}
					_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Ty")
					_ = buf.Flush()
					_ = conn.Close()
					return true
				})
				return brokenSink{
					yaml:  fmt.Sprintf("{name: target, type: webhook, url: %q, timeout: 5s}", h.srv.URL),
					turns: func() []turn { return hookTurns(h.deliveries()) },
					check: func(s *sinkRun) {
						m := s.c.metrics(s.r)
						if got := m.failures("target", "network"); got != cut {
							t.Errorf("delivery_failures_total{target,network} = %v, want %d", got, cut)
						}
						if got := m.get(t, "chatrelay_deliveries_total", "sink", "target", "result", "retried"); got != cut {
							t.Errorf("deliveries_total{target,retried} = %v, want %d", got, cut)
						}
						if got := m.get(t, "chatrelay_sink_up", "sink", "target"); got != 1 {
							t.Errorf("sink_up{target} = %v", got)
						}
					},
					extra: func() string { return fmt.Sprintf("%d requests, %d cut mid-response", h.requests(), cut) },
				}
			},
		},
		slackBotCase("slack ok:false invalid_blocks", "invalid_blocks", 1, nil, func(s *sinkRun, slack *slacktest.Server) {
			// Permanent: the turn goes to the dead letters at once, the
			// next one is delivered, the sink stays up.
			t := s.t
			dead := s.c.deadLetters(s.r)
			if len(dead) != 1 || dead[0].Sink != "target" || !strings.Contains(dead[0].Reason, "invalid_blocks") {
				t.Fatalf("dead letters %+v, want the one refused turn with reason invalid_blocks", dead)
			}
			m := s.c.metrics(s.r)
			for what, want := range map[string]float64{"dead": 1, "retried": 0, "delivered": float64(len(s.want) - 1)} {
				if got := m.get(t, "chatrelay_deliveries_total", "sink", "target", "result", what); got != want {
					t.Errorf("deliveries_total{target,%s} = %v, want %v", what, got, want)
				}
			}
			if got := m.failures("target", "client_error"); got != 1 {
				t.Errorf("delivery_failures_total{target,client_error} = %v, want 1", got)
			}
			if got := m.get(t, "chatrelay_sink_up", "sink", "target"); got != 1 {
				t.Errorf("sink_up{target} = %v: one refused message is not a broken destination", got)
			}
			if n := len(slack.Requests()); n != len(s.want) {
				t.Errorf("%d chat.postMessage requests for %d turns: the refused one must not be retried", n, len(s.want))
			}
		}),
		slackBotCase("slack ok:false channel_not_found", "channel_not_found", 2, whileDown, func(s *sinkRun, slack *slacktest.Server) {
			// Broken: the sink was marked down and its deliveries held (not
			// dead-lettered), then the probe found the channel again.
			t := s.t
			if n := s.r.logs.count(`"msg":"sink marked down`); n != 1 {
				t.Errorf("%d \"sink marked down\" log lines, want 1", n)
			}
			m := s.c.metrics(s.r)
			if got := m.failures("target", "gone"); got != 2 {
				t.Errorf("delivery_failures_total{target,gone} = %v, want 2 (the first send and one probe)", got)
			}
			if got := m.get(t, "chatrelay_deliveries_total", "sink", "target", "result", "dead"); got != 0 {
				t.Errorf("deliveries_total{target,dead} = %v: a down sink holds its deliveries", got)
			}
			if got := m.get(t, "chatrelay_sink_up", "sink", "target"); got != 1 {
				t.Errorf("sink_up{target} = %v after the probe succeeded", got)
			}
			if n, msgs := len(slack.Requests()), len(slack.Messages()); n != msgs+2 {
				t.Errorf("%d requests for %d messages: while down only one probe per retry.max may go", n, msgs)
			}
		}),
		slackBotCase("slack ok:false internal_error", "internal_error", 2, nil, func(s *sinkRun, _ *slacktest.Server) {
			// Retryable: retried with backoff, delivered, never down.
			t := s.t
			m := s.c.metrics(s.r)
			if got := m.get(t, "chatrelay_deliveries_total", "sink", "target", "result", "retried"); got != 2 {
				t.Errorf("deliveries_total{target,retried} = %v, want 2", got)
			}
			if got := m.failures("target", "server_error"); got != 2 {
				t.Errorf("delivery_failures_total{target,server_error} = %v, want 2", got)
			}
			if got := m.get(t, "chatrelay_deliveries_total", "sink", "target", "result", "dead"); got != 0 {
				t.Errorf("deliveries_total{target,dead} = %v", got)
			}
			if n := s.r.logs.count(`"msg":"sink marked down`); n != 0 {
				t.Errorf("internal_error marked the sink down")
			}
		}),
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const secret, token = "broken-signing-secret", "broken-admin-token"
			crm := newHookServer(t, nil)
			target := tc.target(t)
			if target.stop != nil {
				t.Cleanup(target.stop)
			}
			r := newRelay(t, relayConfig{Secret: secret, AdminToken: token, Extra: fmt.Sprintf(`%s
sinks:
  - %s
  - {name: crm, type: webhook, url: %q}
`, tc.retry, target.yaml, crm.srv.URL)})
			c := newClient(t, token)
			r.start()
			run := &sinkRun{t: t, r: r, c: c, want: tc.turns}
			acceptedAt := map[turn]time.Time{}
			for _, tu := range tc.turns {
				rep, a, err := c.postSigned(mustAddr(r), secret, chatBody(tu, "widget", 0))
				if err != nil || rep.Code != http.StatusOK || a.Status != "accepted" {
					t.Fatalf("turn %s: %v %d %s", tu, err, rep.Code, rep.Body)
				}
				acceptedAt[tu] = time.Now()
			}
			if target.during != nil {
				target.during(run)
			}
			// The healthy sink gets everything promptly, whatever the other
			// one does.
			relaytest.Eventually(t, 10*time.Second, "every turn at the healthy sink", func() bool {
				return len(missing(tc.turns, hookTurns(crm.deliveries()))) == 0
			})
			var latencies []time.Duration
			for _, d := range crm.deliveries() {
				for _, tu := range d.turns {
					latencies = append(latencies, max(d.at.Sub(acceptedAt[tu]), 0))
				}
			}
			slices.Sort(latencies)
			worst := latencies[len(latencies)-1]
			if worst >= healthyBound {
				t.Errorf("the healthy sink took %s for a turn: it waited for the broken one", worst)
			}
			if rep := checkOrder(hookTurns(crm.deliveries())); rep.duplicates != 0 || len(rep.violations) != 0 {
				t.Errorf("healthy sink: %+v", rep)
			}
			// The broken sink: everything it can deliver arrives, in order.
			if !target.hangs {
				relaytest.Eventually(t, 20*time.Second, "the broken sink to settle everything", func() bool {
					m := c.metrics(r)
					return m.get(t, "chatrelay_queue_depth", "sink", "target") == 0
				})
				rep := checkOrder(target.turns())
				for _, v := range rep.violations {
					t.Error(v)
				}
				if rep.duplicates != 0 {
					t.Errorf("%d duplicates at the broken sink", rep.duplicates)
				}
			}
			target.check(run)
			line := fmt.Sprintf("healthy sink: %d turns, worst latency %s, median %s; broken sink delivered %d",
				len(latencies), worst.Round(time.Millisecond), latencies[len(latencies)/2].Round(time.Millisecond), len(target.turns()))
			if target.extra != nil {
				line += "; " + target.extra()
			}
			t.Log(line)
		})
	}
}

// slackBotCase is a Slack sink in bot mode whose first answers are
// "ok":false with code, scripted times, then normal. during, if set, runs
// while those answers are being given.
func slackBotCase(name, code string, times int, during func(*sinkRun), check func(*sinkRun, *slacktest.Server)) sinkCase {
	return sinkCase{
		name:  name,
		retry: "retry: {initial: 100ms, max: 1s, max_age: 1h}",
		turns: []turn{{0, 0}, {0, 1}, {0, 2}},
		target: func(t *testing.T) brokenSink {
			slack := slacktest.NewServer(t)
			for range times {
				slack.Script(slacktest.Response{Error: code})
			}
			return brokenSink{
				yaml: fmt.Sprintf("{name: target, type: slack, token: %q, channel: C0FAULT1, api_url: %q, rate: 20/s}",
					slack.Token, slack.APIURL()),
				turns:  func() []turn { return slackTurns(slack) },
				during: during,
				check:  func(s *sinkRun) { check(s, slack) },
				extra: func() string {
					return fmt.Sprintf("Slack answered %d×%s, then %d messages", times, code, len(slack.Messages()))
				},
			}
		},
	}
}

// whileDown checks, while a broken destination keeps failing, that the
// sink is marked down and holds its deliveries.
func whileDown(s *sinkRun) {
	t := s.t
	relaytest.Eventually(t, 5*time.Second, "sink_up{target} 0", func() bool {
		return s.metrics().get(t, "chatrelay_sink_up", "sink", "target") == 0
	})
	var sinks struct {
		Sinks []struct {
			Name        string `json:"name"`
			Up          bool   `json:"up"`
			Depth       int    `json:"queue_depth"`
			DeadLetters int    `json:"dead_letters"`
		} `json:"sinks"`
	}
	s.c.adminJSON(s.r, "/api/v1/sinks", &sinks)
	for _, v := range sinks.Sinks {
		switch v.Name {
		case "target":
			if v.Up || v.Depth != len(s.want) || v.DeadLetters != 0 {
				t.Errorf("/api/v1/sinks while down: %+v, want up false, all %d held, no dead letters", v, len(s.want))
			}
		case "crm":
			if !v.Up {
				t.Errorf("/api/v1/sinks: the healthy sink is down too: %+v", v)
			}
		}
	}
}
