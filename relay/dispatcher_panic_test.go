package relay_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

// panicky panics while "rendering" the turn "q1", in the call named by
// where (send, canpack or sendpacked; Send as well with sendpacked, as a
// renderer bug would); every other turn goes through a packSink.
type panicky struct {
	*packSink
	where  string
	panics atomic.Int32 // panics raised in the call named by where
}

func boom(ev *relay.Event) bool { return strings.Contains(string(ev.Body), `"q1"`) }

func (s *panicky) CanPack(ctx context.Context, ev *relay.Event) bool {
	if s.where == "canpack" && boom(ev) {
		s.panics.Add(1)
		var lead *relay.Field // a nil pointer dereference, as a renderer bug would raise
		if len(ev.Lead) > 0 {
			lead = &ev.Lead[0]
		}
		_ = lead.Key
	}
	return s.packSink.CanPack(ctx, ev)
}

func (s *panicky) Send(ctx context.Context, ev *relay.Event) error {
	if s.where != "" && s.where != "canpack" && boom(ev) {
		if s.where == "send" {
			s.panics.Add(1)
		}
		var parts []string
		_ = parts[3] // index out of range
	}
	return s.packSink.Send(ctx, ev)
}

var _ relay.Packer = (*panicky)(nil)

func (s *panicky) SendPacked(ctx context.Context, evs []*relay.Event) (int, relay.Report, error) {
	for _, ev := range evs {
		if s.where == "sendpacked" && boom(ev) {
			s.panics.Add(1)
			panic(fmt.Sprintf("renderer bug on event %s", ev.ID))
		}
	}
	return s.packSink.SendPacked(ctx, evs)
}

// TestPanicInASinkParksTheDelivery: a sink that panics while rendering one
// event (in Send, CanPack or SendPacked) does not take the relay down: that
// delivery is parked with a reason that says so, logged at error with its
// event id, and every other turn, of its conversation too, is delivered.
func TestPanicInASinkParksTheDelivery(t *testing.T) {
	t.Parallel()
	for _, where := range []string{"send", "canpack", "sendpacked"} {
		t.Run(where, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			synctest.Test(t, func(t *testing.T) {
				// With "send", A's turns go alone (as a threaded
				// conversation's do), so Send renders them.
				threaded := map[string]bool{"A": where == "send"}
				sink := &panicky{packSink: &packSink{fakeSink: newFakeSink(nil), threaded: threaded}, where: where}
				sink.name = "fake"
				f := start(t, dir, sink, policy, 1, paced(time.Second))
				defer f.stop(t)
				relay.HoldUntil(f.d, time.Now().Add(time.Second)) // turns queue up and pack
				bad := f.append(t, "A", 1)
				evs := []*relay.Event{bad}
				for i := range 3 {
					evs = append(evs, f.append(t, fmt.Sprintf("c%d", i), 10+i))
				}
				evs = append(evs, f.append(t, "A", 2), f.append(t, "A", 3))
				got := map[string]bool{}
				for range len(evs) - 1 {
					got[<-sink.sent] = true
				}
				synctest.Wait()
				for _, ev := range evs {
					if ev != bad && !got[ev.ID] {
						t.Errorf("event %s (%s) not delivered", ev.ID, ev.ConversationID)
					}
				}
				dead, err := f.store.ListDead(t.Context(), "", 0)
				if err != nil || len(dead) != 1 || dead[0].EventID != bad.ID {
					t.Fatalf("dead letters %+v, %v; want only %s", dead, err, bad.ID)
				}
				if !strings.Contains(dead[0].Reason, "panic") {
					t.Errorf("reason %q does not say the sink panicked", dead[0].Reason)
				}
				logs := f.logs.String()
				var line string
				for l := range strings.Lines(logs) {
					if strings.Contains(l, "panic") && strings.Contains(l, bad.ID) && strings.Contains(l, "level=ERROR") {
						line = l
					}
				}
				if line == "" {
					t.Errorf("no error log line with the panic and the event id:\n%s", logs)
				}
				if d := f.deliveries("fake", relay.ResultDead); d != 1 {
					t.Errorf("deliveries{dead} = %v", d)
				}
				if n := sink.panics.Load(); n != 1 {
					t.Errorf("%d panics in %s, want 1: the test did not go the way it means to", n, where)
				}
			})
		})
	}
}
