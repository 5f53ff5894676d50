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
	"github.com/chatrelay/chatrelay/relay/bolt"
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

// TestHeldThreshold: while the destination is up, a reply is told held
// only once its next attempt comes DefaultHeldAfter or more after it was
// accepted; when it is down, at once. One note per reply and start of its
// retry.max_age, however often told (a replay that is held again is told
// again); nothing for other sinks' deliveries, other topics, or a reply
// whose sink takes replies no more.
func TestHeldThreshold(t *testing.T) {
	t.Parallel()
	store, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	fu, err := relay.NewFollowups(relay.FollowupsConfig{Store: store, Destinations: []string{"chatdata"},
		TwoWay: map[string]relay.ReplyConfig{"support-slack": {}}})
	if err != nil {
		t.Fatal(err)
	}
	since := time.Date(2026, 12, 6, 14, 0, 0, 0, time.UTC)
	reply := storetest.NewReply(t, "conv-1", "1765000000.000200", "first")
	elsewhere := storetest.NewReply(t, "conv-2", "1765000000.000300", "second")
	elsewhere.Body = []byte(strings.Replace(string(elsewhere.Body), `"support-slack"`, `"old-slack"`, 1))
	if elsewhere, err = relay.DecodeEvent(elsewhere.Body); err != nil || elsewhere.AgentReply().Sink != "old-slack" {
		t.Fatalf("reply on another sink: %+v, %v", elsewhere, err)
	}
	chat := storetest.NewEvent(t, "conv-3", 1)
	for _, tc := range []struct {
		name string
		w    relay.Wait
		want int // held notes queued so far
	}{
		{"a 500, next try within the minute", relay.Wait{Sink: "chatdata", Event: reply, Err: serverErr, Since: since, Next: since.Add(59 * time.Second)}, 0},
		{"next try a minute after", relay.Wait{Sink: "chatdata", Event: reply, Err: serverErr, Since: since, Next: since.Add(time.Minute)}, 1},
		{"told again, later", relay.Wait{Sink: "chatdata", Event: reply, Err: serverErr, Since: since, Next: since.Add(time.Hour)}, 1},
		{"down: the same reply", relay.Wait{Sink: "chatdata", Event: reply, Down: relay.DownBroken, Err: refusedKey, Since: since}, 1},
		{"replayed, held again", relay.Wait{Sink: "chatdata", Event: reply, Down: relay.DownBroken, Err: refusedKey, Since: since.Add(25 * time.Hour)}, 2},
		{"another sink's delivery", relay.Wait{Sink: "crm", Event: reply, Down: relay.DownBroken, Err: refusedKey, Since: since}, 2},
		{"not a reply", relay.Wait{Sink: "chatdata", Event: chat, Down: relay.DownBroken, Err: refusedKey, Since: since}, 2},
		{"its sink takes replies no more", relay.Wait{Sink: "chatdata", Event: elsewhere, Down: relay.DownBroken, Err: refusedKey, Since: since}, 2},
	} {
		fu.Waiting(t.Context(), tc.w)
		st, err := store.Stats(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for _, q := range st {
			if q.Sink == "support-slack" {
				got = q.Depth
			}
		}
		if got != tc.want {
			t.Fatalf("%s: %d held notes queued, want %d", tc.name, got, tc.want)
		}
	}
}

// TestHeldWords: what the note says for each kind of failure, from its
// class and status alone: never the text of Chat Data's answer.
func TestHeldWords(t *testing.T) {
	t.Parallel()
	gone := relay.Broken(&relay.StatusError{Status: 404, Body: "sk-secret-in-the-body"}, relay.ReasonGone)
	for _, tc := range []struct {
		name string
		w    relay.Wait
		want string
	}{
		{"refused key", relay.Wait{Down: relay.DownBroken, Err: refusedKey},
			"Not delivered yet: Chat Data refuses chatrelay's API key (HTTP 401). It is kept and sent once the key is fixed; you will see ✅ when the visitor has it."},
		{"broken otherwise", relay.Wait{Down: relay.DownBroken, Err: gone},
			"Not delivered yet: Chat Data refuses chatrelay's requests (HTTP 404). It is kept and sent once an operator fixes chatrelay's configuration; you will see ✅ when the visitor has it."},
		{"breaker tripped", relay.Wait{Down: relay.DownUnreachable, Err: dialErr},
			"Not delivered yet: Chat Data cannot be reached. It is kept and sent as soon as Chat Data answers again; you will see ✅ when the visitor has it."},
		{"no answer in time", relay.Wait{Err: context.DeadlineExceeded},
			"Not delivered yet: Chat Data cannot be reached. It is kept and sent as soon as Chat Data answers again; you will see ✅ when the visitor has it."},
		{"429", relay.Wait{Err: slowDown},
			"Not delivered yet: Chat Data asks chatrelay to wait (HTTP 429). It is kept and sent as soon as Chat Data allows it; you will see ✅ when the visitor has it."},
		{"5xx", relay.Wait{Err: serverErr},
			"Not delivered yet: Chat Data answers with an error (HTTP 500). It is kept and sent as soon as Chat Data takes it; you will see ✅ when the visitor has it."},
		{"something else", relay.Wait{Err: errors.New("chatdata: sk-secret in a strange error")},
			"Not delivered yet: Chat Data did not take it. It is kept and sent as soon as Chat Data takes it; you will see ✅ when the visitor has it."},
	} {
		f := relay.HeldFollowup(tc.w)
		if got := f.HeldLine(); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
		if strings.Contains(f.Reason+f.Until, "sk-secret") {
			t.Errorf("%s: the note carries the answer's text: %q", tc.name, f.Reason)
		}
	}
}
