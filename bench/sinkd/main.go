// Command sinkd is a fast local webhook destination for benchmarks: it
// answers 204 to every POST and measures accept→delivered latency from the
// "sent_at_ns" field loadgen puts in each body. GET /stats returns what it
// saw; POST /reset clears it.
//
//	go run ./bench/sinkd -listen 127.0.0.1:8091
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
)

type stats struct {
	mu      sync.Mutex
	first   time.Time
	last    time.Time
	count   int
	ids     map[string]int
	latency []time.Duration
	fail    int // while not 0, the status every POST gets
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8091", "address")
	status := flag.Int("status", 0, "answer every POST with this status instead (e.g. 410: a destination that is gone)")
	flag.Parse()
	st := &stats{ids: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if *status != 0 {
			w.WriteHeader(*status)
			return
		}
		now := time.Now()
		var probe struct {
			SentAt int64 `json:"sent_at_ns"`
		}
		_ = json.Unmarshal(body, &probe)
		st.mu.Lock()
		fail := st.fail
		if fail == 0 {
			if st.count == 0 {
				st.first = now
			}
			st.last = now
			st.count++
			st.ids[r.Header.Get("webhook-id")]++
			if probe.SentAt > 0 {
				st.latency = append(st.latency, now.Sub(time.Unix(0, probe.SentAt)))
			}
		}
		st.mu.Unlock()
		if fail != 0 {
			w.WriteHeader(fail)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		st.mu.Lock()
		defer st.mu.Unlock()
		l := slices.Clone(st.latency)
		slices.Sort(l)
		dups := 0
		for _, n := range st.ids {
			dups += n - 1
		}
		out := map[string]any{"delivered": st.count, "unique": len(st.ids), "duplicates": dups}
		if len(l) > 0 {
			out["p50_ms"] = float64(l[len(l)/2]) / 1e6
			out["p99_ms"] = float64(l[len(l)*99/100]) / 1e6
			out["max_ms"] = float64(l[len(l)-1]) / 1e6
		}
		if st.count > 1 {
			out["seconds"] = st.last.Sub(st.first).Seconds()
			out["per_second"] = float64(st.count-1) / st.last.Sub(st.first).Seconds()
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, _ *http.Request) {
		st.mu.Lock()
		*st = stats{ids: map[string]int{}}
		st.mu.Unlock()
	})
	// POST /down[?status=410] and /up make the destination fail (503 by
	// default; 410 marks a chatrelay sink down, so it holds its deliveries)
	// or work again, to build a backlog for drain measurements.
	mux.HandleFunc("POST /down", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.URL.Query().Get("status"))
		if err != nil || code < 400 {
			code = http.StatusServiceUnavailable
		}
		st.mu.Lock()
		st.fail = code
		st.mu.Unlock()
	})
	mux.HandleFunc("POST /up", func(w http.ResponseWriter, _ *http.Request) { st.mu.Lock(); st.fail = 0; st.mu.Unlock() })
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintln(os.Stderr, "sinkd on", *listen)
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "sinkd:", err)
		os.Exit(1)
	}
}
