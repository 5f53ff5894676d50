package discord

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/chatrelay/chatrelay/relay"
)

// FuzzRender: any event body, under any topic, renders alone, packed and
// through a template without a panic (a panic would park the delivery),
// in 1 to maxMessagesPerTurn messages within Discord's limits.
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
	tmpl, err := relay.ParseTemplate("t", `*{{.Topic}}* {{.AnswerText}} {{lead . "email"}}`)
	if err != nil {
		f.Fatal(err)
	}
	var sinks []*Sink
	for _, cfg := range []Config{
		{Name: "d", WebhookURL: "https://discord.com/api/webhooks/1/tok", Mention: "<@&123>"},
		{Name: "d", WebhookURL: "https://discord.com/api/webhooks/1/tok", Template: tmpl, ThreadName: "Chat"},
	} {
		s, err := New(cfg, relay.SinkDeps{})
		if err != nil {
			f.Fatal(err)
		}
		sinks = append(sinks, s)
	}
	f.Fuzz(func(t *testing.T, body []byte, topic string) {
		ev, err := relay.DecodeEvent(body)
		if err != nil {
			return
		}
		ev.ID, ev.Topic = "01900000-0000-7000-8000-000000000001", topic
		ctx := context.Background()
		for _, s := range sinks {
			s.CanPack(ctx, ev)
			msgs := s.render(ctx, ev)
			if len(msgs) == 0 || len(msgs) > maxMessagesPerTurn {
				t.Fatalf("%d messages", len(msgs))
			}
			for _, m := range msgs {
				checkMessage(t, m)
			}
			m, n := s.pack(ctx, []*relay.Event{ev, ev})
			if n < 1 || n > 2 {
				t.Fatalf("pack took %d of 2", n)
			}
			checkMessage(t, m)
			if name := threadName("Chat", ev); len16(name) > maxThreadName {
				t.Fatalf("thread name of %d units", len16(name))
			}
		}
	})
}
