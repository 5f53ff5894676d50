package slack

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chatrelay/chatrelay/relay/relaytest"
)

func names(id string) string {
	return map[string]string{"U0DANA": "Dana", "U0SAM": "Sam Lee"}[id]
}

func TestPlainText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"reply: Hi Sam, I've refunded the renewal.", "reply: Hi Sam, I've refunded the renewal."},
		{"reply: ask <@U0DANA> or <@U0SAM>", "reply: ask @Dana or @Sam Lee"},
		{"<@U0NOBODY> and <@U0X|xavier>", "@U0NOBODY and @xavier"},
		{"see <https://example.com/refunds|our refund page>", "see our refund page (https://example.com/refunds)"},
		{"see <https://example.com/a_b_c>", "see https://example.com/a_b_c"},
		{"<https://example.com|https://example.com> and <http://x.io|x.io>", "https://example.com and http://x.io"},
		{"mail <mailto:help@example.com|help@example.com> or <mailto:help@example.com|us>", "mail help@example.com or us (help@example.com)"},
		{"<#C0123|support> <#C0456> <!here> <!channel> <!subteam^S0123|@billing> <!subteam^S0456>",
			"#support #channel @here @channel @billing @S0456"},
		{"<!date^1392734382^{date}|Feb 18, 2014>", "Feb 18, 2014"},
		{"*bold* _italic_ ~gone~ `code` and snake_case_name 2*3*4", "bold italic gone code and snake_case_name 2*3*4"},
		{"*reply:* it's *really* done", "reply: it's really done"},
		{"a * b * c and * alone", "a * b * c and * alone"},
		{"```\nfenced *not bold*\n```", "\nfenced not bold"},
		{"`a*b*c` stays", "a*b*c stays"},
		{"1 &lt; 2 &amp;&amp; 3 &gt; 2", "1 < 2 && 3 > 2"},
		{"&lt;@U0DANA&gt; typed as text", "<@U0DANA> typed as text"},
		{"odd <brackets and <@U0DANA>", "odd <brackets and @Dana"},
		{"<https://example.com/x_y|label_with_underscores_>", "label_with_underscores_ (https://example.com/x_y)"},
		{"two\nlines *each*\n_with_ style", "two\nlines each\nwith style"},
		{"<@U0DANA|dana_smith> did _it_", "@dana_smith did it"},
		{"", ""},
	} {
		if got := plainText(tc.in, names); got != tc.want {
			t.Errorf("plainText(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

// TestPlainTextGrowsLinearly: hostile text costs linear work.
func TestPlainTextGrowsLinearly(t *testing.T) {
	for name, unit := range map[string]string{
		"angles": "<", "open entities": "<@U1 ", "stars": "*", "star words": "*a ", "mixed": "*_~`a ", "far close": "<a|b",
	} {
		s, l := strings.Repeat(unit, (16<<10)/len(unit)), strings.Repeat(unit, (64<<10)/len(unit))
		relaytest.AssertLinear(t, name, 4, func() { plainText(s, names) }, func() { plainText(l, names) }, 2*time.Millisecond)
	}
}

// FuzzPlainText: whatever an agent writes, the visitor gets valid UTF-8
// (when it was), no live Slack entity of the input, and no more than the
// input's length plus what names add.
func FuzzPlainText(f *testing.F) {
	for _, s := range []string{
		"reply: Hi Sam, I'm Alex from billing. I've refunded the renewal; you'll see it in 3-5 days.",
		"reply: see <https://example.com|the page> <@U0DANA> *now*", "<<@U0DANA>>", "<!subteam^S1|@x> &amp;lt;",
		"```code *x*```", "_a *b_ c*", "<mailto:a@b.c|a@b.c>",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := plainText(in, names)
		if utf8.ValidString(in) && !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8 out of %q: %q", in, out)
		}
		if strings.Contains(in, "<@U0DANA>") && strings.Contains(out, "<@U0DANA>") && !strings.Contains(in, "&lt;@U0DANA&gt;") {
			t.Fatalf("a mention survived: %q → %q", in, out)
		}
		// A name adds at most len("Sam Lee") per entity of 4+ bytes.
		if len(out) > 3*len(in)+8 {
			t.Fatalf("%d bytes out of %d", len(out), len(in))
		}
	})
}
