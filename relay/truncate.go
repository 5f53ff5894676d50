package relay

import (
	"strings"
	"unicode/utf8"

	"github.com/rivo/uniseg"
)

// Truncate cuts s to at most limit runes, ending in "…" when cut, between
// grapheme clusters, and between words when a word boundary lies in the
// last fifth. It reports whether s was cut. It is the one truncation of
// chatrelay: a limit counted otherwise (bytes, UTF-16 units) converts to
// runes and calls it (TruncateBytes; the Discord sink).
func Truncate(s string, limit int) (string, bool) {
	if limit <= 0 {
		return "", s != ""
	}
	if utf8.RuneCountInString(s) <= limit {
		return s, false
	}
	if limit == 1 {
		return "…", true
	}
	// Byte offset just after the last whole grapheme cluster (a flag, a
	// ZWJ emoji, a letter with its marks) within limit-1 runes.
	cut, n, state := 0, 0, -1
	for rest := s; rest != ""; {
		var cluster string
		cluster, rest, _, state = uniseg.FirstGraphemeClusterInString(rest, state)
		k := utf8.RuneCountInString(cluster)
		if n+k > limit-1 {
			break
		}
		cut, n = cut+len(cluster), n+k
	}
	head := s[:cut]
	if sp := strings.LastIndexAny(head, " \n\t"); sp > 0 && utf8.RuneCountInString(head[sp:]) <= limit/5 {
		head = head[:sp]
	}
	return strings.TrimRight(head, " \n\t") + "…", true
}

// TruncateBytes is Truncate for a limit in bytes (a header or a NATS
// reason): the result is at most limit bytes of valid UTF-8.
func TruncateBytes(s string, limit int) (string, bool) {
	if len(s) <= limit {
		return s, false
	}
	// The most runes whose bytes, and the 3 of "…", fit the limit.
	n, size := 0, len("…")
	for _, r := range s {
		if size+utf8.RuneLen(r) > limit {
			break
		}
		size += utf8.RuneLen(r)
		n++
	}
	if size > limit { // a limit below the ellipsis itself
		return "", true
	}
	if out, cut := Truncate(s, n+1); cut {
		return out, true
	}
	// s is n+1 runes, the last a wide one: cut before it.
	return Truncate(s, n)
}
