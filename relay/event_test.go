package relay_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/chatrelay/chatrelay/relay"
)

func readPayload(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeEvent(t *testing.T) {
	t.Parallel()
	score := func(v float64) *float64 { return &v }
	tests := []struct {
		name     string
		body     []byte
		conv     string
		question string
		answer   string
		score    *float64
		lead     []relay.Field
	}{
		{
			name: "documented chat", body: readPayload(t, "chat.json"),
			conv: "dbf24043-83a6-47fb-b241-9865de3877c9", question: "Do you ship to Canada, and how long does it take?",
			answer: "Yes, we ship to Canada. Standard delivery takes 5-7 business days; express takes 2-3. See the [shipping page](https://example.com/shipping) for rates.",
			score:  score(0.8503905227042547),
			lead:   []relay.Field{{Key: "uuid", Value: "28239132-671d-4b1f-9d43-1c7b70985ede"}},
		},
		{
			name: "messages and answer as JSON-encoded strings", body: readPayload(t, "chat-string-fields.json"),
			conv: "7a3e2b1c-0000-4000-8000-000000000001", question: "Is there a free plan?",
			answer: "Yes: the **Free** plan includes 30 messages a month.", score: score(0.91),
		},
		{
			name: "lead in stable order", body: readPayload(t, "lead-submission.json"),
			conv: "dbf24043-83a6-47fb-b241-9865de3877c9",
			lead: []relay.Field{{Key: "name", Value: "Ada Lovelace"}, {Key: "email", Value: "ada@example.com"},
				{Key: "phone", Value: "+1 555 0100"}, {Key: "uuid", Value: "28239132-671d-4b1f-9d43-1c7b70985ede"},
				{Key: "company", Value: "Analytical Engines Ltd"}},
		},
		{name: "empty object", body: []byte(`{}`)},
		{
			name: "wrong types are ignored, numbers kept as text",
			body: []byte(`{"conversation_id":12345,"messages":{"not":"a list"},"answer":42,"lead":"not json","score":"x"}`),
			conv: "12345", answer: "42",
		},
		{
			name:   "answer as plain string",
			body:   []byte(`{"answer":"Just text","messages":[{"role":"user","content":"q"}]}`),
			answer: "Just text", question: "q",
		},
		{
			name:     "content as parts, lead as JSON string",
			body:     []byte(`{"messages":[{"role":"user","content":[{"type":"text","text":"part one"},{"type":"text","text":"part two"}]}],"lead":"{\"email\":\"a@b.c\",\"name\":\"A\"}"}`),
			question: "part one\n\npart two",
			lead:     []relay.Field{{Key: "name", Value: "A"}, {Key: "email", Value: "a@b.c"}},
		},
		{
			name: "null fields", body: []byte(`{"conversation_id":null,"answer":null,"messages":null,"lead":null}`),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ev, err := relay.DecodeEvent(tc.body)
			if err != nil {
				t.Fatalf("DecodeEvent: %v", err)
			}
			if ev.ConversationID != tc.conv || ev.Question() != tc.question {
				t.Errorf("conversation %q question %q", ev.ConversationID, ev.Question())
			}
			gotAnswer := ""
			if ev.Answer != nil {
				gotAnswer = ev.Answer.Content
			}
			if gotAnswer != tc.answer {
				t.Errorf("answer %q, want %q", gotAnswer, tc.answer)
			}
			s, ok := ev.Score()
			if ok != (tc.score != nil) || (ok && s != *tc.score) {
				t.Errorf("score %v %v, want %v", s, ok, tc.score)
			}
			if !reflect.DeepEqual(ev.Lead, tc.lead) && (len(ev.Lead) != 0 || len(tc.lead) != 0) {
				t.Errorf("lead %v, want %v", ev.Lead, tc.lead)
			}
		})
	}
}

func TestDecodeEventRejectsNonObjects(t *testing.T) {
	t.Parallel()
	for _, body := range []string{``, `[]`, `"x"`, `42`, `null`, `{`, `{"a":1}{"b":2}`, `{"a":1} x`, "\xff"} {
		if _, err := relay.DecodeEvent([]byte(body)); !errors.Is(err, relay.ErrNotObject) {
			t.Errorf("DecodeEvent(%q) = %v, want ErrNotObject", body, err)
		}
	}
}

func TestTopicOf(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ header, body, want string }{
		{"lead-submission", `{"event":"chat"}`, "lead-submission"},
		{"", `{"event":"live-chat-escalation"}`, "live-chat-escalation"},
		{"", `{}`, "chat"},
		{"  ", `{"event":7}`, "7"},
		{"", `not json`, "chat"},
	} {
		if got := relay.TopicOf(tc.header, []byte(tc.body)); got != tc.want {
			t.Errorf("TopicOf(%q, %s) = %q, want %q", tc.header, tc.body, got, tc.want)
		}
	}
}

// FuzzDecodeEvent: any body DecodeEvent accepts is a JSON object; decoding
// is deterministic, and re-decoding the compact re-encoding of its fields
// gives the same parsed view.
func FuzzDecodeEvent(f *testing.F) {
	for _, name := range []string{"chat.json", "chat-string-fields.json", "lead-submission.json", "live-chat-escalation.json"} {
		f.Add(readPayload(f, name))
	}
	f.Add([]byte(`{"messages":"[{\"role\":\"user\",\"content\":[{\"text\":\"x\"}]}]","answer":"{\"score\":\"nan\"}"}`))
	f.Add([]byte(`{"a":{"b":[1,2,{"c":null}]},"lead":{"x":1e400}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := relay.DecodeEvent(body)
		if err != nil {
			return
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(body, &obj); err != nil {
			t.Fatalf("accepted a body that is not a JSON object: %q (%v)", body, err)
		}
		if len(ev.Fields) != len(obj) {
			t.Fatalf("%d fields, encoding/json sees %d keys in %q", len(ev.Fields), len(obj), body)
		}
		for _, f := range ev.Fields {
			if _, ok := obj[f.Key]; !ok {
				t.Fatalf("field %q is not a key encoding/json sees in %q", f.Key, body)
			}
		}
		again, err := relay.DecodeEvent(body)
		if err != nil || !reflect.DeepEqual(ev, again) {
			t.Fatalf("decoding is not deterministic for %q", body)
		}
		reencoded, err := json.Marshal(obj)
		if err != nil {
			return // e.g. numbers out of range for re-encoding
		}
		ev2, err := relay.DecodeEvent(reencoded)
		if err != nil {
			t.Fatalf("re-encoded body rejected: %v", err)
		}
		if ev.ConversationID != ev2.ConversationID || ev.Question() != ev2.Question() ||
			ev.ChatbotID != ev2.ChatbotID || (ev.Answer == nil) != (ev2.Answer == nil) {
			t.Fatalf("parsed view changed after re-encoding:\n%+v\n%+v", ev, ev2)
		}
	})
}
