package nats_test

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
)

// BenchmarkAppend measures Append from 32 concurrent appenders (as the
// receiver's requests would be) on the embedded store and on NATS, in one
// run on one machine, so the results can be compared as a ratio:
//
//	go test -run '^$' -bench Append -benchtime 5s -count 3 ./relay/nats/
//
// nats is a server with default settings: JetStream writes each message to
// the OS at once and fsyncs every 2 minutes, relying on stream replicas for
// durability. nats-sync-always fsyncs every write (sync_interval: always),
// as bolt does for each group commit: the fair single-server comparison.
//
// Measured 2026-11-25 on the 2-core development VM while other jobs kept
// its load average at 6-9 (five interleaved runs of -benchtime 3s; the
// in-process server shares the two cores with the benchmark): bolt
// 1,800-2,600 appends/s, nats 3,100-4,900 (1.4-1.9 times bolt, median
// 1.6), nats-sync-always 340-470 (0.15-0.22 times bolt, median 0.18: the
// server fsyncs each publish, Append makes two, and nothing groups them
// the way bolt's single writer groups concurrent requests).
func BenchmarkAppend(b *testing.B) {
	const appenders = 32
	run := func(b *testing.B, s relay.Store) {
		b.Helper()
		var n atomic.Int64
		// The first append of a sink sets it up (NATS creates its
		// consumers): not part of the steady state measured.
		warm := &relay.Event{ID: uuid.Must(uuid.NewV7()).String(), Topic: relay.TopicChat, ReceivedAt: time.Now(),
			Body: []byte(`{"conversation_id":"warm-up"}`), ConversationID: "warm-up"}
		if _, err := s.Append(context.Background(), warm, []string{"s"}); err != nil {
			b.Fatal(err)
		}
		b.SetParallelism(max(1, appenders/runtime.GOMAXPROCS(0)))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				// A unique body per call, as Chat Data sends; building it
				// costs next to nothing beside the append.
				i := n.Add(1)
				conv := "conv-" + strconv.FormatInt(i%64, 10)
				ev := &relay.Event{
					ID:             uuid.Must(uuid.NewV7()).String(),
					Topic:          relay.TopicChat,
					ReceivedAt:     time.Now(),
					ConversationID: conv,
					Body: fmt.Appendf(nil, `{"conversation_id":%q,"chatbot_id":"bot","messages":[{"role":"user","content":"question %d"}],"answer":{"role":"assistant","content":"answer %d","score":0.8}}`,
						conv, i, i),
				}
				if _, err := s.Append(context.Background(), ev, []string{"s"}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
	}

	b.Run("bolt", func(b *testing.B) {
		s, err := bolt.Open(b.TempDir(), bolt.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		run(b, s)
	})
	for _, tc := range []struct {
		name       string
		syncAlways bool
	}{{"nats", false}, {"nats-sync-always", true}} {
		b.Run(tc.name, func(b *testing.B) {
			ns, err := server.NewServer(&server.Options{
				Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: b.TempDir(),
				NoLog: true, NoSigs: true, SyncAlways: tc.syncAlways,
			})
			if err != nil {
				b.Fatal(err)
			}
			ns.Start()
			defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
			if !ns.ReadyForConnections(10 * time.Second) {
				b.Fatal("nats not ready")
			}
			opts := testOptions(ns.ClientURL())
			opts.Partitions = 16
			s := open(b, opts)
			defer s.Close()
			run(b, s)
		})
	}
}
