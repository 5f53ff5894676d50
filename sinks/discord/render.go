package discord

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay"
)

// Embed colours.
const (
	colorGood       = 0x2ECC71 // score ≥ 0.8
	colorFair       = 0xF1C40F // score ≥ 0.5
	colorPoor       = 0xE74C3C // score < 0.5
	colorNoScore    = 0x95A5A6 // no score
	colorEscalation = 0xEB459E // live-chat-escalation: a colour nothing else uses
	colorLead       = 0x5865F2 // lead-submission
	colorOther      = 0x607D8B // any other topic
)

const (
	// headFieldBudget bounds the fields of a turn's first embed; fields
	// past it go into the text, which can continue in more messages.
	headFieldBudget = 2000
	// minPiece is the least room worth a new embed for more text.
	minPiece = 512
)

// turn is an event rendered, before it is laid out into messages.
type turn struct {
	head    *discordgo.MessageEmbed // title, fields, colour; no description, no footer
	text    string                  // the description, of any length (Discord Markdown)
	content string                  // the message content, or ""
	mention bool                    // content carries the configured mention
}

// message is one Discord message to post.
type message struct {
	content    string
	embeds     []*discordgo.MessageEmbed
	mention    bool                         // allow the configured mention to ping
	components []discordgo.MessageComponent // Claim and Resolve on an escalation (bot mode, two-way)
	hint       string                       // how to answer the visitor, under an escalation (two-way)
}

// Transcript bounds: how many of the conversation's latest messages an
// escalation shows, and how much of each; the rest is summarised as "N
// earlier messages" or cut with "…" (the whole turn is in the event).
const (
	maxTranscriptTurns = 6
	maxTranscriptRunes = 700
)

// maxShortField is the longest value shown as an inline field; a longer
// one, a multi-line one, or what the visitor said, takes the full width.
const maxShortField = 40

// turn renders ev by its topic; unknown topics render generically.
func (s *Sink) turn(ctx context.Context, ev *relay.Event) turn {
	var t turn
	switch ev.Topic {
	case relay.TopicChat:
		t = chatTurn(ev)
	case relay.TopicEscalation:
		t = escalationTurn(ev)
		if s.mention.raw != "" {
			t.content = s.mention.raw + " 🚨 Live chat escalation: " + relay.EscalationLine
			t.mention = true
		}
	case relay.TopicLead:
		t = leadTurn(ev)
	case relay.TopicAgentReply:
		t = replyTurn(ev)
	default:
		t = genericTurn(ev)
	}
	if s.cfg.Template != nil {
		text, err := relay.ExecuteTemplate(s.cfg.Template, ev)
		if err != nil {
			s.log.WarnContext(ctx, "template failed for this event; showing the default text", "event_id", ev.ID, "err", err)
		} else {
			t.text = text
		}
	}
	return t
}

func scoreColor(ev *relay.Event) int {
	switch ev.Confidence() {
	case relay.ConfidenceGood:
		return colorGood
	case relay.ConfidenceFair:
		return colorFair
	case relay.ConfidenceLow:
		return colorPoor
	}
	return colorNoScore
}

// fields builds an embed's fields within the limits; what does not fit
// becomes lines of text.
type fields struct {
	list     []*discordgo.MessageEmbedField
	size     int
	overflow []string
}

// add adds a field; name and value are Discord Markdown (text from the
// event made literal by the caller).
func (f *fields) add(name, value string, inline bool) {
	name, value = strings.TrimSpace(name), strings.TrimSpace(value)
	if name == "" || value == "" {
		return // Discord refuses empty names and values
	}
	n, _ := truncate(name, maxFieldName)
	v, _ := truncate(value, maxFieldValue)
	size := len16(n) + len16(v)
	if len(f.list) == maxFields || f.size+size > headFieldBudget {
		f.overflow = append(f.overflow, "**"+name+"**: "+value)
		return
	}
	f.list = append(f.list, &discordgo.MessageEmbedField{Name: n, Value: v, Inline: inline})
	f.size += size
}

// addContext adds the fields every topic shows about the conversation:
// where it came from, then its ids.
func (f *fields) addContext(ev *relay.Event) {
	f.add("Source", literal(ev.Source), true)
	f.add("Conversation", code(ev.ConversationID), true)
	f.add("Chatbot", code(ev.ChatbotID), true)
}

// addLead adds the lead's fields in reading order (who, how to reach,
// what they said, the rest, ids): short values inline, what the visitor
// said, long values and nested ones ("label: value" lines) full width.
// With contactsOnly, only who the visitor is and how to reach them.
func (f *fields) addLead(lead []relay.Field, contactsOnly bool) {
	for _, l := range relay.ReadingOrder(lead) {
		if l.Key == "uuid" {
			continue // shown as "Lead" with the ids, as Slack does
		}
		kind := relay.LeadFieldKind(l.Key)
		if contactsOnly && kind != relay.KindWho && kind != relay.KindContact {
			continue
		}
		name := literal(relay.Label(l.Key))
		if l.Nested {
			var lines []string
			for _, r := range relay.Readable(l) {
				line := literal(r.Value)
				if r.Key != "" {
					line = literal(r.Key) + ": " + line
				}
				lines = append(lines, line)
			}
			f.add(name, strings.Join(lines, "\n"), false)
			continue
		}
		v := strings.TrimSpace(l.Value)
		if kind == relay.KindID {
			f.add(name, code(v), true)
			continue
		}
		short := kind != relay.KindSaid && !strings.Contains(v, "\n") && len16(v) <= maxShortField
		f.add(name, literal(v), short)
	}
}

// withOverflow appends the fields that did not fit to text.
func (f *fields) withOverflow(text string) string {
	if len(f.overflow) == 0 {
		return text
	}
	lines := strings.Join(f.overflow, "\n")
	if text == "" {
		return lines
	}
	return text + "\n\n" + lines
}

// code shows an id as inline code (literal text when it holds a
// backtick).
func code(s string) string {
	s = strings.TrimSpace(s)
	if s == "" || strings.Contains(s, "`") || strings.Contains(s, "\n") {
		return literal(s)
	}
	return "`" + s + "`"
}

func newHead(title string, color int) *discordgo.MessageEmbed {
	title, _ = truncate(title, maxTitle)
	return &discordgo.MessageEmbed{Type: discordgo.EmbedTypeRich, Title: title, Color: color}
}

// chatTurn shows the visitor's question (as typed) and the bot's answer
// (its Markdown kept where Discord renders it: forDiscord), or the words
// that say there is none, with the score, source, ids and lead.
func chatTurn(ev *relay.Event) turn {
	var b strings.Builder
	if q := strings.TrimSpace(ev.Question()); q != "" {
		b.WriteString("**Question**\n")
		b.WriteString(quote(literal(q)))
		b.WriteString("\n\n")
	}
	b.WriteString("**Answer**\n")
	if a := strings.TrimSpace(ev.AnswerText()); a != "" {
		b.WriteString(forDiscord(a))
	} else {
		b.WriteString("*" + relay.NoAnswer + "*")
	}
	var f fields
	f.add("Score", ev.ScoreText(), true)
	f.addContext(ev)
	if lead := leadLines(ev.Lead); lead != "" {
		f.add("Lead", lead, false)
	}
	head := newHead("💬 New chat message", scoreColor(ev))
	head.Fields = f.list
	return turn{head: head, text: f.withOverflow(b.String())}
}

// escalationTurn shows who asked for a person (the lead's name and
// contacts first), and the conversation so far, newest last: the
// visitor's messages as typed, the bot's and agents' in Markdown; older
// ones summarised. It never says the bot gave no answer: an escalation
// needs none.
func escalationTurn(ev *relay.Event) turn {
	text := "**" + relay.EscalationLine + "**\n\n" + transcript(ev)
	var f fields
	f.addLead(ev.Lead, true)
	f.add("Score", ev.ScoreText(), true)
	f.addContext(ev)
	f.add("Lead", code(ev.LeadValue("uuid")), true)
	head := newHead("🚨 Live chat escalation", colorEscalation)
	head.Fields = f.list
	return turn{head: head, text: f.withOverflow(text)}
}

// transcript is the conversation so far, as escalationTurn shows it.
func transcript(ev *relay.Event) string {
	earlier, turns := ev.Transcript(maxTranscriptTurns)
	var parts []string
	if earlier > 0 {
		parts = append(parts, "*"+relay.EarlierMessages(earlier)+"*")
	}
	for _, m := range turns {
		text, _ := relay.Truncate(strings.TrimSpace(m.Content), maxTranscriptRunes)
		if relay.UserTyped(m.Role) {
			text = literal(text)
		} else {
			text = forDiscord(text)
		}
		label := "**" + literal(relay.Speaker(m.Role)) + ":**"
		if startsBlock(text) {
			parts = append(parts, label+"\n"+text)
		} else {
			parts = append(parts, label+" "+text)
		}
	}
	if len(parts) == 0 {
		return "*" + relay.NoConversation + "*"
	}
	return strings.Join(parts, "\n\n")
}

// startsBlock reports whether Markdown text starts with a block that must
// start its line: a heading, quote, list or code block.
func startsBlock(text string) bool {
	t := strings.TrimLeft(text, " ")
	for _, p := range []string{"#", ">", "- ", "* ", "+ ", "```", "|"} {
		if strings.HasPrefix(t, p) {
			return true
		}
	}
	i := strings.IndexFunc(t, func(r rune) bool { return r < '0' || r > '9' })
	return i > 0 && (strings.HasPrefix(t[i:], ". ") || strings.HasPrefix(t[i:], ") "))
}

// quote makes text a Markdown block quote, line by line.
func quote(text string) string {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		lines[i] = "> " + l
	}
	return strings.Join(lines, "\n")
}

// leadLines is the lead in one field of a chat turn: "Label: value" lines,
// as typed.
func leadLines(lead []relay.Field) string {
	var lines []string
	for _, f := range relay.ReadingOrder(lead) {
		if v := strings.TrimSpace(relay.JoinedValue(f)); v != "" {
			lines = append(lines, literal(relay.Label(f.Key))+": "+literal(v))
		}
	}
	return strings.Join(lines, "\n")
}

// leadTurn shows the lead as a card for the reader: who, how to reach
// them, what they said, the rest, then the ids.
func leadTurn(ev *relay.Event) turn {
	var f fields
	f.addLead(ev.Lead, false)
	text := ""
	if len(f.list) == 0 && len(f.overflow) == 0 {
		text = "*" + relay.NoLeadFields + "*"
	}
	f.addContext(ev)
	f.add("Lead", code(ev.LeadValue("uuid")), true)
	head := newHead("📇 New lead", colorLead)
	head.Fields = f.list
	return turn{head: head, text: f.withOverflow(text)}
}

// genericTurn shows every top-level field of an event of a topic chatrelay
// does not know, as sent, so that nothing is dropped; except client_ip,
// which no topic shows in a channel.
func genericTurn(ev *relay.Event) turn {
	topic := plainName(ev.Topic)
	if topic == "" {
		topic = "(no topic)"
	}
	var lines []string
	for _, f := range ev.OtherFields() {
		if v := strings.TrimSpace(relay.JoinedValue(f)); v != "" {
			lines = append(lines, "**"+literal(relay.Label(f.Key))+"**: "+literal(v))
		}
	}
	text := strings.Join(lines, "\n")
	if text == "" {
		text = "*" + relay.NoFields + "*"
	}
	var f fields
	f.addContext(ev)
	head := newHead("📨 Chat Data event: "+topic, colorOther)
	head.Fields = f.list
	return turn{head: head, text: f.withOverflow(text)}
}

// footer names the event, so that every message of a turn can be looked
// up.
func footer(id string, part, parts int) string {
	id, _ = truncate(id, 64)
	if parts <= 1 {
		return "event " + id
	}
	return fmt.Sprintf("event %s · part %d of %d", id, part, parts)
}

func timestamp(ev *relay.Event) string {
	if ev.ReceivedAt.IsZero() {
		return ""
	}
	return ev.ReceivedAt.UTC().Format(time.RFC3339)
}

// cutNotice ends a turn cut after maxMessagesPerTurn messages.
func cutNotice(id string) string {
	id, _ = truncate(id, 64)
	return fmt.Sprintf("\n\n… *(cut after %d messages; the whole turn is event `%s`)*", maxMessagesPerTurn, id)
}

// layout lays a turn out into messages so that it reads as one: the text
// in order, and the metadata (the head's fields) once. A turn that fits
// one message shows its title, its text (over several embeds if needed)
// and then the fields, as a card. A longer one opens with the card's
// title and fields (where the channel sees them), and the text follows,
// continuing from embed to embed and message to message, split before a
// heading, else on paragraph, line, sentence or word boundaries, with
// code fences closed and reopened. Only past maxMessagesPerTurn messages
// is it cut, with "…" and the event id. Every message's footer names the
// event. It reports whether it cut.
func layout(t turn, ev *relay.Event) ([]message, bool) {
	if msg, ok := oneMessage(t, ev); ok {
		return []message{msg}, false
	}
	sp := newSplitter(t.text)
	notice := cutNotice(ev.ID)
	footerRoom := len16(footer(ev.ID, maxMessagesPerTurn, maxMessagesPerTurn))
	// The card stands alone when it has fields; else its title heads
	// the text.
	card := len(t.head.Fields) > 0
	var msgs []message
	cut := false
	for m := 0; m < maxMessagesPerTurn; m++ {
		var msg message
		budget := maxEmbedsTotal - footerRoom
		if m == 0 {
			msg = message{content: t.content, mention: t.mention}
			msg.content, _ = truncate(msg.content, maxContent)
			if card {
				head := *t.head
				msg.embeds = []*discordgo.MessageEmbed{&head}
				budget -= embedSize(&head)
			}
		}
		lastMessage := m == maxMessagesPerTurn-1
		for slot := len(msg.embeds); !sp.done() && budget >= minPiece && slot < maxEmbeds; slot++ {
			e := &discordgo.MessageEmbed{Type: discordgo.EmbedTypeRich, Color: t.head.Color}
			if m == 0 && slot == 0 {
				e.Title = t.head.Title
				budget -= len16(e.Title)
			}
			msg.embeds = append(msg.embeds, e)
			limit := min(maxDescription, budget)
			lastSlot := budget-limit < minPiece || slot == maxEmbeds-1
			if lastMessage && lastSlot && sp.remaining() > limit {
				e.Description = sp.next(limit-len16(notice)).String() + notice
				sp = newSplitter("")
				cut = true
			} else {
				e.Description = sp.next(limit).String()
			}
			budget -= len16(e.Description)
		}
		msgs = append(msgs, msg)
		if sp.done() {
			break
		}
	}
	for k, msg := range msgs {
		last := msg.embeds[len(msg.embeds)-1]
		last.Footer = &discordgo.MessageEmbedFooter{Text: footer(ev.ID, k+1, len(msgs))}
		last.Timestamp = timestamp(ev)
	}
	return msgs, cut
}

// oneMessage lays the turn out in one message, if it fits: the title on
// the first embed, the text over as many embeds as it needs, and the
// fields and footer on the last, after the text.
func oneMessage(t turn, ev *relay.Event) (message, bool) {
	foot := footer(ev.ID, 1, 1)
	fixed := embedSize(t.head) + len16(foot)
	if len16(t.text) > 2*(maxEmbedsTotal-fixed) {
		return message{}, false // far too long: not split to find out
	}
	sp := newSplitter(t.text)
	var embeds []*discordgo.MessageEmbed
	total := fixed
	for first := true; first || !sp.done(); first = false {
		e := &discordgo.MessageEmbed{Type: discordgo.EmbedTypeRich, Color: t.head.Color}
		if first {
			e.Title = t.head.Title
		}
		if !sp.done() {
			e.Description = sp.next(maxDescription).String()
		}
		total += len16(e.Description)
		embeds = append(embeds, e)
		if len(embeds) > maxEmbeds || total > maxEmbedsTotal {
			return message{}, false
		}
	}
	last := embeds[len(embeds)-1]
	last.Fields = t.head.Fields
	last.Footer = &discordgo.MessageEmbedFooter{Text: foot}
	last.Timestamp = timestamp(ev)
	content, _ := truncate(t.content, maxContent)
	return message{content: content, mention: t.mention, embeds: embeds}, true
}

// turnOf is ev rendered once: taken from the memo when CanPack rendered it
// already.
func (s *Sink) turnOf(ctx context.Context, ev *relay.Event) turn {
	if t, ok := s.memo.Get(ev); ok {
		return t
	}
	return s.turn(ctx, ev)
}

// render lays ev out into the messages that show it, logging a cut.
func (s *Sink) render(ctx context.Context, ev *relay.Event) []message {
	msgs, cut := layout(s.turnOf(ctx, ev), ev)
	if cut {
		s.log.WarnContext(ctx, fmt.Sprintf("turn longer than %d Discord messages; cut with a notice", maxMessagesPerTurn),
			"event_id", ev.ID, "limit", maxMessagesPerTurn*maxEmbedsTotal)
	}
	return msgs
}

// packEmbed is the one embed ev takes in a packed message; fits reports
// whether the whole turn is in it (only such turns are packed).
func (s *Sink) packEmbed(ctx context.Context, ev *relay.Event) (e *discordgo.MessageEmbed, t turn, fits bool) {
	t = s.turnOf(ctx, ev)
	embed := *t.head
	embed.Description = strings.TrimSpace(t.text)
	embed.Footer = &discordgo.MessageEmbedFooter{Text: footer(ev.ID, 1, 1)}
	embed.Timestamp = timestamp(ev)
	return &embed, t, len16(embed.Description) <= maxDescription && embedSize(&embed) <= maxEmbedsTotal
}

// pack renders the longest prefix of evs that fits one message whole (10
// embeds, 6000 characters in all), one embed per event, and says how many
// that is. A first event too big even alone (CanPack keeps such turns
// out) is cut, with "…" and its event id.
func (s *Sink) pack(ctx context.Context, evs []*relay.Event) (message, int) {
	var msg message
	used := 0
	for i, ev := range evs {
		e, t, fits := s.packEmbed(ctx, ev)
		if i > 0 && (!fits || i == maxEmbeds || used+embedSize(e) > maxEmbedsTotal) {
			break
		}
		if !fits && fitEmbed(e, maxEmbedsTotal, ev.ID) {
			s.log.WarnContext(ctx, "turn cut to fit a packed message", "event_id", ev.ID, "limit", maxEmbedsTotal)
		}
		if t.mention && !msg.mention {
			msg.content, msg.mention = t.content, true
		}
		msg.embeds = append(msg.embeds, e)
		used += embedSize(e)
	}
	return msg, len(msg.embeds)
}

// fitEmbed shrinks e to at most budget characters and its description to
// maxDescription: the description is cut first (fences closed, ending in
// "…" and the event id); when even the rest is too big, fields go from the
// end and the title is shortened. It reports whether it cut anything.
func fitEmbed(e *discordgo.MessageEmbed, budget int, id string) bool {
	if embedSize(e) <= budget && len16(e.Description) <= maxDescription {
		return false
	}
	id, _ = truncate(id, 64)
	marker := "\n\n… *(cut; the whole turn is event `" + id + "`)*"
	room := min(budget-(embedSize(e)-len16(e.Description)), maxDescription)
	if room >= len16(marker)+minSplitLimit {
		e.Description = newSplitter(e.Description).next(room-len16(marker)).String() + marker
		return true
	}
	e.Description = "…"
	for embedSize(e) > budget && len(e.Fields) > 0 {
		e.Fields = e.Fields[:len(e.Fields)-1]
	}
	if over := embedSize(e) - budget; over > 0 {
		e.Title, _ = truncate(e.Title, max(1, len16(e.Title)-over))
	}
	return true
}
