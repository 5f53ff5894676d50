package slack

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/parser"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/slack/slacktest"
)

// countingMarkdown counts the parses of a goldmark.Markdown.
type countingMarkdown struct {
	goldmark.Markdown
	parses *atomic.Int32
}

func (c countingMarkdown) Parser() parser.Parser {
	c.parses.Add(1)
	return c.Markdown.Parser()
}

func chatTurn(t testing.TB, id, question, answer string) *relay.Event {
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

// TestAnswerConvertedOncePerSend: CanPack renders a short turn to decide,
// and the send that follows (SendPacked, or Send) uses that rendering; a
// long turn is not rendered by CanPack at all; a template's answer is
// converted once, not also for the built-in text it replaces.
func TestAnswerConvertedOncePerSend(t *testing.T) {
	t.Parallel()
	tmpl, err := relay.ParseTemplate("t", "*{{.ConversationID}}*: {{.AnswerText}}")
	if err != nil {
		t.Fatal(err)
	}
	short := "Yes, **in 5-7 days**. See [rates](https://example.com/rates)."
	long := strings.Repeat("A long paragraph about shipping rates and customs. ", 200)
	tests := []struct {
		name   string
		tmpl   bool
		answer string
		pack   bool // CanPack's answer
	}{
		{"short", false, short, true},
		{"long", false, long, false},
		{"template", true, short, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := slacktest.NewServer(t)
			s, err := New(Config{Name: "s", WebhookURL: relay.Secret(srv.WebhookURL())}, relay.SinkDeps{})
			if err != nil {
				t.Fatal(err)
			}
			var parses atomic.Int32
			s.render.md.md = countingMarkdown{Markdown: s.render.md.md, parses: &parses}
			if tc.tmpl {
				s.render.tmpl = tmpl
			}
			a, b := chatTurn(t, "a", "q1", tc.answer), chatTurn(t, "b", "q2", tc.answer)
			if got := s.CanPack(t.Context(), a) && s.CanPack(t.Context(), b); got != tc.pack {
				t.Fatalf("CanPack = %v, want %v", got, tc.pack)
			}
			if tc.pack {
				if n, _, err := s.SendPacked(t.Context(), []*relay.Event{a, b}); err != nil || n != 2 {
					t.Fatalf("SendPacked = %d, %v", n, err)
				}
			} else if err := s.Send(t.Context(), a); err != nil {
				t.Fatal(err)
			}
			want := int32(2) // one conversion of each turn packed
			if !tc.pack {
				want = 1 // the turn sent alone
			}
			if n := parses.Load(); n != want {
				t.Errorf("%d conversions, want %d", n, want)
			}
			if n := len(srv.Messages()); n == 0 || tc.pack && n != 1 {
				t.Errorf("%d messages posted", n)
			}
		})
	}
}

// TestRenderingPastTheDeadlineIsPermanent: when the send's deadline passed
// while the event was rendered, nothing is posted and the delivery is
// permanent (it would take as long on every attempt); a cancelled context
// (shutdown) is not.
func TestRenderingPastTheDeadlineIsPermanent(t *testing.T) {
	t.Parallel()
	srv := slacktest.NewServer(t)
	s, err := New(Config{Name: "s", WebhookURL: relay.Secret(srv.WebhookURL())}, relay.SinkDeps{})
	if err != nil {
		t.Fatal(err)
	}
	ev := chatTurn(t, "a", "q", "an answer")
	expired, cancel := context.WithDeadline(t.Context(), time.Unix(0, 0))
	defer cancel()
	err = s.Send(expired, ev)
	if c, _ := relay.Classify(err); c != relay.ClassPermanent || relay.ReasonOf(err) != relay.ReasonTimeout {
		t.Errorf("Send past the deadline: %v (class %s), want permanent", err, c)
	}
	if _, _, err := s.SendPacked(expired, []*relay.Event{ev, chatTurn(t, "b", "q", "a")}); err == nil {
		t.Error("SendPacked past the deadline succeeded")
	} else if c, _ := relay.Classify(err); c != relay.ClassPermanent {
		t.Errorf("SendPacked past the deadline: class %s", c)
	}
	cancelled, stop := context.WithCancel(t.Context())
	stop()
	if err := s.Send(cancelled, ev); err == nil {
		t.Error("Send on a cancelled context succeeded")
	} else if c, _ := relay.Classify(err); c == relay.ClassPermanent {
		t.Errorf("a shutdown made the delivery permanent: %v", err)
	}
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("%d messages posted", n)
	}
}

// hostile are inputs on which goldmark's parse took time quadratic in the
// length of a line or a paragraph of them.
var hostile = map[string]string{
	"unclosed links":    "[a](",
	"unclosed images":   "![a](",
	"unclosed <dest>":   "[a](<",
	"nested quotes":     ">",
	"mixed emphasis":    "*a_b*c_d**e_f*g**h*i_j**",
	"email-like run":    "a_",
	"unclosed comments": "a <!--a\n",
}

// TestConversionGrowsLinearly: converting four times as much hostile
// Markdown takes about four times the work, not sixteen (the bound is
// generous: at most 9 times). It counts the CPU time of the converting
// thread, the least of five runs, so a loaded machine does not count.
func TestConversionGrowsLinearly(t *testing.T) {
	// Not parallel: each case has the CPU to itself.
	md := newMarkdown()
	// The bounds on lines and blocks alone must keep it linear, from one
	// block (relay.MarkdownMaxBlock) to four.
	md.maxRunes = 1 << 30
	const small, large = 16 << 10, 64 << 10
	for _, name := range slices.Sorted(maps.Keys(hostile)) {
		unit := hostile[name]
		s, l := strings.Repeat(unit, small/len(unit)), strings.Repeat(unit, large/len(unit))
		relaytest.AssertLinear(t, name, 4, func() { md.convert(s) }, func() { md.convert(l) }, 5*time.Millisecond)
	}
}

// TestTemplateTextGrowsLinearly: a template's output (which may print the
// raw body) is split into tokens in linear time, however many "<" it holds
// without a ">" (each used to search the rest of the line).
func TestTemplateTextGrowsLinearly(t *testing.T) {
	for name, unit := range map[string]string{"angles": "<", "angle words": "<a ", "far close": "<", "entities": "<!here>"} {
		src := func(n int) string {
			s := strings.Repeat(unit, n/len(unit))
			if name == "far close" {
				s += ">"
			}
			return s
		}
		s, l := src(16<<10), src(64<<10)
		relaytest.AssertLinear(t, name, 4, func() { mrkdwnTokens(neutralize(s)) }, func() { mrkdwnTokens(neutralize(l)) }, 2*time.Millisecond)
	}
}

// TestHugeAnswerRendersInBoundedWork: a 900 KB answer (the audit's) costs
// about what its first maxAnswerRunes characters cost, in at most maxParts
// messages: its render takes no more work than one a quarter its size,
// within a generous margin.
func TestHugeAnswerRendersInBoundedWork(t *testing.T) {
	r := &renderer{md: newMarkdown(), logger: slog.New(slog.DiscardHandler)}
	for _, name := range []string{"unclosed links", "mixed emphasis"} {
		unit := hostile[name]
		quarter := chatTurn(t, "q", "question", strings.Repeat(unit, (225<<10)/len(unit)))
		whole := chatTurn(t, "w", "question", strings.Repeat(unit, (900<<10)/len(unit)))
		relaytest.AssertLinear(t, name, 1, func() { r.render(quarter) }, func() { r.render(whole) }, 5*time.Millisecond)
		if msgs := r.render(whole); len(msgs) == 0 || len(msgs) > maxParts {
			t.Errorf("%s: %d messages", name, len(msgs))
		}
	}
}

func BenchmarkConvertHostile(b *testing.B) {
	md := newMarkdown()
	for _, name := range []string{"unclosed links", "nested quotes", "mixed emphasis", "email-like run"} {
		for _, n := range []int{16 << 10, 64 << 10, 900 << 10} {
			src := strings.Repeat(hostile[name], n/len(hostile[name]))
			b.Run(fmt.Sprintf("%s/%dKiB", strings.ReplaceAll(name, " ", "_"), n>>10), func(b *testing.B) {
				b.SetBytes(int64(len(src)))
				for b.Loop() {
					md.convert(src)
				}
			})
		}
	}
}

func BenchmarkMrkdwnTokensAngles(b *testing.B) {
	for _, n := range []int{8 << 10, 32 << 10, 128 << 10} {
		src := strings.Repeat("<", n)
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				mrkdwnTokens(src)
			}
		})
	}
}
