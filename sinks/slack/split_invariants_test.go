package slack

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"github.com/rivo/uniseg"
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
