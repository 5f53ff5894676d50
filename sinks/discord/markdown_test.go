package discord

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestForDiscord(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, in, want string }{
		{"plain Markdown kept", "**bold** _it_ [link](https://x.example) `code`\n\n- a\n- b",
			"**bold** _it_ [link](https://x.example) `code`\n\n- a\n- b"},
		{"image becomes its link", "See ![the screenshot](https://x.example/a.png) here.",
			"See [the screenshot](https://x.example/a.png) here."},
		{"image in code kept", "`![a](b)` and\n\n```\n![a](b)\n```", "`![a](b)` and\n\n```\n![a](b)\n```"},
		{"table becomes an aligned code block",
			"Plans:\n\n| Plan | Resets per day |\n|------|---|\n| Free | 3 |\n| **Pro** | unlimited |\n\nThat's all.",
			"Plans:\n\n```\nPlan | Resets per day\n-----+---------------\nFree | 3\nPro  | unlimited\n```\n\nThat's all."},
		{"table at the end, cells missing", "| a | b |\n|---|---|\n| 1 |", "```\na | b\n--+--\n1 |\n```"},
		{"pipes that are no table", "a | b | c", "a | b | c"},
		{"cells keep links, URLs and code, as read", "| Plan | Link |\n|---|---|\n| Pro | https://example.com/pro |\n| Docs | [guide](https://g.example) `x` |\n| Raw | [https://r.example](https://r.example) ![](https://i.example/a.png) \\| ~~old~~ |",
			"```\nPlan | Link\n-----+------------------------------------------------\nPro  | https://example.com/pro\nDocs | guide (https://g.example) x\nRaw  | https://r.example https://i.example/a.png | old\n```"},
		{"header only", "| a | b |\n|---|---|\n\nafter", "```\na | b\n--+--\n```\n\nafter"},
		{"a fence in a cell", "| a |\n|---|\n| ```x |\n\nafter", "```\na\n----\n`\u200b`\u200b`x\n```\n\nafter"}, // zero-width spaces take no column
		{"a code span of backticks in a cell", "| a |\n|---|\n| ```x``` |\n\nafter", "```\na\n-\nx\n```\n\nafter"},
		{"email loses its brackets", "Write to <support@example.com> or ada@example.com; see <https://x.example>.",
			"Write to support@example.com or ada@example.com; see <https://x.example>."},
		{"email in code kept", "`<a@b.example>`", "`<a@b.example>`"},
		{"table in code kept", "```\n| a | b |\n|---|---|\n```", "```\n| a | b |\n|---|---|\n```"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := forDiscord(tc.in); got != tc.want {
				t.Errorf("forDiscord(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
		})
	}
}

// FuzzForDiscord: any text rewrites without a panic, valid UTF-8 stays
// valid, and text without tables or images is kept byte for byte.
func FuzzForDiscord(f *testing.F) {
	for _, s := range []string{"| a | b |\n|---|---|\n| 1 | 2 |", "![x](y)", "a | b", "> | a |\n> |---|", "- | a |\n  |---|\n  | 1 |",
		"| `a|b` | c |\n|---|---|", "![](u) ![a ![b](c)](d)", "|\u00e9|\n|-|\n|\xff|"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := forDiscord(s)
		if utf8.ValidString(s) && !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8 out of %q: %q", s, out)
		}
		if !strings.Contains(s, "|") && !strings.Contains(s, "![") && !strings.Contains(s, "@") && out != s {
			t.Fatalf("changed %q to %q", s, out)
		}
	})
}
