package bolt

import (
	"encoding/binary"
	"encoding/json"
	"testing"

	bbolt "go.etcd.io/bbolt"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

// An event stored before its usage was kept in its meta has its usage read
// from its body.
func TestUsageOfAnEventStoredWithoutIt(t *testing.T) {
	t.Parallel()
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	kept, old := storetest.NewEvent(t, "c1", 1), storetest.NewEvent(t, "c2", 2)
	for _, ev := range []*relay.Event{kept, old} {
		if _, err := s.Append(ctx, ev, []string{"s"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.caughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	// Rewrite old's record as the store wrote it before: no usage.
	err = s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(bEvents))
		m, body, err := decodeEventMeta(b.Get([]byte(old.ID)))
		if err != nil {
			return err
		}
		if m.Usage == nil {
			t.Error("the store kept no usage in a new event's meta")
		}
		m.Usage = nil
		meta, err := json.Marshal(m)
		if err != nil {
			return err
		}
		v := binary.AppendUvarint([]byte{1}, uint64(len(meta)))
		v = append(append(v, meta...), body...)
		return b.Put([]byte(old.ID), v)
	})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]relay.UsageRecord{}
	err = s.ReceivedUsage(ctx, kept.ReceivedAt.Add(-1), nil, func(r relay.UsageRecord) (bool, error) {
		got[r.ID] = r
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []*relay.Event{kept, old} {
		want := relay.UsageOf(ev)
		if !want.Counted || !want.HasScore {
			t.Fatalf("the test event has no usage to compare: %+v", want)
		}
		if r, ok := got[ev.ID]; !ok || r.Usage != want || r.Topic != ev.Topic {
			t.Errorf("event %s: %+v, want usage %+v, topic %s", ev.ID, r, want, ev.Topic)
		}
	}
}
