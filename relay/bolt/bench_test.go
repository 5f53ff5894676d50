package bolt_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

// BenchmarkAppend measures durable appends from 32 concurrent callers (one
// sink), the receiver's write path without HTTP.
func BenchmarkAppend(b *testing.B) {
	s, err := bolt.Open(b.TempDir(), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var n atomic.Int64
	b.SetParallelism(32)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			ev := storetest.NewEvent(b, fmt.Sprintf("conv-%d", i%1000), int(i))
			if _, err := s.Append(b.Context(), ev, []string{"hook"}); err != nil {
				b.Fatal(err)
			}
		}
	})
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
	for i := range b.N {
		ev := storetest.NewEvent(b, fmt.Sprintf("conv-%d", i%1000), i)
		if _, err := s.Append(b.Context(), ev, []string{"hook"}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	q := s.Queue("hook")
	var left atomic.Int64
	left.Store(int64(b.N))
	b.SetParallelism(8) // 16 workers on 2 cores
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
	_ = relay.ErrClosed
}
