package discord

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// shown is what Discord shows for Markdown text made only of escapes: a
// backslash before ASCII punctuation shows the punctuation alone.
func shown(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", s[i+1]) >= 0 {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// escaped reports whether the byte at i is preceded by an odd number of
// backslashes.
func escaped(s string, i int) bool {
	n := 0
	for j := i - 1; j >= 0 && s[j] == '\\'; j-- {
		n++
	}
	return n%2 == 1
}

// checkLiteral fails unless out, the literal form of in, shows in as
// typed and holds no live markup taken from it.
func checkLiteral(t *testing.T, in, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Fatalf("literal(%q) is not valid UTF-8", in)
	}
	noZW := func(s string) string { return strings.ReplaceAll(s, zwsp, "") }
	if got, want := noZW(shown(out)), noZW(strings.ToValidUTF8(in, "\uFFFD")); got != want {
		t.Fatalf("literal(%q) shows %q", in, got)
	}
	for i := 0; i < len(out); i++ {
		if strings.IndexByte(literalPunct, out[i]) >= 0 && out[i] != '\\' && !escaped(out, i) {
			t.Fatalf("literal(%q) = %q: %q at %d is live", in, out, out[i], i)
		}
	}
	for _, live := range []string{"@everyone", "@here"} {
		if strings.Contains(out, live) {
			t.Fatalf("literal(%q) = %q holds %s", in, out, live)
		}
	}
	for line := range strings.Lines(out) {
		l := strings.TrimLeft(line, " \t")
		if l != "" && lineStart(l) {
			t.Fatalf("literal(%q): line %q starts a heading, quote or list", in, line)
		}
	}
}

func TestLiteral(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		"[Reset your password](https://evil.example/login)",
		"<@&123456789012345678> <@123> <@!123> <#123> </cmd:1> <t:1700000000:R>",
		"@everyone @here @@everyone @everyoneelse",
		"# URGENT\n> quoted\n- item\n+ item\n-# small\n  ## indented",
		"**bold** __under__ ~~strike~~ ||spoiler|| `code` ```fence```",
		`a \ backslash \\ and \<@1>`,
		"plain text, 5 < 6 > 4 & done. -5 +3 a-b",
		"\xff\xfe invalid",
	} {
		checkLiteral(t, in, literal(in))
	}
	if got := literal("plain words, numbers 1.5 and +1 555 0100"); got != "plain words, numbers 1.5 and +1 555 0100" {
		t.Errorf("plain text changed: %q", got)
	}
}

// FuzzLiteral: whatever a visitor types, Discord shows it as typed and
// nothing in it is live markup: no mention, masked link, emphasis, code,
// spoiler, heading, quote or list; and a thread name made of it carries
// no mention syntax.
func FuzzLiteral(f *testing.F) {
	for _, s := range []string{
		"[Reset your password](https://evil.example/login)",
		"@everyone @here <@&123456789012345678> <#1> <!channel>",
		"# h\n> q\n- l\n-# s",
		"\\\\<@1>",
		"🇪🇬👩‍👩‍👧‍👦 **x**",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		checkLiteral(t, in, literal(in))
		name := plainName(in)
		if mentionSyntax.MatchString(name) || strings.ContainsAny(name, "\n\t") {
			t.Fatalf("plainName(%q) = %q holds mention syntax or a line break", in, name)
		}
	})
}

func TestInertMentionsInAnswer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"Ping <@&123> and <#9> or @everyone.", `Ping \<@&123> and \<#9> or @` + zwsp + `everyone.`},
		{"In code: `<@&123>` and\n\n```\n@everyone <#9>\n```", "In code: `<@&123>` and\n\n```\n@everyone <#9>\n```"},
		{"**Bold** [link](https://example.com) stays.", "**Bold** [link](https://example.com) stays."},
	} {
		if got := forDiscord(tc.in); got != tc.want {
			t.Errorf("forDiscord(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}
