package discord

import (
	"regexp"
	"strings"
)

// Text a chatbot's visitor typed (a question, a lead's fields, an unknown
// event's values) is shown on Discord as typed, inert: its Markdown,
// masked links, mentions and @everyone render as the characters typed,
// not as markup (SPEC §6). The bot's answer keeps its Markdown; only the
// mention syntax in it is made inert (forDiscord).

// literalPunct are the characters escaped with a backslash wherever they
// are: Discord's inline markup (emphasis, code, spoilers, masked links,
// mentions and timestamps in <…>) and the escape character itself.
const literalPunct = "\\*_~`|<>[]"

// lineStart reports whether s, at the start of a line, starts a heading
// ("#"), a quote (">"), a list item ("- ", "+ ") or small text ("-#"):
// its first character is then escaped.
func lineStart(s string) bool {
	switch s[0] {
	case '#', '>':
		return true
	case '-', '+':
		return len(s) == 1 || s[1] == ' ' || s[1] == '\t' || s[1] == '#'
	}
	return false
}

// zwsp breaks @everyone and @here so that they are text, never a mention.
const zwsp = "\u200b"

// literal returns s escaped so that Discord shows exactly s, as plain
// text. It is linear in s.
func literal(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	b.Grow(len(s) + len(s)/8)
	atStart := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\n':
			atStart = true
			b.WriteByte(c)
			continue
		case atStart && (c == ' ' || c == '\t'):
			b.WriteByte(c)
			continue
		case strings.IndexByte(literalPunct, c) >= 0, atStart && lineStart(s[i:]):
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '@' && (strings.HasPrefix(s[i+1:], "everyone") || strings.HasPrefix(s[i+1:], "here")):
			b.WriteString("@" + zwsp)
		default:
			b.WriteByte(c)
		}
		atStart = false
	}
	return b.String()
}

// mentionSyntax matches what Discord turns into a mention, a channel link
// or a command in text: <@id>, <@!id>, <@&id>, <#id>, </name:id>, and
// @everyone / @here; and Slack's <!channel> / <!here>, which read as a
// mention to anyone who knows Slack.
var mentionSyntax = regexp.MustCompile(`<(?:@[!&]?|#|/|!)[^<>\n]*>|@(?:everyone|here)`)

// plainName returns text fit for a thread name: mention syntax and
// @everyone / @here taken out, and any "<" or ">" left (so that taking
// one out cannot make another), white space collapsed. A thread's name is
// not Markdown, but a mention in it reads as if someone were pinged.
func plainName(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = mentionSyntax.ReplaceAllString(s, " ")
	s = strings.NewReplacer("<", " ", ">", " ").Replace(s)
	return strings.Join(strings.Fields(s), " ")
}
