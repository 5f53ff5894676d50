//go:build windows || plan9 || solaris || aix || android

package bolt

import (
	"errors"
	"os"
	"time"
)

var errLocked = errors.New("file lock held by another process")

// lockFile does nothing where bbolt does not lock with flock: the file is
// checked without the lock, and bbolt's own lock keeps a second process
// out afterwards.
func lockFile(*os.File, time.Duration) error { return nil }
