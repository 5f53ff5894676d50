package relay

import (
	"strings"

	"github.com/rivo/uniseg"
)

// AlignTable lays out a table's rows (the first is the header) as lines of
// monospace text with aligned columns: the header, a rule, then the rows,
// cells separated by " | ". Widths are display widths (a CJK character
// or an emoji takes two columns), so that every sink shows a table the
// same way, in a code block.
func AlignTable(rows [][]string) []string {
	var widths []int
	for _, r := range rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], uniseg.StringWidth(c))
		}
	}
	line := func(cells []string) string {
		var l strings.Builder
		for i, w := range widths {
			c := ""
			if i < len(cells) {
				c = cells[i]
			}
			if i > 0 {
				l.WriteString(" | ")
			}
			l.WriteString(c)
			l.WriteString(strings.Repeat(" ", w-uniseg.StringWidth(c)))
		}
		return strings.TrimRight(l.String(), " ")
	}
	out := make([]string, 0, len(rows)+1)
	for i, r := range rows {
		out = append(out, line(r))
		if i == 0 {
			rule := make([]string, len(widths))
			for j, w := range widths {
				rule[j] = strings.Repeat("-", max(w, 1))
			}
			out = append(out, strings.Join(rule, "-+-"))
		}
	}
	return out
}
