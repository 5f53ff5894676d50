package slack

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	slackapi "github.com/slack-go/slack"

	"github.com/chatrelay/chatrelay/relay"
)

// FuzzRender: any event body, under any topic, renders alone, packed and
// through a template without a panic (a panic would park the delivery),
// in 1 to maxParts messages within Slack's limits.
func FuzzRender(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.json"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		for _, topic := range []string{relay.TopicChat, relay.TopicLead, relay.TopicEscalation, "order.created"} {
			f.Add(b, topic)
		}
	}
	tmpl, err := relay.ParseTemplate("t", `*{{.Topic}}* {{.AnswerText}} {{lead . "email"}} {{truncate 10 .ConversationID}}`)
	if err != nil {
		f.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	renderers := []*renderer{
		{md: newMarkdown(), mention: "<!here>", logger: quiet, memo: relay.NewRenderMemo[content](memoSize)},
		{md: newMarkdown(), tmpl: tmpl, logger: quiet},
	}
	f.Fuzz(func(t *testing.T, body []byte, topic string) {
		ev, err := relay.DecodeEvent(body)
		if err != nil {
			return
		}
		ev.ID, ev.Topic = "01900000-0000-7000-8000-000000000001", topic
		for _, r := range renderers {
			r.packable(ev)
			msgs := r.render(ev)
			if len(msgs) == 0 || len(msgs) > maxParts {
				t.Fatalf("%d messages", len(msgs))
			}
			for _, m := range msgs {
				checkMessage(t, m)
			}
			m, n := r.renderPacked([]*relay.Event{ev, ev})
			if n < 1 || n > 2 {
				t.Fatalf("renderPacked took %d of 2", n)
			}
			checkMessage(t, m)
		}
	})
}

// checkMessage fails the test if m breaks one of Slack's limits.
func checkMessage(t *testing.T, m message) {
	t.Helper()
	if len(m.blocks) == 0 || len(m.blocks) > maxBlocks {
		t.Fatalf("%d blocks", len(m.blocks))
	}
	if size(m.text) > maxFallbackText {
		t.Fatalf("fallback text of size %d", size(m.text))
	}
	for _, b := range m.blocks {
		switch b := b.(type) {
		case *slackapi.HeaderBlock:
			if size(b.Text.Text) > maxHeaderText {
				t.Fatalf("header of size %d", size(b.Text.Text))
			}
		case *slackapi.SectionBlock:
			if b.Text != nil && size(b.Text.Text) > maxSectionText {
				t.Fatalf("section of size %d", size(b.Text.Text))
			}
			if len(b.Fields) > maxFields {
				t.Fatalf("%d fields", len(b.Fields))
			}
			for _, fl := range b.Fields {
				if size(fl.Text) > maxFieldText {
					t.Fatalf("field of size %d", size(fl.Text))
				}
			}
		case *slackapi.ContextBlock:
			if len(b.ContextElements.Elements) > maxContextElements {
				t.Fatalf("%d context elements", len(b.ContextElements.Elements))
			}
		}
	}
}
