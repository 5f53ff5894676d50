package relay_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/chatrelay/chatrelay/relay"
)

func TestBoundMarkdown(t *testing.T) {
	t.Parallel()
	para := strings.Repeat("A sentence of ordinary length, as chatbots write them. ", 60) // ~3.3 KB
	long := strings.Repeat("word ", 2000)                                                 // 10 KB on one line
	tests := []struct {
		name     string
		src      string
		maxRunes int
		same     bool // returned unchanged
		cut      bool
	}{
		{"empty", "", 100, true, false},
		{"a normal answer", "# Title\n\n" + para + "\n\n- a\n- b\n\n```go\nx := 1\n```\n", 1 << 20, true, false},
		{"many paragraphs", strings.Repeat(para+"\n\n", 30), 1 << 20, true, false},
		{"a long line", long, 1 << 20, false, false},
		{"a long paragraph", strings.Repeat(para+"\n", 8), 1 << 20, false, false},
		{"no spaces", strings.Repeat("[a](", 5000), 1 << 20, false, false},
		{"multibyte without spaces", strings.Repeat("日本語", 3000), 1 << 20, false, false},
		{"cut to the runes", strings.Repeat("é", 100), 10, false, true},
		{"cut at a line end", strings.Repeat("abc\n", 30), 100, false, true},
		{"within the runes", "abc", 3, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, cut := relay.BoundMarkdown(tc.src, tc.maxRunes)
			if cut != tc.cut {
				t.Errorf("cut = %v, want %v", cut, tc.cut)
			}
			if (out == tc.src) != tc.same {
				t.Errorf("changed = %v, want %v", out != tc.src, !tc.same)
			}
			checkBounded(t, tc.src, out, cut, tc.maxRunes)
		})
	}
	if out, _ := relay.BoundMarkdown(strings.Repeat("abc\n", 30), 100); !strings.HasSuffix(out, "abc") || strings.HasSuffix(out, "\n") {
		t.Errorf("not cut at a line end: %q", out[len(out)-10:])
	}
	if out, _ := relay.BoundMarkdown(long, 1<<20); strings.Contains(out, "\n ") || strings.Contains(out, "\nw") == false {
		t.Errorf("a long line is not broken before a word: %q", out[relay.MarkdownMaxLine-20:relay.MarkdownMaxLine+20])
	}
}

// checkBounded asserts BoundMarkdown's promises for src and its result out.
func checkBounded(t *testing.T, src, out string, cut bool, maxRunes int) {
	t.Helper()
	// Only line breaks were inserted, into a prefix of src (all of it
	// unless cut) of at most maxRunes characters.
	i := 0
	for j := 0; j < len(out); j++ {
		switch {
		case i < len(src) && out[j] == src[i]:
			i++
		case out[j] != '\n':
			t.Fatalf("byte %d changed: %q for %q", j, out[j], src[min(i, len(src)-1)])
		}
	}
	if !cut && i != len(src) {
		t.Fatalf("%d of %d bytes kept, not cut", i, len(src))
	}
	if n := utf8.RuneCountInString(src[:i]); cut && n > maxRunes {
		t.Errorf("%d runes kept, limit %d", n, maxRunes)
	}
	if utf8.ValidString(src) && !utf8.ValidString(out) {
		t.Fatal("invalid UTF-8 out of valid")
	}
	block := 0
	for line := range strings.Lines(out) {
		l := strings.TrimSuffix(line, "\n")
		if len(l) > relay.MarkdownMaxLine {
			t.Fatalf("a line of %d bytes", len(l))
		}
		if strings.Trim(l, " \t\r") == "" {
			block = 0
			continue
		}
		if block += len(line); block > relay.MarkdownMaxBlock {
			t.Fatalf("a block of %d bytes", block)
		}
	}
}

func FuzzBoundMarkdown(f *testing.F) {
	for _, s := range []string{"", "a b", strings.Repeat("[a](", 3000), strings.Repeat("word ", 3000),
		strings.Repeat("x\n", 9000), strings.Repeat("é", 5000), strings.Repeat(" ", 5000) + "x",
		strings.Repeat("- a\n", 5000), strings.Repeat(">", 9000), "\xff\xfe" + strings.Repeat("\xc3", 5000)} {
		f.Add(s, 1<<20)
		f.Add(s, 100)
	}
	f.Fuzz(func(t *testing.T, src string, maxRunes int) {
		maxRunes = max(maxRunes, 0)
		out, cut := relay.BoundMarkdown(src, maxRunes)
		checkBounded(t, src, out, cut, maxRunes)
		if !cut && utf8.RuneCountInString(src) > maxRunes {
			t.Fatal("not cut, though longer than maxRunes")
		}
	})
}
