package discord

import (
	"strings"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay"
)

func TestCustomID(t *testing.T) {
	t.Parallel()
	const conv, bot = "dbf24043-83a6-47fb-b241-9865de3877c9", "654aee418bc9a33b0e50d0ad"
	id := customID("claim", conv, bot)
	action, c, b, ok := parseCustomID(id)
	if !ok || action != "claim" || c != conv || b != bot {
		t.Fatalf("%q read as %q %q %q %v", id, action, c, b, ok)
	}
	// Too long with the chatbot: without it.
	long := strings.Repeat("x", 70)
	if id := customID("claim", long, bot); id != "chatrelay:claim:"+long {
		t.Fatalf("custom id %q", id)
	}
	if id := customID("claim", strings.Repeat("x", 90), ""); id != "" {
		t.Fatalf("a custom id over 100 characters: %q", id)
	}
	if id := customID("claim", "a:b", ""); id != "" {
		t.Fatalf("a conversation with a colon: %q", id)
	}
	for _, bad := range []string{"", "claim:c", "chatrelay:", "chatrelay:claim", "chatrelay::c", "chatrelay:claim:",
		"other:claim:c", "chatrelay:claim:c:b:x"} {
		if _, _, _, ok := parseCustomID(bad); ok {
			t.Errorf("%q read as the relay's", bad)
		}
	}
}

func TestButtons(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name                       string
		st                         relay.ConversationState
		claimDisabled, resDisabled bool
	}{
		{"open", relay.ConversationState{}, false, false},
		{"claimed", relay.ConversationState{ClaimedBy: "Dana", ClaimedAt: now}, true, false},
		{"resolved", relay.ConversationState{ClaimedAt: now, ResolvedAt: now}, true, true},
		{"resolved unclaimed", relay.ConversationState{ResolvedAt: now}, true, true},
	} {
		row := buttons("c1", "b1", tc.st)
		bs := row[0].(discordgo.ActionsRow).Components
		claim, resolve := bs[0].(discordgo.Button), bs[1].(discordgo.Button)
		if claim.Disabled != tc.claimDisabled || resolve.Disabled != tc.resDisabled ||
			claim.CustomID != "chatrelay:claim:c1:b1" || resolve.CustomID != "chatrelay:resolve:c1:b1" ||
			claim.Label != "Claim" || resolve.Label != "Resolve" {
			t.Errorf("%s: %+v %+v", tc.name, claim, resolve)
		}
	}
	if buttons("", "b", relay.ConversationState{}) != nil {
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
