package ready_test

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/chatrelay/chatrelay/relay/internal/ready"
)

type item struct {
	ready.Slot
	n int
}

// TestHeap: items come out in order, whatever was pushed and removed from
// the middle, and each knows whether it is in the heap.
func TestHeap(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 50 {
		h := ready.New(func(a, b *item) bool { return a.n < b.n })
		var in []*item
		for i := range 100 {
			it := &item{n: r.IntN(1000)}
			h.Push(it)
			in = append(in, it)
			if i%3 == 0 {
				gone := in[r.IntN(len(in))]
				h.Remove(gone)
				h.Remove(gone) // a second time: not in it, nothing happens
				if gone.In() {
					t.Fatalf("round %d: removed, still in", round)
				}
				in = slices.DeleteFunc(in, func(x *item) bool { return x == gone })
			}
		}
		if h.Len() != len(in) {
			t.Fatalf("round %d: Len %d, want %d", round, h.Len(), len(in))
		}
		var got []int
		for h.Len() > 0 {
			if first := h.Peek(); !first.In() {
				t.Fatalf("round %d: the first item says it is in no heap", round)
			}
			it := h.Pop()
			if it.In() {
				t.Fatalf("round %d: popped, still in", round)
			}
			got = append(got, it.n)
		}
		if !slices.IsSorted(got) || len(got) != len(in) {
			t.Fatalf("round %d: popped %v", round, got)
		}
	}
}
