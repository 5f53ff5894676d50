//go:build !windows && !plan9 && !solaris && !aix && !android

package bolt

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// errLocked: another process holds the store file's lock.
var errLocked = errors.New("file lock held by another process")

// lockFile takes the exclusive lock bbolt takes (flock), so that the file
// is checked while no other process writes it; closing f releases it. It
// waits up to timeout for another process to let go, as bbolt does.
func lockFile(f *os.File, timeout time.Duration) error {
	var tick *time.Ticker
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return err
		}
		if time.Now().After(deadline) {
			return errLocked
		}
		if tick == nil {
			tick = time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
		}
		<-tick.C
	}
}
