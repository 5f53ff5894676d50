package relay_test

import (
	"testing"

	"github.com/chatrelay/chatrelay/relay"
)

func TestByteSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]relay.ByteSize{"1048576": 1 << 20, "1MiB": 1 << 20, "512KiB": 512 << 10, "1GiB": 1 << 30, "10MB": 10e6, "2.5 KiB": 2560} {
		var b relay.ByteSize
		if err := b.UnmarshalText([]byte(in)); err != nil || b != want {
			t.Errorf("%q → %d %v, want %d", in, b, err, want)
		}
	}
	var b relay.ByteSize
	if err := b.UnmarshalText([]byte("lots")); err == nil {
		t.Error("accepted lots")
	}
}
