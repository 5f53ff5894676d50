package relay

import "slices"

// Match selects events. Every non-empty criterion must hold; a list holds
// when it contains the event's value. Score bounds are inclusive and never
// hold for an event without a score.
type Match struct {
	Topic     []string
	ChatbotID []string
	Source    []string
	MinScore  *float64
	MaxScore  *float64
}

// Empty reports whether m has no criterion at all.
func (m Match) Empty() bool {
	return len(m.Topic) == 0 && len(m.ChatbotID) == 0 && len(m.Source) == 0 && m.MinScore == nil && m.MaxScore == nil
}

// Matches reports whether ev satisfies every criterion of m.
func (m Match) Matches(ev *Event) bool {
	if len(m.Topic) > 0 && !slices.Contains(m.Topic, ev.Topic) {
		return false
	}
	if len(m.ChatbotID) > 0 && !slices.Contains(m.ChatbotID, ev.ChatbotID) {
		return false
	}
	if len(m.Source) > 0 && !slices.Contains(m.Source, ev.Source) {
		return false
	}
	if m.MinScore != nil || m.MaxScore != nil {
		score, ok := ev.Score()
		if !ok {
			return false
		}
		if m.MinScore != nil && score < *m.MinScore {
			return false
		}
		if m.MaxScore != nil && score > *m.MaxScore {
			return false
		}
	}
	return true
}

// Route sends the events it matches to its sinks.
type Route struct {
	Match Match
	Sinks []string
}

// Router decides which sinks an event goes to: with no routes, every sink;
// with routes, the union of the sinks of every matching route, in the order
// the sinks are configured. An event no route matches goes nowhere (it is
// stored and counted as unrouted).
//
// Agent replies (TopicAgentReply) are routed apart: see ReplyDestinations.
type Router struct {
	sinks   []string
	routes  []Route
	replies []string // sinks that take agent replies, and only them
}

// RouterOption configures a Router.
type RouterOption func(*Router)

// ReplyDestinations names the sinks that deliver agent replies to the
// visitor (the chatdata destination). Every agent-reply event goes to them
// and no other event does, whatever the routes say. Other sinks get an
// agent reply only from a route that names the topic (match: {topic:
// [agent-reply]}), so that a route written for Chat Data's events (match:
// {chatbot_id: […]}) does not echo the agents' answers back into the
// threads they were written in.
func ReplyDestinations(names ...string) RouterOption {
	return func(r *Router) { r.replies = slices.Clone(names) }
}

// NewRouter returns a router over the configured sinks (in config order).
func NewRouter(sinks []string, routes []Route, opts ...RouterOption) *Router {
	r := &Router{sinks: slices.Clone(sinks), routes: slices.Clone(routes)}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Route returns the sinks ev goes to.
func (r *Router) Route(ev *Event) []string {
	reply := ev.Topic == TopicAgentReply
	want := make(map[string]bool, len(r.sinks))
	switch {
	case reply:
		for _, s := range r.replies {
			want[s] = true
		}
		for _, rt := range r.routes {
			if slices.Contains(rt.Match.Topic, TopicAgentReply) && rt.Match.Matches(ev) {
				for _, s := range rt.Sinks {
					want[s] = true
				}
			}
		}
	case len(r.routes) == 0:
		for _, s := range r.sinks {
			want[s] = true
		}
	default:
		for _, rt := range r.routes {
			if rt.Match.Matches(ev) {
				for _, s := range rt.Sinks {
					want[s] = true
				}
			}
		}
	}
	var out []string
	for _, s := range r.sinks {
		if want[s] && (reply || !slices.Contains(r.replies, s)) {
			out = append(out, s)
		}
	}
	return out
}
