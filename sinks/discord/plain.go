package discord

import (
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/parser"
	"github.com/yuin/goldmark/text"
	"github.com/yuin/goldmark/util"
)

// An agent's thread message is written in Discord's markup; the visitor
// reads plain text (Chat Data shows a live-chat message as typed). plain
// makes it readable: mentions become names ("<@id>" → "@Dana", "<#id>" →
// "#billing", "<@&id>" → "@Support"), masked links "label (url)",
// emphasis, spoiler, heading and subtext markers are dropped, code keeps
// its text (without the backticks), custom emoji become ":name:" and
// timestamps a date in UTC.
//
// The text is parsed with goldmark, restricted to what Discord renders
// (paragraphs, fenced code, lists, "#" headings; code spans,
// links, autolinks, emphasis, strikethrough), so that what Discord shows
// as typed (a line of "---", four spaces of indent, HTML, a link
// reference) stays as typed. A quote stays a quote ("> "): Discord's
// ends with its line, not CommonMark's. Discord's own tokens ("<@id>", "<t:…>") are
// set aside before parsing, so that nothing in them (an emoji's "_") can
// pair with emphasis around them.

// plainParser parses Discord's Markdown: CommonMark without what Discord
// does not render.
var plainParser = parser.NewParser(
	parser.WithBlockParsers(
		util.Prioritized(parser.NewListParser(), 300),
		util.Prioritized(parser.NewListItemParser(), 400),
		util.Prioritized(parser.NewATXHeadingParser(), 600),
		util.Prioritized(parser.NewFencedCodeBlockParser(), 700),
		util.Prioritized(indented{parser.NewParagraphParser()}, 1000),
	),
	parser.WithInlineParsers(
		util.Prioritized(parser.NewCodeSpanParser(), 100),
		util.Prioritized(parser.NewLinkParser(), 200),
		util.Prioritized(parser.NewAutoLinkParser(), 300),
		util.Prioritized(parser.NewEmphasisParser(), 500),
		util.Prioritized(extension.NewStrikethroughParser(), 500),
	),
)

// indented is a paragraph that also starts on a line indented by four
// spaces or more: Discord has no indented code blocks.
type indented struct{ parser.BlockParser }

func (indented) CanAcceptIndentedLine() bool { return true }

// discordToken matches Discord's own markup tokens: user, role and channel
// mentions, custom emoji, slash commands, timestamps and guild navigation.
var discordToken = regexp.MustCompile(`<(?:@!?[0-9]{1,20}|@&[0-9]{1,20}|#[0-9]{1,20}|a?:[A-Za-z0-9_]{1,32}:[0-9]{1,20}|/[^:<>\n]{1,100}:[0-9]{1,20}|t:-?[0-9]{1,13}(?::[tTdDfFR])?|id:(?:customize|browse|guide|linked-roles))>`)

// Mention tokens, parsed.
var (
	userToken    = regexp.MustCompile(`^<@!?([0-9]+)>$`)
	roleToken    = regexp.MustCompile(`^<@&([0-9]+)>$`)
	channelToken = regexp.MustCompile(`^<#([0-9]+)>$`)
)

// placeholderBase is where the runes that stand for set-aside tokens
// start: Supplementary Private Use Area-A, which no keyboard types. A
// message holds at most 4000 characters, far fewer tokens than the area.
const (
	placeholderBase = 0xF0000
	placeholderMax  = 0xFFFFD
)

// names resolves the ids of the mentions in a message; "" when unknown.
type names interface {
	user(id string) string
	role(id string) string
	channel(id string) string
}

// mentionIDs lists the ids a message's mentions name, to be resolved
// before plain runs (plain itself does no I/O).
func mentionIDs(content string) (users, roles, channels []string) {
	for _, tok := range discordToken.FindAllString(content, maxTokens) {
		if m := userToken.FindStringSubmatch(tok); m != nil {
			users = append(users, m[1])
		} else if m := roleToken.FindStringSubmatch(tok); m != nil {
			roles = append(roles, m[1])
		} else if m := channelToken.FindStringSubmatch(tok); m != nil {
			channels = append(channels, m[1])
		}
	}
	return users, roles, channels
}

// maxTokens bounds how many tokens of one message are set aside (and
// resolved); the rest stay as typed.
const maxTokens = 200

// maxPlainInput bounds what plain parses: Discord's longest message (4000
// characters with Nitro) in the widest encoding, with room to spare.
const maxPlainInput = 32 << 10

// plain returns the text the visitor reads for content, a Discord message.
func plain(content string, n names) string {
	content = strings.ToValidUTF8(content, "\uFFFD")
	if len(content) > maxPlainInput {
		content, _ = truncate(content, maxPlainInput/4)
	}
	// Runes of the placeholder range in the message itself would be taken
	// for tokens: they cannot show anything useful anyway.
	content = strings.Map(func(r rune) rune {
		if r >= placeholderBase && r <= placeholderMax+2 {
			return utf8.RuneError
		}
		return r
	}, content)
	p := &plainWriter{names: n}
	content = p.setAside(content)
	content = lineMarkers(content)
	src := []byte(content)
	p.src = src
	doc := plainParser.Parse(text.NewReader(src))
	out := p.blocks(doc, "\n\n")
	return strings.TrimSpace(out)
}

// lineMarkers removes the "-# " marker Discord shows small text with at
// the start of a line (goldmark would read a list item), and makes a
// ">>> " (a quote of every line after) a "> ".
func lineMarkers(s string) string {
	if !strings.Contains(s, "-# ") && !strings.Contains(s, ">>> ") {
		return s
	}
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		trimmed := strings.TrimLeft(l, " ")
		if rest, ok := strings.CutPrefix(trimmed, "-# "); ok {
			lines[i] = rest
		} else if rest, ok := strings.CutPrefix(trimmed, ">>> "); ok {
			lines[i] = "> " + rest
		}
	}
	return strings.Join(lines, "\n")
}

// plainWriter writes a parsed message as plain text.
type plainWriter struct {
	src    []byte
	tokens []string
	names  names
	depth  int // lists the writer is in
}

// maxListIndent is how many levels of nested lists are indented.
const maxListIndent = 4

// setAside replaces each of Discord's tokens in s by a placeholder rune,
// except those escaped with a backslash (Discord shows "\<@id>" as typed).
func (p *plainWriter) setAside(s string) string {
	var b strings.Builder
	last := 0
	for _, m := range discordToken.FindAllStringIndex(s, maxTokens) {
		slashes := 0
		for i := m[0] - 1; i >= 0 && s[i] == '\\'; i-- {
			slashes++
		}
		if slashes%2 == 1 {
			continue
		}
		b.WriteString(s[last:m[0]])
		p.tokens = append(p.tokens, s[m[0]:m[1]])
		b.WriteRune(rune(placeholderBase + len(p.tokens) - 1))
		last = m[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

// blocks writes the children of n, separated by sep.
func (p *plainWriter) blocks(n ast.Node, sep string) string {
	var parts []string
	for c := n.FirstChild(); c != nil; c = c.NextSibling() {
		if s := p.block(c); s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, sep)
}

func (p *plainWriter) block(n ast.Node) string {
	switch n := n.(type) {
	case *ast.Paragraph, *ast.TextBlock, *ast.Heading:
		return p.inlines(n)
	case *ast.FencedCodeBlock:
		var b strings.Builder
		lines := n.Lines()
		for i := range lines.Len() {
			seg := lines.At(i)
			b.Write(seg.Value(p.src))
		}
		return p.restore(strings.TrimRight(b.String(), "\n"), true)
	case *ast.List:
		// Nested lists are indented under their item, four levels
		// deep at most: each level copies what it holds once more.
		p.depth++
		defer func() { p.depth-- }()
		var items []string
		i := n.Start
		for c := n.FirstChild(); c != nil; c = c.NextSibling() {
			marker := "- "
			if n.IsOrdered() {
				marker = strconv.Itoa(i) + ". "
				i++
			}
			body := p.blocks(c, "\n")
			if p.depth <= maxListIndent {
				body = strings.ReplaceAll(body, "\n", "\n"+strings.Repeat(" ", len(marker)))
			}
			items = append(items, marker+body)
		}
		return strings.Join(items, "\n")
	}
	return p.blocks(n, "\n")
}

// inlines writes the inline content of n, its spoiler markers ("||…||")
// dropped in pairs outside code.
func (p *plainWriter) inlines(n ast.Node) string {
	var segs []plainSeg
	p.inline(n, &segs)
	pipes := 0
	for _, s := range segs {
		if !s.code {
			pipes += strings.Count(s.text, "||")
		}
	}
	pipes -= pipes % 2 // an odd one out stays
	var b strings.Builder
	for _, s := range segs {
		t := s.text
		if !s.code && pipes > 0 {
			for pipes > 0 {
				i := strings.Index(t, "||")
				if i < 0 {
					break
				}
				b.WriteString(t[:i])
				t = t[i+2:]
				pipes--
			}
		}
		b.WriteString(t)
	}
	return b.String()
}

// plainSeg is a run of inline text; code keeps its "||".
type plainSeg struct {
	text string
	code bool
}

func (p *plainWriter) inline(n ast.Node, segs *[]plainSeg) {
	for c := n.FirstChild(); c != nil; c = c.NextSibling() {
		switch c := c.(type) {
		case *ast.Text:
			seg := c.Segment.Value(p.src)
			*segs = append(*segs, plainSeg{text: p.restore(string(util.UnescapePunctuations(seg)), false)})
			if c.SoftLineBreak() || c.HardLineBreak() {
				*segs = append(*segs, plainSeg{text: "\n"})
			}
		case *ast.String:
			*segs = append(*segs, plainSeg{text: p.restore(string(c.Value), false)})
		case *ast.CodeSpan:
			var b strings.Builder
			for t := c.FirstChild(); t != nil; t = t.NextSibling() {
				if t, ok := t.(*ast.Text); ok {
					b.Write(t.Segment.Value(p.src))
				}
			}
			*segs = append(*segs, plainSeg{text: p.restore(b.String(), true), code: true})
		case *ast.Link:
			*segs = append(*segs, plainSeg{text: p.link(p.inlines(c), string(c.Destination))})
		case *ast.Image:
			*segs = append(*segs, plainSeg{text: p.link(p.inlines(c), string(c.Destination))})
		case *ast.AutoLink:
			*segs = append(*segs, plainSeg{text: p.restore(string(c.URL(p.src)), true)})
		default: // emphasis, strikethrough: their text alone
			p.inline(c, segs)
		}
	}
}

// link is a masked link as plain text: "label (url)", or the URL alone
// when the label says nothing more.
func (p *plainWriter) link(label, dest string) string {
	dest = p.restore(string(util.UnescapePunctuations([]byte(dest))), true)
	label = strings.TrimSpace(label)
	if label == "" || label == dest || strings.TrimSuffix(label, "/") == strings.TrimSuffix(dest, "/") {
		return dest
	}
	return label + " (" + dest + ")"
}

// restore puts the set-aside tokens back into s: as typed in code (raw),
// else as the reader sees them.
func (p *plainWriter) restore(s string, raw bool) string {
	if !strings.ContainsFunc(s, isPlaceholder) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if !isPlaceholder(r) || int(r-placeholderBase) >= len(p.tokens) {
			b.WriteRune(r)
			continue
		}
		tok := p.tokens[r-placeholderBase]
		if raw {
			b.WriteString(tok)
		} else {
			b.WriteString(p.token(tok))
		}
	}
	return b.String()
}

func isPlaceholder(r rune) bool { return r >= placeholderBase && r <= placeholderMax }

// token is what a reader of Discord sees for tok.
func (p *plainWriter) token(tok string) string {
	inner := tok[1 : len(tok)-1]
	switch {
	case strings.HasPrefix(inner, "@&"):
		if name := oneLine(p.names.role(inner[2:])); name != "" {
			return "@" + name
		}
		return "@unknown-role"
	case strings.HasPrefix(inner, "@"):
		if name := oneLine(p.names.user(strings.TrimPrefix(inner[1:], "!"))); name != "" {
			return "@" + name
		}
		return "@unknown-user"
	case strings.HasPrefix(inner, "#"):
		if name := oneLine(p.names.channel(inner[1:])); name != "" {
			return "#" + name
		}
		return "#unknown"
	case strings.HasPrefix(inner, "a:"), strings.HasPrefix(inner, ":"):
		parts := strings.Split(inner, ":")
		return ":" + parts[1] + ":"
	case strings.HasPrefix(inner, "/"):
		name, _, _ := strings.Cut(inner, ":")
		return name
	case strings.HasPrefix(inner, "t:"):
		return plainTime(inner[2:])
	case strings.HasPrefix(inner, "id:"):
		return map[string]string{"customize": "Channels & Roles", "browse": "Browse Channels",
			"guide": "Server Guide", "linked-roles": "Linked Roles"}[inner[3:]]
	}
	return tok
}

// plainTime is a Discord timestamp ("1733479200" or "1733479200:R") as a
// date and time in UTC: the visitor's time zone is unknown, and a relative
// time would be wrong by the time it is read.
func plainTime(s string) string {
	secs, style, _ := strings.Cut(s, ":")
	n, err := strconv.ParseInt(secs, 10, 64)
	if err != nil {
		return "<t:" + s + ">"
	}
	t := time.Unix(n, 0).UTC()
	switch style {
	case "t":
		return t.Format("15:04 UTC")
	case "T":
		return t.Format("15:04:05 UTC")
	case "d", "D":
		return t.Format("2 January 2006")
	case "F":
		return t.Format("Monday, 2 January 2006 15:04 UTC")
	}
	return t.Format("2 January 2006 15:04 UTC")
}

// oneLine is a name on one line, white space collapsed.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
