package discord

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay"
)

// Follow-ups are what the relay posts to a two-way sink besides Chat
// Data's events (relay.TopicFollowup), each through the sink's
// dispatcher, paced and retried like every post:
//   - reply-delivered: a ✅ reaction on the agent's message, once Chat
//     Data accepted the reply;
//   - reply-held: a message in the thread, in reply to the agent's, that
//     the reply is not delivered yet, why, that it is kept and sent later
//     (the ✅ says when), and where an operator sees why; once per reply;
//   - reply-dead: a message in the thread, in reply to the agent's, that
//     the reply did not reach the visitor, why, and the command that sends
//     it again;
//   - status: the message whose button was clicked, and the conversation's
//     root message (where its thread starts), show the conversation's
//     status in their first line; the buttons that no longer apply are
//     disabled;
//   - repage: an escalation nobody claimed, posted again in the channel
//     with the sink's mention, a link to the thread and the buttons.

// reactionDelivered is the reaction on an agent's message that reached
// the visitor.
const reactionDelivered = "✅"

// followupTurn is the Turn of a follow-up: one post, outside the books
// (what it acts on is named in it).
func (s *Sink) followupTurn(ev *relay.Event) (*relay.Turn, error) {
	f := ev.Followup
	if f == nil {
		return nil, relay.Permanent(s.errorf("follow-up event without its follow-up"), relay.ReasonOther)
	}
	if !s.bot() {
		return nil, relay.Permanent(s.errorf("%s follow-up: a webhook sink takes no replies", f.Kind), relay.ReasonClientError)
	}
	rep := &relay.Report{}
	var act func(ctx context.Context) error
	switch f.Kind {
	case relay.FollowupDelivered:
		act = func(ctx context.Context) error { return s.react(ctx, rep, f) }
	case relay.FollowupDead:
		act = func(ctx context.Context) error { return s.notDelivered(ctx, rep, f) }
	case relay.FollowupHeld:
		act = func(ctx context.Context) error { return s.held(ctx, rep, f) }
	case relay.FollowupStatus:
		act = func(ctx context.Context) error { return s.showStatus(ctx, rep, ev, f) }
	case relay.FollowupRepage:
		act = func(ctx context.Context) error { return s.repage(ctx, rep, ev, f) }
	default:
		return nil, relay.Permanent(s.errorf("follow-up of kind %q: not one the sink knows", f.Kind), relay.ReasonClientError)
	}
	return &relay.Turn{Books: s.books, Event: ev, Dest: s.destID(), Parts: 1, Report: rep,
		Post: func(ctx context.Context, _ int, thread string) (relay.Placed, error) {
			return relay.Placed{Thread: thread}, s.followupError(act(ctx))
		}}, nil
}

// followupError makes what a follow-up met fit what it is: a message it
// acts on that was deleted leaves nothing to do, and a permission the bot
// lacks for it (Add Reactions) parks the follow-up (with the fix) rather
// than holding the sink's mirror posts.
func (s *Sink) followupError(err error) error {
	switch code := codeOf(err); {
	case err == nil:
		return nil
	case code == discordgo.ErrCodeUnknownMessage:
		s.log.Info("the message a follow-up was for was deleted; nothing to do", "err", err)
		return nil
	case code == discordgo.ErrCodeMissingPermissions || code == discordgo.ErrCodeMissingAccess:
		return relay.Permanent(err, relay.ReasonAuth)
	}
	return err
}

// react adds ✅ to the agent's message.
func (s *Sink) react(ctx context.Context, rep *relay.Report, f *relay.Followup) error {
	r := f.Reply
	if r == nil || validID(r.Channel) == "" || validID(r.MessageID) == "" {
		return relay.Permanent(s.errorf("reply-delivered follow-up without the agent's message"), relay.ReasonClientError)
	}
	return s.do(ctx, rep, call{op: "add reaction", method: http.MethodPut, url: reactionURL(s, r.Channel, r.MessageID), in: inMessage}, nil)
}

// reactionURL is the route that adds the bot's ✅ to a message (the
// emoji is escaped in the path).
func reactionURL(s *Sink, channel, message string) *url.URL {
	return s.route("channels", channel, "messages", message, "reactions", reactionDelivered, "@me")
}

// notDelivered says in the reply's thread, in reply to the agent's
// message, that it did not reach the visitor, why, and how to send it
// again.
func (s *Sink) notDelivered(ctx context.Context, rep *relay.Report, f *relay.Followup) error {
	return s.note(ctx, rep, f, "⚠️ "+literal(f.Note()))
}

// held says in the reply's thread, in reply to the agent's message, that
// it is not delivered yet, why, and that it is kept and sent later.
func (s *Sink) held(ctx context.Context, rep *relay.Report, f *relay.Followup) error {
	content := "⏳ " + literal(f.HeldLine())
	if f.Status != "" {
		content += " " + relay.OperatorSees + " `" + strings.ReplaceAll(f.Status, "`", "'") + "`."
	}
	return s.note(ctx, rep, f, content)
}

// note posts content in the reply's thread, in reply to the agent's
// message.
func (s *Sink) note(ctx context.Context, rep *relay.Report, f *relay.Followup, content string) error {
	r := f.Reply
	if r == nil || validID(r.Thread) == "" {
		return relay.Permanent(s.errorf("%s follow-up without the reply's thread", f.Kind), relay.ReasonClientError)
	}
	content, cut := truncate(content, maxContent)
	if cut {
		s.log.WarnContext(ctx, "note on an agent's reply cut", "kind", f.Kind, "limit", maxContent)
	}
	send := struct {
		*discordgo.MessageSend
		Reference *messageReference `json:"message_reference,omitempty"`
	}{MessageSend: &discordgo.MessageSend{Content: content, AllowedMentions: s.allowedMentions(false)}}
	if validID(r.MessageID) != "" {
		send.Reference = &messageReference{MessageID: r.MessageID, FailIfNotExists: false}
	}
	err := s.do(ctx, rep, call{op: "post message", method: http.MethodPost, url: s.route("channels", r.Thread, "messages"),
		payload: send, in: inThread}, nil)
	if threadGone(err) {
		// Archived and locked, or deleted: nobody reads it there.
		s.log.WarnContext(ctx, "the reply's thread is gone; its note is not posted", "kind", f.Kind, "err", err)
		return nil
	}
	return err
}

// messageReference makes a message a reply to another; without the
// other, it is posted all the same.
type messageReference struct {
	MessageID       string `json:"message_id"`
	FailIfNotExists bool   `json:"fail_if_not_exists"`
}

// showStatus shows the conversation's status on the message clicked, its
// buttons updated, and on the conversation's root message.
func (s *Sink) showStatus(ctx context.Context, rep *relay.Report, ev *relay.Event, f *relay.Followup) error {
	if f.State == nil || validID(f.Channel) == "" || validID(f.MessageID) == "" {
		return relay.Permanent(s.errorf("status follow-up without the message clicked or the status"), relay.ReasonClientError)
	}
	status := f.State.Status()
	comps := buttons(ev.ConversationID, ev.ChatbotID, *f.State)
	if err := s.restatus(ctx, rep, f.Channel, f.MessageID, status, comps); err != nil {
		return err
	}
	channel, root, err := s.root(ctx, ev)
	if err != nil || root == "" || root == f.MessageID {
		return err
	}
	return s.restatus(ctx, rep, channel, root, status, nil)
}

// root is the conversation's root message, where its thread starts (the
// thread's id): in the channel, or in a forum the post's first message,
// in the post. "" when the conversation has no thread here.
func (s *Sink) root(ctx context.Context, ev *relay.Event) (channel, message string, err error) {
	if ev.ConversationID == "" || ev.ChatbotID == "" {
		return "", "", nil // its thread record is not to be touched without the chatbot
	}
	thread, err := s.books.Thread(ctx, s.destID(), relay.ConversationOf(ev))
	if err != nil || validID(thread) == "" {
		return "", "", err
	}
	typ, err := s.channelType(ctx, nil)
	if err != nil {
		return "", "", err
	}
	if typ == discordgo.ChannelTypeGuildForum || typ == discordgo.ChannelTypeGuildMedia {
		return thread, thread, nil
	}
	return s.cfg.ChannelID, thread, nil
}

// restatus sets status as the first line of a message the bot posted, and
// its components when comps is not nil.
func (s *Sink) restatus(ctx context.Context, rep *relay.Report, channel, message, status string, comps []discordgo.MessageComponent) error {
	var m discordgo.Message
	if err := s.do(ctx, rep, call{op: "get message", method: http.MethodGet, url: s.route("channels", channel, "messages", message),
		in: inMessage}, &m); err != nil {
		return err
	}
	content, _ := truncate(withStatus(m.Content, status), maxContent)
	edit := struct {
		Content         string                            `json:"content"`
		Components      []discordgo.MessageComponent      `json:"components,omitempty"`
		AllowedMentions *discordgo.MessageAllowedMentions `json:"allowed_mentions"`
	}{Content: content, Components: comps, AllowedMentions: s.allowedMentions(false)}
	return s.do(ctx, rep, call{op: "edit message", method: http.MethodPatch, url: s.route("channels", channel, "messages", message),
		payload: edit, in: inMessage}, nil)
}

// repage posts an unclaimed escalation again in the channel: the sink's
// mention, how long it waited, a link to the conversation's thread, and
// the buttons.
func (s *Sink) repage(ctx context.Context, rep *relay.Report, ev *relay.Event, f *relay.Followup) error {
	line := literal(f.RepageLine())
	if s.mention.raw != "" {
		line = s.mention.raw + " " + line
	}
	_, thread, err := s.root(ctx, ev)
	if err != nil {
		return err
	}
	if thread != "" {
		line += " · conversation thread: <#" + thread + ">"
	}
	st := relay.ConversationState{}
	if f.State != nil {
		st = *f.State
	}
	send := &discordgo.MessageSend{Content: line, AllowedMentions: s.allowedMentions(true),
		Components: buttons(ev.ConversationID, ev.ChatbotID, st)}
	return s.do(ctx, rep, call{op: "post message", method: http.MethodPost, url: s.route("channels", s.cfg.ChannelID, "messages"),
		payload: send}, nil)
}
