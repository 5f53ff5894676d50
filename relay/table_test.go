package relay_test

import (
	"slices"
	"testing"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	east "github.com/yuin/goldmark/extension/ast"
	"github.com/yuin/goldmark/text"

	"github.com/chatrelay/chatrelay/relay"
)

// TestTableRows: a table's cells read in a monospace block as they read
// rendered: no raw emphasis, strikethrough or backticks, links and images
// with their addresses, escapes resolved, nothing left out.
func TestTableRows(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, md string
		want     [][]string
	}{
		{"plain", "| a | b |\n|---|---|\n| 1 | 2 |", [][]string{{"a", "b"}, {"1", "2"}}},
		{"emphasis and code", "| Plan | Limit |\n|---|---|\n| **Pro** | _no_ ~~10~~ `∞` |",
			[][]string{{"Plan", "Limit"}, {"Pro", "no 10 ∞"}}},
		{"links", "| Doc |\n|---|\n| [guide](https://g.example) |\n| [https://u.example](https://u.example) |\n| <https://a.example> |\n| https://b.example |",
			[][]string{{"Doc"}, {"guide (https://g.example)"}, {"https://u.example"}, {"https://a.example"}, {"https://b.example"}}},
		{"images", "| Pic |\n|---|\n| ![logo](https://i.example/l.png) |\n| ![](https://i.example/e.png) |",
			[][]string{{"Pic"}, {"logo (https://i.example/l.png)"}, {"https://i.example/e.png"}}},
		{"escapes and entities", "| A |\n|---|\n| a \\| b \\*c\\* &amp; &#60; |", [][]string{{"A"}, {"a | b *c* & <"}}},
		{"a fence cannot end the block", "| A |\n|---|\n| ``` x |", [][]string{{"A"}, {"`\u200b`\u200b` x"}}},
		{"missing cells", "| a | b |\n|---|---|\n| 1 |", [][]string{{"a", "b"}, {"1", ""}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src := []byte(tc.md)
			doc := goldmark.New(goldmark.WithExtensions(extension.GFM)).Parser().Parse(text.NewReader(src))
			var table *east.Table
			_ = ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
				if tb, ok := n.(*east.Table); ok && entering && table == nil {
					table = tb
				}
				return ast.WalkContinue, nil
			})
			if table == nil {
				t.Fatalf("no table in %q", tc.md)
			}
			got := relay.TableRows(table, src)
			if !slices.EqualFunc(got, tc.want, slices.Equal[[]string]) {
				t.Errorf("TableRows(%q)\n got %q\nwant %q", tc.md, got, tc.want)
			}
		})
	}
}
