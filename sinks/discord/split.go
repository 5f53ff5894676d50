package discord

import (
	"strings"
	"unicode/utf8"

	"github.com/chatrelay/chatrelay/relay"
)

// A splitter cuts a long Markdown text into parts that each fit a limit.
// It prefers paragraph, then line, then sentence, then word boundaries (and
// avoids cutting a link or an inline code span), and never leaves a code
// block open: a part cut inside a fenced block closes the fence, and the
// next part reopens it with the same language.
type splitter struct {
	rest    string // what is left to emit
	inFence bool   // rest starts inside a fenced code block
	info    string // that block's info string ("go"), reopened with it
}

const (
	fence      = "```"
	fenceClose = "\n" + fence
	// maxFenceInfo bounds the info string carried to a reopened fence; a
	// longer one is dropped (the block loses its highlighting, not text).
	maxFenceInfo = 16
	// minSplitLimit is the smallest limit next honours: room for a
	// reopened fence, its closing and some text.
	minSplitLimit = 32
)

// part is one piece of a split text.
type part struct {
	open  string // a fence reopened at the start ("```go\n"), or ""
	body  string // a piece of the original text, whitespace at the cuts trimmed
	close string // a fence closed at the end ("\n```"), or ""
	// gap is the original text between body and the next part's body:
	// the white space trimmed at the cut, and a block's own closing fence
	// when close stands for it. The bodies and gaps of all parts, in
	// order, are the text.
	gap string
}

func (p part) String() string { return p.open + p.body + p.close }

func newSplitter(text string) *splitter {
	text = strings.ToValidUTF8(text, "\uFFFD")
	text = strings.ReplaceAll(text, "\r\n", "\n")
	return &splitter{rest: strings.TrimSpace(text)}
}

func (sp *splitter) done() bool { return sp.rest == "" }

func (sp *splitter) openFence() string {
	if !sp.inFence {
		return ""
	}
	return fence + sp.info + "\n"
}

// remaining is how many units what is left takes as a single part.
func (sp *splitter) remaining() int { return len16(sp.openFence()) + len16(sp.rest) }

// next returns the next part, at most limit UTF-16 units long (limits below
// minSplitLimit are raised to it). It always makes progress.
func (sp *splitter) next(limit int) (p part) {
	limit = max(limit, minSplitLimit)
	p = part{open: sp.openFence()}
	avail := limit - len16(p.open)
	if w, _ := prefix16(sp.rest, avail); w == len(sp.rest) {
		// The end of the text: a fence the author left open stays open.
		p.body, sp.rest = sp.rest, ""
		return p
	}
	before := sp.rest
	defer func() { p.gap = before[len(p.body) : len(before)-len(sp.rest)] }()
	cut := sp.cut(avail - len16(fenceClose))
	head, rest := sp.rest[:cut], sp.rest[cut:]
	inFence, info := fenceState(sp.inFence, sp.info, head)
	if inFence {
		head = strings.TrimRight(head, "\n")
		rest = strings.TrimLeft(rest, "\n")
		p.close = fenceClose
		// Cut just before the block's own closing fence: that fence is
		// the one just added, so the next part starts after it.
		if line, after, _ := strings.Cut(rest, "\n"); strings.TrimSpace(line) == fence {
			rest, inFence, info = after, false, ""
		}
	} else {
		head = strings.TrimRight(head, " \t\n")
	}
	if !inFence {
		rest = strings.TrimLeft(rest, " \t\n")
	}
	p.body = head
	sp.rest, sp.inFence, sp.info = rest, inFence, info
	return p
}

// cut returns where to cut rest so that the head is at most avail units:
// a byte offset > 0, on a grapheme cluster boundary (a flag, a ZWJ emoji
// or a letter with its combining marks is never cut in two).
func (sp *splitter) cut(avail int) int {
	w, _ := prefix16(sp.rest, avail)
	w = relay.GraphemeFloor(sp.rest, w)
	if w == 0 {
		// One cluster longer than a part (hundreds of combining marks):
		// cut it between runes, as the last resort.
		w, _ = prefix16(sp.rest, avail)
		return max(w, 1)
	}
	win := sp.rest[:w]
	usable := func(i int) bool { return i > 0 && strings.TrimSpace(win[:i]) != "" }
	// A new section is the best place for a new part: before a heading
	// in the last two thirds.
	if i := sp.lastHeading(win); i >= w/3 && usable(i) {
		return i
	}
	// Boundaries from the best kind to the worst.
	found := [...]int{lastParagraph(win), lastLine(win), lastSentence(win), lastWord(win)}
	for _, i := range found {
		if i >= w/2 && usable(i) {
			return sp.outsideFence(win, sp.keepHeading(win, i))
		}
	}
	// No boundary in the second half: the best one anywhere.
	for _, i := range found {
		if usable(i) {
			return sp.outsideFence(win, sp.keepHeading(win, i))
		}
	}
	return hardCut(win)
}

// lastHeading returns the offset of the start of the last heading line in
// win outside a code block, or -1.
func (sp *splitter) lastHeading(win string) int {
	best := -1
	inFence := sp.inFence
	at := 0
	for line := range strings.Lines(win) {
		if !inFence && at > 0 && isHeading(strings.TrimRight(line, "\n")) && strings.HasSuffix(line, "\n") {
			best = at
		}
		if strings.Count(line, fence)%2 == 1 {
			inFence = !inFence
		}
		at += len(line)
	}
	return best
}

// outsideFence moves a cut at i that falls inside a code block to just
// before the block's opening fence, when the block starts in the second
// half of the part: a block that fits a part is never split; only one
// longer than what is left of the part is (closed and reopened).
func (sp *splitter) outsideFence(win string, i int) int {
	if inFence, _ := fenceState(sp.inFence, sp.info, win[:i]); !inFence {
		return i
	}
	// The last fence line before i opened the block the cut is in.
	open := -1
	at := 0
	state := sp.inFence
	for line := range strings.Lines(win[:i]) {
		if strings.Count(line, fence)%2 == 1 {
			if !state {
				open = at
			}
			state = !state
		}
		at += len(line)
	}
	if open >= len(win)/2 && strings.TrimSpace(win[:open]) != "" {
		return open
	}
	return i
}

// keepHeading moves a cut at i before a heading that would otherwise end
// the part ("## Step 5" at the bottom of one message, its text in the
// next): a heading goes with what it heads. Inside a code block a "#" line
// is no heading (a shell comment), and the part keeps some text.
func (sp *splitter) keepHeading(win string, i int) int {
	head := strings.TrimRight(win[:i], " \t\n")
	start := strings.LastIndexByte(head, '\n') + 1
	if !isHeading(head[start:]) {
		return i
	}
	if inFence, _ := fenceState(sp.inFence, sp.info, head); inFence {
		return i
	}
	if inFence, _ := fenceState(sp.inFence, sp.info, head[:start]); inFence || strings.TrimSpace(head[:start]) == "" {
		return i // only a fence, or nothing, would be left in the part
	}
	return start
}

// isHeading reports whether line is an ATX heading ("# Title" to
// "###### Title").
func isHeading(line string) bool {
	n := len(line) - len(strings.TrimLeft(line, "#"))
	return n >= 1 && n <= 6 && (len(line) == n || line[n] == ' ' || line[n] == '\t')
}

func lastParagraph(s string) int { return strings.LastIndex(s, "\n\n") }
func lastLine(s string) int      { return strings.LastIndex(s, "\n") }

// lastSentence returns the offset just after the last sentence (or clause)
// end: one of . ! ? : ; followed by a space, or a CJK full stop; outside a
// link or inline code span.
func lastSentence(s string) int {
	tries := 0
	for i := len(s); i > 0; {
		r, size := utf8.DecodeLastRuneInString(s[:i])
		end := -1
		switch {
		case r == ' ' && i-size > 0 && strings.IndexByte(".!?:;", s[i-size-1]) >= 0:
			end = i - size
		case r == '。' || r == '！' || r == '？':
			end = i
		}
		if end > 0 {
			if !insideSpan(s[:end]) {
				return end
			}
			if tries++; tries == maxSpanTries {
				return -1
			}
		}
		i -= size
	}
	return -1
}

// lastWord returns the offset of the last space outside a link or inline
// code span.
func lastWord(s string) int { return lastOutsideSpan(s, " ") }

// maxSpanTries bounds how many candidates lastOutsideSpan looks at, so that
// a pathological line costs linear time.
const maxSpanTries = 64

func lastOutsideSpan(s, sep string) int {
	end := len(s)
	for range maxSpanTries {
		i := strings.LastIndex(s[:end], sep)
		if i <= 0 {
			return -1
		}
		if !insideSpan(s[:i]) {
			return i
		}
		end = i
	}
	return -1
}

// insideSpan reports whether the end of s lies inside a Markdown link
// ([text](url)) or an inline code span on its last line.
func insideSpan(s string) bool {
	line := s[strings.LastIndexByte(s, '\n')+1:]
	if strings.Count(line, "`")%2 == 1 {
		return true
	}
	if strings.LastIndexByte(line, '[') > strings.LastIndexByte(line, ']') {
		return true
	}
	return strings.LastIndex(line, "](") > strings.LastIndexByte(line, ')')
}

// hardCut cuts at the end of win (a grapheme boundary), but not inside a
// run of backticks, which would break a fence or a code span in two.
func hardCut(win string) int {
	i := len(win)
	for i > 0 && win[i-1] == '`' {
		i--
	}
	if i == 0 {
		return len(win)
	}
	return i
}

// fenceState returns whether a text that starts inside a fenced block (or
// not) ends inside one after text, and that block's info string. Every
// "```" toggles the state, as Discord renders ```inline``` blocks too.
func fenceState(inFence bool, info, text string) (bool, string) {
	for line := range strings.Lines(text) {
		n := strings.Count(line, fence)
		if n%2 == 0 {
			continue
		}
		if !inFence {
			info = ""
			if t := strings.TrimSpace(line); n == 1 && strings.HasPrefix(t, fence) {
				info = strings.TrimSpace(t[len(fence):])
			}
			if len16(info) > maxFenceInfo || strings.ContainsAny(info, "` ") {
				info = ""
			}
		}
		inFence = !inFence
	}
	if !inFence {
		info = ""
	}
	return inFence, info
}
