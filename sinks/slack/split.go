package slack

import (
	"strings"
	"unicode/utf8"

	"github.com/rivo/uniseg"
)

// splitter cuts a token list into parts of bounded size. A part ends where
// a break costs least: at a blank line between blocks if one lies in the
// second half of the part, else at a line break, else between words; only
// a single word longer than a whole part is cut inside, and then the part
// ends in "…". An atom (a <url|label> entity, a line prefix) is never cut:
// without a break before it, the part ends just before it, with "…"; one
// larger than a whole part is shown as its label or address, cut. Styles and code fences open at a cut are closed at the end
// of the part and opened again at the start of the next, and a line cut in
// the middle continues with its quote or list prefix.
//
// A splitter is a small value: copying it saves its position.
type splitter struct {
	toks []tok
	i    int    // next token
	rest string // what is left of toks[i] after a cut inside it; "" when whole
	mid  bool   // the next part continues a line
}

func newSplitter(toks []tok) splitter { return splitter{toks: toks} }

// done reports whether everything was returned (trailing separators
// aside).
func (sp *splitter) done() bool {
	if sp.rest != "" {
		return false
	}
	for j := sp.i; j < len(sp.toks); j++ {
		if !sp.toks[j].kind.separator() {
			return false
		}
	}
	return true
}

// cut is a place where the current part may end.
type cut struct {
	at   int // index of the separator token the cut replaces
	out  int // bytes of output before it
	used int // size of output before it
	cur  string
}

// next returns the next part, at most budget in size (budget must be at
// least minSplitBudget), or "" when done.
func (sp *splitter) next(budget int) string {
	for sp.rest == "" && sp.i < len(sp.toks) && sp.toks[sp.i].kind.separator() {
		sp.i++
		sp.mid = false
	}
	if sp.i >= len(sp.toks) {
		return ""
	}
	// Room is kept for one "…", so that a cut inside a word always fits.
	limit := budget - size(ellipsis)
	var out []byte
	used := 0
	if sp.mid {
		out = append(out, sp.toks[sp.i].cont...)
		used = size(sp.toks[sp.i].cont)
	}
	start := used
	cur := ""
	var best [tPara + 1]cut // by kind, outside inline code; at 0 when there is none
	var inSpan, outside cut // the latest break inside inline code; the latest outside a code block
	for j := sp.i; j < len(sp.toks); j++ {
		t := sp.toks[j]
		txt := t.text
		if j == sp.i && sp.rest != "" {
			txt = sp.rest
		}
		if t.kind.separator() && used > start {
			if used+size(transition(cur, "")) <= limit {
				c := cut{at: j, out: len(out), used: used, cur: cur}
				switch {
				case strings.IndexByte(t.style, '`') >= 0:
					inSpan = c // a break there would split the span
				default:
					best[t.kind] = c
					if strings.IndexByte(t.style, 'F') < 0 {
						outside = c
					}
				}
			}
		}
		tr := transition(cur, t.style)
		cost := size(tr) + size(txt)
		if used+cost+size(transition(t.style, "")) <= limit {
			out = append(out, tr...)
			out = append(out, txt...)
			used += cost
			cur = t.style
			continue
		}
		// t does not fit: end the part at the best cut so far; a code
		// block that starts in the second half goes whole to the next
		// part, and inline code is cut only when nothing else is left.
		c, ok := choose(best, limit)
		if ok && strings.IndexByte(sp.toks[c.at].style, 'F') >= 0 && outside.at > 0 && outside.used >= limit/2 {
			c = outside
		}
		if !ok && inSpan.at > 0 {
			c, ok = inSpan, true
		}
		if ok {
			out = append(out[:c.out], transition(c.cur, "")...)
			sp.i, sp.rest, sp.mid = c.at+1, "", sp.toks[c.at].kind == tSpace
			return string(out)
		}
		// No break to cut at: cut inside t, or just before it.
		room := limit - used - size(tr) - size(transition(t.style, ""))
		if t.kind == tAtom {
			if used == start {
				// An atom larger than a whole part (the renderer's bounds
				// never make one): its short, safe form, consumed whole.
				out = append(out, tr...)
				out = append(out, shortAtom(txt, room+size(ellipsis))...)
				out = append(out, transition(t.style, "")...)
				sp.i, sp.rest, sp.mid = j+1, "", true
				return string(out)
			}
			// An entity is never cut: the part ends just before it.
			out = append(out, ellipsis...)
			out = append(out, transition(cur, "")...)
			sp.i, sp.rest, sp.mid = j, "", true
			return string(out)
		}
		head := headOf(txt, room)
		if head == "" && used == start {
			head = firstUnit(txt) // a part makes progress, whatever the budget
		}
		if head != "" {
			out = append(out, tr...)
			out = append(out, head...)
			cur = t.style
			txt = txt[len(head):]
		}
		out = append(out, ellipsis...)
		out = append(out, transition(cur, "")...)
		sp.i, sp.rest, sp.mid = j, txt, true
		if txt == "" {
			sp.i, sp.rest = j+1, ""
		}
		return string(out)
	}
	out = append(out, transition(cur, "")...)
	sp.i, sp.rest, sp.mid = len(sp.toks), "", false
	return string(out)
}

// choose picks where to end a part: the latest blank line, else line
// break, else space, if it lies in the second half; else the latest break
// of any kind.
func choose(best [tPara + 1]cut, limit int) (cut, bool) {
	for _, k := range []tokKind{tPara, tLine, tSpace} {
		if c := best[k]; c.at > 0 && c.used >= limit/2 {
			return c, true
		}
	}
	var latest cut
	for _, c := range best {
		if c.at > 0 && c.used > latest.used {
			latest = c
		}
	}
	return latest, latest.at > 0
}

// shortAtom is what an atom larger than a whole part is shown as, within
// room: a link's label, else its address (or the atom's text), as plain
// text, cut with "…" when needed. It never holds a "<" or ">" that would
// open or close an entity.
func shortAtom(s string, room int) string {
	text := s
	if inner, ok := strings.CutPrefix(s, "<"); ok {
		inner = strings.TrimSuffix(inner, ">")
		if _, label, ok := strings.Cut(inner, "|"); ok && strings.TrimSpace(label) != "" {
			inner = label
		}
		text = inner
	}
	text = strings.NewReplacer("<", "&lt;", ">", "&gt;").Replace(text)
	if size(text) <= room {
		return text
	}
	return headOf(text, room-size(ellipsis)) + ellipsis
}

// headOf returns the longest start of s within room, cut between runes and
// never inside a character reference (&amp; &lt; &gt;).
func headOf(s string, room int) string {
	n, end := 0, 0
	for end < len(s) {
		u := firstUnit(s[end:])
		n += size(u)
		if n > room {
			break
		}
		end += len(u)
	}
	return s[:end]
}

// firstUnit returns s's first unit: one character reference, or one
// grapheme cluster (a flag, a ZWJ emoji, a letter with its marks), so
// that no cut splits what reads as one character.
func firstUnit(s string) string {
	if s == "" {
		return ""
	}
	if s[0] == '&' {
		if k := strings.IndexByte(s, ';'); k > 0 && k <= 5 {
			return s[:k+1]
		}
	}
	c, _, _, _ := uniseg.FirstGraphemeClusterInString(s, -1)
	if c == "" || strings.IndexByte(c, '&') > 0 {
		// A cluster that runs into a character reference (a combining
		// mark never follows "&"): one rune.
		_, n := utf8.DecodeRuneInString(s)
		return s[:n]
	}
	return c
}
