package discord

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"
)

// Who answered the visitor, and the names a message's mentions stand
// for, as Discord shows them in the guild: a member's nickname, else
// their global display name, else their username (SPEC §10), and their
// avatar (the guild's one if they set one). The gateway's messages carry
// the author's member and the mentioned users' members; what they lack
// (a role's or channel's name, a member the event left out) is looked up
// once and kept for lookupTTL.

// who is a guild member as the visitor sees them.
type who struct {
	name   string
	avatar string
}

// gwUser, gwMember and gwMention are the parts of a dispatch the gateway
// reads (discordgo's User has no member, which a mention carries).
type gwUser struct {
	ID         string `json:"id"`
	Username   string `json:"username"`
	GlobalName string `json:"global_name"`
	Avatar     string `json:"avatar"`
	Bot        bool   `json:"bot"`
	System     bool   `json:"system"`
}

type gwMember struct {
	Nick   string  `json:"nick"`
	Avatar string  `json:"avatar"`
	User   *gwUser `json:"user"`
}

type gwMention struct {
	gwUser
	Member *gwMember `json:"member"`
}

// whoOf is a member as shown in guild: nick, else global name, else
// username; the guild avatar, else the user's, else Discord's default.
func whoOf(guild string, u gwUser, m *gwMember) who {
	w := who{name: u.Username}
	if u.GlobalName != "" {
		w.name = u.GlobalName
	}
	du := &discordgo.User{ID: u.ID, Username: u.Username, Avatar: u.Avatar, Discriminator: "0"}
	w.avatar = du.AvatarURL(avatarSize)
	if m != nil {
		if m.Nick != "" {
			w.name = m.Nick
		}
		if m.Avatar != "" && guild != "" {
			dm := &discordgo.Member{GuildID: guild, Avatar: m.Avatar, User: du}
			w.avatar = dm.AvatarURL(avatarSize)
		}
	}
	w.name = oneLine(w.name)
	return w
}

// avatarSize is the size of the avatar image asked of Discord's CDN.
const avatarSize = "128"

// Lookup cache bounds.
const (
	lookupTTL     = 10 * time.Minute
	lookupEntries = 2048
	lookupTimeout = 3 * time.Second
	// maxLookups bounds the names looked up for one message's mentions
	// (the author's member comes with the message): a message may hold a
	// couple of hundred mentions of anything, and every lookup is a REST
	// request on the bot's rate limit. The rest show as Discord's
	// placeholders (@unknown-user, #unknown, @unknown-role).
	maxLookups = 10
)

// lookups finds and keeps members', roles' and channels' names.
type lookups struct {
	s   *Sink
	log *slog.Logger

	mu       sync.Mutex
	members  map[string]cached[who]               // guild/user
	roles    map[string]cached[map[string]string] // guild → role id → name
	channels map[string]cached[string]            // channel id → name
}

type cached[V any] struct {
	v  V
	at time.Time
}

func newLookups(s *Sink, log *slog.Logger) *lookups {
	return &lookups{s: s, log: log, members: map[string]cached[who]{},
		roles: map[string]cached[map[string]string]{}, channels: map[string]cached[string]{}}
}

// get returns m[k] if it is fresh.
func get[V any](l *lookups, m map[string]cached[V], k string) (V, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := m[k]
	if !ok || l.s.clock.Since(c.at) >= lookupTTL {
		var zero V
		return zero, false
	}
	return c.v, true
}

// put keeps v under k, making room first: the stale entries go, else
// any one.
func put[V any](l *lookups, m map[string]cached[V], k string, v V) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.s.clock.Now()
	if _, ok := m[k]; !ok && len(m) >= lookupEntries {
		for key, c := range m {
			if now.Sub(c.at) >= lookupTTL {
				delete(m, key)
			}
		}
		for key := range m {
			if len(m) < lookupEntries {
				break
			}
			delete(m, key)
		}
	}
	m[k] = cached[V]{v: v, at: now}
}

// member is a member of guild as shown there. m is what the dispatch said
// of them (nil: nothing), which is kept; without it, Discord is asked.
func (l *lookups) member(ctx context.Context, guild string, u gwUser, m *gwMember) who {
	key := guild + "/" + u.ID
	if m != nil {
		w := whoOf(guild, u, m)
		put(l, l.members, key, w)
		return w
	}
	if w, ok := get(l, l.members, key); ok {
		return w
	}
	var dm struct {
		gwMember
		User gwUser `json:"user"`
	}
	if guild != "" && validID(u.ID) != "" && l.fetch(ctx, "get member", &dm, "guilds", guild, "members", u.ID) {
		if dm.User.ID == "" {
			dm.User = u
		}
		w := whoOf(guild, dm.User, &dm.gwMember)
		put(l, l.members, key, w)
		return w
	}
	return whoOf(guild, u, nil) // not kept: asked again next time
}

// roleName is the name of role id in guild.
func (l *lookups) roleName(ctx context.Context, guild, id string) string {
	roles, ok := get(l, l.roles, guild)
	if !ok && validID(guild) != "" {
		var list []discordgo.Role
		if l.fetch(ctx, "get roles", &list, "guilds", guild, "roles") {
			roles = make(map[string]string, len(list))
			for _, r := range list {
				roles[r.ID] = r.Name
			}
			put(l, l.roles, guild, roles)
		}
	}
	return roles[id]
}

// channelName is the name of channel id.
func (l *lookups) channelName(ctx context.Context, id string) string {
	if name, ok := get(l, l.channels, id); ok {
		return name
	}
	var ch discordgo.Channel
	if validID(id) == "" || !l.fetch(ctx, "get channel", &ch, "channels", id) {
		return ""
	}
	put(l, l.channels, id, ch.Name)
	return ch.Name
}

// fetch GETs an API route into out; false when Discord did not answer it.
func (l *lookups) fetch(ctx context.Context, op string, out any, route ...string) bool {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	if err := l.s.do(ctx, nil, call{op: op, method: http.MethodGet, url: l.s.route(route...)}, out); err != nil {
		l.log.DebugContext(ctx, "discord lookup failed; the name is left unknown", "op", op, "err", err)
		return false
	}
	return true
}

// resolved is a message's mentions, resolved: the names plain writes.
type resolved struct{ users, roles, channels map[string]string }

func (r resolved) user(id string) string    { return r.users[id] }
func (r resolved) role(id string) string    { return r.roles[id] }
func (r resolved) channel(id string) string { return r.channels[id] }

// resolve finds the names of content's mentions: those the message's
// mentions carry or the cache holds, and at most maxLookups more asked of
// Discord.
func (l *lookups) resolve(ctx context.Context, guild, content string, mentions []gwMention) resolved {
	r := resolved{users: map[string]string{}, roles: map[string]string{}, channels: map[string]string{}}
	budget := maxLookups
	ask := func() bool {
		if budget == 0 {
			return false
		}
		budget--
		return true
	}
	users, roles, channels := mentionIDs(content)
	for _, id := range users {
		if _, ok := r.users[id]; ok {
			continue
		}
		u, m := mentioned(id, mentions)
		if m != nil {
			r.users[id] = l.member(ctx, guild, u, m).name
		} else if w, ok := get(l, l.members, guild+"/"+id); ok {
			r.users[id] = w.name
		} else if ask() {
			r.users[id] = l.member(ctx, guild, u, nil).name
		} else if u.Username != "" {
			r.users[id] = whoOf(guild, u, nil).name
		}
	}
	for _, id := range roles {
		if _, ok := r.roles[id]; ok {
			continue
		}
		if known, ok := get(l, l.roles, guild); ok {
			r.roles[id] = known[id]
		} else if ask() {
			r.roles[id] = l.roleName(ctx, guild, id)
		}
	}
	for _, id := range channels {
		if _, ok := r.channels[id]; ok {
			continue
		}
		if name, ok := get(l, l.channels, id); ok {
			r.channels[id] = name
		} else if ask() {
			r.channels[id] = l.channelName(ctx, id)
		}
	}
	return r
}

// mentioned is user id as the message's mentions show them, with their
// member (nil when the mentions do not say).
func mentioned(id string, mentions []gwMention) (gwUser, *gwMember) {
	for _, m := range mentions {
		if m.ID == id {
			return m.gwUser, m.Member
		}
	}
	return gwUser{ID: id}, nil
}
