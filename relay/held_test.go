package relay_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

// Chat Data's answers as the chatdata sink classifies them.
var (
	refusedKey = relay.Broken(&relay.StatusError{Status: 401, Body: "Unauthorized: invalid API key"}, relay.ReasonAuth)
	serverErr  = relay.Retryable(&relay.StatusError{Status: 500, Body: "Internal error"}, relay.ReasonServerError)
	slowDown   = relay.RetryAfter(&relay.StatusError{Status: 429, Body: "Too many requests"}, 2*time.Minute)
	dialErr    = &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
)

// heldRig runs a dispatcher for the chatdata destination (a fake sink
// answering as script says) with the follow-ups, on the embedded store in
// dir.
func heldRig(t *testing.T, dir string, script func(int, *relay.Event) error) (*fixture, *fakeSink) {
	t.Helper()
	sink := newFakeSink(script)
	sink.name = "chatdata"
	return start(t, dir, sink, policy, 4, func(cfg *relay.DispatcherConfig) {
		fu, err := relay.NewFollowups(relay.FollowupsConfig{Store: cfg.Stats.(relay.Store), Destinations: []string{"chatdata"},
			TwoWay:        map[string]relay.ReplyConfig{"support-slack": {}},
			StatusCommand: "chatrelay --config /etc/chatrelay.yaml status"})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Outcomes = fu
	}), sink
}

// told drains what the follow-ups queued for support-slack, in the order
// its dispatcher would post it: each follow-up's kind, per reply (by its
// message id). Inside a bubble, it returns once the queue stays empty.
func told(t *testing.T, f *fixture) (map[string][]string, []*relay.Followup) {
	t.Helper()
	q := f.store.Queue("support-slack")
	got := map[string][]string{}
	var all []*relay.Followup
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
		d, err := q.Next(ctx)
		cancel()
		if err != nil {
			return got, all
		}
		if err := d.Ack(t.Context()); err != nil {
			t.Fatal(err)
		}
		fu := d.Event.Followup
		got[fu.Reply.MessageID] = append(got[fu.Reply.MessageID], fu.Kind)
		all = append(all, fu)
	}
}

// TestHeldReplyIsToldOnce: an agent reply that waits for Chat Data is told
// in its thread once, however many times it is retried, before the ✅ of
// its delivery: at once when the destination is down (a refused key, or
// the breaker tripped on a Chat Data that cannot be reached, or when the
// reply meets the destination already down), else once its next attempt
// comes a minute or more after it was accepted (5xx for long, a long
// Retry-After). A reply delivered on its first or second try, the
// destination up, is not told.
func TestHeldReplyIsToldOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		script  func(n int, ev *relay.Event) error // Chat Data's answer to attempt n
		replies int
		// want is, per reply, the follow-ups queued; why what the note
		// says (after "Not delivered yet: ").
		want []string
		why  string
	}{
		{"delivered at once", func(int, *relay.Event) error { return nil }, 1,
			[]string{relay.FollowupDelivered}, ""},
		{"a 500, then delivered", func(n int, _ *relay.Event) error { return failFor(n, 1, serverErr) }, 1,
			[]string{relay.FollowupDelivered}, ""},
		{"refused key, six probes, then the key is fixed", func(n int, _ *relay.Event) error { return failFor(n, 6, refusedKey) }, 1,
			[]string{relay.FollowupHeld, relay.FollowupDelivered},
			"Chat Data refuses chatrelay's API key (HTTP 401). It is kept and sent once the key is fixed"},
		{"refused key: a second reply meets the destination down", func(n int, ev *relay.Event) error {
			if strings.Contains(ev.AgentReply().Text, "first") {
				return failFor(n, 3, refusedKey)
			}
			return nil // the key works by the time the second is probed
		}, 2, []string{relay.FollowupHeld, relay.FollowupDelivered}, "Chat Data refuses chatrelay's API key (HTTP 401)"},
		{"500 for more than a minute", func(n int, _ *relay.Event) error { return failFor(n, 8, serverErr) }, 1,
			[]string{relay.FollowupHeld, relay.FollowupDelivered},
			"Chat Data answers with an error (HTTP 500). It is kept and sent as soon as Chat Data takes it"},
		{"429 for two minutes", func(n int, _ *relay.Event) error { return failFor(n, 1, slowDown) }, 1,
			[]string{relay.FollowupHeld, relay.FollowupDelivered}, "Chat Data asks chatrelay to wait (HTTP 429)"},
		{"cannot be reached", func(n int, _ *relay.Event) error { return failFor(n, 7, dialErr) }, 1,
			[]string{relay.FollowupHeld, relay.FollowupDelivered},
			"Chat Data cannot be reached. It is kept and sent as soon as Chat Data answers again"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			synctest.Test(t, func(t *testing.T) {
				f, sink := heldRig(t, dir, tc.script)
				defer f.stop(t)
				var ids []string
				for i, text := range []string{"first", "second"}[:tc.replies] {
					id := "1765000000.00020" + string(rune('0'+i))
					ids = append(ids, id)
					// Two conversations: the second is not held up behind
					// the first, but by the destination.
					if _, err := f.store.Append(t.Context(), storetest.NewReply(t, "conv-"+text, id, text), []string{"chatdata"}); err != nil {
						t.Fatal(err)
					}
					synctest.Wait()
				}
				for range tc.replies {
					<-sink.sent
				}
				synctest.Wait()
				got, all := told(t, f)
				for _, id := range ids {
					if strings.Join(got[id], ",") != strings.Join(tc.want, ",") {
						t.Errorf("reply %s: the thread is told %v, want %v", id, got[id], tc.want)
					}
				}
				for _, fu := range all {
					if fu.Kind != relay.FollowupHeld {
						continue
					}
					line := fu.HeldLine()
					if !strings.HasPrefix(line, relay.NotDeliveredYet+": "+tc.why) || !strings.HasSuffix(line, "; you will see ✅ when the visitor has it.") {
						t.Errorf("the note says %q, want %q… then when it goes and the ✅", line, relay.NotDeliveredYet+": "+tc.why)
					}
					if fu.Status != "chatrelay --config /etc/chatrelay.yaml status" || fu.Reply == nil || fu.Reply.Thread == "" {
						t.Errorf("held follow-up %+v lacks the status command or the reply", fu)
					}
				}
			})
		})
	}
}

// failFor fails the first n attempts with err.
func failFor(attempt, n int, err error) error {
	if attempt <= n {
		return err
	}
	return nil
}

// TestHeldNoteSurvivesARestart: a reply held on a refused key is told;
// chatrelay restarts (the store reopened from its file) while the key is
// still refused and retries the reply again: no second note; once the key
// is fixed, the ✅ follows the one note.
func TestHeldNoteSurvivesARestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		third := make(chan struct{})
		f, _ := heldRig(t, dir, func(n int, _ *relay.Event) error {
			if n == 3 {
				close(third)
			}
			return refusedKey
		})
		if _, err := f.store.Append(t.Context(), storetest.NewReply(t, "conv-1", "1765000000.000200", "first"), []string{"chatdata"}); err != nil {
			t.Fatal(err)
		}
		// Refused three times: told at the first, probed twice more.
		<-third
		synctest.Wait()
		f.stop(t)

		f, sink := heldRig(t, dir, func(n int, _ *relay.Event) error { return failFor(n, 3, refusedKey) })
		defer f.stop(t)
		<-sink.sent
		synctest.Wait()
		got, _ := told(t, f)
		if want := []string{relay.FollowupHeld, relay.FollowupDelivered}; strings.Join(got["1765000000.000200"], ",") != strings.Join(want, ",") {
			t.Fatalf("across the restart the thread is told %v, want %v", got["1765000000.000200"], want)
		}
	})
}
