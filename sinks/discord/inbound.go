package discord

import (
	"context"
	"encoding/json"
	"errors"
	"time"

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
		w := g.names.member(ctx, m.GuildID, *m.Author, m.Member)
		tm.AgentName, tm.AgentAvatar = w.name, w.avatar
		tm.Text = plain(m.Content, g.names.resolve(ctx, m.GuildID, m.Content, m.Mentions))
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
		t := g.s.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			g.log.Error("a thread message could not be stored before the relay stopped; it does not reach the visitor",
				"message_id", m.MessageID, "thread", m.Thread, "agent_id", m.AgentID, "err", err)
			return
		case <-t.Chan():
		}
		wait = min(2*wait, acceptMaxBackoff)
	}
}

// click handles a button click (INTERACTION_CREATE).
func (g *Gateway) click(ctx context.Context, in inbound) {
	g.log.Debug("interaction received", "type", in.typ)
}
