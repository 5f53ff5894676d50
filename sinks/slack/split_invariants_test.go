package slack

import (
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"github.com/rivo/uniseg"
	slackapi "github.com/slack-go/slack"

	"github.com/chatrelay/chatrelay/relay"
)

// essence is what a reader reads of mrkdwn: the text without white space,
// style markers, fences and the "…" of a cut (the inputs below hold none
// of those characters as text).
func essence(s string) string {
	s = strings.ReplaceAll(s, "```", "")
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || strings.ContainsRune("*_~`…", r) {
			return -1
		}
		return r
	}, s)
}

// TestSplitInvariants splits converted Markdown that gives the splitter a
// hard time at several budgets and checks what a reader relies on: the
// parts put together read as the whole text, in order; every part is
// within its budget; every cut falls between grapheme clusters; no link
// and no inline code span is cut; a code block that fits half a part is
// never split.
func TestSplitInvariants(t *testing.T) {
	t.Parallel()
	words := strings.Repeat("Shipping takes five to seven business days. ", 10)
	cases := []struct {
		name string
		md   string
	}{
		{"zwj emoji without spaces", strings.Repeat("🇪🇬👩‍👩‍👧‍👦", 400)},
		{"flags and combining marks", strings.Repeat("🇨🇦🇫🇷e\u0301a\u0308", 300)},
		{"arabic", strings.Repeat("مرحبا بك في متجرنا، الشحن مجاني للطلبات فوق ٥٠ دولارا. ", 40)},
		{"cjk without spaces", strings.Repeat("配送には通常五営業日かかります。お急ぎの場合は速達をご利用ください。", 60)},
		{"links", strings.Repeat("See [the shipping page for every country we serve](https://example.com/shipping?country=ca) for rates. ", 40)},
		{"inline code", strings.Repeat("Run `chatrelay send-test --topic live-chat-escalation --url http://127.0.0.1:8080/webhook` now. ", 40)},
		{"code blocks in a list", strings.Repeat("- "+words+"\n\n  ```\n"+strings.Repeat("print(hello)\n", 8)+"  ```\n", 10)},
		{"headings and bold", strings.Repeat("## Step\n\n"+words+" **Bold words here.**\n\n", 12)},
	}
	link := regexp.MustCompile(`<https?://[^>]*>`)
	span := regexp.MustCompile("`[^`\n]+`")
	block := regexp.MustCompile("(?s)```\n.*?\n```")
	md := newMarkdown()
	for _, tc := range cases {
		toks := md.convert(tc.md)
		whole := join(toks)
		for _, budget := range []int{minSplitBudget, 1500, maxSectionText} {
			t.Run(fmt.Sprintf("%s/%d", tc.name, budget), func(t *testing.T) {
				t.Parallel()
				sp := newSplitter(toks)
				var parts, ess []string
				for !sp.done() {
					p := sp.next(budget)
					checkPart(t, p, budget)
					parts = append(parts, p)
					ess = append(ess, essence(p))
				}
				if got, want := strings.Join(ess, ""), essence(whole); got != want {
					t.Fatalf("the parts do not read as the text:\n got %.200q\nwant %.200q", got, want)
				}
				for i := 1; i < len(ess); i++ {
					a, b := ess[i-1], ess[i]
					if a == "" || b == "" {
						continue
					}
					// The last character of one part and the first of the
					// next are two characters, not halves of one.
					last := lastCluster(a)
					first, _, _, _ := uniseg.FirstGraphemeClusterInString(b, -1)
					if uniseg.GraphemeClusterCount(last+first) != 2 {
						t.Fatalf("part %d ends inside a character: %q | %q", i-1, last, first)
					}
				}
				for _, p := range parts {
					if strings.Count(p, "<") != strings.Count(p, ">") {
						t.Fatalf("a link is cut: %.120q", p)
					}
				}
				// No part ends inside a link, a span, or a code block that
				// fits half a part: in the text as read, no cut falls
				// strictly inside one.
				var cuts []int
				at := 0
				for _, e := range ess[:len(ess)-1] {
					at += len(e)
					cuts = append(cuts, at)
				}
				whole1 := func(m []int) {
					start := len(essence(whole[:m[0]]))
					end := start + len(essence(whole[m[0]:m[1]]))
					for _, c := range cuts {
						if start < c && c < end {
							t.Errorf("cut inside %.80q", whole[m[0]:m[1]])
						}
					}
				}
				for _, m := range link.FindAllStringIndex(whole, -1) {
					whole1(m)
				}
				for _, m := range span.FindAllStringIndex(whole, -1) {
					whole1(m)
				}
				for _, m := range block.FindAllStringIndex(whole, -1) {
					if size(whole[m[0]:m[1]]) <= budget/2 {
						whole1(m)
					}
				}
			})
		}
	}
}

func lastCluster(s string) string {
	last := ""
	for rest, state := s, -1; rest != ""; {
		last, rest, _, state = uniseg.FirstGraphemeClusterInString(rest, state)
	}
	return last
}

// TestLayoutReadsAsOne: a turn over several messages shows its metadata
// (the score, source and ids) exactly once, right under the first
// message's header, never between parts of the text; one that fits a
// message shows it once, after the text; every message names the event.
func TestLayoutReadsAsOne(t *testing.T) {
	t.Parallel()
	r := &renderer{md: newMarkdown(), logger: slog.New(slog.DiscardHandler)}
	para := "Standard delivery takes 5-7 business days; express takes 2-3. Customs duties are collected at the door. "
	for _, tc := range []struct {
		name     string
		answer   string
		messages int
	}{
		{"one message", "## Shipping\n\n" + strings.Repeat(para, 20), 1},
		{"several messages", strings.Repeat("## Shipping\n\n"+strings.Repeat(para, 12)+"\n\n", 20), 3},
		{"cut", strings.Repeat(para+"\n\n", 500), maxParts},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ev := &relay.Event{ID: "01900000-0000-7000-8000-00000000000a", Topic: relay.TopicChat, Source: "widget",
				ConversationID: "c-1", Messages: []relay.Message{{Role: "user", Content: "Tell me everything."}},
				Answer: &relay.Message{Role: "assistant", Content: tc.answer}}
			msgs := r.render(ev)
			if len(msgs) != tc.messages {
				t.Fatalf("%d messages, want %d", len(msgs), tc.messages)
			}
			var seq []string // "meta", "text" in reading order
			for i, m := range msgs {
				named := false
				for _, b := range m.blocks {
					switch b := b.(type) {
					case *slackapi.SectionBlock:
						seq = append(seq, "text")
					case *slackapi.ContextBlock:
						for _, e := range b.ContextElements.Elements {
							txt := e.(*slackapi.TextBlockObject).Text
							named = named || strings.Contains(txt, "Event: "+ev.ID) || strings.Contains(txt, "event "+ev.ID)
							if strings.HasPrefix(txt, "Source:") {
								seq = append(seq, "meta")
							}
						}
					}
				}
				if !named {
					t.Errorf("message %d does not name the event", i)
				}
			}
			n := strings.Count(strings.Join(seq, " "), "meta")
			switch {
			case n != 1:
				t.Fatalf("metadata shows %d times: %v", n, seq)
			case len(msgs) == 1 && seq[len(seq)-1] != "meta":
				t.Errorf("one message: metadata not after the text: %v", seq)
			case len(msgs) > 1 && seq[0] != "meta":
				t.Errorf("several messages: metadata not before the text: %v", seq)
			}
		})
	}
}
