package slack

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// plainText turns the text of a message an agent wrote in Slack (mrkdwn,
// as Slack sends it in events) into what the visitor reads: plain text
// (PROTOCOLS.md §3.3).
//   - <@U…> becomes @Name (name gives it; @U… when it gives none),
//     <@U…|label> @label, <#C…|general> #general, <!here> @here,
//     <!subteam^S…|@team> @team, <!date^…|fallback> the fallback;
//   - <url|label> becomes "label (url)", or the URL alone when the label
//     is the URL; <mailto:a@b|a@b> becomes a@b;
//   - *bold*, _italic_, ~strike~ and `code` lose their markers (only where
//     Slack reads them as such: at word boundaries), ``` fences go;
//   - &amp; &lt; &gt; become & < >.
//
// It takes linear time in the text's length, whatever the text: it is
// written by people on a platform the relay does not control.
func plainText(text string, name func(id string) string) string {
	var b strings.Builder
	b.Grow(len(text))
	for line := range strings.Lines(text) {
		body, nl := strings.CutSuffix(line, "\n")
		b.WriteString(plainLine(body, name))
		if nl {
			b.WriteByte('\n')
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

// plainLine is plainText for one line (mrkdwn's emphasis does not span
// lines).
func plainLine(line string, name func(string) string) string {
	if strings.TrimSpace(line) == "```" {
		return ""
	}
	line = strings.ReplaceAll(line, "```", "")
	// Entities first: their text is not emphasis (a URL's underscores).
	var b strings.Builder
	var keep []bool // per byte of the result: written by an entity, not to be touched
	emit := func(s string, entity bool) {
		if !entity {
			s = unescapeText(s)
		}
		b.WriteString(s)
		for range len(s) {
			keep = append(keep, entity)
		}
	}
	for {
		i := strings.IndexByte(line, '<')
		if i < 0 {
			emit(line, false)
			break
		}
		emit(line[:i], false)
		end := strings.IndexAny(line[i+1:], "<>")
		switch {
		case end < 0:
			emit(line[i:], false)
			return stripEmphasis(b.String(), keep)
		case line[i+1+end] == '<':
			// "<" then another "<" before any ">": the first is text.
			emit(line[i:i+1+end], false)
			line = line[i+1+end:]
			continue
		}
		emit(entity(line[i+1:i+1+end], name), true)
		line = line[i+2+end:]
	}
	return stripEmphasis(b.String(), keep)
}

// entity renders the inside of one <…> entity.
func entity(inner string, name func(string) string) string {
	target, label, labelled := strings.Cut(inner, "|")
	label = unescapeText(label)
	switch {
	case strings.HasPrefix(target, "@"):
		if labelled && label != "" {
			return "@" + strings.TrimPrefix(label, "@")
		}
		id := target[1:]
		if name != nil {
			if n := name(id); n != "" {
				return "@" + n
			}
		}
		return "@" + id
	case strings.HasPrefix(target, "#"):
		if labelled && label != "" {
			return "#" + strings.TrimPrefix(label, "#")
		}
		return "#channel"
	case strings.HasPrefix(target, "!"):
		cmd := target[1:]
		if labelled && label != "" {
			return label // <!subteam^S…|@team>, <!date^…|fallback>
		}
		switch cmd {
		case "here", "channel", "everyone":
			return "@" + cmd
		}
		if team, ok := strings.CutPrefix(cmd, "subteam^"); ok {
			return "@" + team
		}
		return ""
	}
	url := unescapeText(target)
	shown, _ := strings.CutPrefix(url, "mailto:")
	shown, _ = strings.CutPrefix(shown, "tel:")
	if !labelled || label == "" || label == url || label == shown || strings.TrimPrefix(strings.TrimPrefix(url, "https://"), "http://") == label {
		return shown
	}
	return label + " (" + shown + ")"
}

// emphasis markers Slack reads.
func marker(c byte) bool { return c == '*' || c == '_' || c == '~' || c == '`' }

// stripEmphasis drops the markers of *bold*, _italic_, ~strike~ and
// `code` spans in s, except in bytes keep marks. A marker opens a span
// after the line's start, a space or punctuation, before a character that
// is not a space; it closes before the line's end, a space or punctuation,
// after one that is not a space. In linear time: closers are found by one
// pass per marker, and each opener takes the next closer after it.
func stripEmphasis(s string, keep []bool) string {
	if !strings.ContainsAny(s, "*_~`") {
		return s
	}
	var closers [128][]int
	for j := 1; j < len(s); j++ {
		if c := s[j]; marker(c) && !keep[j] && closes(s, j) {
			closers[c] = append(closers[c], j)
		}
	}
	var next [128]int // index into closers[c] of the first not yet passed
	drop := make([]bool, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !marker(c) || keep[i] || drop[i] || !opens(s, i) {
			continue
		}
		list := closers[c]
		k := next[c]
		for k < len(list) && list[k] <= i+1 {
			k++
		}
		if k == len(list) {
			next[c] = k
			continue
		}
		j := list[k]
		drop[i], drop[j] = true, true
		next[c] = k + 1
		if c == '`' {
			i = j // no emphasis inside code
		}
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := range len(s) {
		if !drop[i] {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// opens reports whether the marker at i can open a span.
func opens(s string, i int) bool {
	if i+1 >= len(s) {
		return false
	}
	if i > 0 {
		prev, _ := utf8.DecodeLastRuneInString(s[:i])
		if !unicode.IsSpace(prev) && !unicode.IsPunct(prev) {
			return false
		}
	}
	next, _ := utf8.DecodeRuneInString(s[i+1:])
	return !unicode.IsSpace(next)
}

// closes reports whether the marker at j can close a span.
func closes(s string, j int) bool {
	prev, _ := utf8.DecodeLastRuneInString(s[:j])
	if unicode.IsSpace(prev) {
		return false
	}
	if j+1 < len(s) {
		next, _ := utf8.DecodeRuneInString(s[j+1:])
		return unicode.IsSpace(next) || unicode.IsPunct(next) || unicode.IsSymbol(next)
	}
	return true
}

// unescapeText undoes Slack's three escapes.
func unescapeText(s string) string {
	if !strings.Contains(s, "&") {
		return s
	}
	return slackUnescaper.Replace(s)
}

// slackUnescaper is built once: unescapeText runs for every run of text
// and every entity of every line of an agent's message.
var slackUnescaper = strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&")
