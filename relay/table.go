package relay

import (
	"strings"

	"github.com/rivo/uniseg"
	"github.com/yuin/goldmark/ast"
	east "github.com/yuin/goldmark/extension/ast"
	"github.com/yuin/goldmark/util"
)

// TableRows returns the cells of a Markdown table (GitHub's extension, as
// goldmark parses it from src), row by row, the header first, as a reader
// reads them in the monospace block AlignTable makes of them: the text
// without the markers a code block would show raw (emphasis, strikethrough,
// a code span's backticks, escapes), a link as its text and then its
// address in parentheses (unless they are the same), an image as its
// description and address. Nothing is left out, and a code fence cannot
// end the block early.
func TableRows(n *east.Table, src []byte) [][]string {
	var rows [][]string
	for row := n.FirstChild(); row != nil; row = row.NextSibling() {
		var cells []string
		for cell := row.FirstChild(); cell != nil; cell = cell.NextSibling() {
			v := strings.Join(strings.Fields(cellText(cell, src)), " ")
			cells = append(cells, strings.ReplaceAll(v, "```", "`\u200b`\u200b`"))
		}
		rows = append(rows, cells)
	}
	return rows
}

// cellText is the text of a table cell's inline nodes.
func cellText(cell ast.Node, src []byte) string {
	var b strings.Builder
	var inline func(n ast.Node)
	inline = func(n ast.Node) {
		for c := n.FirstChild(); c != nil; c = c.NextSibling() {
			switch c := c.(type) {
			case *ast.Text:
				v := c.Segment.Value(src)
				if !c.IsRaw() {
					v = util.ResolveEntityNames(util.ResolveNumericReferences(util.UnescapePunctuations(v)))
				}
				b.Write(v)
				if c.SoftLineBreak() || c.HardLineBreak() {
					b.WriteByte(' ')
				}
			case *ast.String:
				b.Write(c.Value)
			case *ast.CodeSpan:
				for t := c.FirstChild(); t != nil; t = t.NextSibling() {
					if t, ok := t.(*ast.Text); ok {
						b.Write(t.Segment.Value(src))
					}
				}
			case *ast.AutoLink:
				b.Write(c.Label(src))
			case *ast.RawHTML:
				for i := 0; i < c.Segments.Len(); i++ {
					seg := c.Segments.At(i)
					b.Write(seg.Value(src))
				}
			case *ast.Link, *ast.Image:
				at := b.Len()
				inline(c)
				label := b.String()[at:]
				dest := ""
				if l, ok := c.(*ast.Link); ok {
					dest = string(l.Destination)
				} else {
					dest = string(c.(*ast.Image).Destination)
				}
				if dest != "" && strings.TrimSpace(label) != dest {
					if strings.TrimSpace(label) == "" {
						b.WriteString(dest)
					} else {
						b.WriteString(" (" + dest + ")")
					}
				}
			default:
				inline(c) // emphasis, strikethrough, anything else: its text
			}
		}
	}
	inline(cell)
	return b.String()
}

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
