// Package soak runs the real chatrelay binary for a chosen time at a chosen
// rate, with fakes of Slack, Discord and a generic webhook receiver, and
// prints what a regression would show: accepted, delivered, duplicates,
// dead letters, send→delivered latency (from the moment the signed request
// leaves the client), peak RSS and open descriptors.
//
// It is a test that runs only when asked:
//
//	go test ./bench/soak -run Soak -soak -soak.duration 5m -soak.rate 50 -v
package soak

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/sinks/discord/discordtest"
	"github.com/chatrelay/chatrelay/sinks/slack/slacktest"
)

var (
	enabled  = flag.Bool("soak", false, "run the soak (otherwise it is skipped)")
	duration = flag.Duration("soak.duration", time.Minute, "how long to send")
	rate     = flag.Int("soak.rate", 20, "events per second")
	convs    = flag.Int("soak.convs", 200, "conversations the events spread over")
)

// tap sits in front of a fake destination and records when each marked
// event arrived there.
type tap struct {
	name string
	srv  *httptest.Server

	mu      sync.Mutex
	arrived map[int][]time.Time // seq → arrival times (more than one: duplicates)
}

var marker = regexp.MustCompile(`soak-seq-(\d+)-`)

func newTap(t *testing.T, name, target string) *tap {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	tp := &tap{name: name, arrived: map[int][]time.Time{}}
	proxy := httputil.NewSingleHostReverseProxy(u)
	tp.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := &statusRecorder{ResponseWriter: w, status: 200}
		proxy.ServeHTTP(rec, r)
		if rec.status >= 300 {
			return
		}
		now := time.Now()
		seen := map[int]bool{}
		for _, m := range marker.FindAllSubmatch(body, -1) {
			seq, _ := strconv.Atoi(string(m[1]))
			if !seen[seq] {
				seen[seq] = true
				tp.mu.Lock()
				tp.arrived[seq] = append(tp.arrived[seq], now)
				tp.mu.Unlock()
			}
		}
	}))
	t.Cleanup(tp.srv.Close)
	return tp
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// procStats reads the resident set size (current and peak, KiB) and the
// number of open descriptors of a process.
func procStats(pid int) (rss, hwm int, fds int) {
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			switch f[0] {
			case "VmRSS:":
				rss, _ = strconv.Atoi(f[1])
			case "VmHWM:":
				hwm, _ = strconv.Atoi(f[1])
			}
		}
	}
	entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return rss, hwm, len(entries)
}

func TestSoak(t *testing.T) {
	if !*enabled {
		t.Skip("soak runs only with -soak")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "chatrelay")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/chatrelay")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatal(err)
	}

	// Realistic platforms: Slack at one message per second per channel,
	// Discord's buckets; chatrelay paces and packs to keep up.
	slackSrv := slacktest.NewServer(t, slacktest.WithRateLimit(time.Second, 1))
	discordSrv := discordtest.NewServer(t)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hook.Close)
	slackTap := newTap(t, "slack", slackSrv.URL)
	discordTap := newTap(t, "discord", discordSrv.URL())
	hookTap := newTap(t, "webhook", hook.URL)
	slackURL := slackTap.srv.URL + slackSrv.WebhookPath()
	discordURL := strings.Replace(discordSrv.AddWebhook(discordSrv.AddChannel(discordgo.ChannelTypeGuildText)),
		discordSrv.URL(), discordTap.srv.URL, 1)

	listen, admin := freeAddr(t), freeAddr(t)
	const secret = "soak-signing-secret"
	cfg := filepath.Join(dir, "chatrelay.yaml")
	os.WriteFile(cfg, fmt.Appendf(nil, `
listen: %s
admin: {listen: %s}
signing_secrets: [%s]
log: {level: warn, format: json}
store: {path: %s}
retry: {initial: 1s, max: 30s, max_age: 1h}
sinks:
  - {name: slack, type: slack, webhook_url: "%s"}
  - {name: discord, type: discord, webhook_url: "%s"}
  - {name: crm, type: webhook, url: "%s/in"}
`, listen, admin, secret, filepath.Join(dir, "data"), slackURL, discordURL, hookTap.srv.URL), 0o600)
	var logs bytes.Buffer
	proc := exec.Command(bin, "serve", "--config", cfg)
	proc.Stderr = &logs
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = proc.Process.Signal(syscall.SIGTERM)
		_ = proc.Wait()
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + listen + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("chatrelay did not become ready")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Load: one event every 1/rate, over convs conversations; turns of one
	// conversation in order.
	var mu sync.Mutex
	accepted := map[int]time.Time{}
	var peakRSS, peakFDs int
	sample := func() {
		_, hwm, fds := procStats(proc.Process.Pid)
		peakRSS, peakFDs = max(peakRSS, hwm), max(peakFDs, fds)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(t.Context(), *duration)
	defer cancel()
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	defer tick.Stop()
	probe := time.NewTicker(time.Second)
	defer probe.Stop()
	var wg sync.WaitGroup
	rejected := 0
	for seq := 0; ctx.Err() == nil; {
		select {
		case <-tick.C:
			n := seq
			seq++
			wg.Go(func() {
				body := fmt.Appendf(nil, `{"conversation_id":"soak-%d","messages":[{"role":"user","content":"question soak-seq-%d- about delivery"}],"answer":{"content":"an answer of modest length for turn %d","score":%.2f},"source":"widget","chatbot_id":"soak-bot"}`,
					n%*convs, n, n, float64(n%100)/100)
				req, _ := http.NewRequest("POST", "http://"+listen+"/webhook", bytes.NewReader(body))
				req.Header.Set(relay.HeaderSignature, relay.Sign(body, secret))
				// Latency runs from the moment the request is sent: the
				// relay may deliver before its 200 reaches this client.
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					mu.Lock()
					rejected++
					mu.Unlock()
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				if resp.StatusCode == 200 {
					accepted[n] = start
				} else {
					rejected++
				}
				mu.Unlock()
			})
		case <-probe.C:
			sample()
		case <-ctx.Done():
		}
	}
	wg.Wait()
	sent := time.Now()

	// Drain: wait until every sink has every accepted event, or 2 minutes.
	taps := []*tap{slackTap, discordTap, hookTap}
	drainDeadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(drainDeadline) {
		sample()
		done := true
		for _, tp := range taps {
			tp.mu.Lock()
			if len(tp.arrived) < len(accepted) {
				done = false
			}
			tp.mu.Unlock()
		}
		if done {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	drain := time.Since(sent)
	sample()

	resp, err := http.Get("http://" + admin + "/api/v1/dlq")
	if err != nil {
		t.Fatal(err)
	}
	var dlq struct {
		DeadLetters []relay.DeadLetter `json:"dead_letters"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&dlq)
	resp.Body.Close()

	t.Logf("soak: %s at %d events/s over %d conversations: %d accepted, %d refused; drained %s after the last send",
		*duration, *rate, *convs, len(accepted), rejected, drain.Round(time.Millisecond))
	t.Logf("%-8s %9s %10s %8s %9s %9s", "sink", "delivered", "duplicates", "missing", "p50", "p99")
	for _, tp := range taps {
		tp.mu.Lock()
		var lat []time.Duration
		dups, missing := 0, 0
		for seq, at := range accepted {
			arr := tp.arrived[seq]
			if len(arr) == 0 {
				missing++
				continue
			}
			dups += len(arr) - 1
			lat = append(lat, arr[0].Sub(at))
		}
		tp.mu.Unlock()
		slices.Sort(lat)
		p := func(q float64) time.Duration {
			if len(lat) == 0 {
				return 0
			}
			return lat[int(q*float64(len(lat)-1))].Round(time.Millisecond)
		}
		t.Logf("%-8s %9d %10d %8d %9s %9s", tp.name, len(accepted)-missing, dups, missing, p(0.5), p(0.99))
		if missing > 0 {
			t.Errorf("%s: %d accepted events not delivered", tp.name, missing)
		}
	}
	t.Logf("dead letters %d; peak RSS %d MiB; peak open fds %d", len(dlq.DeadLetters), peakRSS/1024, peakFDs)
	if len(dlq.DeadLetters) > 0 {
		t.Errorf("%d dead letters", len(dlq.DeadLetters))
	}
}
