package discord

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

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
	content string
	embeds  []*discordgo.MessageEmbed
	mention bool // allow the configured mention to ping
}

// turn renders ev by its topic; unknown topics render generically.
func (s *Sink) turn(ctx context.Context, ev *relay.Event) turn {
	var t turn
	switch ev.Topic {
	case relay.TopicChat:
		t = chatTurn(ev, "💬 Chat", scoreColor(ev))
	case relay.TopicEscalation:
		t = chatTurn(ev, "🚨 Live chat escalation", colorEscalation)
		t.text = "**The user asked to talk to a human.**\n\n" + t.text
		if s.mention.raw != "" {
			t.content = s.mention.raw + " 🚨 Live chat escalation: a user asked to talk to a human"
			t.mention = true
		}
	case relay.TopicLead:
		t = leadTurn(ev)
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
	v, ok := ev.Score()
	switch {
	case !ok:
		return colorNoScore
	case v >= 0.8:
		return colorGood
	case v >= 0.5:
		return colorFair
	}
	return colorPoor
}

// fields builds an embed's fields within the limits; what does not fit
// becomes lines of text.
type fields struct {
	list     []*discordgo.MessageEmbedField
	size     int
	overflow []string
}

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

// addContext adds the fields every topic shows about the conversation.
func (f *fields) addContext(ev *relay.Event) {
	f.add("Conversation", code(ev.ConversationID), true)
	f.add("Chatbot", code(ev.ChatbotID), true)
	f.add("Source", ev.Source, true)
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

// code shows an id as inline code (plain when it holds a backtick).
func code(s string) string {
	s = strings.TrimSpace(s)
	if s == "" || strings.Contains(s, "`") {
		return s
	}
	return "`" + s + "`"
}

func newHead(title string, color int) *discordgo.MessageEmbed {
	title, _ = truncate(title, maxTitle)
	return &discordgo.MessageEmbed{Type: discordgo.EmbedTypeRich, Title: title, Color: color}
}

// chatTurn shows the user's question and the bot's answer, its Markdown
// kept as is where Discord renders it (forDiscord), with the score, source, chatbot, conversation and lead.
func chatTurn(ev *relay.Event, title string, color int) turn {
	var b strings.Builder
	if q := strings.TrimSpace(ev.Question()); q != "" {
		b.WriteString("**Question**\n")
		b.WriteString(quote(q))
		b.WriteString("\n\n")
	}
	b.WriteString("**Answer**\n")
	if ev.Answer != nil && strings.TrimSpace(ev.Answer.Content) != "" {
		b.WriteString(forDiscord(strings.TrimSpace(ev.Answer.Content)))
	} else {
		b.WriteString("*(no answer)*")
	}
	var f fields
	if v, ok := ev.Score(); ok {
		f.add("Score", strconv.FormatFloat(v, 'f', 2, 64), true)
	}
	f.addContext(ev)
	if lead := leadLines(ev.Lead); lead != "" {
		f.add("Lead", lead, false)
	}
	head := newHead(title, color)
	head.Fields = f.list
	return turn{head: head, text: f.withOverflow(b.String())}
}

// quote makes text a Markdown block quote, line by line.
func quote(text string) string {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		lines[i] = "> " + l
	}
	return strings.Join(lines, "\n")
}

func leadLines(lead []relay.Field) string {
	var lines []string
	for _, f := range lead {
		if strings.TrimSpace(f.Value) != "" {
			lines = append(lines, label(f.Key)+": "+f.Value)
		}
	}
	return strings.Join(lines, "\n")
}

// acronyms are field keys shown in capitals.
var acronyms = map[string]string{"id": "ID", "uuid": "UUID", "ip": "IP", "url": "URL"}

// label turns a field key into a label: "first_name" → "First name",
// "uuid" → "UUID", "chatbot_id" → "Chatbot ID".
func label(key string) string {
	words := strings.Fields(strings.ReplaceAll(key, "_", " "))
	for i, w := range words {
		if a, ok := acronyms[strings.ToLower(w)]; ok {
			words[i] = a
		}
	}
	key = strings.Join(words, " ")
	r, size := utf8.DecodeRuneInString(key)
	if size == 0 {
		return key
	}
	return string(unicode.ToUpper(r)) + key[size:]
}

// leadTurn shows the lead's fields, in the event's stable order, with the
// conversation they came from.
func leadTurn(ev *relay.Event) turn {
	var f fields
	for _, l := range ev.Lead {
		f.add(label(l.Key), l.Value, true)
	}
	text := ""
	if len(f.list) == 0 && len(f.overflow) == 0 {
		text = "*(the lead carried no fields)*"
	}
	f.addContext(ev)
	head := newHead("📇 New lead", colorLead)
	head.Fields = f.list
	return turn{head: head, text: f.withOverflow(text)}
}

// genericTurn shows every top-level field of an event of a topic chatrelay
// does not know, so that nothing is dropped; except client_ip, which no
// topic shows in a channel.
func genericTurn(ev *relay.Event) turn {
	topic := strings.TrimSpace(ev.Topic)
	if topic == "" {
		topic = "(no topic)"
	}
	var lines []string
	for _, f := range ev.Fields {
		if f.Key != "client_ip" && strings.TrimSpace(f.Value) != "" {
			lines = append(lines, "**"+label(f.Key)+"**: "+f.Value)
		}
	}
	text := strings.Join(lines, "\n")
	if text == "" {
		text = "*(the event carried no fields)*"
	}
	return turn{head: newHead("📨 Event: "+topic, colorOther), text: text}
}

// footer names the event, so that a cut or split turn can be looked up.
func footer(id string, part, parts int) string {
	id, _ = truncate(id, 64)
	if parts <= 1 {
		return "event " + id
	}
	return fmt.Sprintf("event %s · part %d/%d", id, part, parts)
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

// layout lays a turn out into at most maxMessagesPerTurn messages: the text
// continues from embed to embed and message to message, split on paragraph,
// line, sentence or word boundaries with code fences closed and reopened.
// Only past the last message is it cut, with "…" and the event id. It
// reports whether it cut.
func layout(t turn, ev *relay.Event) ([]message, bool) {
	sp := newSplitter(t.text)
	notice := cutNotice(ev.ID)
	footerRoom := len16(footer(ev.ID, maxMessagesPerTurn, maxMessagesPerTurn))
	var msgs []message
	cut := false
	for m := 0; m < maxMessagesPerTurn; m++ {
		var msg message
		budget := maxEmbedsTotal - footerRoom
		if m == 0 {
			head := *t.head
			msg = message{content: t.content, mention: t.mention, embeds: []*discordgo.MessageEmbed{&head}}
			msg.content, _ = truncate(msg.content, maxContent)
			budget -= embedSize(&head)
		}
		lastMessage := m == maxMessagesPerTurn-1
		for slot := 0; !sp.done() && budget >= minPiece && slot < maxEmbeds; slot++ {
			var e *discordgo.MessageEmbed
			if m == 0 && slot == 0 {
				e = msg.embeds[0]
			} else {
				e = &discordgo.MessageEmbed{Type: discordgo.EmbedTypeRich, Color: t.head.Color}
				msg.embeds = append(msg.embeds, e)
			}
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
