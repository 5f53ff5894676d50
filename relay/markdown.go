package relay

import (
	"strings"
	"unicode/utf8"

	"github.com/rivo/uniseg"
)

// Markdown parsers (goldmark among them) do work that grows faster than the
// text within one line or one paragraph: an unclosed link destination
// ("[a](" repeated) is scanned to the end of its line once per "](", and
// emphasis delimiters and e-mail autolinks are matched across a paragraph.
// A chatbot's answer is untrusted text of up to max_body_bytes, and on one
// line "[a](" × 8,000 took 0.36 s, a 900 KB answer minutes. BoundMarkdown
// keeps each of those units small, so that parsing is linear in the text.

// Bounds of the units a Markdown parser sees after BoundMarkdown.
const (
	// MarkdownMaxLine is the longest line, in bytes: a longer one is
	// broken after a space (else between characters). Longer than almost
	// any paragraph written on one line.
	MarkdownMaxLine = 4 << 10
	// MarkdownMaxBlock is the longest run of lines without a blank line
	// (a paragraph, a list, a table, a code block), in bytes: a longer one
	// gets a blank line at a line end.
	MarkdownMaxBlock = 16 << 10
)

// BoundMarkdown prepares untrusted Markdown for parsing with work linear in
// its size. It keeps at most maxRunes characters (cut at a line end when
// one is near, and reports whether it cut): a sink shows only so much, and
// a caller sets maxRunes well above that. Then it breaks every line longer
// than MarkdownMaxLine bytes and ends every run of lines longer than
// MarkdownMaxBlock bytes with a blank line. It only inserts line breaks,
// never removes or changes a byte, and it changes nothing in text within
// those bounds, which is all text a person writes in a chat: a line break
// shows where a line of over 4 KiB was broken, a blank line where a block of
// over 16 KiB was. It knows no Markdown syntax, so that no construct (an
// unclosed fence, an HTML block) can keep text from being bounded; inside a
// code block a break shows as one more line of code. The result is valid
// UTF-8 when src is.
func BoundMarkdown(src string, maxRunes int) (string, bool) {
	cut := false
	if end := runeOffset(src, maxRunes); end < len(src) {
		end = GraphemeFloor(src, end)
		// At a line end in the last tenth, if there is one.
		if nl := strings.LastIndexByte(src[:end], '\n'); nl >= 0 && nl >= end-end/10 {
			end = nl
		}
		src, cut = src[:end], true
	}
	if !needsBounds(src) {
		return src, cut
	}
	var b strings.Builder
	b.Grow(len(src) + len(src)/MarkdownMaxLine + len(src)/MarkdownMaxBlock + 2)
	block := 0 // bytes of the current run of non-blank lines
	for line := range strings.Lines(src) {
		if blank(line) {
			b.WriteString(line)
			block = 0
			continue
		}
		if block > 0 && block+len(line) > MarkdownMaxBlock {
			b.WriteByte('\n') // a blank line before this line ends the block
			block = 0
		}
		for len(strings.TrimSuffix(line, "\n")) > MarkdownMaxLine {
			k := breakLine(line)
			b.WriteString(line[:k])
			b.WriteByte('\n')
			line = line[k:]
			// Room for another piece, with its line break, or a blank
			// line now.
			if block += k + 1; block > MarkdownMaxBlock-MarkdownMaxLine-1 {
				b.WriteByte('\n')
				block = 0
			}
		}
		b.WriteString(line)
		block += len(line)
	}
	return b.String(), cut
}

// needsBounds reports whether src has a line longer than MarkdownMaxLine or
// a run of lines longer than MarkdownMaxBlock.
func needsBounds(src string) bool {
	if len(src) <= MarkdownMaxLine {
		return false
	}
	block := 0
	for line := range strings.Lines(src) {
		if blank(line) {
			block = 0
			continue
		}
		block += len(line)
		if len(strings.TrimSuffix(line, "\n")) > MarkdownMaxLine || block > MarkdownMaxBlock {
			return true
		}
	}
	return false
}

// blank reports whether line is blank as Markdown sees it: spaces and tabs
// only (a no-break space does not end a paragraph).
func blank(line string) bool { return strings.Trim(line, " \t\r\n") == "" }

// breakLine returns where to break line (longer than MarkdownMaxLine): just
// after the last space or tab in its second quarter to its limit that is
// followed by a letter (so that the next line starts no list, heading or
// quote), else after any such space, else at the last character boundary
// within the limit.
func breakLine(line string) int {
	window := line[:MarkdownMaxLine]
	fallback := -1
	for i := len(window) - 1; i >= MarkdownMaxLine/4; i-- {
		if window[i] != ' ' && window[i] != '\t' {
			continue
		}
		if next := line[i+1]; 'a' <= next && next <= 'z' || 'A' <= next && next <= 'Z' || next >= utf8.RuneSelf {
			return i + 1
		}
		if fallback < 0 && line[i+1] != ' ' && line[i+1] != '\t' {
			fallback = i + 1
		}
	}
	if fallback > 0 {
		return fallback
	}
	k := MarkdownMaxLine
	for k > 0 && !utf8.RuneStart(line[k]) {
		k--
	}
	if k == 0 {
		return MarkdownMaxLine // not UTF-8: any byte boundary
	}
	if g := GraphemeFloor(line, k); g > 0 {
		k = g // a flag or a ZWJ emoji stays on one line
	}
	return k
}

// GraphemeFloor returns the largest offset of s, at most i, at which a
// grapheme cluster starts (0 when the first cluster ends after i, len(s)
// when i is past it): a cut there leaves every flag, ZWJ emoji and letter
// with its combining marks whole. It reads s up to i: linear in i.
func GraphemeFloor(s string, i int) int {
	if i >= len(s) {
		return len(s)
	}
	at, state := 0, -1
	for rest := s; rest != ""; {
		var cluster string
		cluster, rest, _, state = uniseg.FirstGraphemeClusterInString(rest, state)
		if at+len(cluster) > i {
			return at
		}
		at += len(cluster)
	}
	return at
}

// runeOffset returns the byte offset just after the first n runes of s, or
// len(s).
func runeOffset(s string, n int) int {
	if n < 0 {
		return 0
	}
	if len(s) <= n {
		return len(s) // n runes take at least n bytes
	}
	for i := range s {
		if n == 0 {
			return i
		}
		n--
	}
	return len(s)
}
