package bolt

import (
	"sync"
	"time"

	"github.com/google/uuid"
	bbolt "go.etcd.io/bbolt"
)

// dedupeIndex answers "was this body accepted within the window?".
// It lives in memory, rebuilt at open from the events of the window (each
// event record carries its dedupe key): an on-disk index keyed by a hash
// scatters every append over random pages and doubled the cost of each
// commit. An entry takes about 60 bytes (a million events a day: ~60 MB).
//
// The logger decides duplicates (lookup, add, and the group's begin, commit
// or rollback); the applier's pruning forgets expired entries. Entries
// added for a group stay pending until its write is durable, so an append
// that failed never answers a later request "duplicate".
type dedupeIndex struct {
	mu        sync.Mutex
	committed map[dedupeKey]dedupeEntry
	pending   map[dedupeKey]dedupeEntry
}

type dedupeKey [16]byte // the first half of Event.DedupeKey (SHA-256 of the body, or of an agent reply's identity)

type dedupeEntry struct {
	at int64     // acceptance, unix nanoseconds
	id uuid.UUID // the first event's id
}

func newDedupeIndex() *dedupeIndex {
	return &dedupeIndex{committed: map[dedupeKey]dedupeEntry{}, pending: map[dedupeKey]dedupeEntry{}}
}

func keyOf(hash []byte) dedupeKey {
	var k dedupeKey
	copy(k[:], hash)
	return k
}

// lookup finds a key added by this transaction or an earlier one.
func (d *dedupeIndex) lookup(k dedupeKey) (dedupeEntry, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.pending[k]; ok {
		return e, true
	}
	e, ok := d.committed[k]
	return e, ok
}

// add records k for the group being written.
func (d *dedupeIndex) add(k dedupeKey, e dedupeEntry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pending[k] = e
}

func (d *dedupeIndex) begin() { d.rollback() }
func (d *dedupeIndex) rollback() {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.pending)
}
func (d *dedupeIndex) commit() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, e := range d.pending {
		d.committed[k] = e
	}
	clear(d.pending)
}

// forget drops k if it still belongs to event id and was accepted before
// cut (cut 0: whenever).
func (d *dedupeIndex) forget(k dedupeKey, id uuid.UUID, cut int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.committed[k]; ok && e.id == id && (cut == 0 || e.at < cut) {
		delete(d.committed, k)
		return true
	}
	return false
}

// load rebuilds the index from the events accepted in the last window.
// Event ids are UUIDv7, so their keys sort by acceptance time and the scan
// starts at the window's beginning. It returns where the expiry scan
// should resume.
func (d *dedupeIndex) load(tx *bbolt.Tx, now time.Time, window time.Duration) ([]byte, error) {
	c := tx.Bucket([]byte(bEvents)).Cursor()
	from := v7Prefix(now.Add(-window - time.Minute)) // a minute of slack for clock steps
	var first []byte
	for k, v := c.Seek(from); k != nil; k, v = c.Next() {
		m, _, err := decodeEventMeta(v)
		if err != nil || len(m.Hash) < len(dedupeKey{}) {
			continue
		}
		id, err := uuid.ParseBytes(k)
		if err != nil {
			continue
		}
		if first == nil {
			first = append([]byte(nil), k...)
		}
		d.mu.Lock()
		d.committed[keyOf(m.Hash)] = dedupeEntry{at: m.Received, id: id}
		d.mu.Unlock()
	}
	return first, nil
}

// v7Prefix is the start of the UUIDv7 string of time t: its 48-bit
// millisecond timestamp as "xxxxxxxx-xxxx".
func v7Prefix(t time.Time) []byte {
	var u uuid.UUID
	ms := uint64(max(t.UnixMilli(), 0))
	for i := 5; i >= 0; i-- {
		u[i] = byte(ms)
		ms >>= 8
	}
	return []byte(u.String()[:13])
}
