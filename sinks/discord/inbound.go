package discord

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay"
)

// gwMessage is a MESSAGE_CREATE, MESSAGE_UPDATE or MESSAGE_DELETE as the
// gateway reads it.
type gwMessage struct {
	ID        string      `json:"id"`
	ChannelID string      `json:"channel_id"`
	GuildID   string      `json:"guild_id"`
	Author    *gwUser     `json:"author"`
	Member    *gwMember   `json:"member"`
	Content   string      `json:"content"`
	Type      int         `json:"type"`
	WebhookID string      `json:"webhook_id"`
	Mentions  []gwMention `json:"mentions"`
}

// Message types a person writes: a plain message and a reply to another
// (https://discord.com/developers/docs/resources/message#message-object-message-types).
// The others are the system's (a thread created, a pin, a member joined).
const (
	messageDefault = 0
	messageReply   = 19
)

// message hands one message dispatch to the Inbox.
func (g *Gateway) message(ctx context.Context, in inbound) {
	var m gwMessage
	if err := json.Unmarshal(in.raw, &m); err != nil || m.ID == "" || m.ChannelID == "" {
		g.log.Warn("gateway message not understood; skipped", "type", in.typ)
		return
	}
	if m.GuildID == "" {
		return // a direct message: no relay thread is one
	}
	tm := relay.ThreadMessage{
		Sink: g.s.cfg.Name, Platform: "discord",
		// A thread is a channel: its messages' channel is the thread.
		Channel: m.ChannelID, Thread: m.ChannelID, MessageID: m.ID,
		Edit: in.typ != "MESSAGE_CREATE",
	}
	if m.Author != nil {
		tm.AgentID = m.Author.ID
		self := g.self.Load()
		tm.Bot = m.Author.Bot || m.Author.System || m.WebhookID != "" || (self != nil && *self == m.Author.ID)
	}
	if !tm.Edit && !tm.Bot {
		if m.Author == nil || (m.Type != messageDefault && m.Type != messageReply) {
			g.log.Debug("system message in a channel; skipped", "message_id", m.ID, "message_type", m.Type)
			return
		}
		tm.Text = plain(m.Content, resolved{})
		if _, forVisitor := g.rule.Visitor(tm.Text); forVisitor {
			// Worth naming: who wrote it, and whom it mentions. The
			// gateway sees every message of the guild; a note, or a
			// message in any other channel, costs no lookup.
			w := g.names.member(ctx, m.GuildID, *m.Author, m.Member)
			tm.AgentName, tm.AgentAvatar = w.name, w.avatar
			tm.Text = plain(m.Content, g.names.resolve(ctx, m.GuildID, m.Content, m.Mentions))
		}
	}
	g.accept(ctx, tm)
}

// Waits between attempts to store a thread message.
const (
	acceptBackoff    = 200 * time.Millisecond
	acceptMaxBackoff = 10 * time.Second
)

// accept hands m to the Inbox until it is stored (or found not to be a
// reply): the gateway sends nothing twice, so a store that cannot take it
// now is asked again, until ctx ends.
func (g *Gateway) accept(ctx context.Context, m relay.ThreadMessage) {
	wait := acceptBackoff
	last := ""
	for attempt := 1; ; attempt++ {
		_, err := g.deps.Inbox.Accept(ctx, m)
		if err == nil {
			if attempt > 1 {
				g.log.Info("thread message stored after retrying", "message_id", m.MessageID, "attempt", attempt)
			}
			return
		}
		err = g.s.scrub.Error(err)
		if errors.Is(err, relay.ErrClosed) || ctx.Err() != nil {
			g.log.Error("a thread message could not be stored before the relay stopped; it does not reach the visitor",
				"message_id", m.MessageID, "thread", m.Thread, "agent_id", m.AgentID, "err", err)
			return
		}
		if text := err.Error(); text != last {
			g.log.Warn("cannot store a thread message; retrying", "message_id", m.MessageID, "attempt", attempt, "err", err)
			last = text
		}
		if g.sleep(ctx, wait) != nil {
			g.log.Error("a thread message could not be stored before the relay stopped; it does not reach the visitor",
				"message_id", m.MessageID, "thread", m.Thread, "agent_id", m.AgentID, "err", err)
			return
		}
		wait = min(2*wait, acceptMaxBackoff)
	}
}

// Interaction callback and message flags
// (https://discord.com/developers/docs/interactions/receiving-and-responding).
const ephemeral = 64 // a follow-up only the clicker sees

// clickRetryFor bounds how long a click is retried while the store cannot
// take it: the clicker is waiting, and the interaction's token lasts 15
// minutes.
const clickRetryFor = time.Minute

// click handles an INTERACTION_CREATE: a click on the Claim or Resolve
// button of a message the relay posted. It answers Discord at once (a
// deferred update: Discord requires an answer within 3 s, and the
// message is edited once the status changed), then records the click
// (Inbox.Click: a compare-and-set, so that of two agents clicking at once
// one wins) and tells a clicker who came second, in a message only they
// see, who has the conversation.
func (g *Gateway) click(ctx context.Context, in inbound) {
	var i discordgo.Interaction
	if err := json.Unmarshal(in.raw, &i); err != nil || i.ID == "" || i.Token == "" {
		g.log.Warn("gateway interaction not understood; skipped")
		return
	}
	if i.Type != discordgo.InteractionMessageComponent {
		return // a command or a modal: not the relay's
	}
	data := i.MessageComponentData()
	action, conv, chatbot, ok := parseCustomID(data.CustomID)
	if !ok {
		return // another app's button on the bot's message? not the relay's
	}
	if !g.inChannel(&i, in.raw) {
		// The bot's button in another channel: another two-way sink's on
		// the same bot token (its own session takes it: no answer here,
		// or the two would race to answer), or a channel this sink no
		// longer posts to.
		g.log.Debug("click outside the sink's channel; not taken", "channel", i.ChannelID, "conversation_id", conv)
		return
	}
	var user gwUser
	var member *gwMember
	switch {
	case i.Member != nil && i.Member.User != nil:
		u := i.Member.User
		user = gwUser{ID: u.ID, Username: u.Username, GlobalName: u.GlobalName, Avatar: u.Avatar}
		member = &gwMember{Nick: i.Member.Nick, Avatar: i.Member.Avatar}
	case i.User != nil:
		user = gwUser{ID: i.User.ID, Username: i.User.Username, GlobalName: i.User.GlobalName, Avatar: i.User.Avatar}
	}
	log := g.log.With("conversation_id", conv, "agent_id", user.ID, "action", action)
	if err := g.respond(ctx, &i, &discordgo.InteractionResponse{Type: discordgo.InteractionResponseDeferredMessageUpdate}); err != nil {
		log.Warn("could not answer a click in time; Discord shows the clicker that it failed", "err", err)
	}
	c := relay.Click{Sink: g.s.cfg.Name, Platform: "discord", Action: action, ConversationID: conv, ChatbotID: chatbot,
		Agent: relay.Agent{ID: user.ID, Name: g.names.member(ctx, i.GuildID, user, member).name}, Channel: i.ChannelID}
	if i.Message != nil {
		c.MessageID = i.Message.ID
	}
	clicked, err := g.record(ctx, c)
	switch {
	case errors.Is(err, relay.ErrNotAClick):
		log.Info("click not taken", "err", err)
		g.tell(ctx, &i, "This button no longer does anything here.")
	case err != nil:
		log.Error("a click could not be recorded; the clicker was told to try again", "err", g.s.scrub.Error(err))
		g.tell(ctx, &i, "Your click could not be recorded just now; try again in a moment.")
	case !clicked.Won:
		g.tell(ctx, &i, "Someone was first: "+clicked.State.Status()+".")
	}
}

// inChannel reports whether interaction i (raw, as the gateway sent it)
// was on a message in the sink's channel or in a thread of it (a forum's
// post, a thread's message): the partial channel object an interaction
// carries names the thread's parent.
func (g *Gateway) inChannel(i *discordgo.Interaction, raw json.RawMessage) bool {
	if i.ChannelID == g.s.cfg.ChannelID {
		return true
	}
	var where struct {
		Channel struct {
			ParentID string `json:"parent_id"`
		} `json:"channel"`
	}
	return json.Unmarshal(raw, &where) == nil && where.Channel.ParentID == g.s.cfg.ChannelID
}

// record hands a click to the Inbox, asking again while the store cannot
// take it (for clickRetryFor at most).
func (g *Gateway) record(ctx context.Context, c relay.Click) (relay.Clicked, error) {
	ctx, cancel := context.WithTimeout(ctx, clickRetryFor)
	defer cancel()
	wait := acceptBackoff
	for {
		clicked, err := g.deps.Inbox.Click(ctx, c)
		if err == nil || errors.Is(err, relay.ErrNotAClick) || errors.Is(err, relay.ErrClosed) {
			return clicked, err
		}
		if g.sleep(ctx, wait) != nil {
			return clicked, err
		}
		wait = min(2*wait, acceptMaxBackoff)
	}
}

// respond answers an interaction (its callback).
func (g *Gateway) respond(ctx context.Context, i *discordgo.Interaction, r *discordgo.InteractionResponse) error {
	if validID(i.ID) == "" {
		return errors.New("interaction without an id")
	}
	return g.s.do(ctx, nil, call{op: "answer interaction", method: http.MethodPost,
		url: g.s.route("interactions", i.ID, i.Token, "callback"), payload: r}, nil)
}

// tell sends the clicker a message only they see.
func (g *Gateway) tell(ctx context.Context, i *discordgo.Interaction, text string) {
	if validID(i.AppID) == "" {
		return
	}
	msg := struct {
		Content         string                            `json:"content"`
		Flags           int                               `json:"flags"`
		AllowedMentions *discordgo.MessageAllowedMentions `json:"allowed_mentions"`
	}{Content: text, Flags: ephemeral, AllowedMentions: g.s.allowedMentions(false)}
	if err := g.s.do(ctx, nil, call{op: "follow up an interaction", method: http.MethodPost,
		url: g.s.route("webhooks", i.AppID, i.Token), payload: msg}, nil); err != nil {
		g.log.Warn("could not tell the clicker", "err", err)
	}
}
