//go:build linux

package bolt

import (
	"os"
	"syscall"
)

// fdatasync syncs f's data (and the size that reading it back needs).
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
