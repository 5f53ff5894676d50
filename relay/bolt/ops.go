package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"

	bbolt "go.etcd.io/bbolt"
)

// A record of the intake log is a list of operations on the database, with
// every value spelled out (queue sequence numbers included), so that
// applying it is the same at the first go and at a replay after a crash.
// One record is one store operation (an append, an ack, a dead letter...):
// it is applied whole, in one transaction, in log order.

type opKind byte

const (
	opPut      opKind = 1 // put key, value in bucket b (sub-bucket sub, created if missing)
	opDelete   opKind = 2 // delete key from bucket b (sub-bucket sub, if it exists)
	opPutQueue opKind = 3 // put key (a queue sequence), value in queues/sub; the bucket's sequence follows
	opAdd      opKind = 4 // add value's counters to those at key in bucket b (see addCounters)
)

// Top-level buckets by number, as records name them.
var bucketNames = []string{bMeta, bEvents, bDeliv, bQueues, bDead, bKV, bUsage}

func bucketID(name string) byte {
	for i, n := range bucketNames {
		if n == name {
			return byte(i)
		}
	}
	panic("bolt: unknown bucket " + name) // a programming error: names are constants
}

// ops builds a record.
type ops struct{ b []byte }

func (o *ops) op(kind opKind, bucket, sub string, key, value []byte) *ops {
	o.key(kind, bucket, sub, key)
	if kind != opDelete {
		o.b = binary.AppendUvarint(o.b, uint64(len(value)))
		o.b = append(o.b, value...)
	}
	return o
}

// key appends an operation up to its key and returns where the key starts.
func (o *ops) key(kind opKind, bucket, sub string, key []byte) int {
	o.b = append(o.b, byte(kind), bucketID(bucket))
	o.b = binary.AppendUvarint(o.b, uint64(len(sub)))
	o.b = append(o.b, sub...)
	o.b = binary.AppendUvarint(o.b, uint64(len(key)))
	at := len(o.b)
	o.b = append(o.b, key...)
	return at
}

func (o *ops) put(bucket, sub string, key, value []byte) *ops {
	return o.op(opPut, bucket, sub, key, value)
}
func (o *ops) del(bucket, sub string, key []byte) *ops { return o.op(opDelete, bucket, sub, key, nil) }
func (o *ops) putQueue(sink string, seq uint64, entry []byte) *ops {
	return o.op(opPutQueue, bQueues, sink, u64(seq), entry)
}

var errBadRecord = errors.New("bad intake record")

// applyRecord applies the operations of one record inside tx.
func applyRecord(tx *bbolt.Tx, rec []byte) error {
	r := rec
	field := func() ([]byte, error) {
		n, k := binary.Uvarint(r)
		if k <= 0 || n > uint64(len(r)-k) {
			return nil, errBadRecord
		}
		v := r[k : k+int(n)]
		r = r[k+int(n):]
		return v, nil
	}
	for len(r) > 0 {
		if len(r) < 2 || int(r[1]) >= len(bucketNames) {
			return errBadRecord
		}
		kind, r0, top := opKind(r[0]), r[1], tx.Bucket([]byte(bucketNames[r[1]]))
		r = r[2:]
		sub, err := field()
		if err != nil {
			return err
		}
		key, err := field()
		if err != nil {
			return err
		}
		var value []byte
		if kind != opDelete {
			if value, err = field(); err != nil {
				return err
			}
		}
		b := top
		if len(sub) > 0 {
			if kind == opDelete {
				if b = top.Bucket(sub); b == nil {
					continue
				}
			} else if b, err = top.CreateBucketIfNotExists(sub); err != nil {
				return err
			}
		}
		switch kind {
		case opPut:
			if b == top && bucketNames[r0] == bEvents {
				b.FillPercent = 0.9 // keys are UUIDv7: appended in order
			}
			err = b.Put(key, value)
		case opDelete:
			err = b.Delete(key)
		case opAdd:
			err = b.Put(key, addCounters(b.Get(key), value))
		case opPutQueue:
			b.FillPercent = 0.9
			if err = b.Put(key, value); err == nil && beU64(key) > b.Sequence() {
				err = b.SetSequence(beU64(key))
			}
		default:
			return fmt.Errorf("%w: operation %d", errBadRecord, kind)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
