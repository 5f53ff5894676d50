package discord

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay"
)

// threadArchiveMinutes is how long a conversation's thread stays open
// without activity (the longest Discord allows): later turns usually come
// within the week.
const threadArchiveMinutes = 10080

// Send implements relay.Sink: relay.Post, which the dispatcher calls.
func (s *Sink) Send(ctx context.Context, ev *relay.Event) error {
	_, err := relay.Post(ctx, s, ev)
	return err
}

// Turn implements relay.Poster: it renders ev; its messages go into the
// conversation's thread when conversations get threads (the first message
// opening it), else into the channel.
func (s *Sink) Turn(ctx context.Context, ev *relay.Event) (*relay.Turn, error) {
	if ev.Topic == relay.TopicFollowup {
		return s.followupTurn(ev)
	}
	msgs := s.render(ctx, ev)
	if s.twoWay() && ev.Topic == relay.TopicEscalation && ev.ConversationID != "" && len(msgs) > 0 {
		// Claim and Resolve, on the message that opens the escalation,
		// and how to answer the visitor.
		msgs[0].components = buttons(ev.ConversationID, ev.ChatbotID, relay.ConversationState{})
		msgs[0].hint = s.cfg.Reply.Rule().Hint()
		s.watch(ctx, ev) // its thread is caught up on after a restart (catchup.go)
	}
	if err := relay.Rendered(ctx); err != nil {
		return nil, s.errorf("%w", err)
	}
	rep := &relay.Report{}
	d, err := s.destination(ctx, rep, ev)
	if err != nil {
		return nil, err
	}
	return s.posting(ev, d, msgs, rep), nil
}

// posting is how msgs, ev's messages, are posted to d; what Discord says
// of its rate limits goes into rep.
func (s *Sink) posting(ev *relay.Event, d *destination, msgs []message, rep *relay.Report) *relay.Turn {
	return &relay.Turn{Books: s.books, Event: ev, Dest: s.destID(), Parts: len(msgs), Threads: s.threaded(), Report: rep,
		Post: func(ctx context.Context, i int, thread string) (relay.Placed, error) {
			thread = validID(thread)
			// An escalation or a lead in a conversation that has a
			// thread is posted in the channel, where on-call and sales
			// see it (SPEC §6), linking the thread (bot mode outside a
			// forum).
			alongside := s.bot() && !d.forum && standsOut(ev.Topic) && ev.ConversationID != "" && thread != ""
			m := msgs[i]
			if alongside && i == 0 {
				m.content = withThreadLink(m.content, m.embeds[0].Title, thread)
			}
			if m.hint != "" {
				m.content = withHint(m.content, m.hint)
			}
			switch {
			case !d.threads || d.noThread || alongside:
				return relay.Placed{Thread: thread}, s.post(ctx, rep, "", m)
			case thread != "":
				err := s.post(ctx, rep, thread, m)
				if threadGone(err) {
					return relay.Placed{}, relay.ThreadGone(err) // archived and locked, or deleted
				}
				return relay.Placed{Thread: thread}, err
			}
			th, root, err := s.openThread(ctx, rep, d.name, m)
			if err == nil && th == "" && root == "" {
				s.log.WarnContext(ctx, "Discord's answer named no message or thread; the conversation continues without a thread",
					"event_id", ev.ID, "conversation_id", ev.ConversationID)
				d.noThread = true
			}
			return relay.Placed{Thread: th, Root: root}, err
		},
		// When the message a thread was to start on was deleted meanwhile
		// (Unknown Message), no thread can start on it, and posting it
		// again would undo the deletion: the turn's next message, or the
		// conversation's next turn, opens a new thread instead.
		Start: func(ctx context.Context, root string) (string, error) {
			th, err := s.startThread(ctx, rep, root, d.name)
			if codeOf(err) == discordgo.ErrCodeUnknownMessage {
				return "", relay.ThreadGone(err)
			}
			return th, err
		}}
}

// CanPack implements relay.Packer: an event may share a message unless its
// conversation already has a thread (then it goes into the thread), or an
// earlier attempt posted part of it (then it resumes alone).
func (s *Sink) CanPack(ctx context.Context, ev *relay.Event) bool {
	if ev.Topic == relay.TopicFollowup || s.twoWay() && ev.Topic == relay.TopicEscalation {
		return false // not a turn; an escalation of its own, with its buttons
	}
	if ev.ConversationID != "" && s.threaded() {
		if th, err := s.books.Thread(ctx, s.destID(), relay.ConversationOf(ev)); err != nil || th != "" {
			return false
		}
	}
	if started, err := s.books.Started(ctx, s.destID(), ev.ID); err != nil || started {
		return false
	}
	if len(ev.Question())+len(ev.AnswerText()) > packSource {
		return false // too long for one embed: not rendered to find out
	}
	_, t, fits := s.packEmbed(ctx, ev)
	s.memo.Put(ev, t) // for the send that follows, packed or alone
	return fits
}

// SendPacked implements relay.Packer: one message with one embed per event,
// in order, as many as fit whole within 10 embeds and 6000 characters. With threads, the message starts one
// thread that becomes the thread of every conversation in it. Once the
// message is posted the call succeeds: a thread that cannot be started is
// logged, not retried, so that the message is not posted twice.
func (s *Sink) SendPacked(ctx context.Context, evs []*relay.Event) (int, relay.Report, error) {
	var rep relay.Report
	if len(evs) == 0 {
		return 0, rep, nil
	}
	msg, n := s.pack(ctx, evs)
	if err := relay.Rendered(ctx); err != nil {
		return 0, rep, s.errorf("%w", err)
	}
	evs = evs[:n]
	// The message needs a thread if any of its conversations does.
	first := evs[0]
	if i := slices.IndexFunc(evs, func(ev *relay.Event) bool { return ev.ConversationID != "" }); i >= 0 {
		first = evs[i]
	}
	d, err := s.destination(ctx, &rep, first)
	if err != nil {
		return 0, rep, err
	}
	if !d.threads {
		if err := s.post(ctx, &rep, "", msg); err != nil {
			return 0, rep, err
		}
		rep.Posts = 1
		return n, rep, nil
	}
	name := packName(s.threadPrefix(), len(evs))
	th, root, err := s.openThread(ctx, &rep, name, msg)
	if err != nil {
		return 0, rep, err
	}
	rep.Posts = 1
	if th == "" && root != "" {
		if th, err = s.startThread(ctx, &rep, root, name); err != nil {
			// Failing now would post the message again: the turns are
			// out; their conversations start threads of their own later.
			s.log.WarnContext(ctx, "packed message posted, but its thread could not be started", "events", len(evs), "err", err)
			if class, after := relay.Classify(err); class == relay.ClassRateLimited {
				rep.Hold(s.clock.Now().Add(after))
			}
			return n, rep, nil
		}
	}
	if th == "" {
		return n, rep, nil
	}
	for _, ev := range evs {
		if ev.ConversationID == "" {
			continue
		}
		if err := s.books.SetThread(ctx, s.destID(), relay.ConversationOf(ev), th); err != nil {
			s.log.WarnContext(ctx, "packed message posted, but its thread could not be recorded",
				"event_id", ev.ID, "conversation_id", ev.ConversationID, "err", err)
		}
	}
	return n, rep, nil
}

// destination is where one event's messages go.
type destination struct {
	threads  bool   // the event belongs in a thread
	forum    bool   // the channel is a forum (or media) channel: every thread is a post
	name     string // the name of a new thread
	noThread bool   // Discord named no thread: post the rest flat
}

// withThreadLink is the content of an escalation or a lead posted in the
// channel instead of its conversation's thread: the configured mention's
// line (else the card's title), and a link to the thread. <#id> shows as
// a link to the thread and notifies no one; allowed_mentions still lets
// only the configured mention ping.
func withThreadLink(content, title, thread string) string {
	link := "conversation thread: <#" + thread + ">"
	if content == "" {
		return title + " · " + link
	}
	return content + " · " + link
}

// withHint adds, under content, how to answer the visitor, in small
// print (Discord's "-#" subtext).
func withHint(content, hint string) string {
	line := "-# 💬 " + literal(hint)
	if content == "" {
		return line
	}
	return content + "\n" + line
}

// standsOut reports whether events of topic are shown in the channel even
// when their conversation has a thread: escalations and leads, so that
// on-call and sales watching the channel never miss one (SPEC §6).
func standsOut(topic string) bool { return topic == relay.TopicEscalation || topic == relay.TopicLead }

// threaded reports whether conversations get threads: always in bot mode,
// in webhook mode with thread_name (forum channels).
func (s *Sink) threaded() bool { return s.bot() || s.cfg.ThreadName != "" }

func (s *Sink) destination(ctx context.Context, rep *relay.Report, ev *relay.Event) (*destination, error) {
	d := &destination{name: threadName(s.threadPrefix(), ev), forum: s.cfg.ThreadName != ""}
	if s.bot() {
		typ, err := s.channelType(ctx, rep)
		if err != nil {
			return nil, err
		}
		d.forum = typ == discordgo.ChannelTypeGuildForum || typ == discordgo.ChannelTypeGuildMedia
	}
	// A conversation has a thread; without one, a forum still needs a
	// post per event.
	d.threads = ev.ConversationID != "" && s.threaded() || d.forum
	return d, nil
}

// destID names where the sink posts, for the relay's books: the bot's
// channel, or the webhook's id, so that pointing the sink elsewhere starts
// new threads.
func (s *Sink) destID() string {
	if s.bot() {
		return s.cfg.ChannelID
	}
	return s.webhookID
}

// threadGone reports whether posting into a thread failed because the
// thread is archived and cannot be reopened, locked, or deleted.
func threadGone(err error) bool {
	switch codeOf(err) {
	case discordgo.ErrCodePerformedOperationOnArchivedThread, discordgo.ErrCodeThreadIsLocked, discordgo.ErrCodeUnknownChannel:
		return true
	}
	return false
}

// post posts m into thread (or, with thread "", the channel or webhook).
func (s *Sink) post(ctx context.Context, rep *relay.Report, thread string, m message) error {
	in := ""
	if thread != "" {
		in = inThread
	}
	if !s.bot() {
		return s.do(ctx, rep, call{op: "execute webhook", method: http.MethodPost, url: s.executeURL(thread),
			payload: s.webhookParams(m, ""), in: in}, nil)
	}
	channel := s.cfg.ChannelID
	if thread != "" {
		channel = thread
	}
	return s.do(ctx, rep, call{op: "post message", method: http.MethodPost,
		url: s.route("channels", channel, "messages"), payload: s.messageSend(m), in: in}, nil)
}

// openThread posts m as the first message of a new thread named name. In
// a forum (webhook with thread_name, or a bot's forum channel) that one
// request makes the post and its thread: it returns the thread. In a text
// channel it returns the posted message (root), from which the caller
// starts the thread.
func (s *Sink) openThread(ctx context.Context, rep *relay.Report, name string, m message) (thread, root string, err error) {
	var out discordgo.Message
	if !s.bot() {
		err := s.do(ctx, rep, call{op: "execute webhook", method: http.MethodPost, url: s.executeURL(""),
			payload: s.webhookParams(m, name)}, &out)
		if err != nil {
			return "", "", err
		}
		return validID(out.ChannelID), "", nil
	}
	typ, err := s.channelType(ctx, rep)
	if err != nil {
		return "", "", err
	}
	if typ == discordgo.ChannelTypeGuildForum || typ == discordgo.ChannelTypeGuildMedia {
		var ch discordgo.Channel
		payload := struct {
			*discordgo.ThreadStart
			Message *discordgo.MessageSend `json:"message"`
		}{&discordgo.ThreadStart{Name: name, AutoArchiveDuration: threadArchiveMinutes}, s.messageSend(m)}
		err := s.do(ctx, rep, call{op: "start forum post", method: http.MethodPost,
			url: s.route("channels", s.cfg.ChannelID, "threads"), payload: payload}, &ch)
		if err != nil {
			return "", "", err
		}
		return validID(ch.ID), "", nil
	}
	if err := s.do(ctx, rep, call{op: "post message", method: http.MethodPost,
		url: s.route("channels", s.cfg.ChannelID, "messages"), payload: s.messageSend(m)}, &out); err != nil {
		return "", "", err
	}
	return "", validID(out.ID), nil
}

// startThread starts a public thread on message root; the thread has the
// message's id.
func (s *Sink) startThread(ctx context.Context, rep *relay.Report, root, name string) (string, error) {
	var ch discordgo.Channel
	err := s.do(ctx, rep, call{op: "start thread", method: http.MethodPost,
		url:     s.route("channels", s.cfg.ChannelID, "messages", root, "threads"),
		payload: &discordgo.ThreadStart{Name: name, AutoArchiveDuration: threadArchiveMinutes}, in: inMessage}, &ch)
	if codeOf(err) == discordgo.ErrCodeThreadAlreadyCreatedForThisMessage {
		return root, nil // an earlier attempt started it
	}
	if err != nil {
		return "", err
	}
	if th := validID(ch.ID); th != "" {
		return th, nil
	}
	return root, nil
}

// validID returns id if it is a Discord id (it goes into URL paths).
func validID(id string) string {
	if snowflake.MatchString(id) {
		return id
	}
	return ""
}

// executeURL is the webhook URL as configured, with wait=true (Discord then
// answers with the message, or with the error it would otherwise hide) and
// the thread to post into.
func (s *Sink) executeURL(thread string) *url.URL {
	u := *s.webhook
	q := u.Query()
	q.Set("wait", "true")
	if thread != "" {
		q.Set("thread_id", thread)
	}
	u.RawQuery = q.Encode()
	return &u
}

func (s *Sink) webhookParams(m message, threadName string) *discordgo.WebhookParams {
	return &discordgo.WebhookParams{
		Content:         m.content,
		Embeds:          m.embeds,
		AllowedMentions: s.allowedMentions(m.mention),
		ThreadName:      threadName,
	}
}

func (s *Sink) messageSend(m message) *discordgo.MessageSend {
	return &discordgo.MessageSend{
		Content:         m.content,
		Embeds:          m.embeds,
		AllowedMentions: s.allowedMentions(m.mention),
		Components:      m.components,
	}
}

func (s *Sink) threadPrefix() string {
	if p := strings.TrimSpace(s.cfg.ThreadName); p != "" {
		return p
	}
	return "Chat"
}

// threadName is prefix, then the visitor's words (their last question)
// or, without any, their name, else what the event is; on one line,
// stripped of mention syntax, within Discord's 100 characters.
func threadName(prefix string, ev *relay.Event) string {
	what := plainName(ev.Question())
	if what == "" {
		what = plainName(ev.LeadValue("name"))
	}
	if what == "" {
		switch ev.Topic {
		case relay.TopicLead:
			what = "New lead"
		case relay.TopicEscalation:
			what = "Live chat escalation"
		default:
			what = plainName(ev.Topic)
		}
	}
	name := prefix
	if what != "" {
		name += " · " + what
	}
	name, _ = truncate(name, maxThreadName)
	return name
}

func packName(prefix string, n int) string {
	name, _ := truncate(fmt.Sprintf("%s · %d conversations", prefix, n), maxThreadName)
	return name
}
