package relay_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/chatrelay/chatrelay/relay"
)

// platform is a fake destination for Turn: it records where each message
// went and makes up thread ids. Threads in gone are refused with
// ThreadGone; fail[n] fails the n-th post (from 1).
type platform struct {
	twoStep bool // a posted message must be made a thread (Start), as on Discord
	gone    map[string]bool
	fail    map[int]error
	failAt  map[string]error // Start's answer for a root

	posts   []string // "part@thread" per post
	started []string // roots a thread was started on
	seq     int
}

func (p *platform) turn(ev *relay.Event, parts int) relay.Turn {
	t := relay.Turn{Event: ev, Dest: "C1", Parts: parts, Threads: true,
		Post: func(_ context.Context, i int, thread string) (relay.Placed, error) {
			n := len(p.posts) + 1
			if err := p.fail[n]; err != nil {
				p.posts = append(p.posts, "failed")
				return relay.Placed{}, err
			}
			if p.gone[thread] {
				p.posts = append(p.posts, "refused")
				return relay.Placed{}, relay.ThreadGone(errors.New("thread_not_found"))
			}
			p.posts = append(p.posts, fmt.Sprintf("%d@%s", i, thread))
			if thread != "" {
				return relay.Placed{Thread: thread}, nil
			}
			p.seq++
			id := fmt.Sprintf("m%d", p.seq)
			if p.twoStep {
				return relay.Placed{Root: id}, nil
			}
			return relay.Placed{Thread: id}, nil
		}}
	if p.twoStep {
		t.Start = func(_ context.Context, root string) (string, error) {
			p.started = append(p.started, root)
			if err := p.failAt[root]; err != nil {
				return "", err
			}
			return "t-" + root, nil
		}
	}
	return t
}

func conversationEvent(id, conv string) *relay.Event {
	return &relay.Event{ID: id, Topic: relay.TopicChat, ConversationID: conv, ChatbotID: "bot-1"}
}

// TestBooksThreadBothWays: the first message of a conversation starts its
// thread, which the next turn goes into and which leads back to the
// conversation; an event without conversation records no thread.
func TestBooksThreadBothWays(t *testing.T) {
	t.Parallel()
	books := relay.NewBooks(relay.NewMemKV(), "team", nil)
	p := &platform{}
	for _, ev := range []*relay.Event{conversationEvent("e1", "conv-a"), conversationEvent("e2", "conv-a"), conversationEvent("e3", "")} {
		if n, err := books.Deliver(t.Context(), p.turn(ev, 1)); err != nil || n != 1 {
			t.Fatalf("%s: %d, %v", ev.ID, n, err)
		}
	}
	if want := []string{"0@", "0@m1", "0@"}; !slices.Equal(p.posts, want) {
		t.Fatalf("posts %q, want %q", p.posts, want)
	}
	ref, ok, err := books.Lookup(t.Context(), "m1")
	if err != nil || !ok || ref != (relay.ThreadConversation{ConversationID: "conv-a", ChatbotID: "bot-1"}) {
		t.Fatalf("Lookup(m1) = %+v, %v, %v", ref, ok, err)
	}
	if _, ok, err := books.Lookup(t.Context(), "m2"); ok || err != nil {
		t.Fatalf("Lookup(a thread of no conversation) = %v, %v", ok, err)
	}
	if _, ok, _ := relay.NewBooks(relay.NewMemKV(), "other", nil).Lookup(t.Context(), "m1"); ok {
		t.Fatal("another sink's books hold the thread")
	}
}

// TestBooksResumeALongTurn: a turn of several messages whose second fails
// is resumed after the last one posted, in the same thread, and a turn
// delivered again posts nothing.
func TestBooksResumeALongTurn(t *testing.T) {
	t.Parallel()
	for _, conv := range []string{"conv-a", ""} {
		t.Run("conversation "+conv, func(t *testing.T) {
			t.Parallel()
			books := relay.NewBooks(relay.NewMemKV(), "team", nil)
			p := &platform{fail: map[int]error{2: errors.New("HTTP 503")}}
			ev := conversationEvent("e1", conv)
			if n, err := books.Deliver(t.Context(), p.turn(ev, 3)); err == nil || n != 1 {
				t.Fatalf("first attempt: %d, %v; want 1 posted and the 503", n, err)
			}
			if n, err := books.Deliver(t.Context(), p.turn(ev, 3)); err != nil || n != 2 {
				t.Fatalf("retry: %d, %v; want the 2 missing", n, err)
			}
			if n, err := books.Deliver(t.Context(), p.turn(ev, 3)); err != nil || n != 0 {
				t.Fatalf("delivered again: %d, %v; want nothing posted", n, err)
			}
			if want := []string{"0@", "failed", "1@m1", "2@m1"}; !slices.Equal(p.posts, want) {
				t.Fatalf("posts %q, want %q", p.posts, want)
			}
		})
	}
}

// TestBooksThreadGone: a post into a thread that is gone is made once at
// top level, which starts the conversation's new thread; if that thread is
// refused too, the error comes back (the retry starts from the books).
func TestBooksThreadGone(t *testing.T) {
	t.Parallel()
	books := relay.NewBooks(relay.NewMemKV(), "team", nil)
	p := &platform{}
	if _, err := books.Deliver(t.Context(), p.turn(conversationEvent("e1", "conv-a"), 1)); err != nil {
		t.Fatal(err)
	}
	p.gone = map[string]bool{"m1": true}
	if _, err := books.Deliver(t.Context(), p.turn(conversationEvent("e2", "conv-a"), 2)); err != nil {
		t.Fatal(err)
	}
	if want := []string{"0@", "refused", "0@", "1@m2"}; !slices.Equal(p.posts, want) {
		t.Fatalf("posts %q, want %q", p.posts, want)
	}
	if ref, ok, _ := books.Lookup(t.Context(), "m2"); !ok || ref.ConversationID != "conv-a" {
		t.Fatalf("the new thread leads to %+v, %v", ref, ok)
	}
	p.gone["m2"], p.gone[""] = true, true
	_, err := books.Deliver(t.Context(), p.turn(conversationEvent("e3", "conv-a"), 1))
	if !errors.Is(err, relay.ErrThreadGone) {
		t.Fatalf("both refused: %v, want the thread-gone error", err)
	}
}

// TestBooksStartOnRoot: on a platform where a posted message must be made
// a thread, a failure to start it leaves the message recorded; the retry
// starts the thread on it without posting it again. A root deleted
// meanwhile makes the next message open a new thread.
func TestBooksStartOnRoot(t *testing.T) {
	t.Parallel()
	books := relay.NewBooks(relay.NewMemKV(), "team", nil)
	p := &platform{twoStep: true, failAt: map[string]error{"m1": errors.New("HTTP 502")}}
	ev := conversationEvent("e1", "conv-a")
	if _, err := books.Deliver(t.Context(), p.turn(ev, 2)); err == nil {
		t.Fatal("the thread's start failed, and Deliver did not say so")
	}
	delete(p.failAt, "m1")
	if _, err := books.Deliver(t.Context(), p.turn(ev, 2)); err != nil {
		t.Fatal(err)
	}
	if want := []string{"0@", "1@t-m1"}; !slices.Equal(p.posts, want) {
		t.Fatalf("posts %q, want %q: the first message once", p.posts, want)
	}
	if want := []string{"m1", "m1"}; !slices.Equal(p.started, want) {
		t.Fatalf("threads started on %q, want %q", p.started, want)
	}
	if ref, ok, _ := books.Lookup(t.Context(), "t-m1"); !ok || ref.ConversationID != "conv-a" {
		t.Fatalf("the thread leads to %+v, %v", ref, ok)
	}

	p.failAt = map[string]error{"m2": relay.ThreadGone(errors.New("Unknown Message"))}
	ev2 := conversationEvent("e2", "conv-b")
	if _, err := books.Deliver(t.Context(), p.turn(ev2, 2)); err != nil {
		t.Fatal(err)
	}
	if want := []string{"0@", "1@t-m1", "0@", "1@"}; !slices.Equal(p.posts, want) {
		t.Fatalf("posts %q, want %q: after the root was deleted the next message opens a new thread", p.posts, want)
	}
	if ref, ok, _ := books.Lookup(t.Context(), "t-m3"); !ok || ref.ConversationID != "conv-b" {
		t.Fatalf("the new thread leads to %+v, %v", ref, ok)
	}
}

// strictKV is a KV that, like a real store, refuses work on a context that
// has ended.
type strictKV struct{ relay.MemKV }

func (k *strictKV) Get(ctx context.Context, key string) (string, bool, error) {
	if err := ctx.Err(); err != nil {
		return "", false, err
	}
	return k.MemKV.Get(ctx, key)
}

func (k *strictKV) Put(ctx context.Context, key, value string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return k.MemKV.Put(ctx, key, value)
}

// TestBooksRecordsOutliveTheSend: what a post placed is recorded even when
// the send's context ends as the platform answers: otherwise the retry
// would post the message again and open a second thread.
func TestBooksRecordsOutliveTheSend(t *testing.T) {
	t.Parallel()
	kv := &strictKV{}
	books := relay.NewBooks(kv, "team", nil)
	p := &platform{fail: map[int]error{2: context.Canceled}}
	ctx, cancel := context.WithCancel(t.Context())
	turn := p.turn(conversationEvent("e1", "conv-a"), 2)
	post := turn.Post
	turn.Post = func(c context.Context, i int, thread string) (relay.Placed, error) {
		placed, err := post(c, i, thread)
		cancel() // the deadline passes as the answer arrives
		return placed, err
	}
	if _, err := books.Deliver(ctx, turn); err == nil {
		t.Fatal("the second post did not fail")
	}
	if _, err := books.Deliver(t.Context(), p.turn(conversationEvent("e1", "conv-a"), 2)); err != nil {
		t.Fatal(err)
	}
	if want := []string{"0@", "failed", "1@m1"}; !slices.Equal(p.posts, want) {
		t.Fatalf("posts %q, want %q", p.posts, want)
	}
}

// TestBooksReadWhatSinksWroteBefore: the records the Slack and Discord
// sinks kept themselves before the relay kept the books are read, and a
// thread found there is recorded anew, both ways.
func TestBooksReadWhatSinksWroteBefore(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	kv := relay.NewMemKV()
	for key, value := range map[string]string{
		"thread:C1:conv-discord":    "1234567890",                                   // Discord
		"thread:conv-slack":         `{"channel":"C1","ts":"1700000000.000100"}`,    // Slack
		"thread:conv-moved":         `{"channel":"C0OLD","ts":"1700000000.000200"}`, // Slack, another channel
		"part:C1:e-slack":           `{"posted":1,"root":"1700000000.000300"}`,      // Slack: root is the thread
		"thread:C1:conv-unreadable": `{"thread":`,
	} {
		if err := kv.Put(ctx, key, value); err != nil {
			t.Fatal(err)
		}
	}
	books := relay.NewBooks(kv, "team", nil)
	for conv, want := range map[string]string{"conv-discord": "1234567890", "conv-slack": "1700000000.000100", "conv-moved": "", "conv-unreadable": ""} {
		if th, err := books.Thread(ctx, "C1", relay.ThreadConversation{ConversationID: conv, ChatbotID: "bot-1"}); err != nil || th != want {
			t.Errorf("Thread(%s) = %q, %v; want %q", conv, th, err, want)
		}
		if want == "" {
			continue
		}
		if ref, ok, err := books.Lookup(ctx, want); err != nil || !ok || ref.ConversationID != conv {
			t.Errorf("Lookup(%s) = %+v, %v, %v; want %s", want, ref, ok, err, conv)
		}
		if v, _, _ := kv.Get(ctx, "thread:C1:"+conv); !strings.Contains(v, `"thread":"`+want+`"`) {
			t.Errorf("thread:C1:%s = %q, not recorded anew", conv, v)
		}
	}
	p := &platform{}
	ev := conversationEvent("e-slack", "")
	if _, err := books.Deliver(ctx, p.turn(ev, 2)); err != nil {
		t.Fatal(err)
	}
	if want := []string{"1@1700000000.000300"}; !slices.Equal(p.posts, want) {
		t.Fatalf("posts %q, want %q: the rest of the turn in the thread its first message started", p.posts, want)
	}
}

// TestBooksConcurrentConversations: the books of one sink serve its
// conversations at once (the dispatcher's workers).
func TestBooksConcurrentConversations(t *testing.T) {
	t.Parallel()
	books := relay.NewBooks(relay.NewMemKV(), "team", nil)
	var wg sync.WaitGroup
	for c := range 8 {
		wg.Go(func() {
			conv := fmt.Sprintf("conv-%d", c)
			thread := "th-" + conv
			turn := relay.Turn{Event: conversationEvent("e-"+conv, conv), Dest: "C1", Parts: 1, Threads: true,
				Post: func(context.Context, int, string) (relay.Placed, error) { return relay.Placed{Thread: thread}, nil }}
			if _, err := books.Deliver(t.Context(), turn); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for c := range 8 {
		conv := fmt.Sprintf("conv-%d", c)
		if ref, ok, err := books.Lookup(t.Context(), "th-"+conv); err != nil || !ok || ref.ConversationID != conv {
			t.Errorf("%s: %+v %v %v", conv, ref, ok, err)
		}
	}
}
