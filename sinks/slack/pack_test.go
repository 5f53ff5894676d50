package slack

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/sinks/slack/slacktest"
)

// TestSendPackedOneFits: when only the first of several turns fits a
// packed message, it goes out as Send posts it (":speech_balloon: New chat
// message"), not as "1 new chat messages". With Slack's limits two
// packable turns always fit; packLimit makes the case reachable.
func TestSendPackedOneFits(t *testing.T) {
	t.Parallel()
	turn := func(n int) *relay.Event {
		body, _ := json.Marshal(map[string]any{
			"messages":        []map[string]string{{"role": "user", "content": fmt.Sprint("question ", n)}},
			"answer":          map[string]any{"role": "assistant", "content": fmt.Sprint("answer ", n), "score": 0.5},
			"conversation_id": fmt.Sprint("conv-", n),
		})
		ev, err := relay.DecodeEvent(body)
		if err != nil {
			t.Fatal(err)
		}
		ev.ID, ev.Topic = fmt.Sprint("ev-", n), relay.TopicChat
		return ev
	}
	for _, bot := range []bool{false, true} {
		t.Run(fmt.Sprint("bot ", bot), func(t *testing.T) {
			t.Parallel()
			srv, alone := slacktest.NewServer(t), slacktest.NewServer(t)
			mk := func(srv *slacktest.Server) *Sink {
				cfg := Config{Name: "s", WebhookURL: relay.Secret(srv.WebhookURL())}
				if bot {
					cfg = Config{Name: "s", Token: relay.Secret(srv.Token), Channel: "C0123ABCD", APIURL: srv.APIURL()}
				}
				s, err := New(cfg, relay.SinkDeps{})
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			s := mk(srv)
			s.render.packLimit = 1 // room for the first turn only
			a, b := turn(1), turn(2)
			n, _, err := s.SendPacked(t.Context(), []*relay.Event{a, b})
			if err != nil || n != 1 {
				t.Fatalf("SendPacked = %d, %v; want 1, nil", n, err)
			}
			if err := mk(alone).Send(t.Context(), a); err != nil {
				t.Fatal(err)
			}
			got, want := srv.Messages(), alone.Messages()
			if len(got) != 1 || string(got[0].Blocks) != string(want[0].Blocks) || got[0].Text != want[0].Text {
				t.Fatalf("the one turn that fit went out as\n%s\n%q\nwant the single-turn layout\n%s\n%q", got[0].Blocks, got[0].Text, want[0].Blocks, want[0].Text)
			}
			if bot {
				if ts, err := s.books.Thread(t.Context(), s.dest, relay.ConversationOf(a)); err != nil || ts != got[0].TS {
					t.Fatalf("conversation's thread %q (%v), want %q", ts, err, got[0].TS)
				}
			}
		})
	}
}
