package discordtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/bwmarrin/discordgo"
)

// The fake's guild, the bot's application and user, members and roles
// (for names and permissions), messages written by people (so that the
// bot can react to them), reactions and message edits.

// GuildID is the guild every channel of the fake belongs to.
const GuildID = "1310000000000000001"

// BotID and AppID are the bot user's and its application's ids, as the
// fake gateway's READY gives them.
const (
	BotID = "1310000000000000999"
	AppID = "1310000000000000998"
)

// Application flags that say whether the bot may read message content
// (https://discord.com/developers/docs/resources/application#application-object-application-flags).
const (
	AppFlagMessageContent        = 1 << 18
	AppFlagMessageContentLimited = 1 << 19
)

// BotPermissions is what the bot may do in every channel unless a test
// says otherwise: what chatrelay needs to mirror and take replies.
const BotPermissions = discordgo.PermissionViewChannel | discordgo.PermissionSendMessages |
	discordgo.PermissionEmbedLinks | discordgo.PermissionReadMessageHistory | discordgo.PermissionAddReactions |
	discordgo.PermissionCreatePublicThreads | discordgo.PermissionSendMessagesInThreads

type guild struct {
	id      string
	roles   []*discordgo.Role
	members map[string]*discordgo.Member
}

// Reaction is a reaction the bot added.
type Reaction struct {
	ChannelID, MessageID, Emoji string
}

// Edit is a message edit the bot made.
type Edit struct {
	ChannelID, MessageID string
	Content              *string         // nil: left as it was
	Components           json.RawMessage // nil: left as it was
	AllowedMentions      json.RawMessage
}

// guildLocked returns guild id, made on first use with its @everyone role
// (the guild's id) allowed BotPermissions, and the bot as a member.
func (s *Server) guildLocked(id string) *guild {
	if g := s.guilds[id]; g != nil {
		return g
	}
	g := &guild{id: id, members: map[string]*discordgo.Member{}}
	g.roles = append(g.roles, &discordgo.Role{ID: id, Name: "@everyone", Permissions: BotPermissions})
	g.members[BotID] = &discordgo.Member{GuildID: id, User: &discordgo.User{ID: BotID, Username: "chatrelay", Bot: true}}
	s.guilds[id] = g
	return g
}

// AddMember makes user a member of the guild, with a nickname and a
// guild avatar (each "" for none) and roles.
func (s *Server) AddMember(user discordgo.User, nick, avatar string, roles ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := user
	s.guildLocked(GuildID).members[user.ID] = &discordgo.Member{GuildID: GuildID, User: &u, Nick: nick, Avatar: avatar, Roles: roles}
}

// AddRole makes a role with permissions in the guild and returns its id.
func (s *Server) AddRole(name string, permissions int64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.newIDLocked()
	g := s.guildLocked(GuildID)
	g.roles = append(g.roles, &discordgo.Role{ID: id, Name: name, Permissions: permissions})
	return id
}

// SetEveryone sets what @everyone (so the bot, without roles) may do.
func (s *Server) SetEveryone(permissions int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.guildLocked(GuildID).roles[0].Permissions = permissions
}

// SetAppFlags sets the application's flags (AppFlagMessageContent by
// default; 0: the Message Content intent is off).
func (s *Server) SetAppFlags(flags int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.appFlags = flags
}

// Overwrite sets a permission overwrite on a channel for a role or (member
// true) a member.
func (s *Server) Overwrite(channelID, id string, member bool, allow, deny int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[channelID]
	if ch == nil {
		return
	}
	typ := discordgo.PermissionOverwriteTypeRole
	if member {
		typ = discordgo.PermissionOverwriteTypeMember
	}
	ch.overwrites = slices.DeleteFunc(ch.overwrites, func(o *discordgo.PermissionOverwrite) bool { return o.ID == id })
	ch.overwrites = append(ch.overwrites, &discordgo.PermissionOverwrite{ID: id, Type: typ, Allow: allow, Deny: deny})
}

// Write records a message written by a person (author) in a channel or
// thread, as Discord would on their client, and returns it: the bot can
// then react to it. The fake gateway's Say also dispatches it.
func (s *Server) Write(channelID string, author discordgo.User, content string) Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := Message{ID: s.newIDLocked(), ChannelID: channelID, Content: content, Author: author.ID, user: &author}
	s.messages = append(s.messages, m)
	return m
}

// Reactions returns the reactions the bot added, in order.
func (s *Server) Reactions() []Reaction {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reactions)
}

// Edits returns the message edits the bot made, in order.
func (s *Server) Edits() []Edit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.edits)
}

// Message returns message id as it is now (edits applied).
func (s *Server) Message(id string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.messages, func(m Message) bool { return m.ID == id })
	if i < 0 {
		return Message{}, false
	}
	return s.messages[i], true
}

// messageLocked is m as Discord answers it.
func (s *Server) messageLocked(m Message) *discordgo.Message {
	author := &discordgo.User{ID: BotID, Username: "chatrelay", Bot: true}
	switch {
	case m.user != nil:
		u := *m.user
		author = &u
	case m.Author != "":
		author = &discordgo.User{ID: m.Author}
	}
	dm := &discordgo.Message{ID: m.ID, ChannelID: m.ChannelID, WebhookID: m.WebhookID, Content: m.Content, Embeds: m.Embeds,
		Timestamp: s.clock.Now().UTC(), Author: author}
	if len(m.Components) > 0 {
		_ = json.Unmarshal(m.Components, &dm.Components)
	}
	return dm
}

// guildRouteLocked answers the routes of this file.
func (s *Server) guildRouteLocked(route string, req Request, parts []string) answer {
	switch route {
	case "get message":
		ch := s.channels[parts[1]]
		if ch == nil {
			return apiError(http.StatusNotFound, discordgo.ErrCodeUnknownChannel, "Unknown Channel")
		}
		i := slices.IndexFunc(s.messages, func(m Message) bool { return m.ID == parts[3] && m.ChannelID == parts[1] })
		if i < 0 {
			return apiError(http.StatusNotFound, discordgo.ErrCodeUnknownMessage, "Unknown Message")
		}
		return jsonAnswer(http.StatusOK, s.messageLocked(s.messages[i]))
	case "edit message":
		return s.editLocked(req, parts[1], parts[3])
	case "list messages":
		return s.listMessagesLocked(req, parts[1])
	case "add reaction":
		i := slices.IndexFunc(s.messages, func(m Message) bool { return m.ID == parts[3] && m.ChannelID == parts[1] })
		switch {
		case s.channels[parts[1]] == nil:
			return apiError(http.StatusNotFound, discordgo.ErrCodeUnknownChannel, "Unknown Channel")
		case i < 0:
			return apiError(http.StatusNotFound, discordgo.ErrCodeUnknownMessage, "Unknown Message")
		case parts[5] == "":
			return apiError(http.StatusBadRequest, discordgo.ErrCodeUnknownEmoji, "Unknown Emoji")
		}
		if !slices.Contains(s.reactions, Reaction{ChannelID: parts[1], MessageID: parts[3], Emoji: parts[5]}) {
			s.reactions = append(s.reactions, Reaction{ChannelID: parts[1], MessageID: parts[3], Emoji: parts[5]})
		}
		return answer{status: http.StatusNoContent}
	case "get member":
		g := s.guilds[parts[1]]
		if g == nil {
			return apiError(http.StatusNotFound, discordgo.ErrCodeUnknownGuild, "Unknown Guild")
		}
		m := g.members[parts[3]]
		if m == nil {
			return apiError(http.StatusNotFound, discordgo.ErrCodeUnknownMember, "Unknown Member")
		}
		return jsonAnswer(http.StatusOK, m)
	case "get roles":
		g := s.guilds[parts[1]]
		if g == nil {
			return apiError(http.StatusNotFound, discordgo.ErrCodeUnknownGuild, "Unknown Guild")
		}
		return jsonAnswer(http.StatusOK, g.roles)
	case "get guild":
		g := s.guilds[parts[1]]
		if g == nil {
			return apiError(http.StatusNotFound, discordgo.ErrCodeUnknownGuild, "Unknown Guild")
		}
		return jsonAnswer(http.StatusOK, &discordgo.Guild{ID: g.id, Name: "guild", OwnerID: "1310000000000000002", Roles: g.roles})
	case "get application":
		return jsonAnswer(http.StatusOK, map[string]any{"id": AppID, "name": "chatrelay", "flags": s.appFlags,
			"bot": map[string]any{"id": BotID, "username": "chatrelay", "bot": true}})
	case "get user":
		return jsonAnswer(http.StatusOK, &discordgo.User{ID: BotID, Username: "chatrelay", Bot: true})
	}
	return apiError(http.StatusNotFound, 0, "404: Not Found")
}

// editLocked edits a message the bot posted: the fields sent replace
// theirs, within Discord's limits.
func (s *Server) editLocked(req Request, channelID, messageID string) answer {
	if s.channels[channelID] == nil {
		return apiError(http.StatusNotFound, discordgo.ErrCodeUnknownChannel, "Unknown Channel")
	}
	i := slices.IndexFunc(s.messages, func(m Message) bool { return m.ID == messageID && m.ChannelID == channelID })
	if i < 0 {
		return apiError(http.StatusNotFound, discordgo.ErrCodeUnknownMessage, "Unknown Message")
	}
	if s.messages[i].Author != "" || s.messages[i].WebhookID != "" {
		return apiError(http.StatusForbidden, discordgo.ErrCodeCannotEditFromAnotherUser, "Cannot edit a message authored by another user")
	}
	var body struct {
		Content         *string                   `json:"content"`
		Embeds          []*discordgo.MessageEmbed `json:"embeds"`
		Components      json.RawMessage           `json:"components"`
		AllowedMentions json.RawMessage           `json:"allowed_mentions"`
	}
	if json.Unmarshal(req.Body, &body) != nil {
		return invalidJSON()
	}
	m := &s.messages[i]
	check := messageBody{Content: m.Content, Embeds: m.Embeds, AllowedMentions: body.AllowedMentions}
	if body.Content != nil {
		check.Content = *body.Content
	}
	if body.Embeds != nil {
		check.Embeds = body.Embeds
	}
	if _, bad := checkMessage(&check); bad != nil {
		return *bad
	}
	m.Content, m.Embeds = check.Content, check.Embeds
	if len(body.Components) > 0 {
		m.Components = body.Components
		if string(body.Components) == "null" {
			m.Components = nil
		}
	}
	s.edits = append(s.edits, Edit{ChannelID: channelID, MessageID: messageID, Content: body.Content,
		Components: body.Components, AllowedMentions: body.AllowedMentions})
	return jsonAnswer(http.StatusOK, s.messageLocked(*m))
}

// Permissions computes what member userID may do in channelID, as Discord
// does: the guild's @everyone and the member's roles, then the channel's
// overwrites (@everyone's, the roles', the member's); a thread takes its
// parent's. It is for tests to check a probe against.
func (s *Server) Permissions(channelID, userID string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[channelID]
	if ch == nil {
		return 0, fmt.Errorf("no channel %s", channelID)
	}
	if p := s.channels[ch.parent]; p != nil {
		ch = p
	}
	g := s.guilds[ch.guild]
	m := g.members[userID]
	if m == nil {
		return 0, fmt.Errorf("no member %s", userID)
	}
	var perms int64
	for _, r := range g.roles {
		if r.ID == g.id || slices.Contains(m.Roles, r.ID) {
			perms |= r.Permissions
		}
	}
	if perms&discordgo.PermissionAdministrator != 0 {
		return ^int64(0), nil
	}
	apply := func(o *discordgo.PermissionOverwrite) { perms = perms&^o.Deny | o.Allow }
	for _, o := range ch.overwrites {
		if o.ID == g.id {
			apply(o)
		}
	}
	var allow, deny int64
	for _, o := range ch.overwrites {
		if o.Type == discordgo.PermissionOverwriteTypeRole && slices.Contains(m.Roles, o.ID) {
			allow, deny = allow|o.Allow, deny|o.Deny
		}
	}
	perms = perms&^deny | allow
	for _, o := range ch.overwrites {
		if o.Type == discordgo.PermissionOverwriteTypeMember && o.ID == userID {
			apply(o)
		}
	}
	return perms, nil
}

// listMessagesLocked answers GET /channels/{id}/messages with after and
// limit (1 to 100, default 50) as Discord does: the oldest limit messages
// after the id given, newest first.
func (s *Server) listMessagesLocked(req Request, channelID string) answer {
	if s.channels[channelID] == nil {
		return apiError(http.StatusNotFound, discordgo.ErrCodeUnknownChannel, "Unknown Channel")
	}
	limit := 50
	if v := req.Query.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return formError([]string{"limit: must be between 1 and 100"})
		}
		limit = n
	}
	after := req.Query.Get("after")
	if after == "" || req.Query.Has("before") || req.Query.Has("around") {
		return formError([]string{"the fake reads history with after only"})
	}
	newer := func(a, b string) bool { return len(a) > len(b) || len(a) == len(b) && a > b }
	var out []*discordgo.Message
	for _, m := range s.messages {
		if m.ChannelID == channelID && newer(m.ID, after) {
			out = append(out, s.messageLocked(m))
		}
	}
	slices.SortFunc(out, func(a, b *discordgo.Message) int {
		switch {
		case newer(a.ID, b.ID):
			return 1
		case newer(b.ID, a.ID):
			return -1
		}
		return 0
	})
	out = out[:min(limit, len(out))]
	slices.Reverse(out)
	return jsonAnswer(http.StatusOK, out)
}
