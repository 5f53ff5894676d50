//go:build !linux

package bolt

// releaseMapped is a no-op where madvise is not used.
func (s *Store) releaseMapped() {}
