package discord

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay"
)

// What check-config --probe checks of a bot (bot mode): that it can read
// the channel and do there what the relay does (post the turns, start a
// thread per conversation and post in it), and, when the sink takes
// replies, that it can add the ✅ reaction and read what agents write:
// the Message Content intent switched on for the application. Each
// missing piece is named with where to change it.

// Permissions the bot needs in its channel to mirror, and to take replies.
var (
	mirrorPermissions = []permission{
		{discordgo.PermissionViewChannel, "View Channel"},
		{discordgo.PermissionSendMessages, "Send Messages"},
		{discordgo.PermissionEmbedLinks, "Embed Links"},
		{discordgo.PermissionReadMessageHistory, "Read Message History"},
		{discordgo.PermissionCreatePublicThreads, "Create Public Threads"},
		{discordgo.PermissionSendMessagesInThreads, "Send Messages in Threads"},
	}
	replyPermissions = []permission{
		{discordgo.PermissionAddReactions, "Add Reactions"},
	}
)

type permission struct {
	bit  int64
	name string
}

// Application flags that let a bot read message content
// (https://discord.com/developers/docs/resources/application#application-object-application-flags):
// GATEWAY_MESSAGE_CONTENT (verified apps in 100 servers or more) and
// GATEWAY_MESSAGE_CONTENT_LIMITED (the Developer Portal's switch for the
// others).
const (
	appFlagMessageContent        = 1 << 18
	appFlagMessageContentLimited = 1 << 19
)

// probeBot checks the bot's channel, its permissions there and, with
// replies, the Message Content intent.
func (s *Sink) probeBot(ctx context.Context, replies bool) error {
	ch, err := s.readChannel(ctx, nil)
	if err != nil {
		return err
	}
	var app struct {
		ID    string `json:"id"`
		Flags int64  `json:"flags"`
		Bot   struct {
			ID string `json:"id"`
		} `json:"bot"`
	}
	if err := s.do(ctx, nil, call{op: "get application", method: http.MethodGet, url: s.route("applications", "@me")}, &app); err != nil {
		return err
	}
	var problems []string
	if replies && app.Flags&(appFlagMessageContent|appFlagMessageContentLimited) == 0 {
		problems = append(problems, "the Message Content intent is off, so agents' replies would arrive empty: switch on "+
			"Message Content Intent (Developer Portal → your application → Bot → Privileged Gateway Intents)")
	}
	need := mirrorPermissions
	if replies {
		need = append(slices.Clone(need), replyPermissions...)
	}
	if missing, err := s.missingPermissions(ctx, ch, app.Bot.ID, need); err != nil {
		return err
	} else if len(missing) > 0 {
		problems = append(problems, fmt.Sprintf("the bot lacks %s in the channel: give them to its role (Server Settings → Roles) "+
			"or in the channel's settings → Permissions", strings.Join(missing, ", ")))
	}
	if len(problems) > 0 {
		return relay.Broken(s.errorf("%s", strings.Join(problems, "; ")), relay.ReasonAuth)
	}
	return nil
}

// missingPermissions names the permissions of need that the bot lacks in
// ch, computed as Discord does: @everyone and the member's roles, an
// administrator has all, then the channel's overwrites for @everyone, the
// member's roles and the member.
func (s *Sink) missingPermissions(ctx context.Context, ch *discordgo.Channel, botID string, need []permission) ([]string, error) {
	if validID(ch.GuildID) == "" || validID(botID) == "" {
		return nil, nil // not a guild channel, or an answer without ids: nothing to compute from
	}
	var member discordgo.Member
	if err := s.do(ctx, nil, call{op: "get bot member", method: http.MethodGet,
		url: s.route("guilds", ch.GuildID, "members", botID)}, &member); err != nil {
		return nil, err
	}
	var roles []discordgo.Role
	if err := s.do(ctx, nil, call{op: "get roles", method: http.MethodGet, url: s.route("guilds", ch.GuildID, "roles")}, &roles); err != nil {
		return nil, err
	}
	perms := permissions(ch.GuildID, botID, member.Roles, roles, ch.PermissionOverwrites)
	var missing []string
	for _, p := range need {
		if perms&p.bit == 0 {
			missing = append(missing, p.name)
		}
	}
	return missing, nil
}

// permissions computes a member's permissions in a channel
// (https://discord.com/developers/docs/topics/permissions#permission-overwrites).
func permissions(guildID, userID string, memberRoles []string, roles []discordgo.Role, overwrites []*discordgo.PermissionOverwrite) int64 {
	var perms int64
	for _, r := range roles {
		if r.ID == guildID || slices.Contains(memberRoles, r.ID) {
			perms |= r.Permissions
		}
	}
	if perms&discordgo.PermissionAdministrator != 0 {
		return ^int64(0) // every permission (discordgo.PermissionAll lacks the newer ones)
	}
	for _, o := range overwrites {
		if o != nil && o.ID == guildID {
			perms = perms&^o.Deny | o.Allow
		}
	}
	var allow, deny int64
	for _, o := range overwrites {
		if o != nil && o.Type == discordgo.PermissionOverwriteTypeRole && slices.Contains(memberRoles, o.ID) {
			allow, deny = allow|o.Allow, deny|o.Deny
		}
	}
	perms = perms&^deny | allow
	for _, o := range overwrites {
		if o != nil && o.Type == discordgo.PermissionOverwriteTypeMember && o.ID == userID {
			perms = perms&^o.Deny | o.Allow
		}
	}
	return perms
}
