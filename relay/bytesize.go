package relay

import (
	"fmt"

	"github.com/dustin/go-humanize"
)

// ByteSize is a size in bytes as a config writes it: 1048576, 512KiB, 1GiB
// or 10MB (go-humanize's ParseBytes: binary and decimal units, letter case
// and spaces aside).
type ByteSize int64

// UnmarshalText implements encoding.TextUnmarshaler.
func (b *ByteSize) UnmarshalText(text []byte) error {
	n, err := humanize.ParseBytes(string(text))
	if err != nil || n > 1<<62 {
		return fmt.Errorf("not a size: %q; write it like 1048576, 512KiB or 1GiB", string(text))
	}
	*b = ByteSize(n)
	return nil
}
