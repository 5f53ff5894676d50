package slack

import (
	"fmt"
	"log/slog"
	"math"
	"strings"
	"text/template"
	"unicode"

	slackapi "github.com/slack-go/slack"

	"github.com/chatrelay/chatrelay/relay"
)

// Slack's limits, and the bounds chatrelay keeps within them.
const (
	// maxBlocks is the number of blocks a message may carry
	// (https://docs.slack.dev/reference/block-kit/blocks).
	maxBlocks = 50
	// maxSectionText bounds a section's text
	// (https://docs.slack.dev/reference/block-kit/blocks/section-block).
	maxSectionText = 3000
	// maxFields and maxFieldText bound a section's fields (same page).
	maxFields    = 10
	maxFieldText = 2000
	// maxHeaderText bounds a header's plain text
	// (https://docs.slack.dev/reference/block-kit/blocks/header-block).
	maxHeaderText = 150
	// maxContextElements bounds a context block
	// (https://docs.slack.dev/reference/block-kit/blocks/context-block).
	maxContextElements = 10
	// maxFallbackText bounds the notification text: Slack asks for less
	// than 4,000 characters and truncates past 40,000
	// (https://docs.slack.dev/reference/methods/chat.postMessage#truncating).
	maxFallbackText = 4000
	// maxMessageText is our bound on the text of all blocks of one
	// message: Slack publishes none, and answers msg_blocks_too_long at
	// about 11,300 characters (https://github.com/slackapi/bolt-js/issues/2867).
	maxMessageText = 9000
	// maxParts is how many messages one turn may take before it is cut
	// (SPEC.md §5).
	maxParts = 4
	// maxContextItem bounds one context element (an ID, a source): our
	// own bound, so that the context of a turn stays small.
	maxContextItem = 100
	// maxMention bounds the configured mention.
	maxMention = 500
	// maxPack is how many turns one packed message may hold: a header and
	// 16 × (section, context) with dividers between are 48 blocks. How many
	// actually go in one message depends on their size (maxMessageText);
	// packTurnText is how much text a turn may have to be packed at all.
	maxPack      = 16
	packTurnText = 1000
	// packSource is how long a turn's question and answer may be, in
	// bytes, for it to be considered for packing at all: a longer one
	// never renders within packTurnText in practice, and is not rendered
	// to find out (CanPack, then Send, would render it twice).
	packSource = 4 * packTurnText
	// maxAnswerRunes is how much of an answer is converted from Markdown:
	// twice what maxParts messages can show, so that no shown text is
	// lost, and the work per event is bounded whatever the answer's size.
	maxAnswerRunes = 2 * maxParts * maxMessageText
	// memoSize is how many renderings of packable turns are kept between
	// CanPack and the send that follows it.
	memoSize = 4 * maxPack
)

// cutMark ends the last section of a turn cut after maxParts messages.
const cutMark = "\n" + ellipsis

// message is one Slack message: its blocks and its notification text.
type message struct {
	text   string
	blocks []slackapi.Block
}

// content is what an event renders to before it is laid out in messages.
type content struct {
	title  string   // the header's plain text
	banner string   // a first section before the body (mrkdwn), or ""
	body   []tok    // the main text, split over sections and messages
	fields []string // section fields (lead-submission), mrkdwn
	meta   []string // context elements, mrkdwn; the last is the event id
}

// renderer turns events into messages.
type renderer struct {
	md      markdown
	mention string
	tmpl    *template.Template
	logger  *slog.Logger
	// packLimit bounds a packed message's text in place of
	// maxMessageText when set (tests).
	packLimit int
	// memo keeps the content of turns CanPack rendered, for the send that
	// follows; nil keeps nothing.
	memo *relay.RenderMemo[content]
}

// contentOf is ev's content, rendered once: taken from the memo when
// CanPack rendered it already.
func (r *renderer) contentOf(ev *relay.Event) content {
	if r.memo != nil {
		if c, ok := r.memo.Get(ev); ok {
			return c
		}
	}
	return r.content(ev)
}

// render lays ev out in one or more messages, at most maxParts.
func (r *renderer) render(ev *relay.Event) []message {
	msgs, cut := layout(r.contentOf(ev), ev.ID)
	if cut {
		r.logger.Warn("message cut: the event's text does not fit Slack's limits in the messages allowed; the rest is in the event",
			"event_id", ev.ID, "limit", maxParts)
	}
	return msgs
}

// Transcript bounds: how many of the conversation's latest messages an
// escalation shows, and how much of each; the rest is summarised as "N
// earlier messages" or cut with "…" (the whole turn is in the event).
const (
	maxTranscriptTurns = 6
	maxTranscriptRunes = 700
)

// content renders ev's parts by topic.
func (r *renderer) content(ev *relay.Event) content {
	c := content{meta: meta(ev)}
	turn := false // the body is the question and the answer
	switch ev.Topic {
	case relay.TopicChat:
		c.title = ":speech_balloon: New chat message"
		turn = true
	case relay.TopicEscalation:
		c.title = ":rotating_light: Live chat escalation"
		c.banner = "*" + relay.EscalationLine + "*"
		if r.mention != "" {
			c.banner = r.mention + " " + c.banner
		}
		// Who to get back to, first: the lead's name, email, phone.
		var more []tok
		c.fields, more = leadParts(ev.Lead)
		c.body = r.transcript(ev)
		if len(more) > 0 {
			c.body = append(append(c.body, tok{kind: tPara, text: "\n\n"}), more...)
		}
	case relay.TopicLead:
		c.title = ":card_index: New lead"
		c.fields, c.body = leadParts(ev.Lead)
		if len(c.fields) == 0 && len(c.body) == 0 {
			c.banner = "_" + relay.NoLeadFields + "_"
		}
	case relay.TopicAgentReply:
		c.title, c.body = replyContent(ev)
	default:
		c.title = eventTitle(ev.Topic)
		c.body = fieldLines(ev.OtherFields())
	}
	if r.tmpl != nil {
		if out, err := relay.ExecuteTemplate(r.tmpl, r.templateData(ev)); err != nil {
			// A template that fails on this event: the built-in text
			// still tells the channel what happened.
			r.logger.Warn("template failed on this event; using the built-in text", "event_id", ev.ID, "err", err)
		} else {
			c.fields = nil
			c.body = mrkdwnTokens(neutralize(out))
			if ev.Topic != relay.TopicEscalation {
				c.banner = "" // only the escalation's banner (the mention) stays
			}
			turn = false // the answer was converted once, for the template
		}
	}
	if turn {
		c.body = r.turn(ev)
	}
	if len(c.body) == 0 && len(c.fields) == 0 && c.banner == "" {
		c.banner = "_" + relay.NoFields + "_"
	}
	return c
}

// turn renders a chat turn: the user's last question and the answer
// converted from Markdown, or the words that say there is none.
func (r *renderer) turn(ev *relay.Event) []tok {
	var toks []tok
	if q := ev.Question(); strings.TrimSpace(q) != "" {
		toks = append(toks, titled("Question", plainTokens(q))...)
		toks = append(toks, tok{kind: tPara, text: "\n\n"})
	}
	answer := r.md.convert(ev.AnswerText())
	if len(answer) == 0 {
		answer = styledTokens(relay.NoAnswer, "_")
	}
	return append(toks, titled("Answer", answer)...)
}

// transcript renders an escalation's conversation so far, newest last:
// each message after its speaker, the visitor's as typed, the bot's and
// agents' converted from Markdown; older ones summarised.
func (r *renderer) transcript(ev *relay.Event) []tok {
	earlier, turns := ev.Transcript(maxTranscriptTurns)
	var toks []tok
	if earlier > 0 {
		toks = append(toks, styledTokens(relay.EarlierMessages(earlier), "_")...)
	}
	for _, m := range turns {
		if len(toks) > 0 {
			toks = append(toks, tok{kind: tPara, text: "\n\n"})
		}
		text, _ := relay.Truncate(m.Content, maxTranscriptRunes)
		var body []tok
		if relay.UserTyped(m.Role) {
			body = plainTokens(text)
		} else {
			body = r.md.convert(text)
		}
		toks = append(toks, tok{kind: tWord, text: escape(relay.Speaker(m.Role)) + ":", style: "*"})
		if len(body) > 0 && (strings.IndexByte(body[0].style, 'F') >= 0 || startsLine(body[0])) {
			toks = append(toks, tok{kind: tLine, text: "\n"}) // a list, quote or code block starts on its own line
		} else {
			toks = append(toks, tok{kind: tSpace, text: " "})
		}
		toks = append(toks, body...)
	}
	if len(toks) == 0 {
		toks = styledTokens(relay.NoConversation, "_")
	}
	return toks
}

// startsLine reports whether t is a line prefix (a quote marker or a list
// bullet), which must start its line.
func startsLine(t tok) bool {
	return t.kind == tAtom && (strings.HasPrefix(t.text, "> ") || strings.HasPrefix(strings.TrimLeft(t.text, " "), "•") ||
		strings.HasPrefix(strings.TrimLeft(t.text, " "), "◦") || strings.HasPrefix(strings.TrimLeft(t.text, " "), "▪") ||
		strings.HasSuffix(strings.TrimSpace(t.text), "."))
}

// styledTokens renders plain text in style ("_" for italics).
func styledTokens(s, style string) []tok {
	toks := plainTokens(s)
	for i := range toks {
		if !toks[i].kind.separator() || toks[i].kind == tSpace {
			toks[i].style = style
		}
	}
	return toks
}

// titled puts a bold title line before toks.
func titled(title string, toks []tok) []tok {
	if len(toks) == 0 {
		return nil
	}
	out := make([]tok, 0, len(toks)+2)
	out = append(out, tok{kind: tWord, text: title, style: "*"}, tok{kind: tLine, text: "\n"})
	return append(out, toks...)
}

// scoreMarks show an answer's confidence at a glance, in the colours
// Discord's embeds use.
var scoreMarks = map[relay.Confidence]string{
	relay.ConfidenceGood: ":large_green_circle:",
	relay.ConfidenceFair: ":large_yellow_circle:",
	relay.ConfidenceLow:  ":red_circle:",
}

// meta is the context line of a turn: score (with its mark), source,
// chatbot, conversation, lead and the event id.
func meta(ev *relay.Event) []string {
	var m []string
	add := func(label, v string) {
		if strings.TrimSpace(v) != "" {
			m = append(m, label+": "+contextItem(v))
		}
	}
	if s := ev.ScoreText(); s != "" {
		m = append(m, scoreMarks[ev.Confidence()]+" Score: "+s)
	}
	add("Source", ev.Source)
	add("Chatbot", ev.ChatbotID)
	add("Conversation", ev.ConversationID)
	if ev.Topic == relay.TopicChat {
		if l := leadSummary(ev.Lead); l != "" {
			m = append(m, "Lead: "+l)
		}
	} else {
		add("Lead", ev.LeadValue("uuid")) // its fields, if any, are shown above
	}
	add("Event", ev.ID)
	return m
}

// leadSummary is the lead in one context element: its contact values
// (name, email, phone, in the event's order; an address linked), then its
// uuid; mrkdwn.
func leadSummary(lead []relay.Field) string {
	var vals []string
	var uuid string
	for _, f := range lead {
		v := strings.TrimSpace(relay.JoinedValue(f))
		switch {
		case v == "":
		case f.Key == "uuid":
			uuid = contextItem(v)
		case len(vals) < 3:
			vals = append(vals, linked(f.Key, v, maxContextItem))
		}
	}
	if uuid != "" {
		vals = append(vals, uuid)
	}
	return strings.Join(vals, " · ")
}

// contextItem escapes an untrusted value for a context element and bounds
// it to maxContextItem.
func contextItem(v string) string {
	v = escape(strings.Join(strings.Fields(clean(v)), " "))
	if size(v) <= maxContextItem {
		return v
	}
	return headOf(v, maxContextItem-size(ellipsis)) + ellipsis
}

// linked is a field's value as mrkdwn within room: an e-mail address, a
// phone number or a web address as a link that opens it
// (<mailto:…|…>, <tel:…|…>, <https://…|…>), anything else escaped.
// Nothing in it is a mention: a link's target is checked plain ASCII
// (relay.ContactOf) and its label escaped.
func linked(key, v string, room int) string {
	if kind, href := relay.ContactOf(key, v); kind != relay.NotContact {
		label := escape(strings.TrimSpace(v))
		entity := "<" + escape(href) + "|" + label + ">"
		if kind == relay.ContactURL && label == escape(href) {
			entity = "<" + escape(href) + ">"
		}
		if size(entity) <= min(room, maxAtom) {
			return entity
		}
	}
	v = escape(clean(v))
	if size(v) > room {
		v = headOf(v, room-size(ellipsis)) + ellipsis
	}
	return v
}

// maxShortField is the longest value shown as a section field (two
// columns); a longer one, a multi-line one, or what the visitor said, gets
// a section of its own, full width.
const maxShortField = 80

// leadParts renders the lead in reading order (who, how to reach, what
// they said, the rest): short values as section fields ("*Email*\n<mailto:…>"),
// long ones, what the visitor said and nested ones ("label: value" lines)
// as titled text. The uuid is left to the context line.
func leadParts(lead []relay.Field) (fields []string, body []tok) {
	for _, f := range relay.ReadingOrder(lead) {
		if f.Key == "uuid" {
			continue
		}
		label := escape(relay.Label(clean(f.Key)))
		v := strings.TrimSpace(f.Value)
		if !f.Nested && relay.LeadFieldKind(f.Key) != relay.KindSaid && !strings.Contains(v, "\n") && size(v) <= maxShortField {
			if v == "" {
				v = "—"
			}
			head := "*" + label + "*\n"
			fields = append(fields, head+linked(f.Key, v, maxFieldText-size(head)))
			continue
		}
		var toks []tok
		if lines := relay.Readable(f); f.Nested {
			for i, l := range lines {
				if i > 0 {
					toks = append(toks, tok{kind: tLine, text: "\n"})
				}
				if l.Key != "" {
					toks = append(toks, tok{kind: tWord, text: escape(l.Key) + ":"}, tok{kind: tSpace, text: " "})
				}
				toks = append(toks, valueTokens(f.Key, l.Key, l.Value)...)
			}
		} else {
			toks = plainTokens(v)
		}
		if len(toks) == 0 {
			continue
		}
		if len(body) > 0 {
			body = append(body, tok{kind: tPara, text: "\n\n"})
		}
		body = append(body, titled(label, toks)...)
	}
	return fields, body
}

// valueTokens renders one value of a nested field on its line: linked
// when it is an address.
func valueTokens(key, sub, v string) []tok {
	if k, _ := relay.ContactOf(sub, v); k == relay.NotContact {
		if k, _ = relay.ContactOf(key, v); k == relay.NotContact {
			var toks []tok
			for _, t := range plainTokens(v) {
				if t.kind == tLine {
					t = tok{kind: tSpace, text: " "}
				}
				toks = append(toks, t)
			}
			return toks
		}
	}
	return []tok{{kind: tAtom, text: linked(sub, v, maxAtom)}}
}

// humanize turns a field key into a label: "phone_number" → "Phone number".
func humanize(key string) string { return relay.Label(clean(key)) }

// fieldLines renders an event of an unknown topic: one line per top-level
// field, "• *key*: value" (a nested value as "label: value" pairs).
func fieldLines(fields []relay.Field) []tok {
	var toks []tok
	for _, f := range fields {
		if len(toks) > 0 {
			toks = append(toks, tok{kind: tLine, text: "\n"})
		}
		toks = append(toks, tok{kind: tAtom, text: "• "},
			tok{kind: tWord, text: escape(humanize(f.Key)), style: "*"},
			tok{kind: tWord, text: ":"}, tok{kind: tSpace, text: " "})
		v := plainTokens(relay.JoinedValue(f))
		if len(v) == 0 {
			v = []tok{{kind: tWord, text: "—"}}
		}
		for _, t := range v {
			if t.kind == tLine { // a value stays on its line
				t = tok{kind: tSpace, text: " "}
			}
			toks = append(toks, t)
		}
	}
	return toks
}

// eventTitle is the header of an event of an unknown topic. The topic is
// shown with letters, digits and a few marks only: it comes from outside.
func eventTitle(topic string) string {
	const prefix = ":incoming_envelope: Chat Data event: "
	t := strings.Map(func(r rune) rune {
		switch {
		case unicode.IsLetter(r), unicode.IsDigit(r), strings.ContainsRune("-_.:/ ", r):
			return r
		}
		return -1
	}, topic)
	t = strings.TrimSpace(t)
	if t == "" {
		t = "(unnamed)"
	}
	if room := maxHeaderText - size(prefix); size(t) > room {
		t = headOf(t, room-size(ellipsis)) + ellipsis
	}
	return prefix + t
}

// templateData is the data templates see: ev with every text escaped for
// mrkdwn, so that what a chatbot user typed cannot become markup or a
// mention through a template, and the answer's Markdown converted.
func (r *renderer) templateData(ev *relay.Event) *relay.Event {
	c := *ev
	c.ID, c.Topic = escape(ev.ID), escape(ev.Topic)
	c.ChatbotID, c.ConversationID = escape(ev.ChatbotID), escape(ev.ConversationID)
	c.Source, c.ClientIP = escape(ev.Source), escape(ev.ClientIP)
	c.Body = []byte(escape(string(ev.Body)))
	c.Messages = make([]relay.Message, len(ev.Messages))
	for i, m := range ev.Messages {
		m.Role, m.Content = escape(m.Role), escape(m.Content)
		c.Messages[i] = m
	}
	if ev.Answer != nil {
		// The answer is Markdown, as in the built-in text: converted, so
		// its links and emphasis show as Slack shows them.
		a := *ev.Answer
		a.Role, a.Content = escape(a.Role), tokensText(r.md.convert(a.Content))
		c.Answer = &a
	}
	escFields := func(fs []relay.Field) []relay.Field {
		out := make([]relay.Field, len(fs))
		for i, f := range fs {
			out[i] = relay.Field{Key: escape(f.Key), Value: escape(f.Value)}
		}
		return out
	}
	c.Lead, c.Fields = escFields(ev.Lead), escFields(ev.Fields)
	return &c
}

// draft is a message being laid out.
type draft struct {
	blocks   []slackapi.Block
	sections []string // texts of its sections, for the fallback
	used     int      // size of its block text
}

// mrkdwnText is a mrkdwn text object. It is verbatim: Slack then links
// nothing by itself (no bare URL, channel name or @here typed as text), and
// only the <…> entities chatrelay writes are markup.
func mrkdwnText(text string) *slackapi.TextBlockObject {
	return slackapi.NewTextBlockObject(slackapi.MarkdownType, text, false, true)
}

func (d *draft) header(title string) {
	d.blocks = append(d.blocks, slackapi.NewHeaderBlock(slackapi.NewTextBlockObject(slackapi.PlainTextType, title, true, false)))
	d.used += size(title)
}

func (d *draft) section(text string) {
	d.blocks = append(d.blocks, slackapi.NewSectionBlock(mrkdwnText(text), nil, nil))
	d.sections = append(d.sections, text)
	d.used += size(text)
}

func (d *draft) fieldSection(fields []string) {
	objs := make([]*slackapi.TextBlockObject, len(fields))
	for i, f := range fields {
		objs[i] = mrkdwnText(f)
		d.used += size(f)
	}
	d.blocks = append(d.blocks, slackapi.NewSectionBlock(nil, objs, nil))
	d.sections = append(d.sections, strings.Join(fields, "\n"))
}

func (d *draft) context(elems []string) {
	if len(elems) == 0 {
		return
	}
	elems = elems[:min(len(elems), maxContextElements)]
	objs := make([]slackapi.MixedElement, len(elems))
	for i, e := range elems {
		objs[i] = mrkdwnText(e)
		d.used += size(e)
	}
	d.blocks = append(d.blocks, slackapi.NewContextBlock("", objs...))
}

// contextAfterHeader puts the context block right after the message's
// header (its first block).
func (d *draft) contextAfterHeader(elems []string) {
	d.context(elems)
	if len(d.blocks) < 3 {
		return
	}
	ctx := d.blocks[len(d.blocks)-1]
	copy(d.blocks[2:], d.blocks[1:len(d.blocks)-1])
	d.blocks[1] = ctx
}

// room is the text left for sections when reserve is kept for context.
func (d *draft) room(reserve int) int {
	if len(d.blocks) >= maxBlocks-2 { // keep a block for the context
		return 0
	}
	return min(maxSectionText, maxMessageText-reserve-d.used)
}

func partNote(k, n int) string { return fmt.Sprintf("Part %d of %d", k, n) }

func cutNote(id string) string {
	return "Cut after " + fmt.Sprint(maxParts) + " messages: the whole turn is event " + contextItem(id)
}

// layout lays c out in messages: the first with the header, the banner,
// the lead's fields and as much body as fits; follow-ups with the rest,
// within every limit, at most maxParts messages. It reports whether
// anything had to be left out.
func layout(c content, eventID string) ([]message, bool) {
	reserve := size(partNote(maxParts, maxParts)) + size(cutNote(eventID))
	for _, m := range c.meta {
		reserve += size(m)
	}
	var drafts []*draft
	d := &draft{}
	d.header(c.title)
	if c.banner != "" {
		d.section(c.banner)
	}
	fieldsCut := false
	var chunk []string
	room := maxMessageText - reserve - d.used
	for _, f := range c.fields {
		if size(f) > room || (len(chunk) == 0 && len(d.blocks) >= maxBlocks-2) {
			fieldsCut = true // hundreds of fields, or huge values
			break
		}
		chunk = append(chunk, f)
		room -= size(f)
		if len(chunk) == maxFields {
			d.fieldSection(chunk)
			chunk = nil
		}
	}
	if len(chunk) > 0 {
		d.fieldSection(chunk)
	}
	cut := false
	sp := newSplitter(c.body)
	for !sp.done() {
		last := len(drafts) == maxParts-1
		budget := d.room(reserve)
		if last {
			budget -= size(cutMark)
		}
		if budget < minSplitBudget {
			if last {
				cut = true
				break
			}
			drafts = append(drafts, d)
			d = &draft{}
			continue
		}
		d.section(sp.next(budget))
	}
	if cut {
		// The sections of the last message kept room for the mark.
		if sec, ok := d.blocks[len(d.blocks)-1].(*slackapi.SectionBlock); ok && sec.Text != nil {
			sec.Text.Text += cutMark
			d.sections[len(d.sections)-1] = sec.Text.Text
		}
	}
	drafts = append(drafts, d)

	// The metadata shows once per turn: at the end of a turn that fits in
	// one message; at the start of the first of several (right under the
	// header, where the channel sees it), never between parts of the
	// text. Every message names the event.
	n := len(drafts)
	msgs := make([]message, n)
	for i, d := range drafts {
		var elems []string
		prefix := c.title
		if i == 0 {
			elems = append(elems, c.meta...)
		} else {
			elems = append(elems, "Event: "+contextItem(eventID))
		}
		if n > 1 {
			elems = append(elems, partNote(i+1, n))
			prefix += " (" + strings.ToLower(partNote(i+1, n)) + ")"
		}
		if fieldsCut && i == 0 {
			elems = append(elems, "Some fields do not fit: the whole event is "+contextItem(eventID))
		}
		if cut && i == n-1 {
			elems = append(elems, cutNote(eventID))
		}
		if i == 0 && n > 1 {
			d.contextAfterHeader(elems)
		} else {
			d.context(elems)
		}
		msgs[i] = message{text: fallback(prefix, d.sections), blocks: d.blocks}
	}
	return msgs, cut || fieldsCut
}

// fallback is a message's notification text: the prefix, then its
// sections while they fit maxFallbackText (the first always does: a
// section is at most maxSectionText; only a section of lead fields can be
// longer, and it is cut at a line).
func fallback(prefix string, sections []string) string {
	text := prefix
	for i, sec := range sections {
		if size(text)+1+size(sec) <= maxFallbackText {
			text += "\n" + sec
			continue
		}
		if i == 0 {
			room := maxFallbackText - size(text) - 1 - size(ellipsis)
			cut := ""
			for _, l := range strings.Split(sec, "\n") {
				if size(cut)+1+size(l) > room {
					break
				}
				if cut != "" {
					cut += "\n"
				}
				cut += l
			}
			text += "\n" + cut + ellipsis
		}
		break
	}
	return text
}

// renderPacked lays chat turns out in one message: a header, then for each
// turn its text and context, with dividers between turns. It takes the
// longest prefix of evs that fits whole (never cutting a turn: packable
// turns are short) and says how many that is.
func (r *renderer) renderPacked(evs []*relay.Event) (message, int) {
	type part struct {
		c     content
		text  string
		cost  int // block text, with the context
		extra int // blocks: divider, section, context
	}
	parts := make([]part, 0, len(evs))
	for _, ev := range evs {
		c := r.contentOf(ev)
		p := part{c: c, extra: 3}
		for _, m := range c.meta {
			p.cost += size(m)
		}
		p.cost += size(c.banner)
		if len(c.body) > 0 {
			sp := newSplitter(c.body)
			p.text = sp.next(packTurnText)
			p.cost += size(p.text)
		}
		parts = append(parts, p)
	}
	limit := maxMessageText
	if r.packLimit > 0 {
		limit = r.packLimit
	}
	n, used, blocks := 0, 0, 1
	for _, p := range parts {
		if n > 0 && (used+p.cost > limit-size(packTitle(n+1)) || blocks+p.extra > maxBlocks) {
			break
		}
		n, used, blocks = n+1, used+p.cost, blocks+p.extra
	}
	d := &draft{}
	title := packTitle(n)
	d.header(title)
	for i, p := range parts[:n] {
		if i > 0 {
			d.blocks = append(d.blocks, slackapi.NewDividerBlock())
		}
		if p.c.banner != "" {
			d.section(p.c.banner)
		}
		if p.text != "" {
			d.section(p.text)
		}
		d.context(p.c.meta)
	}
	return message{text: fallback(title, d.sections), blocks: d.blocks}, n
}

func packTitle(n int) string { return fmt.Sprintf(":speech_balloon: %d new chat messages", n) }

// packable reports whether ev renders short enough to share a message. A
// turn it renders to find out is kept in the memo for the send that
// follows.
func (r *renderer) packable(ev *relay.Event) bool {
	if ev.Topic != relay.TopicChat || len(ev.Question())+len(ev.AnswerText()) > packSource {
		return false
	}
	c := r.contentOf(ev)
	if r.memo != nil {
		r.memo.Put(ev, c)
	}
	sp := newSplitter(c.body)
	sp.next(packTurnText)
	return sp.done() && size(c.banner) <= packTurnText
}

// tokensText joins converted tokens into one mrkdwn text.
func tokensText(toks []tok) string {
	sp := newSplitter(toks)
	var parts []string
	for !sp.done() {
		parts = append(parts, sp.next(math.MaxInt32))
	}
	return strings.Join(parts, "\n")
}
