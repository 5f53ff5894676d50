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
	title := ev.Topic
	switch ev.Topic {
	case relay.TopicChat:
		title = "chat"
	case relay.TopicLead:
		title = "new lead"
	case relay.TopicEscalation:
		title = "LIVE CHAT ESCALATION: " + relay.EscalationLine
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
			block(&b, "user", q)
		}
		if a := strings.TrimSpace(ev.AnswerText()); a != "" {
			block(&b, "bot ", a)
		} else {
			block(&b, "bot ", "("+strings.TrimSuffix(strings.ToLower(relay.NoAnswer[:1])+relay.NoAnswer[1:], ".")+")")
		}
	case relay.TopicEscalation:
		fields(&b, relay.ReadingOrder(ev.Lead), true)
		earlier, turns := ev.Transcript(transcriptTurns)
		if earlier > 0 {
			fmt.Fprintf(&b, "│ (%s)\n", relay.EarlierMessages(earlier))
		}
		for _, m := range turns {
			block(&b, speaker(m.Role), m.Content)
		}
		if len(turns) == 0 {
			fmt.Fprintf(&b, "│ (%s)\n", strings.TrimSuffix(strings.ToLower(relay.NoConversation[:1])+relay.NoConversation[1:], "."))
		}
	case relay.TopicLead:
		fields(&b, relay.ReadingOrder(ev.Lead), false)
		if len(ev.Lead) == 0 {
			fields(&b, ev.Fields, false)
		}
	default:
		fields(&b, ev.Fields, false)
	}

	var foot []string
	if ev.ConversationID != "" {
		foot = append(foot, "conversation "+ev.ConversationID)
	}
	if ev.ChatbotID != "" {
		foot = append(foot, "chatbot "+ev.ChatbotID)
	}
	if ev.Topic != relay.TopicLead {
		if uuid := ev.LeadValue("uuid"); uuid != "" {
			foot = append(foot, "lead "+uuid)
		}
	}
	foot = append(foot, "event "+ev.ID)
	fmt.Fprintf(&b, "└─ %s\n", strings.Join(foot, " · "))
	return b.String()
}

// speaker is the four-character column label of a message's author.
func speaker(role string) string {
	switch relay.Speaker(role) {
	case "Visitor":
		return "user"
	case "Bot":
		return "bot "
	case "Agent":
		return "agnt"
	}
	return "    "
}

// block prints a labelled, possibly multi-line text, indented under the
// label.
func block(b *strings.Builder, label, text string) {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	for i, line := range lines {
		if i == 0 {
			fmt.Fprintf(b, "│ %s │ %s\n", label, line)
			continue
		}
		fmt.Fprintf(b, "│      │ %s\n", line)
	}
}

// fields prints fields as aligned "key  value" lines, a nested value as
// indented "label: value" lines; skipUUID leaves the lead's uuid to the
// footer.
func fields(b *strings.Builder, fs []relay.Field, skipUUID bool) {
	width := 0
	for _, f := range fs {
		width = max(width, len(f.Key))
	}
	for _, f := range fs {
		if skipUUID && f.Key == "uuid" {
			continue
		}
		lines := relay.Readable(f)
		if !f.Nested || len(lines) == 1 && lines[0].Key == "" {
			fmt.Fprintf(b, "│ %-*s  %s\n", width, f.Key, strings.ReplaceAll(relay.JoinedValue(f), "\n", " "))
			continue
		}
		fmt.Fprintf(b, "│ %s\n", f.Key)
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
