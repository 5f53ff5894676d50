package nats_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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

// BenchmarkAppendShape measures the two shapes an append could take on
// JetStream (issue 12, step 6), raw, without the store around them: the
// store's two publishes (the event, then its delivery, each awaiting the
// stream's ack) against one atomic batch of both into one stream
// (AllowAtomicPublish, nats-server 2.12+), which would make an append
// all-or-nothing:
//
//	go test -run '^$' -bench AppendShape -benchtime 3s ./relay/nats/
//
// Measured 2026-12-06 on the 2-core development VM while other jobs kept
// its load average near 10 (nats-server 2.15.2 in-process, replicas 1,
// file storage), two runs of -benchtime 2-3s. One appender: two publishes
// 69-75µs per append, atomic batch 7.7-19.3ms; 16 appenders: 42-108µs
// against 10.6-15.0ms. The atomic batch is 110 to 260 times slower: with
// replicas 1 on file storage the server stages every batch in a file store
// of its own, created, fsynced and deleted per batch. The store keeps the
// two publishes.
func BenchmarkAppendShape(b *testing.B) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: b.TempDir(),
		NoLog: true, NoSigs: true})
	if err != nil {
		b.Fatal(err)
	}
	ns.Start()
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	if !ns.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats not ready")
	}
	nc, err := natsgo.Connect(ns.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, cfg := range []jetstream.StreamConfig{
		{Name: "EV", Subjects: []string{"e.>"}, Duplicates: time.Hour},
		{Name: "Q", Subjects: []string{"q.>"}, Retention: jetstream.WorkQueuePolicy, Duplicates: 10 * time.Minute},
		{Name: "ATOMIC", Subjects: []string{"a.>"}, Retention: jetstream.WorkQueuePolicy, AllowAtomicPublish: true,
			Duplicates: time.Hour},
	} {
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			b.Fatal(err)
		}
	}
	body := []byte(`{"conversation_id":"c","chatbot_id":"bot","messages":[{"role":"user","content":"question"}],"answer":{"content":"answer","score":0.8}}`)
	var n atomic.Int64
	shapes := []struct {
		name   string
		append func(i string) error
	}{
		{"two-publishes", func(i string) error {
			m := natsgo.NewMsg("e.1." + i)
			m.Data = body
			if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgID("e"+i)); err != nil {
				return err
			}
			q := natsgo.NewMsg("q.s.1." + i)
			q.Data = body
			_, err := js.PublishMsg(ctx, q, jetstream.WithMsgID("q"+i))
			return err
		}},
		{"atomic-batch", func(i string) error {
			m := natsgo.NewMsg("a.ev.1." + i)
			m.Data = body
			m.Header.Set("Nats-Msg-Id", "e"+i)
			m.Header.Set("Nats-Batch-Id", "b"+i)
			m.Header.Set("Nats-Batch-Sequence", "1")
			if err := nc.PublishMsg(m); err != nil {
				return err
			}
			q := natsgo.NewMsg("a.q.s.1." + i)
			q.Data = body
			q.Header.Set("Nats-Batch-Id", "b"+i)
			q.Header.Set("Nats-Batch-Sequence", "2")
			q.Header.Set("Nats-Batch-Commit", "1")
			r, err := nc.RequestMsg(q, 10*time.Second)
			if err != nil {
				return err
			}
			var ack struct {
				Error *struct {
					Description string `json:"description"`
				} `json:"error"`
			}
			if err := json.Unmarshal(r.Data, &ack); err != nil {
				return err
			}
			if ack.Error != nil {
				return errors.New(ack.Error.Description)
			}
			return nil
		}},
	}
	for _, appenders := range []int{1, 16} {
		for _, shape := range shapes {
			b.Run(fmt.Sprintf("%s-%d", shape.name, appenders), func(b *testing.B) {
				b.SetParallelism(max(1, appenders/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := shape.append(strconv.FormatInt(n.Add(1), 10)); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}
