package bolt_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

// events makes unique events cheaply (no JSON parsing per event), so that a
// benchmark's CPU per operation is the store's: the body of a parsed
// template is replaced by a unique one of about the load generator's size.
type events struct {
	tmpl    *relay.Event
	padding string
	n       atomic.Int64
}

func newEvents(b *testing.B) *events {
	return &events{tmpl: storetest.NewEvent(b, "conv", 0), padding: strings.Repeat("x", 200)}
}

func (e *events) next(b *testing.B) *relay.Event {
	i := e.n.Add(1)
	ev := *e.tmpl
	ev.ConversationID = fmt.Sprintf("conv-%d", i%1000)
	ev.Body = fmt.Appendf(nil, `{"conversation_id":%q,"chatbot_id":"bot","messages":[{"role":"user","content":"question %d %s"}],"answer":{"role":"assistant","content":"a%d","score":0.5}}`,
		ev.ConversationID, i, e.padding, i)
	id, err := uuid.NewV7()
	if err != nil {
		b.Fatal(err)
	}
	ev.ID, ev.ReceivedAt = id.String(), time.Now()
	return &ev
}

// cpuPerOp reports the process's CPU time per operation (user + system, all
// goroutines: the callers, the logger, the applier, the garbage collector),
// the figure that bounds throughput on a machine whose cores are busy.
func cpuPerOp(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op")
}

// latencies collects the time of each operation of a parallel benchmark.
type latencies struct {
	mu  sync.Mutex
	all []time.Duration
}

func (l *latencies) add(d []time.Duration) {
	l.mu.Lock()
	l.all = append(l.all, d...)
	l.mu.Unlock()
}

// report adds the median and the 99th percentile.
func (l *latencies) report(b *testing.B) {
	slices.Sort(l.all)
	if len(l.all) == 0 {
		return
	}
	b.ReportMetric(float64(l.all[len(l.all)/2]), "p50-ns")
	b.ReportMetric(float64(l.all[len(l.all)*99/100]), "p99-ns")
}

// BenchmarkAppend measures durable appends from 32 concurrent callers (one
// sink), the receiver's write path without HTTP: the time each append
// waits (p50, p99) and the CPU it costs.
func BenchmarkAppend(b *testing.B) {
	s, err := bolt.Open(b.TempDir(), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	evs := newEvents(b)
	var lat latencies
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := processCPU()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			ev := evs.next(b)
			start := time.Now()
			if _, err := s.Append(b.Context(), ev, []string{"hook"}); err != nil {
				b.Fatal(err)
			}
			mine = append(mine, time.Since(start))
		}
		lat.add(mine)
	})
	cpuPerOp(b, cpu)
	lat.report(b)
}

// BenchmarkDeliver measures taking and acking deliveries of a backlog spread
// over 1,000 conversations with 16 workers: the store's share of the drain
// rate.
func BenchmarkDeliver(b *testing.B) {
	s, err := bolt.Open(b.TempDir(), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	evs := newEvents(b)
	for range b.N {
		if _, err := s.Append(b.Context(), evs.next(b), []string{"hook"}); err != nil {
			b.Fatal(err)
		}
	}
	q := s.Queue("hook")
	b.SetParallelism(8) // 16 workers on 2 cores
	b.ReportAllocs()
	b.ResetTimer()
	cpu := processCPU()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			d, err := q.Next(b.Context())
			if err != nil {
				b.Fatal(err)
			}
			if err := d.Ack(b.Context()); err != nil {
				b.Fatal(err)
			}
		}
	})
	cpuPerOp(b, cpu)
}
