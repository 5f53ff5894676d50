package discord

import (
	"strings"
	"testing"

	"github.com/bwmarrin/discordgo"
)

func TestCustomID(t *testing.T) {
	t.Parallel()
	id := customID("claim", "dbf24043-83a6-47fb-b241-9865de3877c9")
	action, conv, ok := parseCustomID(id)
	if !ok || action != "claim" || conv != "dbf24043-83a6-47fb-b241-9865de3877c9" {
		t.Fatalf("%q read as %q %q %v", id, action, conv, ok)
	}
	if id := customID("claim", strings.Repeat("x", 90)); id != "" {
		t.Fatalf("a custom id over 100 characters: %q", id)
	}
	for _, bad := range []string{"", "claim:c", "chatrelay:", "chatrelay:claim", "chatrelay::c", "chatrelay:claim:", "other:claim:c"} {
		if _, _, ok := parseCustomID(bad); ok {
			t.Errorf("%q read as the relay's", bad)
		}
	}
}

func TestButtons(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                       string
		claimed, resolved          bool
		claimDisabled, resDisabled bool
	}{
		{"open", false, false, false, false},
		{"claimed", true, false, true, false},
		{"resolved", true, true, true, true},
		{"resolved unclaimed", false, true, true, true},
	} {
		row := buttons("c1", "Claim", "Resolve", "claim", "resolve", tc.claimed, tc.resolved)
		bs := row[0].(discordgo.ActionsRow).Components
		claim, resolve := bs[0].(discordgo.Button), bs[1].(discordgo.Button)
		if claim.Disabled != tc.claimDisabled || resolve.Disabled != tc.resDisabled ||
			claim.CustomID != "chatrelay:claim:c1" || resolve.CustomID != "chatrelay:resolve:c1" {
			t.Errorf("%s: %+v %+v", tc.name, claim, resolve)
		}
	}
	if buttons("", "Claim", "Resolve", "claim", "resolve", false, false) != nil {
		t.Error("buttons without a conversation")
	}
}

func TestWithStatus(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ content, status, want string }{
		{"", "🙋 Claimed by Dana", "**🙋 Claimed by Dana**"},
		{"<@&1> · conversation thread: <#2>", "🙋 Claimed by Dana", "**🙋 Claimed by Dana**\n<@&1> · conversation thread: <#2>"},
		{"**🙋 Claimed by Dana**\n<@&1>", "✅ Resolved by Sam_K", "**✅ Resolved by Sam\\_K**\n<@&1>"},
		{"**🙋 Claimed by Dana**", "", ""},
	} {
		if got := withStatus(tc.content, tc.status); got != tc.want {
			t.Errorf("withStatus(%q, %q) = %q, want %q", tc.content, tc.status, got, tc.want)
		}
	}
}
