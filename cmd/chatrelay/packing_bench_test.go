package main

import (
	"flag"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/sinks/slack/slacktest"
)

var (
	backlogDuration = flag.Duration("backlog.duration", 60*time.Second, "how long BenchmarkSlackBacklog sends")
	backlogRate     = flag.Int("backlog.rate", 10, "chats per second BenchmarkSlackBacklog sends")
)

var oldestPending = regexp.MustCompile(`chatrelay_oldest_pending_seconds\{sink="team"\} (\S+)`)

// BenchmarkSlackBacklog sends a sustained -backlog.rate chats per second
// (each a new conversation turn, over 50 conversations) into one Slack
// incoming webhook that takes one message per second, for
// -backlog.duration, and reports the age of the oldest undelivered turn
// (max over the run, sampled every 250 ms) and the messages posted, with
// packing and without it.
//
//	go test ./cmd/chatrelay -run '^$' -bench SlackBacklog -benchtime 1x
func BenchmarkSlackBacklog(b *testing.B) {
	for _, pack := range []bool{true, false} {
		b.Run(fmt.Sprintf("pack=%v", pack), func(b *testing.B) {
			for b.Loop() {
				maxAge, msgs, sent := slackBacklog(b, pack)
				b.ReportMetric(maxAge.Seconds(), "max-oldest-s")
				b.ReportMetric(float64(msgs), "messages")
				b.ReportMetric(float64(sent), "turns")
			}
		})
	}
}

func slackBacklog(b *testing.B, pack bool) (maxAge time.Duration, messages, sent int) {
	slackSrv := slacktest.NewServer(b, slacktest.WithRateLimit(time.Second, 1))
	listen, admin, _ := serveFor(b, fmt.Sprintf(`
signing_secrets: [backlog-secret]
log: {level: warn, format: json}
sinks:
  - {name: team, type: slack, webhook_url: "%s", pack: %v}
`, slackSrv.WebhookURL(), pack))
	sample := func() time.Duration {
		_, metrics := httpGet(b, "http://"+admin+"/metrics", "")
		m := oldestPending.FindStringSubmatch(metrics)
		if m == nil {
			return 0
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return time.Duration(v * float64(time.Second))
	}
	tick := time.NewTicker(time.Second / time.Duration(*backlogRate))
	defer tick.Stop()
	probe := time.NewTicker(250 * time.Millisecond)
	defer probe.Stop()
	end := time.After(*backlogDuration)
	for done := false; !done; {
		select {
		case <-tick.C:
			body := fmt.Appendf(nil, `{"conversation_id":"conv-%d","messages":[{"role":"user","content":"question %d"}],"answer":{"content":"a short answer","score":0.8}}`, sent%50, sent)
			postSigned(b, listen, "backlog-secret", body)
			sent++
		case <-probe.C:
			maxAge = max(maxAge, sample())
		case <-end:
			done = true
		}
	}
	maxAge = max(maxAge, sample())
	limited := 0
	for _, r := range slackSrv.Requests() {
		if r.Status == http.StatusTooManyRequests {
			limited++
		}
	}
	b.Logf("pack=%v: %d turns in %s, max age of the oldest undelivered turn %s, %d messages so far, %d answered 429",
		pack, sent, *backlogDuration, maxAge.Round(10*time.Millisecond), len(slackSrv.Messages()), limited)
	return maxAge, len(slackSrv.Messages()), sent
}
