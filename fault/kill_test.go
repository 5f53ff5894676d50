package fault

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/discord/discordtest"
	"github.com/chatrelay/chatrelay/sinks/slack/slacktest"
)

// TestFaultRestartsUnderLoad: a steady signed load on several
// conversations, and five times at random moments the relay is stopped and
// started again: by SIGKILL, or by SIGTERM. Every event that got a 2xx
// reaches every sink its routes select, and no conversation ever goes back
// to an older turn. Repeats are bounded by one per conversation and sink
// per kill (the delivery in flight); a graceful stop repeats nothing.
func TestFaultRestartsUnderLoad(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		stop    func(r *relayProc)
		repeats int // per conversation and sink, per stop
	}{
		{"kill -9", (*relayProc).kill9, 1},
		{"SIGTERM", func(r *relayProc) { r.stop(10 * time.Second) }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			restartsUnderLoad(t, tc.stop, tc.repeats)
		})
	}
}

func restartsUnderLoad(t *testing.T, stopRelay func(*relayProc), repeats int) {
	const (
		secret = "restart-signing-secret"
		convs  = 6
		kills  = 5
	)
	hook := newHookServer(t, nil)
	slack := slacktest.NewServer(t)
	discord := discordtest.NewServer(t, discordtest.WithRateLimit(0, 0))
	channel := discord.AddChannel(discordgo.ChannelTypeGuildText)
	// Every chat goes to crm; conversations from the widget also go to
	// the Slack channel (even conversations), those from the API to the
	// Discord channel (odd ones).
	r := newRelay(t, relayConfig{Secret: secret, AdminToken: "restart-admin-token", Extra: fmt.Sprintf(`
retry: {initial: 50ms, max: 500ms, max_age: 1h}
sinks:
  - {name: crm, type: webhook, url: %q, concurrency: 4}
  - {name: team, type: slack, webhook_url: %q, rate: 200/s}
  - {name: monitor, type: discord, webhook_url: %q, rate: 200/s}
routes:
  - match: {topic: [chat]}
    sinks: [crm]
  - match: {source: [widget]}
    sinks: [team]
  - match: {source: [api]}
    sinks: [monitor]
`, hook.srv.URL+"/in", slack.WebhookURL(), discord.AddWebhook(channel))})
	source := func(conv int) string {
		if conv%2 == 0 {
			return "widget"
		}
		return "api"
	}
	toTeam := func(tu turn) bool { return source(tu.conv) == "widget" }
	toMonitor := func(tu turn) bool { return source(tu.conv) == "api" }
	discordTurns := func() []turn {
		var out []turn
		for _, m := range discord.Messages(channel) {
			out = append(out, markers(string(m.Payload))...)
		}
		return out
	}
	c := newClient(t, "restart-admin-token")
	r.start()

	l := newLoad(t, r, c, secret, source)
	l.gap = 15 * time.Millisecond
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for conv := range convs {
		wg.Go(func() { l.run(conv, stop) })
	}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	t.Logf("stop moments drawn with seed %d", seed)
	for round := range kills {
		wait := time.Duration(200+rng.IntN(1000)) * time.Millisecond
		select {
		case <-time.After(wait):
		case <-t.Context().Done():
			t.Fatal("test ended")
		}
		acc, _, _, _ := l.snapshot()
		start := time.Now()
		stopRelay(r)
		stopped := time.Since(start)
		r.start()
		t.Logf("round %d: stopped after %s (%d events accepted so far, crm has %d deliveries, slack %d messages), gone in %s, restarted in %s",
			round+1, wait, len(acc), len(hook.deliveries()), len(slack.Messages()), stopped.Round(time.Millisecond),
			(time.Since(start) - stopped).Round(time.Millisecond))
	}
	// Some steady load after the last restart, then stop sending.
	select {
	case <-time.After(500 * time.Millisecond):
	case <-t.Context().Done():
	}
	close(stop)
	wg.Wait()

	wantCRM, wantTeam, wantMonitor := l.turns(nil), l.turns(toTeam), l.turns(toMonitor)
	relaytest.Eventually(t, 60*time.Second, "every accepted event at every routed sink", func() bool {
		return len(missing(wantCRM, hookTurns(hook.deliveries()))) == 0 && len(missing(wantTeam, slackTurns(slack))) == 0 &&
			len(missing(wantMonitor, discordTurns())) == 0
	})
	// Let the queues empty, so that late repeats are counted too.
	relaytest.Eventually(t, 30*time.Second, "empty queues", func() bool {
		m := c.metrics(r)
		return m.get(t, "chatrelay_queue_depth", "sink", "crm") == 0 && m.get(t, "chatrelay_queue_depth", "sink", "team") == 0 &&
			m.get(t, "chatrelay_queue_depth", "sink", "monitor") == 0
	})

	acc, failures, unavailable, dupAnswers := l.snapshot()
	known := map[turn]bool{}
	for _, a := range acc {
		known[a.turn] = true
	}
	routed := map[string]func(turn) bool{"crm": func(turn) bool { return true }, "team": toTeam, "monitor": toMonitor}
	for name, got := range map[string][]turn{"crm": hookTurns(hook.deliveries()), "team": slackTurns(slack), "monitor": discordTurns()} {
		rep := checkOrder(got)
		for _, v := range rep.violations {
			t.Errorf("%s: %s", name, v)
		}
		for _, tu := range got {
			if !known[tu] {
				t.Errorf("%s got turn %s, which never got a 2xx", name, tu)
			}
			if !routed[name](tu) {
				t.Errorf("%s got turn %s, which no route sends it", name, tu)
			}
		}
		// At most the delivery in flight per conversation can repeat at
		// each kill.
		convsOf := convs
		if name != "crm" {
			convsOf = convs / 2
		}
		bound := kills * convsOf * repeats
		t.Logf("%s: %d deliveries, %d duplicates (bound %d: %d per conversation per stop)", name, rep.deliveries, rep.duplicates, bound, repeats)
		if rep.duplicates > bound {
			t.Errorf("%s: %d duplicates, more than %d", name, rep.duplicates, bound)
		}
	}
	// A repeat carries the webhook-id of the first delivery, so that the
	// receiver can drop it (Standard Webhooks).
	idOf := map[turn]string{}
	for _, d := range hook.deliveries() {
		for _, tu := range d.turns {
			if prev, ok := idOf[tu]; ok && prev != d.webhookID {
				t.Errorf("crm got turn %s with webhook-id %s, then %s", tu, prev, d.webhookID)
			}
			idOf[tu] = d.webhookID
		}
	}
	if repeats == 0 && dupAnswers > 0 {
		t.Errorf("%d events were stored but their answer was lost: a graceful stop must answer the requests in flight", dupAnswers)
	}
	if len(c.deadLetters(r)) != 0 {
		t.Errorf("dead letters after the restarts: %+v", c.deadLetters(r))
	}
	t.Logf("accepted %d events (%d to team, %d to monitor) over %d restarts; %d requests got no answer and were resent, %d were answered \"duplicate\" (stored before the kill, answer lost), %d answered 503",
		len(acc), len(wantTeam), len(wantMonitor), kills, failures, dupAnswers, unavailable)
	t.Logf("slack: %d messages carried %d turns; discord: %d messages carried %d turns",
		len(slack.Messages()), len(slackTurns(slack)), len(discord.Messages(channel)), len(discordTurns()))
	r.stop(15 * time.Second)
}
