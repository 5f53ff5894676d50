package console

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/chatrelay/chatrelay/relay/admin"
)

// overviewView is the overview page's data; the part under "live" is sent
// again to open pages each time it is refreshed.
type overviewView struct {
	Now       time.Time
	Sinks     []sinkRow
	SinkError string
	Down      int
	Pending   int
	Dead      int
	// RatesSince is when the last-hour delivery counts start: an hour
	// ago, or this process's start when it is younger.
	RatesSince time.Time
	RatesFull  bool
	// Usage, counted from the store: the last hour and the last day.
	UsageReady            bool
	EventsHour, EventsDay int
	Topics                []topicLine
	Bots                  []botLine
}

type topicLine struct {
	Topic     string
	Hour, Day int
}

type botLine struct {
	Chatbot   string
	Hour, Day botRow
}

// lines puts the hour's and the day's figures side by side, in the day's
// order (the hour's are a part of the day's).
func (ov *overviewView) lines(hour, day usagePeriod) {
	ov.EventsHour, ov.EventsDay = hour.Events, day.Events
	for _, t := range day.Topics {
		l := topicLine{Topic: t.Topic, Day: t.Count}
		for _, h := range hour.Topics {
			if h.Topic == t.Topic {
				l.Hour = h.Count
			}
		}
		ov.Topics = append(ov.Topics, l)
	}
	for _, b := range day.Bots {
		l := botLine{Chatbot: b.Chatbot, Day: b}
		for _, h := range hour.Bots {
			if h.Chatbot == b.Chatbot {
				l.Hour = h
			}
		}
		ov.Bots = append(ov.Bots, l)
	}
}

// sinkRow is one sink's line of the overview: its status as the API
// reports it (admin.SinkView) and its deliveries of the last hour.
type sinkRow struct {
	Name                 string
	Up                   bool
	DownSince            time.Time
	DownCause            string
	Depth                int
	OldestPendingSeconds float64
	DeadLetters          int
	HeldUntil            time.Time // a rate-limit hold
	LastError            string
	LastErrorAt          time.Time
	LastHour             deliveryCounts
}

// rowOf takes what the API says about a sink.
func rowOf(s admin.SinkView) sinkRow {
	at := func(t *time.Time) time.Time {
		if t == nil {
			return time.Time{}
		}
		return *t
	}
	return sinkRow{
		Name: s.Name, Up: s.Up, DownSince: at(s.DownSince), DownCause: s.DownCause,
		Depth: s.Depth, OldestPendingSeconds: s.OldestPendingSeconds, DeadLetters: s.DeadLetters,
		HeldUntil: at(s.RateLimitedUntil), LastError: s.LastError, LastErrorAt: at(s.LastErrorAt),
	}
}

func (c *Console) snapshot(ctx context.Context) overviewView {
	now := c.cfg.Clock.Now()
	ov := overviewView{Now: now}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	sinks, err := c.cfg.Ops.Sinks(ctx)
	if err != nil {
		ov.SinkError = c.cfg.Scrub(err.Error())
	}
	hour, since := c.rates.lastHour(now)
	ov.RatesSince, ov.RatesFull = since, now.Sub(since) >= 59*time.Minute
	for _, s := range sinks {
		row := rowOf(s)
		row.LastError, row.LastHour = c.cfg.Scrub(row.LastError), hour[s.Name]
		ov.Sinks = append(ov.Sinks, row)
		if !s.Up {
			ov.Down++
		}
		ov.Pending += s.Depth
		ov.Dead += s.DeadLetters
	}
	hourUse, ready := c.usage.period(now.Add(-time.Hour))
	dayUse, _ := c.usage.period(now.Add(-usageWindow))
	ov.UsageReady = ready
	ov.lines(hourUse, dayUse)
	return ov
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), usageWait)
	c.usage.tryRefresh(ctx)
	cancel()
	c.render(w, r, http.StatusOK, "overview", pageData{Title: "Overview", Nav: "overview", Page: c.snapshot(r.Context())})
}

// hub hands the latest rendered overview to every open page: a slow page
// misses intermediate ones, never blocks the others.
type hub struct {
	joined chan struct{} // a watcher joined: render at once

	mu       sync.Mutex
	watchers map[chan string]struct{}
}

func newHub() *hub {
	return &hub{joined: make(chan struct{}, 1), watchers: map[chan string]struct{}{}}
}

func (h *hub) subscribe() chan string {
	ch := make(chan string, 1)
	h.mu.Lock()
	h.watchers[ch] = struct{}{}
	h.mu.Unlock()
	select {
	case h.joined <- struct{}{}:
	default:
	}
	return ch
}

func (h *hub) unsubscribe(ch chan string) {
	h.mu.Lock()
	delete(h.watchers, ch)
	h.mu.Unlock()
}

func (h *hub) watching() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.watchers) > 0
}

func (h *hub) publish(html string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.watchers {
		select {
		case <-ch: // drop the one not yet taken
		default:
		}
		ch <- html
	}
}

// streamWrite is how long one write to a live page may take.
const streamWrite = 30 * time.Second

// live streams the overview's live part as server-sent events ("overview"),
// until the page goes, the session ends ("expired") or chatrelay stops.
func (c *Console) live(w http.ResponseWriter, r *http.Request) {
	sess := sessionOf(r)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	ch := c.hub.subscribe()
	defer c.hub.unsubscribe(ch)
	keepalive := c.cfg.Clock.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	write := func(s string) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWrite))
		if _, err := fmt.Fprint(w, s); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write("retry: 3000\n\n") {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-c.stopped:
			return
		case html := <-ch:
			if !c.sessions.alive(sess) {
				write("event: expired\ndata: \n\n")
				return
			}
			if !write(sseEvent("overview", html)) {
				return
			}
		case <-keepalive.Chan():
			if !c.sessions.alive(sess) {
				write("event: expired\ndata: \n\n")
				return
			}
			if !write(": keepalive\n\n") {
				return
			}
		}
	}
}

// sseEvent frames data as one server-sent event, a "data:" line per line.
func sseEvent(name, data string) string {
	var b strings.Builder
	b.WriteString("event: " + name + "\n")
	for line := range strings.SplitSeq(data, "\n") {
		b.WriteString("data: " + strings.TrimSuffix(line, "\r") + "\n")
	}
	b.WriteString("\n")
	return b.String()
}

// endStream answers a live request that has no session: one event that
// tells the page to log in again.
func endStream(w http.ResponseWriter, event string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "retry: 600000\nevent: %s\ndata: \n\n", event)
}
