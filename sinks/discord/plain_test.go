package discord

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// mapNames resolves from fixed maps.
type mapNames struct{ users, roles, channels map[string]string }

func (m mapNames) user(id string) string    { return m.users[id] }
func (m mapNames) role(id string) string    { return m.roles[id] }
func (m mapNames) channel(id string) string { return m.channels[id] }

var testNames = mapNames{
	users:    map[string]string{"111": "Dana", "222": "Sam Lee"},
	roles:    map[string]string{"333": "Billing"},
	channels: map[string]string{"444": "refunds"},
}

func TestPlain(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
	}{
		{"plain text", "reply: Hi Sam, your refund is on its way.", "reply: Hi Sam, your refund is on its way."},
		{"user mentions", "reply: <@111> and <@!222> will call you", "reply: @Dana and @Sam Lee will call you"},
		{"unknown user", "ask <@999>", "ask @unknown-user"},
		{"role and channel", "<@&333> see <#444>", "@Billing see #refunds"},
		{"unknown role and channel", "<@&9> <#9>", "@unknown-role #unknown"},
		{"masked link", "see [the refund policy](https://example.com/refunds)", "see the refund policy (https://example.com/refunds)"},
		{"link whose label is the url", "[https://example.com](https://example.com)", "https://example.com"},
		{"embed suppressed", "go to <https://example.com/a_b_c>", "go to https://example.com/a_b_c"},
		{"bare url keeps underscores", "https://example.com/a_b_c", "https://example.com/a_b_c"},
		{"emphasis", "**bold** *it* _it_ __under__ ~~gone~~ ***both***", "bold it it under gone both"},
		{"snake_case stays", "use snake_case_names", "use snake_case_names"},
		{"lone stars stay", "2 * 3 * 4", "2 * 3 * 4"},
		{"spoiler", "the code is ||1234||", "the code is 1234"},
		{"odd spoiler marker stays", "a || b", "a || b"},
		{"inline code keeps markup", "run `rm -rf **tmp** <@111>`", "run rm -rf **tmp** <@111>"},
		{"code block", "try:\n```sh\ncurl -X **POST**\n```\nthen", "try:\n\ncurl -X **POST**\n\nthen"},
		{"heading", "# Steps\n## more", "Steps\n\nmore"},
		{"subtext", "-# sent from my phone", "sent from my phone"},
		{"quote", "> you said\nok", "> you said\nok"},
		{"quote with emphasis", "> **you** said", "> you said"},
		{"multi-line quote", ">>> one\ntwo", "> one\ntwo"},
		{"list", "- one\n- **two**\n1. first", "- one\n- two\n\n1. first"},
		{"thematic break stays", "a\n\n---\n\nb", "a\n\n---\n\nb"},
		{"setext underline stays", "Hello\n---", "Hello\n---"},
		{"indent stays text", "    four spaces", "four spaces"},
		{"indent after text", "a\n    b", "a\nb"},
		{"html stays", "<b>hi</b>", "<b>hi</b>"},
		{"escapes", `\*not bold\* and \<@111>`, "*not bold* and <@111>"},
		{"custom emoji", "thanks <:party_parrot:123456> <a:wave:42>", "thanks :party_parrot: :wave:"},
		{"emoji underscores do not pair", "_x <:a_b:1> y_", "x :a_b: y"},
		{"slash command", "use </refund:123>", "use /refund"},
		{"timestamp", "by <t:1733479200:F>", "by Friday, 6 December 2024 10:00 UTC"},
		{"timestamp default", "by <t:1733479200>", "by 6 December 2024 10:00 UTC"},
		{"timestamp relative", "<t:1733479200:R>", "6 December 2024 10:00 UTC"},
		{"nav", "see <id:guide>", "see Server Guide"},
		{"everyone stays text", "@everyone hi", "@everyone hi"},
		{"line breaks kept", "one\ntwo\n\nthree", "one\ntwo\n\nthree"},
		{"placeholder runes in input", "a\U000F0000b", "a\uFFFDb"},
		{"invalid utf-8", "a\xffb", "a\uFFFDb"},
		{"name with newline", "<@5>", "@A B"},
	}
	n := testNames
	n.users = map[string]string{"111": "Dana", "222": "Sam Lee", "5": "A\nB"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := plain(tc.in, n); got != tc.want {
				t.Errorf("plain(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestMentionIDs(t *testing.T) {
	t.Parallel()
	u, r, c := mentionIDs("<@1> <@!2> <@&3> <#4> `<@5>` <t:1:R>")
	if strings.Join(u, ",") != "1,2,5" || strings.Join(r, ",") != "3" || strings.Join(c, ",") != "4" {
		t.Fatalf("users %v roles %v channels %v", u, r, c)
	}
}

var leftToken = regexp.MustCompile(`<@!?[0-9]+>|<@&[0-9]+>|<#[0-9]+>`)

// FuzzPlain: whatever an agent types, the visitor's text is valid UTF-8,
// holds no placeholder rune, no more than the input plus the names, and
// no mention token outside code (where Discord shows it as typed).
func FuzzPlain(f *testing.F) {
	for _, s := range []string{
		"reply: Hi <@111>, see [policy](https://x.y) **now** ||secret||",
		"```\n<@111>\n```", "`<#444>`", "> quote <@&333>", "<t:99999999999999:F>", "- a\n  - b\n1. c",
		"_a <:x_y:1> b_", "[a](<b c>)", "\\", "<@1", "**<@111>**", "|| <@111> ||",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := plain(in, testNames)
		if !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8 for %q: %q", in, out)
		}
		if strings.ContainsFunc(out, isPlaceholder) {
			t.Fatalf("placeholder left for %q: %q", in, out)
		}
		if len(out) > 3*len(in)+64*strings.Count(in, "<") { // a bad byte becomes U+FFFD, 3 bytes
			t.Fatalf("output of %d bytes for %d", len(out), len(in))
		}
		if !strings.ContainsAny(in, "`\\*_~|[]()") && leftToken.MatchString(out) {
			// Without markup around them, every mention token was
			// read. (Markup can glue a token out of the text's own
			// pieces, " *<#0*>" reads "<#0>": text, not a mention.)
			t.Fatalf("mention token left for %q: %q", in, out)
		}
	})
}
