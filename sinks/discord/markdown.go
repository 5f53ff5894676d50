package discord

import (
	"bytes"
	"slices"
	"strings"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	east "github.com/yuin/goldmark/extension/ast"
	"github.com/yuin/goldmark/text"

	"github.com/chatrelay/chatrelay/relay"
)

// Discord renders most of a chatbot's Markdown as it is: bold, italics,
// links, lists, headings, quotes and code. What it does not render is
// rewritten, found with goldmark's parser (never by pattern matching the
// text, so code spans and blocks are left alone):
//   - a table shows as raw pipes: it becomes a code block with its columns
//     aligned;
//   - an image "![alt](url)" shows a stray "!" before the link: it becomes
//     the link;
//   - an email in angle brackets "<ada@example.com>" shows its brackets: it
//     loses them.
//
// Everything else is kept byte for byte.

// markdownParser parses with GitHub's extensions (tables).
var markdownParser = goldmark.New(goldmark.WithExtensions(extension.GFM)).Parser()

// edit replaces src[start:end] with text.
type edit struct {
	start, end int
	text       string
}

// forDiscord rewrites what Discord does not render in the Markdown text md.
// What it parses is bounded first (relay.BoundMarkdown), so that the work
// is linear in md: at most maxAnswerRunes of it (text left out ends in
// "…"), a line break in a line of over 4 KiB, a blank line in a block of
// over 16 KiB.
func forDiscord(md string) string {
	if !strings.Contains(md, "|") && !strings.Contains(md, "![") && !strings.Contains(md, "@") &&
		!strings.Contains(md, "<#") && !strings.Contains(md, "</") {
		return md // nothing to find: no parse
	}
	md, cut := relay.BoundMarkdown(md, maxAnswerRunes)
	if cut {
		md += " …"
	}
	src := []byte(md)
	doc := markdownParser.Parse(text.NewReader(src))
	var edits []edit
	var code [][2]int // byte ranges of code spans and blocks, in order
	err := ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
		if !entering {
			return ast.WalkContinue, nil
		}
		switch n := n.(type) {
		case *ast.CodeBlock, *ast.FencedCodeBlock:
			if lines := n.Lines(); lines.Len() > 0 {
				code = append(code, [2]int{lines.At(0).Start, lines.At(lines.Len() - 1).Stop})
			}
			return ast.WalkSkipChildren, nil
		case *ast.CodeSpan:
			if first, ok := n.FirstChild().(*ast.Text); ok {
				if last, ok := n.LastChild().(*ast.Text); ok {
					code = append(code, [2]int{first.Segment.Start, last.Segment.Stop})
				}
			}
			return ast.WalkSkipChildren, nil
		case *east.Table:
			if n.Parent() == doc { // not inside a list or quote, whose prefixes it would lose
				if e, ok := tableBlock(n, src); ok {
					edits = append(edits, e)
				}
			}
			return ast.WalkSkipChildren, nil
		case *ast.Image:
			if first, ok := n.FirstChild().(*ast.Text); ok {
				if at := first.Segment.Start - 2; at >= 0 && string(src[at:at+2]) == "![" {
					edits = append(edits, edit{start: at, end: at + 1})
				}
			}
		case *ast.AutoLink:
			if n.AutoLinkType == ast.AutoLinkEmail {
				// The label is a slice of src: its offset is where it starts.
				label := n.Label(src)
				start := cap(src) - cap(label)
				stop := start + len(label)
				if start >= 1 && stop < len(src) && src[start-1] == '<' && src[stop] == '>' &&
					string(src[start:stop]) == string(label) {
					edits = append(edits, edit{start: start - 1, end: stop + 1, text: string(label)})
				}
			}
		case *ast.HTMLBlock, *ast.RawHTML:
			return ast.WalkSkipChildren, nil
		}
		return ast.WalkContinue, nil
	})
	if err != nil {
		return literal(md) // never (the walker returns no error): inert rather than unchecked
	}
	edits = append(edits, inertMentions(src, code)...)
	if len(edits) == 0 {
		return md
	}
	slices.SortFunc(edits, func(a, b edit) int { return a.start - b.start })
	var b strings.Builder
	last := 0
	for _, e := range edits {
		if e.start < last {
			continue // overlapping: keep the first
		}
		b.Write(src[last:e.start])
		b.WriteString(e.text)
		last = e.end
	}
	b.Write(src[last:])
	return b.String()
}

// inertMentions returns the edits that make the mention syntax in src
// (outside the code ranges, which show it as text already) show as
// typed: a backslash before "<@…>", "<#…>" or "</…>", a zero-width space
// after the "@" of @everyone and @here. Nothing would ping anyway
// (allowed_mentions), but a role or channel would show as a live pill in
// the bot's answer.
func inertMentions(src []byte, code [][2]int) []edit {
	var edits []edit
	k := 0
	for _, m := range mentionSyntax.FindAllIndex(src, -1) {
		for k < len(code) && code[k][1] <= m[0] {
			k++
		}
		if k < len(code) && code[k][0] < m[1] {
			continue // inside code
		}
		if src[m[0]] == '<' {
			edits = append(edits, edit{start: m[0], end: m[0], text: "\\"})
		} else {
			edits = append(edits, edit{start: m[0] + 1, end: m[0] + 1, text: zwsp})
		}
	}
	return edits
}

// tableBlock returns the edit that turns table n into a code block with
// aligned columns: header, a rule, then the rows. Each cell shows its text
// as a reader reads it (relay.TableRows: no raw emphasis markers, links
// with their URLs), nothing left out.
func tableBlock(n *east.Table, src []byte) (edit, bool) {
	start, end := -1, -1
	for row := n.FirstChild(); row != nil; row = row.NextSibling() {
		for cell := row.FirstChild(); cell != nil; cell = cell.NextSibling() {
			lines := cell.Lines()
			if lines.Len() == 0 {
				continue
			}
			first, last := lines.At(0), lines.At(lines.Len()-1)
			if start < 0 || first.Start < start {
				start = first.Start
			}
			end = max(end, last.Stop)
		}
	}
	rows := relay.TableRows(n, src)
	if start < 0 || len(rows) == 0 {
		return edit{}, false
	}
	// Whole lines: from the header's line start to the end of the last
	// row's line, and at least through the delimiter row under the header.
	start = bytes.LastIndexByte(src[:start], '\n') + 1
	end = lineEnd(src, end)
	if header := lineEnd(src, start); header < len(src) {
		end = max(end, lineEnd(src, header+1))
	}
	var b strings.Builder
	b.WriteString(fence + "\n")
	for _, l := range relay.AlignTable(rows) {
		b.WriteString(l + "\n")
	}
	b.WriteString(fence)
	return edit{start: start, end: end, text: b.String()}, true
}

// lineEnd is the offset of the end of the line holding offset i (its
// newline, or the end of src).
func lineEnd(src []byte, i int) int {
	if j := bytes.IndexByte(src[i:], '\n'); j >= 0 {
		return i + j
	}
	return len(src)
}
