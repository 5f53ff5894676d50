package slack

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/chatrelay/chatrelay/relay"
)

func TestConvert(t *testing.T) {
	t.Parallel()
	md := newMarkdown()
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "Hello there.", "Hello there."},
		{"bold italic strike", "**b** *i* and _j_ ~~s~~", "*b* _i_ and _j_ ~s~"},
		{"adjacent spans share the space", "*i* _j_", "_i j_"},
		{"nested styles", "**bold _and italic_**", "*bold _and italic_*"},
		{"bold in bold", "**a __b__ c**", "*a b c*"},
		{"style ends before space", "**bold** next", "*bold* next"},
		{"link", "[the docs](https://example.com/a?b=1&c=2)", "<https://example.com/a?b=1&amp;c=2|the docs>"},
		{"link pipe", "[x](https://example.com/a|b)", "<https://example.com/a%7Cb|x>"},
		{"link formatting dropped in label", "[**bold** label](https://e.com)", "<https://e.com|bold label>"},
		{"autolink", "<https://e.com/x>", "<https://e.com/x>"},
		{"bare url", "see https://e.com/x now", "see <https://e.com/x> now"},
		{"email", "<ada@example.com>", "<mailto:ada@example.com|ada@example.com>"},
		{"relative link", "[home](/home)", "home"},
		{"javascript link", "[js](javascript:alert(1))", "js"},
		{"image", "![a cat](https://e.com/cat.png)", "<https://e.com/cat.png|a cat>"},
		{"image no alt", "![](https://e.com/cat.png)", "<https://e.com/cat.png|image>"},
		{"inline code", "run `go test ./...` now", "run `go test ./...` now"},
		{"code block", "```go\nif a < b {\n\treturn\n}\n```", "```\nif a &lt; b {\n\treturn\n}\n```"},
		{"indented code", "    x := 1\n    y := 2", "```\nx := 1\ny := 2\n```"},
		{"heading", "# Title\n\nbody\n\nmore", "*Title*\nbody\n\nmore"},
		{"heading with bold", "## A **b** c", "*A b c*"},
		{"bullets", "- a\n- b\n  - c\n    - d", "• a\n• b\n    ◦ c\n        ▪ d"},
		{"ordered", "3. x\n4. y", "3. x\n4. y"},
		{"list after paragraph", "Steps:\n\n1. a\n2. b\n\nDone.", "Steps:\n\n1. a\n2. b\n\nDone."},
		{"item with two paragraphs", "- a\n\n  more\n- b", "• a\n  more\n• b"},
		{"quote", "> a\n> b\n\nafter", "> a\n> b\n\nafter"},
		{"single line breaks kept", "Our store:\nAcme Ltd\n123 Main St\n\nHours:\nMon-Fri 9-5", "Our store:\nAcme Ltd\n123 Main St\n\nHours:\nMon-Fri 9-5"},
		{"line break in bold", "**a\nb**", "*a*\n*b*"},
		{"stars inside a word", "2*3*4 and un**believ**able", "2*3*4 and un**believ**able"},
		{"emphasis beside punctuation", "(*a*) **b**.", "(_a_) *b*."},
		{"quote paragraphs", "> a\n>\n> b", "> a\n> b"},
		{"hard break", "a  \nb", "a\nb"},
		{"hard break in bold", "**a\\\nb**", "*a*\n*b*"},
		{"rule", "a\n\n---\n\nb", "a\n\n───\n\nb"},
		{"table", "| a | b |\n|---|---|\n| 1 | 2 |", "```\na | b\n--+--\n1 | 2\n```"},
		{"wide table", "| Item | Window |\n|---|---|\n| 配送 | 2 日 |\n| Shoes & bags | 30 days |",
			"```\nItem         | Window\n-------------+--------\n配送         | 2 日\nShoes &amp; bags | 30 days\n```"},
		{"table cells as read", "| Plan | Link |\n|---|---|\n| **Pro** | [guide](https://g.example) `x` |\n| <!here> | ~~old~~ \\| new |",
			"```\nPlan    | Link\n--------+----------------------------\nPro     | guide (https://g.example) x\n&lt;!here&gt; | old | new\n```"},
		{"tasks", "- [x] done\n- [ ] todo", "• ☑ done\n• ☐ todo"},
		{"escapes", "5 < 6 & 7 > 3", "5 &lt; 6 &amp; 7 &gt; 3"},
		{"entity reference", "&amp; &lt;b&gt; &#60;", "&amp; &lt;b&gt; &lt;"},
		{"backslash escape", "\\*not bold\\*", "*not bold*"},
		{"mention neutralised", "<!channel> <@U123> <!subteam^S1|x>", "&lt;!channel&gt; &lt;@U123&gt; &lt;!subteam^S1|x&gt;"},
		{"mention as link target", "[hi](<!here>)", "hi"},
		{"html block", "<div>\n<script>alert(1)</script>\n</div>", "&lt;div&gt;\n&lt;script&gt;alert(1)&lt;/script&gt;\n&lt;/div&gt;"},
		{"inline html", "a <b>b</b>", "a &lt;b&gt;b&lt;/b&gt;"},
		{"nul and bad utf8", "a\x00b\xffc", "a\uFFFDb\uFFFDc"},
		{"empty", "   \n\n ", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := join(md.convert(tc.in)); got != tc.want {
				t.Errorf("convert(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestNeutralize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"<https://e.com|site> <!channel> <@U1>", "<https://e.com|site> &lt;!channel&gt; &lt;@U1&gt;"},
		{"<mailto:a@b.c|mail> <#C123> <!subteam^S1>", "<mailto:a@b.c|mail> <#C123> &lt;!subteam^S1&gt;"},
		{"a < b > c", "a &lt; b &gt; c"},
		{"<<!here>>", "&lt;&lt;!here&gt;>"},
		{"<!here", "&lt;!here"},
	} {
		if got := neutralize(tc.in); got != tc.want {
			t.Errorf("neutralize(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// checkPart asserts what every part the splitter returns must be.
func checkPart(t *testing.T, part string, budget int) {
	t.Helper()
	if part == "" {
		t.Fatal("empty part")
	}
	if size(part) > budget {
		t.Fatalf("part of size %d over budget %d", size(part), budget)
	}
	if !utf8.ValidString(part) {
		t.Fatalf("part is not valid UTF-8: %q", part)
	}
	assertNoLiveMention(t, part)
}

// assertNoLiveMention fails if s has a <…> entity that is not a link:
// every "<" must open <http…>, <https…> or <mailto:…>, closed on its line.
func assertNoLiveMention(t *testing.T, s string) {
	t.Helper()
	for i := strings.IndexByte(s, '<'); i >= 0; i = strings.IndexByte(s, '<') {
		s = s[i:]
		lower := strings.ToLower(s)
		if !strings.HasPrefix(lower, "<http://") && !strings.HasPrefix(lower, "<https://") && !strings.HasPrefix(lower, "<mailto:") {
			t.Fatalf("live entity: %.40q", s)
		}
		end := strings.IndexAny(s[1:], "<>\n")
		if end < 0 || s[1+end] != '>' {
			t.Fatalf("entity cut or not closed: %.80q", s)
		}
		s = s[1+end:]
	}
}

func TestSplitKeepsEntitiesWhole(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	for i := range 120 {
		b.WriteString("Some **bold words here** and a [link number one](https://example.com/a/very/long/path/")
		b.WriteString(strings.Repeat("x", i%7))
		b.WriteString(") then `inline code span` and _italic text_.\n\n")
		if i%10 == 0 {
			b.WriteString("```\nline one\nline two with <tags>\n```\n\n> a quote that goes on\n\n- item **one**\n  - nested\n\n")
		}
	}
	toks := newMarkdown().convert(b.String())
	var atoms []string
	for _, tk := range toks {
		if tk.kind == tAtom && strings.HasPrefix(tk.text, "<") {
			atoms = append(atoms, tk.text)
		}
	}
	for _, budget := range []int{minSplitBudget, 1000, maxSectionText} {
		sp := newSplitter(toks)
		var all strings.Builder
		parts := 0
		for !sp.done() {
			part := sp.next(budget)
			checkPart(t, part, budget)
			if strings.Count(part, "*")%2 != 0 {
				t.Fatalf("budget %d: unbalanced bold in part:\n%s", budget, part)
			}
			all.WriteString(part)
			parts++
		}
		if parts < 2 {
			t.Fatalf("budget %d: %d parts", budget, parts)
		}
		for _, a := range atoms {
			if !strings.Contains(all.String(), a) {
				t.Fatalf("budget %d: entity %q lost or cut", budget, a)
			}
		}
	}
}

// assertBalancedEntities fails unless every "<" in part opens an entity
// that its line closes with ">" before another "<", and every ">" closes
// one, a line's leading quote marker aside. For text the converter or
// plainTokens made: everything else in it is escaped.
func assertBalancedEntities(t *testing.T, part string) {
	t.Helper()
	for _, line := range strings.Split(part, "\n") {
		line = strings.TrimPrefix(line, "> ")
		open := false
		for i := 0; i < len(line); i++ {
			switch line[i] {
			case '<':
				if open {
					t.Fatalf("entity opened inside another: %q", part)
				}
				open = true
			case '>':
				if !open {
					t.Fatalf("entity closed but never opened (cut in half?): %q", part)
				}
				open = false
			}
		}
		if open {
			t.Fatalf("entity not closed on its line (cut in half?): %q", part)
		}
	}
}

// glued are inputs where a link follows text with no space between, the
// text longer than a part: CJK, which has no spaces, or a long word.
func glued() []string {
	link := "[the label](https://example.com/" + strings.Repeat("path/", 20) + ")"
	return []string{
		strings.Repeat("漢字かな", 287) + link + "。" + strings.Repeat("続き", 100),
		strings.Repeat("a", 1150) + link + " end",
		strings.Repeat("x", 560) + link,
	}
}

func TestSplitNeverCutsAnEntity(t *testing.T) {
	t.Parallel()
	md := newMarkdown()
	for i, in := range glued() {
		for _, budget := range []int{minSplitBudget, 650, 1000} {
			t.Run(fmt.Sprintf("input %d budget %d", i, budget), func(t *testing.T) {
				t.Parallel()
				toks := md.convert(in)
				var entity string
				for _, tk := range toks {
					if tk.kind == tAtom && strings.HasPrefix(tk.text, "<") {
						entity = tk.text
					}
				}
				if entity == "" {
					t.Fatal("no entity in the input")
				}
				sp := newSplitter(toks)
				found := false
				for n := 0; !sp.done(); n++ {
					if n > 100 {
						t.Fatal("no progress")
					}
					part := sp.next(budget)
					checkPart(t, part, budget)
					assertBalancedEntities(t, part)
					found = found || strings.Contains(part, entity)
				}
				if !found {
					t.Fatalf("the entity %q is in no part whole", entity)
				}
			})
		}
	}
}

// TestSplitShortensAnOversizedAtom: an atom larger than a whole part
// (never with the bounds the renderer keeps, but the splitter must not
// rely on it) is shown as its label, or its address, cut with "…": never
// an unbalanced "<".
func TestSplitShortensAnOversizedAtom(t *testing.T) {
	t.Parallel()
	long := "<https://example.com/" + strings.Repeat("p", 700) + ">"
	for _, tc := range []struct {
		name string
		toks []tok
		want string // the part that holds the atom starts with this
		cut  bool   // and ends in "…"
	}{
		{"labelled link", []tok{{kind: tAtom, text: "<https://example.com/" + strings.Repeat("p", 700) + "|the label>"}}, "the label", false},
		{"long label", []tok{{kind: tAtom, text: "<https://e.com|" + strings.Repeat("label ", 200) + ">"}}, "label label", true},
		{"bare link", []tok{{kind: tAtom, text: long}}, "https://example.com/ppp", true},
		{"after a word", []tok{{kind: tWord, text: "word"}, {kind: tAtom, text: long}}, "https://example.com/ppp", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sp := newSplitter(tc.toks)
			var parts []string
			for n := 0; !sp.done(); n++ {
				if n > 10 {
					t.Fatal("no progress")
				}
				part := sp.next(minSplitBudget)
				checkPart(t, part, minSplitBudget)
				assertBalancedEntities(t, part)
				parts = append(parts, part)
			}
			last := parts[len(parts)-1]
			if !strings.HasPrefix(last, tc.want) || strings.HasSuffix(last, ellipsis) != tc.cut {
				t.Fatalf("parts %q: want the last to start with %q, cut with … %v", parts, tc.want, tc.cut)
			}
		})
	}
}

func TestSplitCutsLongWordWithEllipsis(t *testing.T) {
	t.Parallel()
	word := strings.Repeat("a&b", 1000) // 3000 runes as typed, 7000 escaped
	toks := plainTokens("start " + word + " end")
	sp := newSplitter(toks)
	var parts []string
	for !sp.done() {
		parts = append(parts, sp.next(minSplitBudget))
	}
	if len(parts) < 3 {
		t.Fatalf("%d parts", len(parts))
	}
	if parts[0] != "start" {
		t.Fatalf("first part %q, want the cut at the space before the long word", parts[0])
	}
	joined := ""
	for i, p := range parts {
		checkPart(t, p, minSplitBudget)
		if strings.Contains(p, "&am…") || strings.Contains(p, "&…") || strings.Contains(p, "&a…") {
			t.Fatalf("part %d cut inside a character reference: %q", i, p[max(0, len(p)-12):])
		}
		if i > 0 && i < len(parts)-1 && !strings.HasSuffix(p, ellipsis) {
			t.Fatalf("part %d cut mid-word without …: %q", i, p[max(0, len(p)-12):])
		}
		if i > 0 {
			joined += strings.TrimSuffix(p, ellipsis)
		}
	}
	// Nothing is lost: the parts, their marks removed, are the text.
	if want := escape(word) + " end"; joined != want {
		t.Fatalf("text changed by splitting: got %d bytes, want %d", len(joined), len(want))
	}
}

func TestSplitPrefersParagraphs(t *testing.T) {
	t.Parallel()
	para := strings.Repeat("word ", 100) // 500 chars
	toks := newMarkdown().convert(para + "\n\n" + para + "\n\n" + para)
	sp := newSplitter(toks)
	first := sp.next(1200)
	if strings.Count(first, "word") != 200 || strings.HasSuffix(first, " ") {
		t.Fatalf("first part should end after the second paragraph; it has %d words", strings.Count(first, "word"))
	}
}

func TestSplitReopensStylesAndPrefixes(t *testing.T) {
	t.Parallel()
	long := strings.TrimSpace(strings.Repeat("bold words ", 80))
	toks := newMarkdown().convert("> **" + long + "**")
	sp := newSplitter(toks)
	a, b := sp.next(minSplitBudget), sp.next(minSplitBudget)
	if !strings.HasPrefix(a, "> *bold") || !strings.HasSuffix(a, "words*") {
		t.Fatalf("first part %q", a)
	}
	if !strings.HasPrefix(b, "> *") {
		t.Fatalf("second part should continue the quote and the bold: %q", b[:20])
	}
	code := "```\n" + strings.Repeat("fmt.Println(x)\n", 80) + "```"
	sp = newSplitter(newMarkdown().convert(code))
	a, b = sp.next(minSplitBudget), sp.next(minSplitBudget)
	if !strings.HasSuffix(a, "\n```") || !strings.HasPrefix(b, "```\n") {
		t.Fatalf("code fence not closed and reopened: %q … %q", a[len(a)-10:], b[:10])
	}
}

// seeds returns texts from the sample payloads and awkward strings.
func seeds(t testing.TB) []string {
	out := []string{
		"", "<!channel>", "[a](<@U1>)", "**unclosed", "```\nunclosed fence", "&&&&<<<>>>", "- - - -",
		"> > > nested", "a\\\nb", "|a|\n|-|\n|<!here>|", "\x00\xff\xfe", "[x](https://e.com/<!here>|y)",
		strings.Repeat("a", 5000), strings.Repeat("&", 3000), strings.Repeat("- a\n  ", 300),
		strings.Repeat("😀", 2000), strings.Repeat("> ", 500) + "deep",
	}
	out = append(out, glued()...)
	files, _ := filepath.Glob(filepath.Join("testdata", "*.json"))
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := relay.DecodeEvent(body)
		if err != nil {
			continue
		}
		out = append(out, ev.Question())
		if ev.Answer != nil {
			out = append(out, ev.Answer.Content)
		}
		for _, fl := range ev.Fields {
			out = append(out, fl.Value)
		}
	}
	return out
}

func FuzzMrkdwn(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	md := newMarkdown()
	f.Fuzz(func(t *testing.T, s string) {
		converted := md.convert(s)
		for i, toks := range [][]tok{converted, plainTokens(s), mrkdwnTokens(neutralize(s))} {
			for _, budget := range []int{minSplitBudget, maxSectionText} {
				sp := newSplitter(toks)
				for n := 0; !sp.done(); n++ {
					if n > len(s)+10 {
						t.Fatal("splitter makes no progress")
					}
					part := sp.next(budget)
					checkPart(t, part, budget)
					if i == 2 {
						continue // a template's mrkdwn may hold a typed ">"
					}
					assertBalancedEntities(t, part)
					if i > 0 {
						continue
					}
					// The fences and bold marks the converter writes are
					// balanced in every part (typed ones may not be).
					if !strings.Contains(s, "`") && strings.Count(part, "```")%2 != 0 {
						t.Fatalf("unbalanced code fence in part:\n%s", part)
					}
					if !strings.Contains(s, "*") && strings.Count(part, "*")%2 != 0 {
						t.Fatalf("unbalanced bold in part:\n%s", part)
					}
				}
			}
		}
		assertNoLiveMention(t, join(md.convert(s)))
		if out := neutralize(s); strings.Contains(out, "<!") || strings.Contains(out, "<@") {
			t.Fatalf("neutralize left a mention: %q", out)
		}
	})
}

// join renders a whole token list as one string.
func join(toks []tok) string {
	var b strings.Builder
	cur := ""
	for _, t := range toks {
		b.WriteString(transition(cur, t.style))
		b.WriteString(t.text)
		cur = t.style
	}
	b.WriteString(transition(cur, ""))
	return b.String()
}
