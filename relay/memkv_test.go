package relay_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/chatrelay/chatrelay/relay"
)

func TestMemKV(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		kv   *relay.MemKV
	}{
		{"NewMemKV", relay.NewMemKV()},
		{"zero value", &relay.MemKV{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var kv relay.KV = tc.kv
			ctx := t.Context()
			if v, ok, err := kv.Get(ctx, "thread:c1"); v != "" || ok || err != nil {
				t.Fatalf("Get of a missing key = %q, %v, %v", v, ok, err)
			}
			for _, step := range []struct{ key, value string }{
				{"thread:c1", "111"},
				{"thread:c2", ""},    // an empty value is a value
				{"thread:c1", "222"}, // overwritten
			} {
				if err := kv.Put(ctx, step.key, step.value); err != nil {
					t.Fatalf("Put(%q): %v", step.key, err)
				}
			}
			for key, want := range map[string]string{"thread:c1": "222", "thread:c2": ""} {
				if v, ok, err := kv.Get(ctx, key); v != want || !ok || err != nil {
					t.Errorf("Get(%q) = %q, %v, %v; want %q, true, nil", key, v, ok, err, want)
				}
			}
		})
	}
}

// TestMemKVConcurrent is for the race detector.
func TestMemKVConcurrent(t *testing.T) {
	t.Parallel()
	kv := relay.NewMemKV()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				key := fmt.Sprint("k", i%10)
				if err := kv.Put(t.Context(), key, fmt.Sprint(g, "-", i)); err != nil {
					t.Error(err)
				}
				if _, ok, err := kv.Get(t.Context(), key); !ok || err != nil {
					t.Errorf("Get(%q) after Put: %v, %v", key, ok, err)
				}
			}
		})
	}
	wg.Wait()
}
