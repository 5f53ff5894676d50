package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// ErrDamaged marks a store file that chatrelay will not use as it is: Open's
// error says which file and what the operator can do.
var ErrDamaged = errors.New("store file damaged")

// damageError is a damaged or missing store file, with the way out.
type damageError struct {
	path string
	what string // what is wrong, in a few words
	fix  string // what the operator can do
}

func (e *damageError) Error() string {
	return fmt.Sprintf("%s %s; chatrelay will not start on it: %s", e.path, e.what, e.fix)
}

func (e *damageError) Is(target error) bool { return target == ErrDamaged }

// damaged is the error for a store file that exists but cannot be used.
func damaged(path, what string) error {
	return &damageError{path: path, what: what, fix: fmt.Sprintf(
		"restore it from a backup, or move it aside to start with an empty store "+
			"(mv %s %s.damaged; its pending deliveries and dead letters stay in the moved file)", path, path)}
}

// The bbolt file format (go.etcd.io/bbolt, format version 2), as far as
// checkFile reads it. bbolt keeps these in an internal package; they have
// not changed since boltdb.
const (
	pageHeaderSize  = 16 // id u64, flags u16, count u16, overflow u32
	elementSize     = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags u32, pos u32, ksize u32, vsize u32
	bucketHeadSize  = 16 // root pgid u64, sequence u64
	metaSize        = 64 // magic, version, page size, flags, root bucket (16), freelist, pgid, txid, checksum
	metaSummed      = 56 // the bytes the checksum covers
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	branchPageFlag  = 0x01
	leafPageFlag    = 0x02
	freelistFlag    = 0x10
	bucketLeafFlag  = 0x01
	noFreelist      = ^uint64(0)
	maxTreeDepth    = 64 // a B+tree of 2^64 pages is shallower than this
	maxBucketNested = 16 // chatrelay nests buckets two deep
)

type meta struct {
	pageSize uint32
	root     uint64 // the root bucket's root page
	freelist uint64
	pgid     uint64 // high-water mark: pages at or above it are not in use
	txid     uint64
}

func readMeta(b []byte) (meta, bool) {
	if len(b) < pageHeaderSize+metaSize {
		return meta{}, false
	}
	m := b[pageHeaderSize : pageHeaderSize+metaSize]
	le := binary.LittleEndian
	h := fnv.New64a()
	_, _ = h.Write(m[:metaSummed])
	if le.Uint32(m[0:]) != boltMagic || le.Uint32(m[4:]) != boltVersion || le.Uint64(m[56:]) != h.Sum64() {
		return meta{}, false
	}
	return meta{pageSize: le.Uint32(m[8:]), root: le.Uint64(m[16:]), freelist: le.Uint64(m[32:]),
		pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}, true
}

// checkFile reads a bbolt file with plain reads, never through a memory
// map and never through bbolt, and verifies everything bbolt relies on when
// it opens the file and walks it: a valid meta page, a file as long as the
// pages in use, and a tree whose every reachable page is in the file, says
// it is the page it should be, has a known type, is referenced once, keeps
// its elements inside itself and its keys in order (bbolt's own
// consistency check, which it runs at open to rebuild the freelist and
// answers with a panic). bbolt answers damage with panics and faults,
// some on goroutines of its own where no recover can reach them; a file
// that passes here gives it none. It returns a damageError for a damaged
// file, or the I/O error that stopped it.
func checkFile(f *os.File, path string) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	c := &checker{f: f, path: path}
	m, err := c.meta(size)
	if err != nil {
		return err
	}
	ps := uint64(m.pageSize)
	if m.pgid < 2 || m.pgid > uint64(size)/ps {
		return damaged(path, fmt.Sprintf("is truncated: it is %d bytes, and its pages in use need %d", size, m.pgid*ps))
	}
	c.ps, c.hwm = ps, m.pgid
	c.seen = make([]uint64, (m.pgid+63)/64)
	if m.freelist != noFreelist {
		if err := c.checkFreelist(m.freelist); err != nil {
			return err
		}
	}
	if m.root < 2 {
		return damaged(path, fmt.Sprintf("is damaged: its root page is %d", m.root))
	}
	return c.bucket(m.root, 0)
}

// meta finds the page size and the meta page bbolt would use: the valid one
// of the two with the higher transaction id.
func (c *checker) meta(size int64) (meta, error) {
	if size < 2*1024 {
		return meta{}, damaged(c.path, fmt.Sprintf("is truncated: it is %d bytes, too short for a store", size))
	}
	buf := make([]byte, pageHeaderSize+metaSize)
	var ps uint32
	// Page 0 says the page size; if it is unreadable, bbolt looks for page
	// 1 at each possible page size.
	if _, err := c.f.ReadAt(buf, 0); err != nil {
		return meta{}, err
	}
	if m0, ok := readMeta(buf); ok {
		ps = m0.pageSize
	} else {
		for i := range 15 {
			pos := int64(1024) << i
			if pos >= size-1024 {
				break
			}
			if _, err := c.f.ReadAt(buf, pos); err != nil && !errors.Is(err, io.EOF) {
				return meta{}, err
			}
			if m1, ok := readMeta(buf); ok {
				ps = m1.pageSize
				break
			}
		}
	}
	if ps < 1024 || ps > 1<<20 {
		return meta{}, damaged(c.path, "is damaged: neither of its meta pages is valid")
	}
	var ms []meta
	for i := range int64(2) {
		if i*int64(ps)+int64(len(buf)) > size {
			break
		}
		if _, err := c.f.ReadAt(buf, i*int64(ps)); err != nil {
			return meta{}, err
		}
		if m, ok := readMeta(buf); ok && m.pageSize == ps {
			ms = append(ms, m)
		}
	}
	switch {
	case len(ms) == 0:
		return meta{}, damaged(c.path, "is damaged: neither of its meta pages is valid")
	case len(ms) == 2 && ms[1].txid > ms[0].txid:
		return ms[1], nil
	}
	return ms[0], nil
}

type checker struct {
	f    *os.File
	path string
	ps   uint64
	hwm  uint64
	seen []uint64 // bitmap of the pages reached so far
}

func (c *checker) bad(format string, args ...any) error {
	return damaged(c.path, "is damaged: "+fmt.Sprintf(format, args...))
}

// page reads page id with its overflow pages, after checking that they lie
// below the high-water mark and were not reached before.
func (c *checker) page(id uint64) (flags uint16, count int, data []byte, err error) {
	if id < 2 || id >= c.hwm {
		return 0, 0, nil, c.bad("a reference to page %d, outside the %d pages in use", id, c.hwm)
	}
	var head [pageHeaderSize]byte
	if _, err := c.f.ReadAt(head[:], int64(id*c.ps)); err != nil {
		return 0, 0, nil, err
	}
	le := binary.LittleEndian
	if got := le.Uint64(head[0:]); got != id {
		return 0, 0, nil, c.bad("page %d says it is page %d", id, got)
	}
	flags, count = le.Uint16(head[8:]), int(le.Uint16(head[10:]))
	overflow := uint64(le.Uint32(head[12:]))
	if id+overflow >= c.hwm {
		return 0, 0, nil, c.bad("page %d runs past the %d pages in use", id, c.hwm)
	}
	for p := id; p <= id+overflow; p++ {
		if c.seen[p/64]&(1<<(p%64)) != 0 {
			return 0, 0, nil, c.bad("page %d is referenced twice", p)
		}
		c.seen[p/64] |= 1 << (p % 64)
	}
	data = make([]byte, (overflow+1)*c.ps)
	if _, err := c.f.ReadAt(data, int64(id*c.ps)); err != nil {
		return 0, 0, nil, err
	}
	return flags, count, data, nil
}

func (c *checker) checkFreelist(id uint64) error {
	flags, count, data, err := c.page(id)
	if err != nil {
		return err
	}
	if flags != freelistFlag {
		return c.bad("its freelist page %d is of type %#x", id, flags)
	}
	start := pageHeaderSize
	n := uint64(count)
	if count == 0xFFFF {
		if len(data) < start+8 {
			return c.bad("freelist page %d is cut short", id)
		}
		n = binary.LittleEndian.Uint64(data[start:])
		start += 8
	}
	if n > uint64(len(data)-start)/8 {
		return c.bad("freelist page %d lists more pages than it holds", id)
	}
	for i := range n {
		if free := binary.LittleEndian.Uint64(data[start+int(i)*8:]); free < 2 || free >= c.hwm {
			return c.bad("freelist page %d lists page %d, outside the %d pages in use", id, free, c.hwm)
		}
	}
	return nil
}

// bucket checks the tree of a bucket whose root is page root.
func (c *checker) bucket(root uint64, nested int) error {
	if nested > maxBucketNested {
		return c.bad("buckets nested %d deep", nested)
	}
	_, err := c.tree(root, nil, nil, 0, nested)
	return err
}

// tree checks the subtree at page id, whose keys must be at least min and
// below max (nil: unbounded), the way bbolt's consistency check orders
// them. It returns the subtree's greatest key.
func (c *checker) tree(id uint64, min, max []byte, depth, nested int) ([]byte, error) {
	if depth > maxTreeDepth {
		return nil, c.bad("a tree deeper than %d pages at page %d", maxTreeDepth, id)
	}
	flags, count, data, err := c.page(id)
	if err != nil {
		return nil, err
	}
	switch flags {
	case branchPageFlag:
		if count == 0 {
			return nil, c.bad("branch page %d is empty", id)
		}
		running := min
		var greatest []byte
		for i := range count {
			key, child, err := branchElement(data, i)
			if err != nil {
				return nil, c.bad("page %d: %v", id, err)
			}
			if err := keyInOrder(key, i, running, max); err != nil {
				return nil, c.bad("page %d: %v", id, err)
			}
			upper := max
			if i < count-1 {
				if upper, _, err = branchElement(data, i+1); err != nil {
					return nil, c.bad("page %d: %v", id, err)
				}
			}
			if greatest, err = c.tree(child, key, upper, depth+1, nested); err != nil {
				return nil, err
			}
			running = greatest
		}
		return greatest, nil
	case leafPageFlag:
		return c.leaf(data, count, min, max, nested, fmt.Sprintf("page %d", id))
	}
	return nil, c.bad("page %d is of type %#x where a tree page belongs", id, flags)
}

// leaf checks the elements of a leaf page (data holds the page, header
// first) and the buckets it holds.
func (c *checker) leaf(data []byte, count int, min, max []byte, nested int, where string) ([]byte, error) {
	running := min
	for i := range count {
		flags, key, value, err := leafElement(data, i)
		if err != nil {
			return nil, c.bad("%s: %v", where, err)
		}
		if err := keyInOrder(key, i, running, max); err != nil {
			return nil, c.bad("%s: %v", where, err)
		}
		running = key
		if flags&bucketLeafFlag == 0 {
			continue
		}
		if len(value) < bucketHeadSize {
			return nil, c.bad("%s: bucket %q has a %d-byte header", where, key, len(value))
		}
		if root := binary.LittleEndian.Uint64(value); root != 0 {
			if err := c.bucket(root, nested+1); err != nil {
				return nil, err
			}
			continue
		}
		// An inline bucket: a leaf page inside the value, holding no
		// buckets of its own.
		inline := value[bucketHeadSize:]
		if len(inline) < pageHeaderSize {
			return nil, c.bad("%s: inline bucket %q is cut short", where, key)
		}
		le := binary.LittleEndian
		if f := le.Uint16(inline[8:]); f != leafPageFlag {
			return nil, c.bad("%s: inline bucket %q is of type %#x", where, key, f)
		}
		n := int(le.Uint16(inline[10:]))
		for j := range n {
			f, _, _, err := leafElement(inline, j)
			if err != nil {
				return nil, c.bad("%s: inline bucket %q: %v", where, key, err)
			}
			if f&bucketLeafFlag != 0 {
				return nil, c.bad("%s: inline bucket %q holds a bucket", where, key)
			}
		}
		if _, err := c.leaf(inline, n, nil, nil, nested+1, fmt.Sprintf("%s, inline bucket %q", where, key)); err != nil {
			return nil, err
		}
	}
	if count > 0 {
		return running, nil
	}
	return nil, nil
}

// keyInOrder is bbolt's key order rule: the first key of a page is at least
// the bound before it, every other key is above the one before it, and all
// are below max. Keys are never empty.
func keyInOrder(key []byte, i int, prev, max []byte) error {
	switch {
	case len(key) == 0:
		return fmt.Errorf("element %d has an empty key", i)
	case i == 0 && prev != nil && bytes.Compare(prev, key) > 0,
		i > 0 && bytes.Compare(prev, key) >= 0:
		return fmt.Errorf("element %d is out of key order", i)
	case max != nil && bytes.Compare(key, max) >= 0:
		return fmt.Errorf("element %d is beyond its parent's range", i)
	}
	return nil
}

// element returns the 16-byte element i of a page after checking that it
// lies inside data.
func element(data []byte, i int) ([]byte, error) {
	off := pageHeaderSize + i*elementSize
	if off+elementSize > len(data) {
		return nil, fmt.Errorf("element %d lies outside the page", i)
	}
	return data[off : off+elementSize], nil
}

func branchElement(data []byte, i int) (key []byte, child uint64, err error) {
	e, err := element(data, i)
	if err != nil {
		return nil, 0, err
	}
	le := binary.LittleEndian
	start := uint64(pageHeaderSize+i*elementSize) + uint64(le.Uint32(e[0:]))
	end := start + uint64(le.Uint32(e[4:]))
	if end > uint64(len(data)) {
		return nil, 0, fmt.Errorf("element %d's key lies outside the page", i)
	}
	return data[start:end], le.Uint64(e[8:]), nil
}

func leafElement(data []byte, i int) (flags uint32, key, value []byte, err error) {
	e, err := element(data, i)
	if err != nil {
		return 0, nil, nil, err
	}
	le := binary.LittleEndian
	start := uint64(pageHeaderSize+i*elementSize) + uint64(le.Uint32(e[4:]))
	kend := start + uint64(le.Uint32(e[8:]))
	vend := kend + uint64(le.Uint32(e[12:]))
	if vend > uint64(len(data)) {
		return 0, nil, nil, fmt.Errorf("element %d lies outside the page", i)
	}
	return le.Uint32(e[0:]), data[start:kend], data[kend:vend], nil
}
