package relay_test

import (
	"slices"
	"testing"

	"github.com/chatrelay/chatrelay/relay"
)

func TestRouter(t *testing.T) {
	t.Parallel()
	f := func(v float64) *float64 { return &v }
	sinks := []string{"slack", "discord", "crm", "review"}
	routes := []relay.Route{
		{Match: relay.Match{Topic: []string{"chat"}, ChatbotID: []string{"bot-a"}}, Sinks: []string{"slack", "crm"}},
		{Match: relay.Match{MaxScore: f(0.5)}, Sinks: []string{"review"}},
		{Match: relay.Match{Topic: []string{"live-chat-escalation"}}, Sinks: []string{"discord", "slack"}},
		{Match: relay.Match{Source: []string{"API"}, MinScore: f(0.9)}, Sinks: []string{"crm"}},
	}
	r := relay.NewRouter(sinks, routes)
	ev := func(topic, bot, source string, score *float64) *relay.Event {
		e := &relay.Event{Topic: topic, ChatbotID: bot, Source: source}
		if score != nil {
			e.Answer = &relay.Message{Score: score}
		}
		return e
	}
	tests := []struct {
		name string
		ev   *relay.Event
		want []string
	}{
		{"chat of bot-a, high score", ev("chat", "bot-a", "widget", f(0.9)), []string{"slack", "crm"}},
		{"low score goes to review too", ev("chat", "bot-a", "widget", f(0.5)), []string{"slack", "crm", "review"}},
		{"score bound inclusive", ev("chat", "bot-b", "widget", f(0.5)), []string{"review"}},
		{"no score never matches score bounds", ev("chat", "bot-b", "widget", nil), nil},
		{"escalation: union in sink order", ev("live-chat-escalation", "bot-z", "widget", f(0.2)), []string{"slack", "discord", "review"}},
		{"min_score inclusive", ev("lead-submission", "x", "API", f(0.9)), []string{"crm"}},
		{"unrouted", ev("lead-submission", "x", "widget", nil), nil},
	}
	for _, tc := range tests {
		if got := r.Route(tc.ev); !slices.Equal(got, tc.want) {
			t.Errorf("%s: Route = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := relay.NewRouter(sinks, nil).Route(ev("x", "", "", nil)); !slices.Equal(got, sinks) {
		t.Errorf("without routes: %v, want every sink", got)
	}
}
