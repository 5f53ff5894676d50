// Package console is the sink of embedded-default mode: it prints each
// conversation turn, readably, to a terminal (stdout), so a new user sees
// what Slack and Discord would show without an account on either.
package console

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/chatrelay/chatrelay/relay"
)

// Sink writes events to an io.Writer.
type Sink struct {
	name string
	mu   sync.Mutex
	w    io.Writer
}

// New returns a console sink writing to w.
func New(name string, w io.Writer) *Sink { return &Sink{name: name, w: w} }

// Name implements relay.Sink.
func (s *Sink) Name() string { return s.name }

// Send implements relay.Sink. A failed write (a closed stdout) is retried by
// the dispatcher like any other failure.
func (s *Sink) Send(ctx context.Context, ev *relay.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	text := sanitize(Render(ev))
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := io.WriteString(s.w, text); err != nil {
		return fmt.Errorf("console sink %q: write: %w", s.name, err)
	}
	return nil
}

// transcriptTurns is how many of the conversation's latest messages an
// escalation shows; earlier ones are counted.
const transcriptTurns = 6

// Render returns the text the console shows for ev: the same story, in
// the same words, as Slack and Discord show (SPEC §6).
func Render(ev *relay.Event) string {
	var b strings.Builder
	var title string
	switch ev.Topic {
	case relay.TopicChat:
		title = "New chat message"
	case relay.TopicLead:
		title = "New lead"
	case relay.TopicEscalation:
		title = "LIVE CHAT ESCALATION: " + relay.EscalationLine
	case relay.TopicAgentReply:
		title = "Agent reply"
	default:
		title = "Chat Data event: " + ev.Topic
	}
	head := []string{title, ev.ReceivedAt.UTC().Format(time.DateTime) + " UTC"}
	if ev.Source != "" {
		head = append(head, ev.Source)
	}
	if s := ev.ScoreText(); s != "" {
		head = append(head, "score "+s)
	}
	fmt.Fprintf(&b, "┌─ %s\n", strings.Join(head, " · "))

	switch ev.Topic {
	case relay.TopicChat:
		if q := ev.Question(); q != "" {
			block(&b, speaker("user"), q)
		}
		if a := strings.TrimSpace(ev.AnswerText()); a != "" {
			block(&b, speaker("assistant"), a)
		} else {
			block(&b, speaker("assistant"), relay.NoAnswer)
		}
	case relay.TopicEscalation:
		var who []relay.Field
		for _, f := range relay.ReadingOrder(ev.Lead) {
			if k := relay.LeadFieldKind(f.Key); k == relay.KindWho || k == relay.KindContact {
				who = append(who, f)
			}
		}
		fields(&b, who)
		earlier, turns := ev.Transcript(transcriptTurns)
		if earlier > 0 {
			fmt.Fprintf(&b, "│ (%s)\n", relay.EarlierMessages(earlier))
		}
		for _, m := range turns {
			block(&b, speaker(m.Role), m.Content)
		}
		if len(turns) == 0 {
			fmt.Fprintf(&b, "│ %s\n", relay.NoConversation)
		}
	case relay.TopicLead:
		var shown []relay.Field
		for _, f := range relay.ReadingOrder(ev.Lead) {
			if f.Key != "uuid" { // with the ids at the foot, as every sink shows it
				shown = append(shown, f)
			}
		}
		fields(&b, shown)
		if len(shown) == 0 {
			fmt.Fprintf(&b, "│ %s\n", relay.NoLeadFields)
		}
	case relay.TopicAgentReply:
		if r := ev.AgentReply(); r != nil {
			fmt.Fprintf(&b, "│ %s\n", r.Replied())
			block(&b, speaker("agent"), r.Text)
			break
		}
		fields(&b, ev.Fields)
	default:
		shown := ev.OtherFields()
		fields(&b, shown)
		if len(shown) == 0 {
			fmt.Fprintf(&b, "│ %s\n", relay.NoFields)
		}
	}

	var foot []string
	if ev.ConversationID != "" {
		foot = append(foot, "conversation "+ev.ConversationID)
	}
	if ev.ChatbotID != "" {
		foot = append(foot, "chatbot "+ev.ChatbotID)
	}
	if uuid := ev.LeadValue("uuid"); uuid != "" {
		foot = append(foot, "lead "+uuid)
	}
	foot = append(foot, "event "+ev.ID)
	fmt.Fprintf(&b, "└─ %s\n", strings.Join(foot, " · "))
	return b.String()
}

// speakerWidth is the width of the column naming who wrote a message.
const speakerWidth = len("Visitor")

// speaker names who wrote a message with role, as Slack and Discord do
// (Visitor, Bot, Agent), padded to the column.
func speaker(role string) string {
	who := relay.Speaker(role)
	if n := utf8.RuneCountInString(who); n > speakerWidth {
		who = string([]rune(who)[:speakerWidth])
	}
	return who + strings.Repeat(" ", speakerWidth-utf8.RuneCountInString(who))
}

// block prints a labelled, possibly multi-line text, indented under the
// label.
func block(b *strings.Builder, label, text string) {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	pad := strings.Repeat(" ", speakerWidth)
	for i, line := range lines {
		if i == 0 {
			fmt.Fprintf(b, "│ %s │ %s\n", label, line)
			continue
		}
		fmt.Fprintf(b, "│ %s │ %s\n", pad, line)
	}
}

// fields prints fields as aligned "Label  value" lines (labels as Slack
// and Discord show them), a nested value as indented "label: value" lines
// under its label.
func fields(b *strings.Builder, fs []relay.Field) {
	labels := make([]string, len(fs))
	width := 0
	for i, f := range fs {
		labels[i] = relay.Label(f.Key)
		width = max(width, utf8.RuneCountInString(labels[i]))
	}
	for i, f := range fs {
		lines := relay.Readable(f)
		pad := strings.Repeat(" ", width-utf8.RuneCountInString(labels[i]))
		if !f.Nested || len(lines) == 1 && lines[0].Key == "" {
			fmt.Fprintf(b, "│ %s%s  %s\n", labels[i], pad, strings.ReplaceAll(relay.JoinedValue(f), "\n", " "))
			continue
		}
		fmt.Fprintf(b, "│ %s\n", labels[i])
		for _, l := range lines {
			fmt.Fprintf(b, "│   %s: %s\n", l.Key, strings.ReplaceAll(l.Value, "\n", " "))
		}
	}
}

// sanitize drops control characters other than newline and tab, so that
// text a chatbot user typed cannot drive the terminal (escape sequences).
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return r
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return -1
		}
		return r
	}, s)
}
