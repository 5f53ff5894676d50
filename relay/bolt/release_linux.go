//go:build linux

package bolt

import (
	bbolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// releaseMapped drops this process's page-table entries for the database
// file's memory mapping (madvise MADV_DONTNEED). bbolt maps the file shared
// and read-only, so the pages stay in the kernel's page cache and come back
// on the next read; they just stop counting in chatrelay's resident set,
// which would otherwise grow to the size of everything the store ever read
// (a 100,000-event backlog is a 110 MB file).
func (s *Store) releaseMapped() {
	// A read transaction holds bbolt's mmap lock: the file cannot be
	// remapped while the range is advised.
	err := s.db.View(func(tx *bbolt.Tx) error {
		info := s.db.Info()
		if info == nil || info.Data == 0 {
			return nil
		}
		_, _, errno := unix.Syscall(unix.SYS_MADVISE, info.Data, uintptr(tx.Size()), unix.MADV_DONTNEED)
		if errno != 0 {
			return errno
		}
		return nil
	})
	if err != nil {
		s.log.Debug("could not release the store's mapped pages", "err", err)
	}
}
