package slack

import (
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	east "github.com/yuin/goldmark/extension/ast"
	"github.com/yuin/goldmark/text"
	"github.com/yuin/goldmark/util"

	"github.com/chatrelay/chatrelay/relay"
)

// Rendered mrkdwn is kept as a list of tokens until it is cut into
// sections, so that a cut never lands inside an entity (<url|text>), a
// style (*bold*) or a code fence: a cut closes what is open and the next
// part opens it again.

// tokKind says what a token is and whether a part may end there.
type tokKind uint8

const (
	tWord  tokKind = iota // text without whitespace: cut inside only as a last resort, with "…"
	tAtom                 // an entity or a line prefix: never cut inside
	tSpace                // whitespace inside a line: a cut point
	tLine                 // a line break: a better cut point
	tPara                 // a blank line between blocks: the best cut point
)

func (k tokKind) separator() bool { return k >= tSpace }

// tok is one token of rendered mrkdwn.
type tok struct {
	kind tokKind
	text string // mrkdwn, escaped
	// style lists the open markers, outermost first: '*' bold, '_' italic,
	// '~' strike, '`' inline code, 'F' fenced code block. The markers
	// themselves are written when the style changes between tokens.
	style string
	// cont is the line prefix (quote marker, list indentation) that a part
	// starting in the middle of this token's line begins with.
	cont string
}

// ellipsis marks text cut in the middle of a word, or a turn cut short.
const ellipsis = "…"

// maxAtom bounds an entity's size, so that an entity always fits a part of
// minSplitBudget: a longer link is written as its text and a bare URL.
const maxAtom = 400

// minSplitBudget is the smallest part size the splitter is used with. It
// leaves room for the largest atom with its prefixes and markers.
const minSplitBudget = 600

// maxIndent bounds list nesting in the output; deeper lists are indented
// as the deepest.
const maxIndent = 6

func openMarker(m byte) string {
	if m == 'F' {
		return "```\n"
	}
	return string(m)
}

func closeMarker(m byte) string {
	if m == 'F' {
		return "\n```"
	}
	return string(m)
}

// transition returns the markers that change the open style from to to.
func transition(from, to string) string {
	if from == to {
		return ""
	}
	p := 0
	for p < len(from) && p < len(to) && from[p] == to[p] {
		p++
	}
	var b strings.Builder
	for i := len(from) - 1; i >= p; i-- {
		b.WriteString(closeMarker(from[i]))
	}
	for i := p; i < len(to); i++ {
		b.WriteString(openMarker(to[i]))
	}
	return b.String()
}

// size is the length Slack's limits are checked against. Slack counts
// characters; UTF-16 code units are never fewer than characters however
// Slack counts them, so a part within size is within Slack's limit.
func size(s string) int {
	n := 0
	for _, r := range s {
		n++
		if r >= 0x10000 {
			n++
		}
	}
	return n
}

// escape replaces the three characters Slack treats as control characters
// (https://docs.slack.dev/messaging/formatting-message-text#escaping). This
// is also what neutralises <!channel>, <!here>, <@U…> and <!subteam^…>
// typed by a chatbot user: they show as text and notify nobody.
func escape(s string) string {
	if !strings.ContainsAny(s, "&<>") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for _, r := range s {
		switch r {
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// clean makes untrusted text valid UTF-8 without NUL bytes.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

// markdown converts Markdown (a chatbot's answer) to mrkdwn tokens with
// goldmark's parser and AST. It is safe for concurrent use.
type markdown struct {
	md goldmark.Markdown
	// maxRunes is how much of a text is converted (relay.BoundMarkdown).
	maxRunes int
}

func newMarkdown() markdown {
	return markdown{md: goldmark.New(goldmark.WithExtensions(extension.GFM)), maxRunes: maxAnswerRunes}
}

// convert parses src as Markdown and renders it as mrkdwn tokens, in time
// linear in src: at most maxRunes of it, with lines and blocks bounded for
// the parser (relay.BoundMarkdown). Text left out ends in "…".
func (m markdown) convert(src string) []tok {
	bounded, cut := relay.BoundMarkdown(src, m.maxRunes)
	source := []byte(clean(bounded))
	doc := m.md.Parser().Parse(text.NewReader(source))
	c := &converter{src: source}
	c.blocks(doc)
	toks := trimSeparators(fixSpaces(c.toks))
	if cut {
		toks = append(toks, tok{kind: tSpace, text: " "}, tok{kind: tWord, text: ellipsis})
	}
	return toks
}

// fixSpaces gives each space between words the style both neighbours
// share, so that a style closes before the space that follows it ("*a* b",
// not "*a *b").
func fixSpaces(toks []tok) []tok {
	for i := range toks {
		t := &toks[i]
		if t.kind != tSpace || strings.IndexByte(t.style, 'F') >= 0 {
			continue
		}
		if i == 0 || i == len(toks)-1 {
			t.style = ""
			continue
		}
		a, b := toks[i-1].style, toks[i+1].style
		p := 0
		for p < len(a) && p < len(b) && a[p] == b[p] {
			p++
		}
		t.style = a[:p]
	}
	return toks
}

// converter walks one document.
type converter struct {
	src  []byte
	toks []tok

	style  string // open inline markers
	quote  bool   // inside a block quote
	depth  int    // list nesting
	bullet string // marker for the next line (a list item's first line)
	lead   string // indentation of the lines of the current list item
	cont   string // prefix of a continued line: quote marker and lead
	// heading is set after a heading: the next block follows on the next
	// line, so that a part never ends with a heading cut from its text.
	heading bool
}

func (c *converter) add(kind tokKind, s string) {
	c.toks = append(c.toks, tok{kind: kind, text: s, style: c.style, cont: c.cont})
}

// sep ends the previous block: a blank line at top level, a line break
// inside lists and quotes (a blank line would end a Slack quote).
func (c *converter) sep() {
	if len(c.toks) == 0 {
		return
	}
	last := c.toks[len(c.toks)-1].kind
	kind, s := tPara, "\n\n"
	if c.depth > 0 || c.quote || c.heading {
		kind, s = tLine, "\n"
	}
	c.heading = false
	switch {
	case last == tPara:
		return
	case last == tLine && kind == tPara:
		c.toks[len(c.toks)-1] = tok{kind: tPara, text: "\n\n"}
		return
	case last == tLine:
		return
	}
	c.toks = append(c.toks, tok{kind: kind, text: s})
}

// newline breaks the current line and writes the next line's prefix.
func (c *converter) newline() {
	c.toks = append(c.toks, tok{kind: tLine, text: "\n"})
	c.prefix()
}

// prefix writes the current line's prefix: the quote marker and the list
// bullet or indentation.
func (c *converter) prefix() {
	p := ""
	if c.quote {
		p = "> "
	}
	if c.bullet != "" {
		p += c.bullet
		c.bullet = ""
	} else {
		p += c.lead
	}
	if p != "" {
		c.toks = append(c.toks, tok{kind: tAtom, text: p, cont: c.cont})
	}
}

func (c *converter) setCont() {
	c.cont = c.lead
	if c.quote {
		c.cont = "> " + c.lead
	}
}

// startBlock begins a block on a new line with its prefix.
func (c *converter) startBlock() {
	c.sep()
	c.prefix()
}

func (c *converter) blocks(parent ast.Node) {
	for n := parent.FirstChild(); n != nil; n = n.NextSibling() {
		c.block(n)
	}
}

func (c *converter) block(n ast.Node) {
	switch n := n.(type) {
	case *ast.Paragraph, *ast.TextBlock:
		c.startBlock()
		c.inlines(n)
	case *ast.Heading:
		// mrkdwn has no headings: a bold line.
		c.startBlock()
		c.styled('*', n)
		c.heading = true
	case *ast.ThematicBreak:
		c.startBlock()
		c.add(tAtom, "───")
	case *ast.FencedCodeBlock:
		c.code(n.Lines())
	case *ast.CodeBlock:
		c.code(n.Lines())
	case *ast.Blockquote:
		c.sep()
		was := c.quote
		c.quote = true
		c.setCont()
		c.blocks(n)
		c.quote = was
		c.setCont()
	case *ast.List:
		c.list(n)
	case *ast.HTMLBlock:
		// Shown as text: nothing in it is interpreted.
		c.startBlock()
		lines := n.Lines()
		for i := range lines.Len() {
			if i > 0 {
				c.newline()
			}
			c.words(strings.TrimRight(segment(lines, i, c.src), "\r\n"))
		}
		if n.HasClosure() {
			c.newline()
			c.words(strings.TrimRight(string(n.ClosureLine.Value(c.src)), "\r\n"))
		}
	case *east.Table:
		c.table(n)
	default:
		c.blocks(n)
	}
}

// list renders a list: bullets by depth, numbers for ordered lists.
func (c *converter) list(n *ast.List) {
	savedLead, savedBullet := c.lead, c.bullet
	indent := strings.Repeat("    ", min(c.depth, maxIndent))
	c.sep() // a blank line before a top-level list
	c.depth++
	num := n.Start
	for item := n.FirstChild(); item != nil; item = item.NextSibling() {
		marker := [...]string{"•", "◦", "▪"}[(c.depth-1)%3]
		if n.IsOrdered() {
			marker = strconv.Itoa(num) + "."
			num++
		}
		c.sep()
		c.bullet = indent + marker + " "
		c.lead = indent + strings.Repeat(" ", utf8.RuneCountInString(marker)+1)
		c.setCont()
		if item.FirstChild() == nil {
			c.prefix()
			continue
		}
		c.blocks(item)
		if c.bullet != "" { // an item whose blocks wrote no line
			c.prefix()
		}
	}
	c.depth--
	c.lead, c.bullet = savedLead, savedBullet
	c.setCont()
}

// code renders a code block as a fenced block at the start of a line (a
// fence inside a quote or a list item does not render in Slack).
func (c *converter) code(lines *text.Segments) {
	if lines.Len() == 0 {
		return
	}
	c.sep()
	if c.bullet != "" { // a list item that starts with code
		c.prefix()
		c.toks = append(c.toks, tok{kind: tLine, text: "\n"})
	}
	saved := c.style
	c.style = "F"
	for i := range lines.Len() {
		if i > 0 {
			c.add(tLine, "\n")
		}
		line := strings.TrimRight(segment(lines, i, c.src), "\r\n")
		c.verbatim(line)
	}
	c.style = saved
}

// verbatim adds code text: whitespace runs kept as they are.
func (c *converter) verbatim(s string) { c.split(s, true) }

// table renders a table as a code block with aligned columns (header, a
// rule, the rows), as Discord shows it: mrkdwn has no tables, and rows of
// "a | b" in a proportional font do not line up. Each cell shows its text
// as a reader reads it (relay.TableRows), nothing left out.
func (c *converter) table(n *east.Table) {
	rows := relay.TableRows(n, c.src)
	if len(rows) == 0 {
		return
	}
	c.sep()
	if c.bullet != "" { // a list item that starts with a table
		c.prefix()
		c.toks = append(c.toks, tok{kind: tLine, text: "\n"})
	}
	saved := c.style
	c.style = "F"
	for i, line := range relay.AlignTable(rows) {
		if i > 0 {
			c.add(tLine, "\n")
		}
		c.verbatim(line)
	}
	c.style = saved
}

func (c *converter) inlines(parent ast.Node) {
	for n := parent.FirstChild(); n != nil; n = n.NextSibling() {
		c.inline(n)
	}
}

func (c *converter) inline(n ast.Node) {
	switch n := n.(type) {
	case *ast.Text:
		v := n.Value(c.src)
		if !n.IsRaw() {
			v = unescapeMarkdown(v)
		}
		c.words(string(v))
		if n.HardLineBreak() || n.SoftLineBreak() {
			// A new line in the paragraph. A chatbot's single line
			// breaks are meant (an address, opening hours), and Slack
			// shows them as such, as Discord does. Styles close before
			// it (Slack does not carry them across lines) and reopen
			// after it: a line break has no style.
			c.newline()
		}
	case *ast.String:
		c.words(string(n.Value))
	case *ast.CodeSpan:
		c.codeSpan(n)
	case *ast.Emphasis:
		if open, close, ok := c.intraword(n); ok {
			// Slack styles no part of a word: its markers would show as
			// other characters ("2*3*4" as "2_3_4"). Keep what was typed.
			c.words(open)
			c.inlines(n)
			c.words(close)
			return
		}
		m := byte('_')
		if n.Level >= 2 {
			m = '*'
		}
		c.styled(m, n)
	case *east.Strikethrough:
		c.styled('~', n)
	case *ast.Link:
		c.link(string(n.Destination), c.plain(n))
	case *ast.Image:
		label := c.plain(n)
		if strings.TrimSpace(label) == "" {
			label = "image"
		}
		c.link(string(n.Destination), label)
	case *ast.AutoLink:
		dest, label := string(n.URL(c.src)), string(n.Label(c.src))
		if n.AutoLinkType == ast.AutoLinkEmail && !strings.HasPrefix(strings.ToLower(dest), "mailto:") {
			dest = "mailto:" + dest
		}
		c.link(dest, label)
	case *ast.RawHTML:
		// Shown as text, as typed.
		segs := n.Segments
		for i := range segs.Len() {
			c.words(segment(segs, i, c.src))
		}
	case *east.TaskCheckBox:
		if n.IsChecked {
			c.add(tAtom, "☑")
		} else {
			c.add(tAtom, "☐")
		}
		c.space()
	default:
		c.inlines(n)
	}
}

// segment returns the text of segs' i-th segment.
func segment(segs *text.Segments, i int, src []byte) string {
	s := segs.At(i)
	return string(s.Value(src))
}

// unescapeMarkdown resolves backslash escapes and character references, as
// an HTML renderer would before escaping for its own syntax.
func unescapeMarkdown(v []byte) []byte {
	v = util.UnescapePunctuations(v)
	v = util.ResolveNumericReferences(v)
	return util.ResolveEntityNames(v)
}

// styled renders n's children inside marker m (unless m is already open:
// mrkdwn does not nest a style in itself).
func (c *converter) styled(m byte, n ast.Node) {
	if strings.IndexByte(c.style, m) >= 0 || strings.IndexByte(c.style, '`') >= 0 {
		c.inlines(n)
		return
	}
	saved := c.style
	c.style += string(m)
	c.inlines(n)
	c.style = saved
}

// intraword reports whether emphasis n sits inside a word ("2*3*4",
// "un**believ**able"), with its delimiters as typed.
func (c *converter) intraword(n *ast.Emphasis) (open, close string, ok bool) {
	first, okFirst := n.FirstChild().(*ast.Text)
	last, okLast := n.LastChild().(*ast.Text)
	if !okFirst || !okLast {
		return "", "", false
	}
	start, stop, l := first.Segment.Start, last.Segment.Stop, n.Level
	if start-l < 0 || stop+l > len(c.src) {
		return "", "", false
	}
	open, close = string(c.src[start-l:start]), string(c.src[stop:stop+l])
	if strings.Trim(open, "*_") != "" || strings.Trim(close, "*_") != "" {
		return "", "", false
	}
	wordChar := func(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }
	before, _ := utf8.DecodeLastRune(c.src[:start-l])
	after, _ := utf8.DecodeRune(c.src[stop+l:])
	return open, close, wordChar(before) || wordChar(after)
}

func (c *converter) codeSpan(n *ast.CodeSpan) {
	var b strings.Builder
	for ch := n.FirstChild(); ch != nil; ch = ch.NextSibling() {
		switch t := ch.(type) {
		case *ast.Text:
			b.Write(t.Segment.Value(c.src))
		case *ast.String:
			b.Write(t.Value)
		}
	}
	s := strings.ReplaceAll(b.String(), "\n", " ")
	if strings.TrimSpace(s) == "" {
		c.words(s)
		return
	}
	saved := c.style
	if strings.IndexByte(c.style, '`') < 0 {
		c.style += "`"
	}
	c.words(s)
	c.style = saved
}

// words adds text as words and single spaces (whitespace runs collapse).
func (c *converter) words(s string) { c.split(s, false) }

// split adds s as escaped words and the whitespace between them: as it is
// (keep), or as one space.
func (c *converter) split(s string, keep bool) {
	s = clean(s)
	for s != "" {
		i := strings.IndexFunc(s, unicode.IsSpace)
		switch {
		case i < 0:
			c.add(tWord, escape(s))
			return
		case i > 0:
			c.add(tWord, escape(s[:i]))
			s = s[i:]
			continue
		}
		rest := strings.TrimLeftFunc(s, unicode.IsSpace)
		if keep {
			c.add(tSpace, s[:len(s)-len(rest)])
		} else {
			c.space()
		}
		s = rest
	}
}

// space adds one space unless the line already ends in one.
func (c *converter) space() {
	if len(c.toks) == 0 {
		return
	}
	switch c.toks[len(c.toks)-1].kind {
	case tSpace, tLine, tPara:
		return
	}
	c.add(tSpace, " ")
}

// plain returns the text of n's descendants without formatting.
func (c *converter) plain(n ast.Node) string {
	var b strings.Builder
	var walk func(n ast.Node)
	walk = func(n ast.Node) {
		for ch := n.FirstChild(); ch != nil; ch = ch.NextSibling() {
			switch t := ch.(type) {
			case *ast.Text:
				v := t.Value(c.src)
				if !t.IsRaw() {
					v = unescapeMarkdown(v)
				}
				b.Write(v)
				if t.SoftLineBreak() || t.HardLineBreak() {
					b.WriteByte(' ')
				}
			case *ast.String:
				b.Write(t.Value)
			case *ast.AutoLink:
				b.Write(t.Label(c.src))
			case *ast.RawHTML:
				for i := range t.Segments.Len() {
					b.WriteString(segment(t.Segments, i, c.src))
				}
			default:
				walk(ch)
			}
		}
	}
	walk(n)
	return strings.Join(strings.Fields(clean(b.String())), " ")
}

// link adds <url|label> when dest is a web or mail address, else the label
// as text: a link never points anywhere but http, https or mailto, so no
// destination can turn into a mention (<!here|…>, <@U…|…>).
func (c *converter) link(dest, label string) {
	u, ok := linkURL(dest)
	if !ok {
		// Not a web or mail address (a relative link, javascript:, a
		// would-be mention): the label alone, as text.
		if strings.TrimSpace(label) == "" {
			label = dest
		}
		c.words(label)
		return
	}
	label = escape(strings.Join(strings.Fields(clean(label)), " "))
	entity := "<" + u + ">"
	if label != "" && label != escape(dest) {
		entity = "<" + u + "|" + label + ">"
	}
	if size(entity) > maxAtom {
		// Too long to keep whole: the label as text, then the address,
		// which Slack links by itself.
		c.words(label)
		c.space()
		c.add(tWord, u)
		return
	}
	c.add(tAtom, entity)
}

// linkURL checks dest and writes it for a <url|label> entity: & < > escaped
// and | percent-encoded, since | would end the address.
func linkURL(dest string) (string, bool) {
	dest = strings.TrimSpace(clean(dest))
	u, err := url.Parse(dest)
	if err != nil {
		return "", false
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
		if u.Host == "" {
			return "", false
		}
	case "mailto":
		if u.Opaque == "" {
			return "", false
		}
	default:
		return "", false
	}
	if strings.ContainsFunc(dest, unicode.IsSpace) {
		return "", false
	}
	return strings.ReplaceAll(escape(dest), "|", "%7C"), true
}

// plainTokens renders untrusted plain text (a user's question, a field's
// value): escaped words, single spaces and line breaks.
func plainTokens(s string) []tok {
	c := &converter{}
	for i, line := range strings.Split(clean(s), "\n") {
		if i > 0 {
			c.toks = append(c.toks, tok{kind: tLine, text: "\n"})
		}
		c.words(line)
	}
	return trimSeparators(c.toks)
}

// mrkdwnTokens splits trusted mrkdwn (a template's output, already
// neutralised) into tokens: <…> entities whole, words, spaces, lines and
// blank lines.
func mrkdwnTokens(s string) []tok {
	s = clean(s)
	// About two tokens per word: allocated once, not grown (growing a
	// large slice copies it and loads the GC with garbage).
	toks := make([]tok, 0, 2*(strings.Count(s, " ")+strings.Count(s, "<")+strings.Count(s, "\n"))+1)
	for pi, para := range strings.Split(s, "\n\n") {
		if pi > 0 {
			toks = append(toks, tok{kind: tPara, text: "\n\n"})
		}
		for li, line := range strings.Split(para, "\n") {
			if li > 0 {
				toks = append(toks, tok{kind: tLine, text: "\n"})
			}
			toks = appendMrkdwnLine(toks, line)
		}
	}
	return trimSeparators(toks)
}

func appendMrkdwnLine(toks []tok, line string) []tok {
	// gt is the offset in line of the next ">" from where the text is,
	// found once for every "<" before it (each "<" searching the rest of
	// the line made "<<<<…" quadratic); -1 before the first search, and
	// len(line) when there is none.
	gt, at := -1, 0
	for line != "" {
		r, n := utf8.DecodeRuneInString(line)
		switch {
		case unicode.IsSpace(r):
			j := strings.IndexFunc(line, func(r rune) bool { return !unicode.IsSpace(r) })
			if j < 0 {
				j = len(line)
			}
			toks = append(toks, tok{kind: tSpace, text: line[:j]})
			line, at = line[j:], at+j
		case r == '<':
			if gt < at {
				gt = at + len(line)
				if k := strings.IndexByte(line, '>'); k >= 0 {
					gt = at + k
				}
			}
			end := gt - at
			if end >= len(line) || sizeOver(line[:end+1], maxAtom) {
				toks = append(toks, tok{kind: tWord, text: escape("<")})
				line, at = line[n:], at+n
				continue
			}
			toks = append(toks, tok{kind: tAtom, text: line[:end+1]})
			line, at = line[end+1:], at+end+1
		default:
			j := strings.IndexFunc(line, func(r rune) bool { return r == '<' || unicode.IsSpace(r) })
			if j < 0 {
				j = len(line)
			}
			toks = append(toks, tok{kind: tWord, text: line[:j]})
			line, at = line[j:], at+j
		}
	}
	return toks
}

// sizeOver reports whether size(s) > limit, looking at no more of s than
// it takes to tell.
func sizeOver(s string, limit int) bool {
	if len(s) <= limit {
		return false // a character takes at least a byte, and counts at most 2 for 4 bytes
	}
	n := 0
	for _, r := range s {
		if n++; r >= 0x10000 {
			n++
		}
		if n > limit {
			return true
		}
	}
	return false
}

// neutralize keeps the <…> entities of trusted mrkdwn that link somewhere
// (http, https, mailto, a #channel) and escapes every other one, so that
// no <!here>, <!channel>, <@U…> or <!subteam^…> survives a template.
func neutralize(s string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '<')
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		s = s[i:]
		end := strings.IndexAny(s[1:], "<>\n")
		if end >= 0 && s[1+end] == '>' && linkEntity(s[1:1+end]) {
			b.WriteString(s[:end+2])
			s = s[end+2:]
			continue
		}
		b.WriteString("&lt;")
		s = s[1:]
		if end >= 0 && s[end] == '>' {
			b.WriteString(s[:end])
			b.WriteString("&gt;")
			s = s[end+1:]
		}
	}
}

// linkEntity reports whether the inside of <…> is a link, not a mention or
// a command.
func linkEntity(inner string) bool {
	lower := strings.ToLower(inner)
	for _, p := range []string{"http://", "https://", "mailto:", "#c"} {
		if strings.HasPrefix(lower, p) {
			return true
		}
	}
	return false
}

// trimSeparators drops separators at both ends.
func trimSeparators(toks []tok) []tok {
	for len(toks) > 0 && toks[0].kind.separator() {
		toks = toks[1:]
	}
	for len(toks) > 0 && toks[len(toks)-1].kind.separator() {
		toks = toks[:len(toks)-1]
	}
	return toks
}
