// Command loadgen drives a chatrelay receiver with unique, signed Chat Data
// events over N keep-alive connections and prints throughput and latency.
//
//	go run ./bench/loadgen -url http://127.0.0.1:8080/webhook -secret S -c 32 -d 10s
//
// With -rate it sends at a fixed rate (open loop) instead of as fast as the
// connections allow. Each body carries its send time ("sent_at_ns"), which
// bench/sinkd reads to measure accept→delivered latency.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8080/webhook", "receiver endpoint")
	secret := flag.String("secret", "", "signing secret")
	conns := flag.Int("c", 32, "concurrent connections")
	dur := flag.Duration("d", 10*time.Second, "duration")
	total := flag.Int64("n", 0, "stop after this many requests (0: run for -d)")
	rate := flag.Float64("rate", 0, "requests per second in all (0: as fast as possible)")
	convs := flag.Int("convs", 1000, "number of conversations the events spread over")
	size := flag.Int("size", 600, "approximate body size in bytes")
	jsonOut := flag.Bool("json", false, "print the result as JSON")
	flag.Parse()
	if *secret == "" {
		fmt.Fprintln(os.Stderr, "loadgen: -secret is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res := run(ctx, config{url: *url, secret: relay.Secret(*secret), conns: *conns, dur: *dur, total: *total, rate: *rate, convs: *convs, size: *size})
	if *jsonOut {
		_ = json.NewEncoder(os.Stdout).Encode(res)
		return
	}
	fmt.Printf("requests %d in %.1fs: %.0f req/s, p50 %.2f ms, p99 %.2f ms, max %.2f ms, non-2xx %d, errors %d\n",
		res.Requests, res.Seconds, res.RPS, res.P50ms, res.P99ms, res.MaxMs, res.Non2xx, res.Errors)
}

type config struct {
	url    string
	secret relay.Secret
	conns  int
	dur    time.Duration
	total  int64
	rate   float64
	convs  int
	size   int
}

// Result is what a run measured.
type Result struct {
	Requests int64   `json:"requests"`
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"rps"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	MaxMs    float64 `json:"max_ms"`
	Non2xx   int64   `json:"non_2xx"`
	Errors   int64   `json:"errors"`
}

func run(ctx context.Context, cfg config) Result {
	tr := &http.Transport{MaxIdleConnsPerHost: cfg.conns, MaxConnsPerHost: cfg.conns, DisableCompression: true}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	defer tr.CloseIdleConnections()
	padding := strings.Repeat("x", max(cfg.size-400, 0))

	var seq, non2xx, errs atomic.Int64
	lat := make([][]time.Duration, cfg.conns)
	if cfg.total > 0 {
		cfg.dur = 24 * time.Hour
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.dur)
	defer cancel()

	// Open loop: a ticker hands out send slots; closed loop: send at will.
	var slots chan struct{}
	if cfg.rate > 0 {
		slots = make(chan struct{}, cfg.conns*4)
		go func() {
			interval := time.Duration(float64(time.Second) / cfg.rate)
			next := time.Now()
			for ctx.Err() == nil {
				next = next.Add(interval)
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
				select {
				case slots <- struct{}{}:
				case <-ctx.Done():
				}
			}
		}()
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := range cfg.conns {
		wg.Go(func() {
			for ctx.Err() == nil {
				if slots != nil {
					select {
					case <-slots:
					case <-ctx.Done():
						return
					}
				}
				n := seq.Add(1)
				if cfg.total > 0 && n > cfg.total {
					return
				}
				conv := n % int64(cfg.convs)
				sent := time.Now()
				body := fmt.Appendf(nil, `{"messages":[{"role":"user","content":"question %d %s"}],"answer":{"role":"assistant","content":"answer %d","score":0.8},"chatbot_id":"bench-bot","source":"widget","conversation_id":"bench-conv-%d","seq":%d,"sent_at_ns":%d}`,
					n, padding, n, conv, n, sent.UnixNano())
				req, _ := http.NewRequest(http.MethodPost, cfg.url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set(relay.HeaderTopic, relay.TopicChat)
				req.Header.Set(relay.HeaderSignature, relay.Sign(body, cfg.secret))
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode < 200 || resp.StatusCode > 299 {
					non2xx.Add(1)
				}
				lat[w] = append(lat[w], time.Since(sent))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	res := Result{Requests: int64(len(all)), Seconds: elapsed, Non2xx: non2xx.Load(), Errors: errs.Load()}
	if len(all) > 0 {
		res.RPS = float64(len(all)) / elapsed
		res.P50ms = ms(all[len(all)/2])
		res.P99ms = ms(all[len(all)*99/100])
		res.MaxMs = ms(all[len(all)-1])
	}
	return res
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
