package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/relaytest"
)

// threadIndex is the relay's reverse thread map, in memory: (sink, thread)
// → conversation. Err, when set, is what every lookup answers.
type threadIndex struct {
	mu      sync.Mutex
	threads map[[2]string]relay.ThreadConversation
	err     error
}

func (x *threadIndex) ThreadConversation(_ context.Context, sink, thread string) (relay.ThreadConversation, bool, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.err != nil {
		return relay.ThreadConversation{}, false, x.err
	}
	c, ok := x.threads[[2]string{sink, thread}]
	return c, ok, nil
}

type inboxFixture struct {
	inbox   *relay.Inbox
	store   *bolt.Store
	index   *threadIndex
	metrics *relay.Metrics
	logs    *relaytest.LogBuffer
}

const (
	conv  = "5b1f0c36-3f4e-4a9b-9d0e-2f6c8a1b7e10"
	bot   = "654aee418bc9a33b0e50d0ad"
	root  = "1765000000.000100"
	agent = "U0123AGENT"
)

func newInbox(t *testing.T, store relay.Appender) *inboxFixture {
	t.Helper()
	f := &inboxFixture{index: &threadIndex{threads: map[[2]string]relay.ThreadConversation{
		{"support-slack", root}:          {ConversationID: conv, ChatbotID: bot},
		{"chat-monitor", "131000000400"}: {ConversationID: conv, ChatbotID: bot},
	}}}
	if store == nil {
		s, err := bolt.Open(t.TempDir(), bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		f.store, store = s, s
	}
	f.metrics = relay.NewMetrics(prometheus.NewRegistry())
	l, logs := relaytest.NewLogger()
	f.logs = logs
	sinks := []string{"support-slack", "chat-monitor", "crm", "chatdata"}
	routes := []relay.Route{{Match: relay.Match{Topic: []string{relay.TopicAgentReply}}, Sinks: []string{"crm"}}}
	in, err := relay.NewInbox(relay.InboxConfig{
		Store: store, Router: relay.NewRouter(sinks, routes, relay.ReplyDestinations("chatdata")), Threads: f.index,
		Rules: map[string]relay.ReplyRule{
			"support-slack": {},
			"chat-monitor":  {Mode: relay.ReplyAll},
		},
		Metrics: f.metrics, Logger: l, Accepting: relay.NewAccepting(),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.inbox = in
	return f
}

func slackMessage(text string) relay.ThreadMessage {
	return relay.ThreadMessage{
		Sink: "support-slack", Platform: "slack", Channel: "C0123456789", Thread: root, MessageID: "1765000000.000200",
		AgentID: agent, AgentName: "Alex", AgentAvatar: "https://avatars.slack-edge.com/alex_72.png", Text: text,
	}
}

func (f *inboxFixture) count(sink, result string) float64 {
	return testutil.ToFloat64(f.metrics.AgentReplies.WithLabelValues(sink, result))
}

// TestInboxDecides: only human messages, new ones, in the relay's own
// threads, meant for the visitor by the sink's rule, become agent replies;
// everything else is ignored, counted and stored nowhere.
func TestInboxDecides(t *testing.T) {
	t.Parallel()
	const secretText = "reply: the refund code is RF-4471"
	tests := []struct {
		name string
		msg  func() relay.ThreadMessage
		why  string // "" for accepted
	}{
		{"prefixed reply", func() relay.ThreadMessage { return slackMessage(secretText) }, ""},
		{"note without the prefix", func() relay.ThreadMessage { return slackMessage("checking with billing RF-4471") }, relay.IgnoredNote},
		{"bot message", func() relay.ThreadMessage { m := slackMessage(secretText); m.Bot = true; return m }, relay.IgnoredBot},
		{"edit", func() relay.ThreadMessage { m := slackMessage(secretText); m.Edit = true; return m }, relay.IgnoredEdit},
		{"foreign thread", func() relay.ThreadMessage { m := slackMessage(secretText); m.Thread = "1765000999.000100"; return m }, relay.IgnoredForeignThread},
		{"top-level message, no thread", func() relay.ThreadMessage { m := slackMessage(secretText); m.Thread = ""; return m }, relay.IgnoredIncomplete},
		{"sink without reply:", func() relay.ThreadMessage { m := slackMessage(secretText); m.Sink = "crm"; return m }, relay.IgnoredNotTwoWay},
		{"mode all: plain message", func() relay.ThreadMessage {
			return relay.ThreadMessage{Sink: "chat-monitor", Platform: "discord", Channel: "131000000400", Thread: "131000000400",
				MessageID: "131000000500", AgentID: "131000000777", AgentName: "Alex (Billing)", Text: "RF-4471 is your code"}
		}, ""},
		{"mode all: note", func() relay.ThreadMessage {
			return relay.ThreadMessage{Sink: "chat-monitor", Platform: "discord", Channel: "131000000400", Thread: "131000000400",
				MessageID: "131000000501", Text: "note: RF-4471 VIP"}
		}, relay.IgnoredNote},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newInbox(t, nil)
			m := tc.msg()
			in, err := f.inbox.Accept(t.Context(), m)
			if err != nil {
				t.Fatal(err)
			}
			recent, err := f.store.Recent(t.Context(), "", 10)
			if err != nil {
				t.Fatal(err)
			}
			if tc.why != "" {
				if in.Result != relay.ReplyIgnored || in.Why != tc.why || in.ID != "" {
					t.Fatalf("Accept = %+v, want ignored (%s)", in, tc.why)
				}
				if len(recent) != 0 {
					t.Fatalf("an ignored message was stored: %+v", recent)
				}
				if n := f.count(m.Sink, relay.ReplyIgnored); n != 1 {
					t.Fatalf("ignored counted %v, want 1", n)
				}
			} else {
				if in.Result != relay.ReplyAccepted || in.ID == "" {
					t.Fatalf("Accept = %+v, want accepted", in)
				}
				rec, err := f.store.Lookup(t.Context(), in.ID)
				if err != nil {
					t.Fatal(err)
				}
				ev := rec.Event
				if ev.Topic != relay.TopicAgentReply || ev.ConversationID != conv || ev.ChatbotID != bot || ev.Reply == nil {
					t.Fatalf("stored %+v", ev)
				}
				want, _ := relay.ReplyRule{Mode: map[bool]relay.ReplyMode{true: relay.ReplyAll}[m.Sink == "chat-monitor"]}.Visitor(m.Text)
				if r := ev.Reply; r.Text != want || r.AgentID != m.AgentID || r.AgentName != m.AgentName ||
					r.Sink != m.Sink || r.MessageID != m.MessageID || r.Thread != m.Thread || r.Channel != m.Channel {
					t.Fatalf("stored reply %+v from %+v", r, m)
				}
				var sinks []string
				for _, d := range rec.Deliveries {
					sinks = append(sinks, d.Sink)
				}
				if !slices.Equal(sinks, []string{"crm", "chatdata"}) {
					t.Fatalf("routed to %v, want the chatdata destination and the route naming agent-reply", sinks)
				}
				if n := f.count(m.Sink, relay.ReplyAccepted); n != 1 {
					t.Fatalf("accepted counted %v, want 1", n)
				}
				if !strings.Contains(f.logs.String(), "agent reply accepted") || !strings.Contains(f.logs.String(), "conversation_id="+conv) {
					t.Fatalf("no accepted line naming the conversation:\n%s", f.logs)
				}
			}
			// What agents write is never logged, whatever became of it.
			if strings.Contains(f.logs.String(), "RF-4471") {
				t.Fatalf("the message's text is in the log:\n%s", f.logs)
			}
		})
	}
}

// TestInboxRetryStoredOnce: a platform's retry of a message (Slack's
// X-Slack-Retry-Num, a gateway redelivery) is stored once, even when the
// adapter made something else of it (a display name looked up again).
func TestInboxRetryStoredOnce(t *testing.T) {
	t.Parallel()
	f := newInbox(t, nil)
	first, err := f.inbox.Accept(t.Context(), slackMessage("reply: Hi Sam"))
	if err != nil || first.Result != relay.ReplyAccepted {
		t.Fatalf("first: %+v %v", first, err)
	}
	again := slackMessage("reply: Hi Sam")
	again.AgentName = "Alex (Billing)"
	dup, err := f.inbox.Accept(t.Context(), again)
	if err != nil || dup.Result != relay.ReplyDuplicate || dup.ID != first.ID {
		t.Fatalf("retry: %+v %v, want duplicate of %s", dup, err, first.ID)
	}
	recent, err := f.store.Recent(t.Context(), "", 10)
	if err != nil || len(recent) != 1 {
		t.Fatalf("stored %d events (%v), want 1", len(recent), err)
	}
	if f.count("support-slack", relay.ReplyAccepted) != 1 || f.count("support-slack", relay.ReplyDuplicate) != 1 {
		t.Fatal("accepted and duplicate not counted once each")
	}
}

// TestInboxUnavailable: when the thread index or the store cannot answer,
// Accept returns an error and stores nothing, so the adapter does not
// acknowledge and the platform sends the message again.
func TestInboxUnavailable(t *testing.T) {
	t.Parallel()
	t.Run("thread index", func(t *testing.T) {
		t.Parallel()
		f := newInbox(t, nil)
		f.index.err = relay.ErrUnavailable
		if _, err := f.inbox.Accept(t.Context(), slackMessage("reply: Hi")); !errors.Is(err, relay.ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
		if recent, _ := f.store.Recent(t.Context(), "", 10); len(recent) != 0 {
			t.Fatal("stored while the index failed")
		}
		if f.count("support-slack", relay.ReplyUnavailable) != 1 {
			t.Fatal("unavailable not counted")
		}
		f.index.err = nil
		if in, err := f.inbox.Accept(t.Context(), slackMessage("reply: Hi")); err != nil || in.Result != relay.ReplyAccepted {
			t.Fatalf("the platform's retry once the index is back: %+v %v", in, err)
		}
	})
	t.Run("store", func(t *testing.T) {
		t.Parallel()
		f := newInbox(t, failingStore{err: relay.ErrFull})
		if _, err := f.inbox.Accept(t.Context(), slackMessage("reply: Hi")); !errors.Is(err, relay.ErrFull) {
			t.Fatalf("err = %v, want ErrFull", err)
		}
		if f.count("support-slack", relay.ReplyUnavailable) != 1 {
			t.Fatal("unavailable not counted")
		}
	})
}

func TestInboxSignatureRejectionsCounted(t *testing.T) {
	t.Parallel()
	f := newInbox(t, nil)
	// Every result of every two-way sink exists from the start, at 0.
	if n := testutil.CollectAndCount(f.metrics.AgentReplies); n != 2*5 {
		t.Fatalf("%d agent-reply series at start, want 10 (2 two-way sinks × 5 results)", n)
	}
	f.inbox.RejectedSignature("support-slack")
	if f.count("support-slack", relay.ReplyRejectedSignature) != 1 {
		t.Fatal("rejected_signature not counted")
	}
}

// TestInboxClicks: Claim and Resolve change the conversation's state (one
// of two racing agents wins, the other is told who did) and queue, for
// the sink alone, the message clicked to show the status as it stands;
// a click that changes nothing queues nothing new. A sink that takes no
// replies, or an unknown action, is not a click the relay takes.
func TestInboxClicks(t *testing.T) {
	t.Parallel()
	store, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	conversations, err := relay.NewConversations(store.KV(relay.ConversationsNamespace), nil)
	if err != nil {
		t.Fatal(err)
	}
	in, err := relay.NewInbox(relay.InboxConfig{
		Store: store, Router: relay.NewRouter([]string{"support-slack"}, nil), Threads: &threadIndex{},
		Rules: map[string]relay.ReplyRule{"support-slack": {}}, Metrics: relay.NewMetrics(prometheus.NewRegistry()),
		Conversations: conversations,
	})
	if err != nil {
		t.Fatal(err)
	}
	click := func(action string, a relay.Agent) relay.Click {
		return relay.Click{Sink: "support-slack", Platform: "slack", Action: action, ConversationID: conv, Agent: a,
			Channel: "C0123456789", MessageID: root, Message: json.RawMessage(`[{"type":"section","text":{"type":"mrkdwn","text":"x"}}]`)}
	}
	dana, sam := relay.Agent{ID: "U0DANA", Name: "Dana"}, relay.Agent{ID: "U0SAM", Name: "Sam"}
	var wg sync.WaitGroup
	results := make([]relay.Clicked, 2)
	for i, a := range []relay.Agent{dana, sam} {
		wg.Go(func() {
			r, err := in.Click(t.Context(), click(relay.ActionClaim, a))
			if err != nil {
				t.Errorf("Click: %v", err)
			}
			results[i] = r
		})
	}
	wg.Wait()
	if results[0].Won == results[1].Won || results[0].State.ClaimedByID != results[1].State.ClaimedByID {
		t.Fatalf("racing claims: %+v", results)
	}
	winner := results[0].State.ClaimedBy
	if _, err := in.Click(t.Context(), click(relay.ActionResolve, sam)); err != nil {
		t.Fatal(err)
	}
	// Queued: the claim's status (once: both clicks leave the same one),
	// then the resolution's.
	q := store.Queue("support-slack")
	var shown []string
	for range 2 {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		d, err := q.Next(ctx)
		cancel()
		if err != nil {
			t.Fatalf("status follow-ups: %v (got %v)", err, shown)
		}
		fu := d.Event.Followup
		if fu == nil || fu.Kind != relay.FollowupStatus || fu.MessageID != root || fu.Channel != "C0123456789" || len(fu.Message) == 0 {
			t.Fatalf("queued %+v", fu)
		}
		shown = append(shown, fu.State.Status())
		if err := d.Ack(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"🙋 Claimed by " + winner, "✅ Resolved by Sam"}; !slices.Equal(shown, want) {
		t.Fatalf("statuses shown %q, want %q", shown, want)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if d, err := q.Next(ctx); err == nil {
		t.Fatalf("another follow-up: %+v", d.Event.Followup)
	}
	for _, c := range []relay.Click{
		func() relay.Click { c := click(relay.ActionClaim, dana); c.Sink = "crm"; return c }(),
		click("escalate", dana),
		func() relay.Click { c := click(relay.ActionClaim, dana); c.ConversationID = ""; return c }(),
	} {
		if _, err := in.Click(t.Context(), c); !errors.Is(err, relay.ErrNotAClick) {
			t.Errorf("%+v: %v, want ErrNotAClick", c, err)
		}
	}
}
