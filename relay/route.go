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
type Router struct {
	sinks  []string
	routes []Route
}

// NewRouter returns a router over the configured sinks (in config order).
func NewRouter(sinks []string, routes []Route) *Router {
	return &Router{sinks: slices.Clone(sinks), routes: slices.Clone(routes)}
}

// Route returns the sinks ev goes to.
func (r *Router) Route(ev *Event) []string {
	if len(r.routes) == 0 {
		return slices.Clone(r.sinks)
	}
	want := make(map[string]bool, len(r.sinks))
	for _, rt := range r.routes {
		if rt.Match.Matches(ev) {
			for _, s := range rt.Sinks {
				want[s] = true
			}
		}
	}
	var out []string
	for _, s := range r.sinks {
		if want[s] {
			out = append(out, s)
		}
	}
	return out
}
