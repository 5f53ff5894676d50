package relay_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
)

// BenchmarkIngest posts unique signed chat events over 32 concurrent
// keep-alive connections to the receiver, with the embedded store (every
// 200 after an fsync) and with a store that keeps nothing (the baseline:
// verify, parse, answer). Compare the two in one run:
//
//	go test ./relay -run '^$' -bench Ingest -benchtime 5s
func BenchmarkIngest(b *testing.B) {
	for _, tc := range []struct {
		name  string
		store func(b *testing.B) relay.Appender
	}{
		{"bare", func(*testing.B) relay.Appender { return &memStore{} }},
		{"bolt", func(b *testing.B) relay.Appender {
			s, err := bolt.Open(b.TempDir(), bolt.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			r, err := relay.NewReceiver(relay.ReceiverConfig{
				Secrets: []relay.Secret{secret}, Store: tc.store(b),
				Router: relay.NewRouter([]string{"hook"}, nil), Metrics: relay.NewMetrics(prometheus.NewRegistry()),
			})
			if err != nil {
				b.Fatal(err)
			}
			srv := httptest.NewServer(r)
			defer srv.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			var seq atomic.Int64
			b.SetParallelism(16) // 32 goroutines on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					n := seq.Add(1)
					body := fmt.Appendf(nil, `{"messages":[{"role":"user","content":"question %d about shipping to Canada and delivery times"}],"answer":{"role":"assistant","content":"Yes, we ship to Canada. Standard delivery takes 5-7 business days; express takes 2-3.","score":0.85},"chatbot_id":"654aee418bc9a33b0e50d0ad","source":"widget","conversation_id":"conv-%d","client_ip":"203.0.113.7"}`, n, n%1000)
					req, _ := http.NewRequest("POST", srv.URL+"/webhook", bytes.NewReader(body))
					req.Header.Set(relay.HeaderSignature, relay.Sign(body, secret))
					resp, err := client.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Fatalf("status %d", resp.StatusCode)
					}
				}
			})
		})
	}
}
