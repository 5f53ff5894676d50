// Package ready is the ready queue both store drivers keep for each sink:
// a heap of what may be handed out next, from which an item can also be
// taken out of the middle (its conversation settled, or the store gave it
// up) in O(log n), because each item knows its place.
package ready

import "container/heap"

// Slot is an item's place in a Heap: embed it in the item. The zero Slot
// is in no heap.
type Slot struct{ i int } // position + 1; 0: in no heap

func (s *Slot) slot() *Slot { return s }

// In reports whether the item is in a heap.
func (s *Slot) In() bool { return s.i > 0 }

// Item is what a Heap holds: a pointer to a struct that embeds Slot.
type Item interface{ slot() *Slot }

// Heap orders items by less. It is not safe for concurrent use (its
// owner's lock guards it).
type Heap[T Item] struct{ h items[T] }

// New returns an empty heap ordered by less.
func New[T Item](less func(a, b T) bool) *Heap[T] {
	return &Heap[T]{h: items[T]{less: less}}
}

// Len is how many items are in the heap.
func (h *Heap[T]) Len() int { return len(h.h.s) }

// Peek returns the first item without taking it; the heap must not be
// empty.
func (h *Heap[T]) Peek() T { return h.h.s[0] }

// Push adds x, which must be in no heap.
func (h *Heap[T]) Push(x T) { heap.Push(&h.h, x) }

// Pop takes the first item; the heap must not be empty.
func (h *Heap[T]) Pop() T { return heap.Pop(&h.h).(T) }

// Remove takes x out of the heap, if it is in it.
func (h *Heap[T]) Remove(x T) {
	if s := x.slot(); s.In() {
		heap.Remove(&h.h, s.i-1)
	}
}

// items is the heap.Interface of a Heap.
type items[T Item] struct {
	s    []T
	less func(a, b T) bool
}

func (h items[T]) Len() int           { return len(h.s) }
func (h items[T]) Less(i, j int) bool { return h.less(h.s[i], h.s[j]) }
func (h items[T]) Swap(i, j int) {
	h.s[i], h.s[j] = h.s[j], h.s[i]
	h.s[i].slot().i, h.s[j].slot().i = i+1, j+1
}

func (h *items[T]) Push(x any) {
	t := x.(T)
	h.s = append(h.s, t)
	t.slot().i = len(h.s)
}

func (h *items[T]) Pop() any {
	old := h.s
	t := old[len(old)-1]
	var zero T
	old[len(old)-1] = zero
	h.s = old[:len(old)-1]
	t.slot().i = 0
	return t
}
