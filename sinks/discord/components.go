package discord

import (
	"strings"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay"
)

// Claim and Resolve: an escalation the bot posts to a two-way sink carries
// two buttons (components; only a bot's own messages can have them). A
// click comes through the gateway as an interaction whose custom id names
// the action and the conversation, so that the click needs no lookup to
// know what it is about. Once the conversation's state changed, the
// message clicked (and the conversation's root message, where the thread
// starts) shows the status in its first line, and the buttons that no
// longer apply are disabled.

// customIDPrefix starts the custom id of the relay's buttons.
const customIDPrefix = "chatrelay:"

// maxCustomID is Discord's limit on a component's custom id
// (https://discord.com/developers/docs/interactions/message-components#button-object).
const maxCustomID = 100

// customID is the custom id of a button:
// "chatrelay:<action>:<conversation>:<chatbot>", without the chatbot when
// it would not fit; "" when even that would not.
func customID(action, conversation, chatbot string) string {
	if conversation == "" || strings.Contains(conversation, ":") {
		return ""
	}
	id := customIDPrefix + action + ":" + conversation
	if chatbot != "" && !strings.Contains(chatbot, ":") && len(id)+1+len(chatbot) <= maxCustomID {
		id += ":" + chatbot
	}
	if len(id) > maxCustomID {
		return ""
	}
	return id
}

// parseCustomID reads a custom id the relay made.
func parseCustomID(id string) (action, conversation, chatbot string, ok bool) {
	rest, ok := strings.CutPrefix(id, customIDPrefix)
	if !ok {
		return "", "", "", false
	}
	parts := strings.Split(rest, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return "", "", "", false
	}
	if len(parts) == 3 {
		chatbot = parts[2]
	}
	return parts[0], parts[1], chatbot, true
}

// buttons is the row of an escalation's buttons for a conversation of a
// chatbot; the Claim button is disabled once someone claimed it, both
// once it is resolved. nil when the conversation's id cannot be put in a
// button.
func buttons(conversation, chatbot string, st relay.ConversationState) []discordgo.MessageComponent {
	claim, resolve := customID(relay.ActionClaim, conversation, chatbot), customID(relay.ActionResolve, conversation, chatbot)
	if claim == "" || resolve == "" {
		return nil
	}
	return []discordgo.MessageComponent{discordgo.ActionsRow{Components: []discordgo.MessageComponent{
		discordgo.Button{Label: relay.ClaimButton, Style: discordgo.PrimaryButton, CustomID: claim,
			Disabled: st.Claimed() || st.Resolved(), Emoji: &discordgo.ComponentEmoji{Name: "🙋"}},
		discordgo.Button{Label: relay.ResolveButton, Style: discordgo.SuccessButton, CustomID: resolve,
			Disabled: st.Resolved(), Emoji: &discordgo.ComponentEmoji{Name: "✅"}},
	}}}
}

// statusPrefixes start the status line a message shows once its
// conversation was claimed or resolved.
var statusPrefixes = []string{relay.ClaimedBy, relay.ResolvedBy}

// withStatus is content with status as its first line, in place of the
// status it showed before (if any).
func withStatus(content, status string) string {
	first, rest, _ := strings.Cut(content, "\n")
	for _, p := range statusPrefixes {
		if strings.HasPrefix(strings.TrimPrefix(first, "**"), p) {
			content = rest
			break
		}
	}
	if status == "" {
		return content
	}
	status = "**" + literal(status) + "**"
	if content == "" {
		return status
	}
	return status + "\n" + content
}
