package discord

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/bwmarrin/discordgo"
	"github.com/rivo/uniseg"

	"github.com/chatrelay/chatrelay/relay"
)

// essence is what splitting must keep, in order: the text without white
// space and backticks (fences are closed, reopened and merged at cuts).
func essence(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || r == '`' {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
}

// withoutFenceLines is the essence of s without its fence lines (a
// reopened fence repeats the block's language).
func withoutFenceLines(s string) string {
	var keep []string
	for line := range strings.Lines(s) {
		if !strings.HasPrefix(strings.TrimSpace(line), fence) {
			keep = append(keep, line)
		}
	}
	return essence(strings.Join(keep, ""))
}

// checkParts splits text at limit and checks every property a split keeps.
func checkParts(t *testing.T, text string, limit int) []part {
	t.Helper()
	sp := newSplitter(text)
	var parts []part
	for !sp.done() {
		if len(parts) > len(text)+1 {
			t.Fatalf("splitter makes no progress on %q", text)
		}
		parts = append(parts, sp.next(limit))
	}
	// The bodies and gaps, in order, are the text; every cut is on a
	// grapheme cluster boundary.
	norm := strings.TrimSpace(strings.ReplaceAll(strings.ToValidUTF8(text, "\uFFFD"), "\r\n", "\n"))
	bounds := graphemeBounds(norm)
	var whole strings.Builder
	for i, p := range parts {
		whole.WriteString(p.body)
		if i < len(parts)-1 && !bounds[whole.Len()] {
			t.Fatalf("part %d ends inside a grapheme cluster: %q", i, p.body)
		}
		whole.WriteString(p.gap)
		if i < len(parts)-1 && !bounds[whole.Len()] {
			t.Fatalf("part %d starts inside a grapheme cluster", i+1)
		}
	}
	if whole.String() != norm {
		t.Fatalf("bodies and gaps are not the text:\n got %q\nwant %q", whole.String(), norm)
	}
	var bodies strings.Builder
	for i, p := range parts {
		s := p.String()
		if n := len16(s); n > max(limit, minSplitLimit) {
			t.Fatalf("part %d is %d units, limit %d: %q", i, n, limit, s)
		}
		if !utf8.ValidString(s) {
			t.Fatalf("part %d is not valid UTF-8: %q", i, s)
		}
		if strings.TrimSpace(s) == "" {
			t.Fatalf("part %d is empty", i)
		}
		if open, _ := fenceState(false, "", s); open && i < len(parts)-1 {
			t.Fatalf("part %d leaves a code block open: %q", i, s)
		}
		bodies.WriteString(p.body)
		bodies.WriteString("\n")
	}
	if got, want := essence(bodies.String()), essence(text); got != want {
		t.Fatalf("text not preserved in order:\n got %q\nwant %q", got, want)
	}
	return parts
}

// graphemeBounds returns, for each byte offset of s (and len(s)), whether
// a grapheme cluster starts there.
func graphemeBounds(s string) []bool {
	b := make([]bool, len(s)+1)
	b[0], b[len(s)] = true, true
	at, state := 0, -1
	for rest := s; rest != ""; {
		var c string
		c, rest, _, state = uniseg.FirstGraphemeClusterInString(rest, state)
		at += len(c)
		b[at] = true
	}
	return b
}

func FuzzSplit(f *testing.F) {
	for _, name := range []string{"chat.json", "chat-string-fields.json", "live-chat-escalation.json"} {
		body, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		ev, err := relay.DecodeEvent(body)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(ev.Answer.Content, 40)
	}
	f.Add("# Title\n\nSome **bold** text.\n\n```go\nfunc main() {\n\tfmt.Println(\"hi\")\n}\n```\n\nAfter the code.", 40)
	f.Add("```python\n"+strings.Repeat("print('x')\n", 50)+"```\ntail", 64)
	f.Add(strings.Repeat("😀", 100), 33)
	f.Add(strings.Repeat("長い文章です。", 80), 50)
	f.Add(strings.Repeat("a", 500), 32)
	f.Add("See [the shipping page](https://example.com/shipping?a=1&b=2) and `inline code with spaces` here. "+strings.Repeat("word ", 40), 45)
	f.Add("``````````````````````````````````````````````````", 32)
	f.Add("```\n\n\n\n    \n\n\n```", 32)
	f.Add("\xff\xfe invalid \xc3 bytes "+strings.Repeat("x ", 30), 32)
	f.Add("a\r\n\r\nb\r\n"+strings.Repeat("line\r\n", 40), 40)
	f.Add(strings.Repeat("🇪🇬👩‍👩‍👧‍👦", 30), 33)
	f.Add(strings.Repeat("e\u0301\u0302", 60), 32)
	f.Fuzz(func(t *testing.T, text string, limit int) {
		if limit < 0 {
			limit = -limit
		}
		limit = minSplitLimit + limit%5000
		checkParts(t, text, limit)
		// Laid out as a turn, the text takes at most maxMessagesPerTurn
		// messages, each within Discord's limits, and is cut only with
		// the notice.
		head := &discordgo.MessageEmbed{Title: "💬 Chat", Fields: []*discordgo.MessageEmbedField{{Name: "Score", Value: "0.85"}}}
		msgs, cut := layout(turn{head: head, text: strings.Repeat(text, 1+limit%8)}, &relay.Event{ID: "ev-1"})
		if len(msgs) > maxMessagesPerTurn {
			t.Fatalf("%d messages", len(msgs))
		}
		for _, m := range msgs {
			checkMessage(t, m)
			for _, e := range m.embeds {
				if !utf8.ValidString(e.Description) {
					t.Fatalf("invalid UTF-8 in %q", e.Description)
				}
			}
		}
		last := msgs[len(msgs)-1].embeds
		if cut != strings.HasSuffix(last[len(last)-1].Description, cutNotice("ev-1")) {
			t.Fatalf("cut %v, but the last embed ends %q", cut, last[len(last)-1].Description)
		}
	})
}

func TestSplitPrefersBoundaries(t *testing.T) {
	t.Parallel()
	para := strings.Repeat("word ", 10) + "end."
	cases := []struct {
		name  string
		text  string
		limit int
		want  []string // part strings
	}{
		{"paragraph", para + "\n\n" + para, len16(para) + 10, []string{para, para}},
		{"line", "first line is here\nsecond line is here", 25, []string{"first line is here", "second line is here"}},
		{"sentence", "One sentence here. Another sentence there.", 35, []string{"One sentence here.", "Another sentence there."}},
		{"code fence reopened", "```go\nline one\nline two\nline three\n```\nafter", 36,
			[]string{"```go\nline one\nline two\n```", "```go\nline three\n```\nafter"}},
		{"fence consumed at cut", "```\nabcdefghij\n```\nafter the block, more words", 32,
			[]string{"```\nabcdefghij\n```", "after the block, more words"}},
		{"heading goes with its text", para + "\n\n## Step 5\n\n" + para, len16(para) + 20,
			[]string{para, "## Step 5\n\n" + para}},
		{"a heading alone stays", "## Step 5\n\n" + para, 20, nil},
		{"a comment in code is no heading", "```bash\n# Install\n" + strings.Repeat("x", 40) + "\n```", 32,
			[]string{"```bash\n# Install\n```", "```bash\n" + strings.Repeat("x", 20) + "\n```", "```bash\n" + strings.Repeat("x", 20) + "\n```"}},
		{"link kept whole", "Read [the shipping page](https://example.com/x) now please", 50,
			[]string{"Read", "[the shipping page](https://example.com/x)", "now please"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			parts := checkParts(t, tc.text, tc.limit)
			var got []string
			for _, p := range parts {
				got = append(got, p.String())
			}
			if tc.want == nil {
				if !strings.HasPrefix(got[0], "## Step 5") {
					t.Errorf("first part %q, want the heading", got[0])
				}
				return
			}
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want) {
				t.Errorf("parts\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestLayoutLimits(t *testing.T) {
	t.Parallel()
	paragraph := "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore. "
	cases := []struct {
		name     string
		text     string
		messages int
		cut      bool
	}{
		{"short", "Hello.", 1, false},
		{"one full message", strings.Repeat(paragraph, 50), 1, false},
		{"two messages", strings.Repeat(paragraph+"\n\n", 80), 2, false},
		{"emoji count twice", strings.Repeat("😀", 5000), 2, false},
		{"code blocks", strings.Repeat("```go\n"+strings.Repeat("x := 1\n", 300)+"```\n\n", 4), 2, false},
		{"cut after four", strings.Repeat(paragraph, 300), 4, true},
		{"one long word", strings.Repeat("x", 30000), 4, true},
	}
	head := &discordgo.MessageEmbed{Title: "💬 Chat", Color: colorGood, Fields: []*discordgo.MessageEmbedField{
		{Name: "Score", Value: "0.85", Inline: true}, {Name: "Conversation", Value: "`dbf24043-83a6-47fb-b241-9865de3877c9`", Inline: true},
	}}
	ev := &relay.Event{ID: "01900000-0000-7000-8000-000000000001"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			msgs, cut := layout(turn{head: head, text: tc.text, content: "<@&123> alert", mention: true}, ev)
			if len(msgs) != tc.messages || cut != tc.cut {
				t.Fatalf("%d messages, cut %v; want %d, %v", len(msgs), cut, tc.messages, tc.cut)
			}
			var text strings.Builder
			for i, m := range msgs {
				checkMessage(t, m)
				if (m.content != "") != (i == 0) || m.mention != (i == 0) {
					t.Errorf("message %d: content %q, mention %v; only the first carries them", i, m.content, m.mention)
				}
				for _, e := range m.embeds {
					text.WriteString(e.Description + "\n")
				}
				last := m.embeds[len(m.embeds)-1]
				if want := footer(ev.ID, i+1, len(msgs)); last.Footer == nil || last.Footer.Text != want {
					t.Errorf("message %d: footer %+v, want %q", i, last.Footer, want)
				}
			}
			got := text.String()
			if cut {
				if !strings.Contains(got, "…") || !strings.Contains(got, ev.ID) {
					t.Errorf("cut text has no … or event id")
				}
				return
			}
			if withoutFenceLines(got) != withoutFenceLines(tc.text) {
				t.Errorf("text not preserved")
			}
		})
	}
}

func checkMessage(t *testing.T, m message) {
	t.Helper()
	if len16(m.content) > maxContent || len(m.embeds) == 0 || len(m.embeds) > maxEmbeds {
		t.Fatalf("content %d units, %d embeds", len16(m.content), len(m.embeds))
	}
	total := 0
	for _, e := range m.embeds {
		if len16(e.Title) > maxTitle || len16(e.Description) > maxDescription || len(e.Fields) > maxFields {
			t.Fatalf("embed over a limit: title %d, description %d, %d fields", len16(e.Title), len16(e.Description), len(e.Fields))
		}
		total += embedSize(e)
	}
	if total > maxEmbedsTotal {
		t.Fatalf("embeds total %d units, limit %d", total, maxEmbedsTotal)
	}
}

func TestFitEmbed(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("A sentence of the answer. ", 400)
	fields := make([]*discordgo.MessageEmbedField, 20)
	for i := range fields {
		fields[i] = &discordgo.MessageEmbedField{Name: fmt.Sprintf("Field %d", i), Value: strings.Repeat("v", 100)}
	}
	cases := []struct {
		name   string
		embed  discordgo.MessageEmbed
		budget int
		cut    bool
	}{
		{"fits", discordgo.MessageEmbed{Title: "t", Description: "short"}, 600, false},
		{"description cut", discordgo.MessageEmbed{Title: "t", Description: long, Footer: &discordgo.MessageEmbedFooter{Text: "event x"}}, 600, true},
		{"description over 4096 alone", discordgo.MessageEmbed{Title: "t", Description: long + long}, 6000, true},
		{"fields dropped", discordgo.MessageEmbed{Title: "t", Description: long, Fields: fields}, 600, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := tc.embed
			cut := fitEmbed(&e, tc.budget, "ev-1")
			if cut != tc.cut {
				t.Fatalf("cut %v, want %v", cut, tc.cut)
			}
			if embedSize(&e) > tc.budget || len16(e.Description) > maxDescription {
				t.Fatalf("size %d (description %d), budget %d", embedSize(&e), len16(e.Description), tc.budget)
			}
			if cut && !strings.Contains(e.Description, "…") {
				t.Fatalf("cut without …: %q", e.Description)
			}
		})
	}
}

func TestLen16AndTruncate(t *testing.T) {
	t.Parallel()
	if n := len16("a😀é"); n != 4 {
		t.Errorf(`len16("a😀é") = %d, want 4`, n)
	}
	got, cut := truncate(strings.Repeat("😀", 200), 256)
	if !cut || len16(got) > 256 || !utf8.ValidString(got) || !strings.HasSuffix(got, "…") {
		t.Errorf("truncate: %d units, cut %v", len16(got), cut)
	}
}
