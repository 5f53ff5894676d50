package discord

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/discord/discordtest"
)

func chatEvent(t testing.TB, id, question, answer string) *relay.Event {
	t.Helper()
	body, _ := json.Marshal(map[string]any{
		"messages":        []map[string]string{{"role": "user", "content": question}},
		"answer":          map[string]any{"role": "assistant", "content": answer, "score": 0.5},
		"conversation_id": "conv-" + id,
	})
	ev, err := relay.DecodeEvent(body)
	if err != nil {
		t.Fatal(err)
	}
	ev.ID, ev.Topic = id, relay.TopicChat
	return ev
}

func webhookSink(t *testing.T) (*Sink, *discordtest.Server) {
	t.Helper()
	srv := discordtest.NewServer(t)
	hook := srv.AddWebhook(srv.AddChannel(discordgo.ChannelTypeGuildText))
	s, err := New(Config{Name: "d", WebhookURL: relay.Secret(hook)}, relay.SinkDeps{})
	if err != nil {
		t.Fatal(err)
	}
	return s, srv
}

// TestTurnRenderedOncePerSend: CanPack keeps the turn it rendered to
// decide, and the send that follows (SendPacked, or Send) posts that
// rendering instead of rendering again; a turn too long to pack is not
// rendered by CanPack at all.
func TestTurnRenderedOncePerSend(t *testing.T) {
	t.Parallel()
	s, srv := webhookSink(t)
	short := chatEvent(t, "a", "q", "| a | b |\n|---|---|\n| 1 | 2 |")
	if !s.CanPack(t.Context(), short) {
		t.Fatal("a short turn cannot pack")
	}
	if _, ok := s.memo.Get(short); !ok {
		t.Fatal("CanPack kept nothing for the send")
	}
	// What the send posts is what the memo holds: no second rendering.
	s.memo.Put(short, turn{head: newHead("from the memo", colorOther), text: "rendered once"})
	if err := s.Send(t.Context(), short); err != nil {
		t.Fatal(err)
	}
	reqs := srv.Requests()
	if len(reqs) != 1 || !strings.Contains(string(reqs[0].Body), "rendered once") {
		t.Fatalf("posted %d requests, not the memo's rendering", len(reqs))
	}
	long := chatEvent(t, "b", "q", strings.Repeat("A long paragraph about shipping. ", 600))
	if s.CanPack(t.Context(), long) {
		t.Error("a turn of 20 KB can pack")
	}
	if _, ok := s.memo.Get(long); ok {
		t.Error("CanPack rendered a turn too long to pack")
	}
}

// TestRenderingPastTheDeadlineIsPermanent: when the send's deadline passed
// while the event was rendered, nothing is posted and the delivery is
// permanent; a cancelled context (shutdown) is not.
func TestRenderingPastTheDeadlineIsPermanent(t *testing.T) {
	t.Parallel()
	s, srv := webhookSink(t)
	ev := chatEvent(t, "a", "q", "an answer")
	expired, cancel := context.WithDeadline(t.Context(), time.Unix(0, 0))
	defer cancel()
	_, _, packedErr := s.SendPacked(expired, []*relay.Event{ev, chatEvent(t, "b", "q", "a")})
	for name, err := range map[string]error{"Send": s.Send(expired, ev), "SendPacked": packedErr} {
		if c, _ := relay.Classify(err); c != relay.ClassPermanent || relay.ReasonOf(err) != relay.ReasonTimeout {
			t.Errorf("%s past the deadline: %v (class %s), want permanent", name, err, c)
		}
	}
	cancelled, stop := context.WithCancel(t.Context())
	stop()
	if err := s.Send(cancelled, ev); err == nil {
		t.Error("Send on a cancelled context succeeded")
	} else if c, _ := relay.Classify(err); c == relay.ClassPermanent {
		t.Errorf("a shutdown made the delivery permanent: %v", err)
	}
	if n := len(srv.Requests()); n != 0 {
		t.Errorf("%d requests made", n)
	}
}

// hostile are inputs on which goldmark's parse takes time quadratic in the
// length of a line or a paragraph of them. Each starts with "|" so that
// forDiscord parses it.
var hostile = map[string]string{
	"unclosed links":  "[a](",
	"unclosed images": "![a](",
	"nested quotes":   ">",
	"mixed emphasis":  "*a_b*c_d**e_f*g**h*i_j**",
	"email-like run":  "a_",
	"brackets":        "[a",
}

// TestForDiscordGrowsLinearly: rewriting four times as much hostile
// Markdown takes about four times the work, not sixteen (at most 9 times,
// CPU time of the thread, least of five runs).
func TestForDiscordGrowsLinearly(t *testing.T) {
	for _, name := range slices.Sorted(maps.Keys(hostile)) {
		unit := hostile[name]
		src := func(n int) string { return "|" + strings.Repeat(unit, n/len(unit)) }
		s, l := src(16<<10), src(64<<10)
		relaytest.AssertLinear(t, name, 4, func() { forDiscord(s) }, func() { forDiscord(l) }, 5*time.Millisecond)
	}
}

// TestHugeAnswerRendersInBoundedWork: a 900 KB answer costs about what a
// quarter of it costs, in at most maxMessagesPerTurn messages.
func TestHugeAnswerRendersInBoundedWork(t *testing.T) {
	s, _ := webhookSink(t)
	for _, name := range []string{"unclosed links", "mixed emphasis"} {
		unit := "|" + hostile[name]
		quarter := chatEvent(t, "q", "question", strings.Repeat(unit, (225<<10)/len(unit)))
		whole := chatEvent(t, "w", "question", strings.Repeat(unit, (900<<10)/len(unit)))
		ctx := context.Background()
		relaytest.AssertLinear(t, name, 1, func() { s.render(ctx, quarter) }, func() { s.render(ctx, whole) }, 5*time.Millisecond)
		if msgs := s.render(ctx, whole); len(msgs) == 0 || len(msgs) > maxMessagesPerTurn {
			t.Errorf("%s: %d messages", name, len(msgs))
		}
	}
}

func BenchmarkForDiscordHostile(b *testing.B) {
	for _, name := range []string{"unclosed links", "nested quotes", "mixed emphasis"} {
		for _, n := range []int{16 << 10, 64 << 10, 900 << 10} {
			src := "|" + strings.Repeat(hostile[name], n/len(hostile[name]))
			b.Run(fmt.Sprintf("%s/%dKiB", strings.ReplaceAll(name, " ", "_"), n>>10), func(b *testing.B) {
				b.SetBytes(int64(len(src)))
				for b.Loop() {
					forDiscord(src)
				}
			})
		}
	}
}
