package relay_test

import (
	"fmt"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatrelay/chatrelay/relay"
)

func decode(t testing.TB, topic, body string) *relay.Event {
	t.Helper()
	ev, err := relay.DecodeEvent([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	ev.Topic = topic
	return ev
}

func TestUsageOf(t *testing.T) {
	t.Parallel()
	sample, err := os.ReadFile("testdata/chat.json")
	if err != nil {
		t.Fatal(err)
	}
	stringFields, err := os.ReadFile("testdata/chat-string-fields.json")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		topic string
		body  string
		want  relay.Usage
		low   bool
	}{
		{"sample chat: greeting and first question", relay.TopicChat, string(sample),
			relay.Usage{Counted: true, Chatbot: "654aee418bc9a33b0e50d0ad", Source: "widget", NewConversation: true,
				Credits: 20, HasScore: true, Score: 0.8503905227042547}, false},
		{"fields as JSON strings", relay.TopicChat, string(stringFields),
			relay.Usage{Counted: true, Chatbot: "654aee418bc9a33b0e50d0ad", Source: "API", NewConversation: true,
				Credits: 1, HasScore: true, Score: 0.91}, false},
		{"second turn is no new conversation", relay.TopicChat,
			`{"conversation_id":"c","chatbot_id":"b","messages":[{"role":"user","content":"1"},{"role":"assistant","content":"a"},{"role":"user","content":"2"}],"answer":{"content":"x","score":0.2}}`,
			relay.Usage{Counted: true, Chatbot: "b", HasScore: true, Score: 0.2}, true},
		{"no conversation id", relay.TopicChat, `{"chatbot_id":"b","messages":[{"role":"user","content":"1"}]}`,
			relay.Usage{Counted: true, Chatbot: "b"}, false},
		{"credits as text, score exactly 0.5", relay.TopicChat, `{"cost_credits":"2.5","answer":{"content":"x","score":0.5}}`,
			relay.Usage{Counted: true, Credits: 2.5, HasScore: true, Score: 0.5}, false},
		{"negative and garbled credits ignored", relay.TopicChat, `{"cost_credits":-3}`, relay.Usage{Counted: true}, false},
		{"credits not a number", relay.TopicChat, `{"cost_credits":{"n":1}}`, relay.Usage{Counted: true}, false},
		{"escalation does not count", relay.TopicEscalation, string(sample), relay.Usage{}, false},
		{"lead does not count", relay.TopicLead, `{"chatbot_id":"b","cost_credits":1}`, relay.Usage{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := relay.UsageOf(decode(t, tt.topic, tt.body))
			if got != tt.want {
				t.Fatalf("UsageOf = %+v\nwant       %+v", got, tt.want)
			}
			if got.LowConfidence() != tt.low {
				t.Fatalf("LowConfidence = %v, want %v", got.LowConfidence(), tt.low)
			}
		})
	}
}

func TestLabelSetFolds(t *testing.T) {
	t.Parallel()
	l := relay.NewLabelSet(2)
	tests := []struct{ in, want string }{
		{"a", "a"},
		{"", relay.LabelUnknown},
		{"b", "b"},
		{"c", relay.LabelOther}, // past the cap
		{"a", "a"},              // kept values stay
		{strings.Repeat("x", 65), relay.LabelOther},
		{"\xff", relay.LabelOther},
		{relay.LabelOther, relay.LabelOther},
	}
	for _, tt := range tests {
		if got := l.Fold(tt.in); got != tt.want {
			t.Errorf("Fold(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestUsageMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := relay.NewMetrics(reg)
	first := `{"conversation_id":"c%d","chatbot_id":"%s","source":"widget","cost_credits":2,"messages":[{"role":"user","content":"q"}],"answer":{"content":"a","score":%s}}`
	m.Usage.Observe(decode(t, relay.TopicChat, fmt.Sprintf(first, 1, "bot-a", "0.9")))
	m.Usage.Observe(decode(t, relay.TopicChat, fmt.Sprintf(first, 2, "bot-a", "0.3")))
	m.Usage.Observe(decode(t, relay.TopicChat, `{"conversation_id":"c1","chatbot_id":"bot-a","cost_credits":1,"messages":[{"role":"user","content":"q"},{"role":"user","content":"r"}]}`))
	m.Usage.Observe(decode(t, relay.TopicLead, fmt.Sprintf(first, 3, "bot-a", "0.1")))
	// A flood of made-up chatbot ids folds into "other" past the cap.
	for i := range relay.MaxChatbotLabels + 50 {
		m.Usage.Observe(decode(t, relay.TopicChat, fmt.Sprintf(first, 100+i, fmt.Sprintf("made-up-%d", i), "0.7")))
	}
	if got := testutil.ToFloat64(m.Usage.Conversations.WithLabelValues("bot-a", "widget")); got != 2 {
		t.Errorf("conversations{bot-a} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.Usage.Credits.WithLabelValues("bot-a")); got != 5 {
		t.Errorf("credits{bot-a} = %v, want 5", got)
	}
	if got := testutil.ToFloat64(m.Usage.Conversations.WithLabelValues(relay.LabelOther, "widget")); got != 51 {
		t.Errorf("conversations{other} = %v, want 51 (one past the cap of %d chatbots, with bot-a)", got, relay.MaxChatbotLabels)
	}
	if n := testutil.CollectAndCount(m.Usage.Credits); n != relay.MaxChatbotLabels+1 {
		t.Errorf("credits series = %d, want %d", n, relay.MaxChatbotLabels+1)
	}
	if n := testutil.CollectAndCount(m.Usage.Score); n != relay.MaxChatbotLabels+1 {
		t.Errorf("score series = %d, want %d", n, relay.MaxChatbotLabels+1)
	}
}

// FuzzUsageOf: whatever body is accepted, the usage figures are finite and
// never negative.
func FuzzUsageOf(f *testing.F) {
	for _, name := range []string{"chat.json", "chat-string-fields.json", "live-chat-escalation.json"} {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"cost_credits":1e400,"answer":{"score":"NaN"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := relay.DecodeEvent(body)
		if err != nil {
			return
		}
		ev.Topic = relay.TopicChat
		u := relay.UsageOf(ev)
		if !u.Counted || u.Credits < 0 || math.IsInf(u.Credits, 0) || math.IsNaN(u.Credits) {
			t.Fatalf("credits %v of %q", u.Credits, body)
		}
		if u.HasScore && (math.IsNaN(u.Score) || math.IsInf(u.Score, 0)) {
			t.Fatalf("score %v of %q", u.Score, body)
		}
		if u.NewConversation && ev.ConversationID == "" {
			t.Fatalf("new conversation without an id: %q", body)
		}
	})
}
