package discord

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay"
)

// threadArchiveMinutes is how long a conversation's thread stays open
// without activity (the longest Discord allows): later turns usually come
// within the week.
const threadArchiveMinutes = 10080

// Send implements relay.Sink. A turn that needs several messages (or a
// message and then a thread) records its progress in the KV store after
// each step, so that a retry resumes where the last attempt stopped instead
// of posting parts again.
func (s *Sink) Send(ctx context.Context, ev *relay.Event) error {
	msgs := s.render(ctx, ev)
	if err := relay.Rendered(ctx); err != nil {
		return s.errorf("%w", err)
	}
	d, err := s.destination(ctx, ev)
	if err != nil {
		return err
	}
	pk := s.progressKey(ev)
	prog, err := s.loadProgress(ctx, pk)
	if err != nil {
		return err
	}
	if prog.Posted >= len(msgs) && prog.Root == "" {
		return nil // every part was posted by an earlier attempt
	}
	if d.thread == "" && d.threads {
		d.thread = prog.Thread // a thread of an event without conversation
	}
	if d.alongside != "" {
		msgs[0].content = withThreadLink(msgs[0].content, msgs[0].embeds[0].Title, d.alongside)
	}
	saved := prog.Posted > 0 || prog.Root != ""
	save := func() error {
		saved, prog.Thread = true, d.thread
		return s.saveProgress(ctx, pk, prog)
	}

	if prog.Root != "" {
		// The last attempt posted the thread's first message but did not
		// start the thread: start it on that message now.
		if err := s.startOnRoot(ctx, ev, d, &prog); err != nil {
			return err
		}
		if err := save(); err != nil {
			return err
		}
	}

	restarted := false
	for i := prog.Posted; i < len(msgs); i++ {
		m := msgs[i]
		more := i+1 < len(msgs)
		switch {
		case !d.threads || d.noThread || d.alongside != "":
			if err := s.post(ctx, "", m); err != nil {
				return err
			}
		case d.thread != "":
			err := s.post(ctx, d.thread, m)
			if threadGone(err) && !restarted {
				// Archived and locked, or deleted: the conversation
				// continues in a new thread.
				s.log.InfoContext(ctx, "conversation's thread is gone; starting a new one", "event_id", ev.ID,
					"conversation_id", ev.ConversationID, "err", err)
				restarted, d.thread = true, ""
				i--
				continue
			}
			if err != nil {
				return err
			}
		default:
			th, root, err := s.openThread(ctx, d.name, m)
			if err != nil {
				return err
			}
			switch {
			case th != "":
				if err := d.remember(ctx, s, th); err != nil {
					return err
				}
				d.thread = th
			case root != "":
				// Posted; the thread starts from this message next.
				prog.Posted, prog.Root = i+1, root
				if err := save(); err != nil {
					return err
				}
				if err := s.startOnRoot(ctx, ev, d, &prog); err != nil {
					return err
				}
			default:
				s.log.WarnContext(ctx, "Discord's answer named no message or thread; the conversation continues without a thread",
					"event_id", ev.ID, "conversation_id", ev.ConversationID)
				d.noThread = true
			}
		}
		prog.Posted = i + 1
		// Record progress when a later step could fail, and once done
		// when progress was recorded, so that no attempt repeats a part.
		if more || saved {
			if err := save(); err != nil {
				return err
			}
		}
	}
	return nil
}

// startOnRoot starts the conversation's thread on prog.Root, the message
// this attempt or an earlier one posted to open it, and clears prog.Root;
// the caller saves prog. When that message was deleted meanwhile (Unknown
// Message), no thread can start on it, and posting it again would undo
// the deletion: the turn's next message, or the conversation's next turn,
// opens a new thread instead.
func (s *Sink) startOnRoot(ctx context.Context, ev *relay.Event, d *destination, prog *progress) error {
	th, err := s.startThread(ctx, prog.Root, d.name)
	switch {
	case codeOf(err) == discordgo.ErrCodeUnknownMessage:
		s.log.InfoContext(ctx, "the message the conversation's thread was to start on was deleted; the next message opens a new thread",
			"event_id", ev.ID, "conversation_id", ev.ConversationID)
		d.thread = ""
	case err != nil:
		return err
	default:
		if err := d.remember(ctx, s, th); err != nil {
			return err
		}
		d.thread = th
	}
	prog.Root = ""
	return nil
}

// CanPack implements relay.Packer: an event may share a message unless its
// conversation already has a thread (then it goes into the thread), or an
// earlier attempt posted part of it (then it resumes alone).
func (s *Sink) CanPack(ctx context.Context, ev *relay.Event) bool {
	if ev.ConversationID != "" && s.threaded() {
		if _, ok, err := s.kv.Get(ctx, s.threadKey(ev.ConversationID)); err != nil || ok {
			return false
		}
	}
	if _, ok, err := s.kv.Get(ctx, s.progressKey(ev)); err != nil || ok {
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
func (s *Sink) SendPacked(ctx context.Context, evs []*relay.Event) (int, error) {
	if len(evs) == 0 {
		return 0, nil
	}
	msg, n := s.pack(ctx, evs)
	if err := relay.Rendered(ctx); err != nil {
		return 0, s.errorf("%w", err)
	}
	evs = evs[:n]
	// The message needs a thread if any of its conversations does.
	first := evs[0]
	if i := slices.IndexFunc(evs, func(ev *relay.Event) bool { return ev.ConversationID != "" }); i >= 0 {
		first = evs[i]
	}
	d, err := s.destination(ctx, first)
	if err != nil {
		return 0, err
	}
	if !d.threads {
		if err := s.post(ctx, "", msg); err != nil {
			return 0, err
		}
		return n, nil
	}
	name := packName(s.threadPrefix(), len(evs))
	th, root, err := s.openThread(ctx, name, msg)
	if err != nil {
		return 0, err
	}
	if th == "" && root != "" {
		if th, err = s.startThread(ctx, root, name); err != nil {
			// Failing now would post the message again: the turns are
			// out; their conversations start threads of their own later.
			s.log.WarnContext(ctx, "packed message posted, but its thread could not be started", "events", len(evs), "err", err)
			if class, after := relay.Classify(err); class == relay.ClassRateLimited {
				s.throttle.HoldUntil(s.clock.Now().Add(after))
			}
			return n, nil
		}
	}
	if th == "" {
		return n, nil
	}
	for _, ev := range evs {
		if ev.ConversationID == "" {
			continue
		}
		if err := s.record(ctx, s.threadKey(ev.ConversationID), th); err != nil {
			s.log.WarnContext(ctx, "packed message posted, but its thread could not be recorded",
				"event_id", ev.ID, "conversation_id", ev.ConversationID, "err", err)
		}
	}
	return n, nil
}

// destination is where one event's messages go.
type destination struct {
	threads  bool   // the event belongs in a thread
	thread   string // its thread, when it has one already
	key      string // KV key of the conversation's thread; "" for none
	name     string // the name of a new thread
	noThread bool   // Discord named no thread: post the rest flat
	// alongside is set for an escalation or a lead in a conversation
	// that has a thread, in bot mode outside a forum: it is posted in the
	// channel, where on-call and sales see it (SPEC §6), linking the
	// thread it names.
	alongside string
}

// remember records the conversation's new thread.
func (d *destination) remember(ctx context.Context, s *Sink, thread string) error {
	if d.key == "" {
		return nil
	}
	if err := s.record(ctx, d.key, thread); err != nil {
		return s.errorf("posted, but could not record the conversation's thread (a retry may open another): %w", err)
	}
	return nil
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

// standsOut reports whether events of topic are shown in the channel even
// when their conversation has a thread: escalations and leads, so that
// on-call and sales watching the channel never miss one (SPEC §6).
func standsOut(topic string) bool { return topic == relay.TopicEscalation || topic == relay.TopicLead }

// threaded reports whether conversations get threads: always in bot mode,
// in webhook mode with thread_name (forum channels).
func (s *Sink) threaded() bool { return s.bot() || s.cfg.ThreadName != "" }

func (s *Sink) destination(ctx context.Context, ev *relay.Event) (*destination, error) {
	d := &destination{name: threadName(s.threadPrefix(), ev)}
	forum := s.cfg.ThreadName != ""
	if s.bot() {
		typ, err := s.channelType(ctx)
		if err != nil {
			return nil, err
		}
		forum = typ == discordgo.ChannelTypeGuildForum || typ == discordgo.ChannelTypeGuildMedia
	}
	switch {
	case ev.ConversationID != "" && s.threaded():
		d.threads, d.key = true, s.threadKey(ev.ConversationID)
		th, ok, err := s.kv.Get(ctx, d.key)
		if err != nil {
			return nil, s.errorf("read the conversation's thread: %w", err)
		}
		if ok && snowflake.MatchString(th) {
			d.thread = th
		}
		if s.bot() && !forum && standsOut(ev.Topic) && d.thread != "" {
			d.alongside = d.thread
		}
	case forum:
		// Without a conversation, a forum still needs a post per event.
		d.threads = true
	}
	return d, nil
}

// threadKey is the KV key of a conversation's thread, per channel or
// webhook, so that pointing the sink elsewhere starts new threads.
func (s *Sink) threadKey(conversation string) string {
	return "thread:" + s.destID() + ":" + conversation
}

// progressKey is the KV key of an event's progress.
func (s *Sink) progressKey(ev *relay.Event) string {
	return "part:" + s.destID() + ":" + ev.ID
}

func (s *Sink) destID() string {
	if s.bot() {
		return s.cfg.ChannelID
	}
	return s.webhookID
}

// progress is how far an event's delivery got.
type progress struct {
	Posted int    `json:"posted"`           // messages of the turn posted
	Root   string `json:"root,omitempty"`   // posted message the conversation's thread is still to start from
	Thread string `json:"thread,omitempty"` // the thread the turn's parts go to
}

func (s *Sink) loadProgress(ctx context.Context, key string) (progress, error) {
	var p progress
	v, ok, err := s.kv.Get(ctx, key)
	if err != nil {
		return p, s.errorf("read delivery progress: %w", err)
	}
	if ok && json.Unmarshal([]byte(v), &p) != nil {
		s.log.WarnContext(ctx, "unreadable delivery progress ignored", "key", key)
		p = progress{}
	}
	p.Root, p.Thread = validID(p.Root), validID(p.Thread)
	return p, nil
}

func (s *Sink) saveProgress(ctx context.Context, key string, p progress) error {
	b, _ := json.Marshal(p)
	if err := s.record(ctx, key, string(b)); err != nil {
		return s.errorf("posted, but could not record delivery progress (a retry may post it again): %w", err)
	}
	return nil
}

// recordTimeout bounds the store writes that record what was posted.
const recordTimeout = 5 * time.Second

// record writes what was just posted (a conversation's thread, a turn's
// progress). It runs on a context that outlives the send's by
// recordTimeout: the message is out, so the record must be too, or a retry
// would post it again and open a second thread.
func (s *Sink) record(ctx context.Context, key, value string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	return s.kv.Put(ctx, key, value)
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
func (s *Sink) post(ctx context.Context, thread string, m message) error {
	in := ""
	if thread != "" {
		in = inThread
	}
	if !s.bot() {
		return s.do(ctx, call{op: "execute webhook", method: http.MethodPost, url: s.executeURL(thread),
			payload: s.webhookParams(m, ""), in: in}, nil)
	}
	channel := s.cfg.ChannelID
	if thread != "" {
		channel = thread
	}
	return s.do(ctx, call{op: "post message", method: http.MethodPost,
		url: s.route("channels", channel, "messages"), payload: s.messageSend(m), in: in}, nil)
}

// openThread posts m as the first message of a new thread named name. In
// a forum (webhook with thread_name, or a bot's forum channel) that one
// request makes the post and its thread: it returns the thread. In a text
// channel it returns the posted message (root), from which the caller
// starts the thread.
func (s *Sink) openThread(ctx context.Context, name string, m message) (thread, root string, err error) {
	var out discordgo.Message
	if !s.bot() {
		err := s.do(ctx, call{op: "execute webhook", method: http.MethodPost, url: s.executeURL(""),
			payload: s.webhookParams(m, name)}, &out)
		if err != nil {
			return "", "", err
		}
		return validID(out.ChannelID), "", nil
	}
	typ, err := s.channelType(ctx)
	if err != nil {
		return "", "", err
	}
	if typ == discordgo.ChannelTypeGuildForum || typ == discordgo.ChannelTypeGuildMedia {
		var ch discordgo.Channel
		payload := struct {
			*discordgo.ThreadStart
			Message *discordgo.MessageSend `json:"message"`
		}{&discordgo.ThreadStart{Name: name, AutoArchiveDuration: threadArchiveMinutes}, s.messageSend(m)}
		err := s.do(ctx, call{op: "start forum post", method: http.MethodPost,
			url: s.route("channels", s.cfg.ChannelID, "threads"), payload: payload}, &ch)
		if err != nil {
			return "", "", err
		}
		return validID(ch.ID), "", nil
	}
	if err := s.do(ctx, call{op: "post message", method: http.MethodPost,
		url: s.route("channels", s.cfg.ChannelID, "messages"), payload: s.messageSend(m)}, &out); err != nil {
		return "", "", err
	}
	return "", validID(out.ID), nil
}

// startThread starts a public thread on message root; the thread has the
// message's id.
func (s *Sink) startThread(ctx context.Context, root, name string) (string, error) {
	var ch discordgo.Channel
	err := s.do(ctx, call{op: "start thread", method: http.MethodPost,
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
