package discord

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay"
)

// TestSplitInvariants splits texts that give the splitter a hard time at
// several limits and checks what a reader relies on: the parts put
// together are the text (checkParts), every cut falls on a grapheme
// cluster boundary (checkParts), outside a link and an inline code span,
// a code block that fits in a part is never split, and a part starts at a
// heading when one is near the end of the window.
func TestSplitInvariants(t *testing.T) {
	t.Parallel()
	words := strings.Repeat("Shipping takes five to seven business days. ", 12)
	cases := []struct {
		name string
		text string
	}{
		{"zwj emoji without spaces", strings.Repeat("🇪🇬👩‍👩‍👧‍👦", 200)},
		{"flags and combining marks", strings.Repeat("🇨🇦🇫🇷e\u0301a\u0308", 150)},
		{"arabic", strings.Repeat("مرحبا بك في متجرنا، الشحن مجاني للطلبات فوق ٥٠ دولارا. ", 30)},
		{"cjk without spaces", strings.Repeat("配送には通常五営業日かかります。お急ぎの場合は速達をご利用ください。", 40)},
		{"links", strings.Repeat("See [the shipping page for every country we serve](https://example.com/shipping?country=ca&lang=en) for rates. ", 30)},
		{"inline code", strings.Repeat("Run `chatrelay send-test --topic live-chat-escalation --url http://127.0.0.1:8080/webhook` now. ", 30)},
		{"code blocks that fit", strings.Repeat(words+"\n```go\n"+strings.Repeat("fmt.Println(\"hello\")\n", 14)+"```\n", 8)},
		{"headings", strings.Repeat("## Step\n\n"+words+"\n\n"+words+"\n\n"+words+"\n\n", 10)},
	}
	link := regexp.MustCompile(`\[[^\]\n]*\]\([^)\n]*\)`)
	codeSpan := regexp.MustCompile("`[^`\n]+`")
	block := regexp.MustCompile("(?s)```go\n.*?\n```")
	for _, tc := range cases {
		for _, limit := range []int{200, 700, maxDescription} {
			t.Run(fmt.Sprintf("%s/%d", tc.name, limit), func(t *testing.T) {
				t.Parallel()
				parts := checkParts(t, tc.text, limit)
				norm := strings.TrimSpace(tc.text)
				// Where each part starts and ends in the text.
				at := 0
				var spans [][2]int
				for _, p := range parts {
					spans = append(spans, [2]int{at, at + len(p.body)})
					at += len(p.body) + len(p.gap)
				}
				inside := func(re *regexp.Regexp, what string) {
					for _, m := range re.FindAllStringIndex(norm, -1) {
						for i, sp := range spans[:len(spans)-1] {
							if m[0] < sp[1] && sp[1] < m[1] {
								t.Errorf("part %d ends inside %s %q", i, what, norm[m[0]:m[1]])
							}
						}
					}
				}
				inside(link, "a link")
				inside(codeSpan, "an inline code span")
				for _, m := range block.FindAllStringIndex(norm, -1) {
					if m[1]-m[0] > limit/2 {
						continue // may need a part of its own and more
					}
					whole := false
					for _, sp := range spans {
						whole = whole || sp[0] <= m[0] && m[1] <= sp[1]
					}
					if !whole {
						t.Errorf("a code block of %d bytes that fits a part of %d was split", m[1]-m[0], limit)
					}
				}
				if tc.name == "headings" && limit == maxDescription {
					// Sections of about 1,600 characters: a part of 4,096
					// always has a heading in its last two thirds.
					for i, p := range parts[1:] {
						if !strings.HasPrefix(p.body, "## Step") {
							t.Errorf("part %d starts mid-section: %.40q", i+1, p.body)
						}
					}
				}
			})
		}
	}
}

// TestLayoutReadsAsOne: a turn laid out over several messages shows its
// metadata (the head's fields) exactly once, before any text (at the start
// of the first message); one that fits a message shows it once, after
// all the text; every message names the event, and each is within
// Discord's limits.
func TestLayoutReadsAsOne(t *testing.T) {
	t.Parallel()
	para := "Standard delivery takes 5-7 business days; express takes 2-3. Customs duties are collected at the door. "
	ev := &relay.Event{ID: "01900000-0000-7000-8000-000000000009"}
	for _, tc := range []struct {
		name     string
		text     string
		messages int
	}{
		{"short", "Hello.", 1},
		{"two embeds in one message", strings.Repeat(para, 45), 1},
		{"several messages", "## Shipping\n\n" + strings.Repeat(para+"\n\n", 120), 3},
		{"cut", strings.Repeat(para, 400), maxMessagesPerTurn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			head := &discordgo.MessageEmbed{Title: "💬 Chat", Color: colorGood, Fields: []*discordgo.MessageEmbedField{
				{Name: "Score", Value: "0.91", Inline: true}, {Name: "Conversation", Value: "`c-1`", Inline: true},
			}}
			msgs, _ := layout(turn{head: head, text: tc.text}, ev)
			if len(msgs) != tc.messages {
				t.Fatalf("%d messages, want %d", len(msgs), tc.messages)
			}
			var seq []string // "fields" and "text", in reading order
			for i, m := range msgs {
				checkMessage(t, m)
				last := m.embeds[len(m.embeds)-1]
				if last.Footer == nil || !strings.Contains(last.Footer.Text, ev.ID) {
					t.Errorf("message %d does not name the event: %+v", i, last.Footer)
				}
				for _, e := range m.embeds {
					if e.Description != "" {
						seq = append(seq, "text")
					}
					if len(e.Fields) > 0 {
						seq = append(seq, "fields")
					}
				}
			}
			n := strings.Count(strings.Join(seq, " "), "fields")
			switch {
			case n != 1:
				t.Fatalf("the fields show %d times: %v", n, seq)
			case len(msgs) == 1 && seq[len(seq)-1] != "fields":
				t.Errorf("one message: fields not after the text: %v", seq)
			case len(msgs) > 1 && seq[0] != "fields":
				t.Errorf("several messages: fields not before the text: %v", seq)
			}
		})
	}
}
