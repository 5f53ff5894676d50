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

// Render returns the text the console shows for ev.
func Render(ev *relay.Event) string {
	var b strings.Builder
	title := ev.Topic
	switch ev.Topic {
	case relay.TopicChat:
		title = "chat"
	case relay.TopicLead:
		title = "lead submission"
	case relay.TopicEscalation:
		title = "LIVE CHAT ESCALATION: a user asks for a human"
	}
	head := []string{title, ev.ReceivedAt.UTC().Format(time.DateTime) + " UTC"}
	if ev.Source != "" {
		head = append(head, ev.Source)
	}
	if s, ok := ev.Score(); ok {
		head = append(head, fmt.Sprintf("score %.2f", s))
	}
	fmt.Fprintf(&b, "┌─ %s\n", strings.Join(head, " · "))

	switch ev.Topic {
	case relay.TopicChat, relay.TopicEscalation:
		if q := ev.Question(); q != "" {
			block(&b, "user", q)
		}
		if ev.Answer != nil && ev.Answer.Content != "" {
			block(&b, "bot ", ev.Answer.Content)
		}
		if ev.Question() == "" && (ev.Answer == nil || ev.Answer.Content == "") {
			fields(&b, ev.Fields)
		}
	case relay.TopicLead:
		fields(&b, ev.Lead)
		if len(ev.Lead) == 0 {
			fields(&b, ev.Fields)
		}
	default:
		fields(&b, ev.Fields)
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

func fields(b *strings.Builder, fs []relay.Field) {
	width := 0
	for _, f := range fs {
		width = max(width, len(f.Key))
	}
	for _, f := range fs {
		fmt.Fprintf(b, "│ %-*s  %s\n", width, f.Key, strings.ReplaceAll(f.Value, "\n", " "))
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
