package console

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/admin"
	"github.com/chatrelay/chatrelay/relay/bolt"
)

// history is a relay.History that holds usage figures in memory and
// counts how often they are read.
type history struct {
	mu      sync.Mutex
	minutes []relay.UsageMinute
	err     error
	reads   int
}

func (h *history) set(minutes []relay.UsageMinute, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.minutes, h.err = minutes, err
}

func (h *history) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reads
}

func (h *history) Usage(_ context.Context, since time.Time) ([]relay.UsageMinute, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reads++
	if h.err != nil {
		return nil, h.err
	}
	var out []relay.UsageMinute
	for _, m := range h.minutes {
		if !m.Start.Before(since.Truncate(time.Minute)) {
			out = append(out, m.Clone())
		}
	}
	return out, nil
}

func (h *history) Conversation(context.Context, string, int) ([]relay.EventRecord, int, error) {
	return nil, 0, nil
}

func (h *history) FindDead(context.Context, relay.DeadFilter, int, int) (relay.DeadPage, error) {
	return relay.DeadPage{}, nil
}

// use is one event's usage: a chat event of chatbot bot (or, with topic
// other than chat, an event of that topic only).
type use struct {
	at    time.Time
	topic string
	bot   string
	first bool
	score float64
}

// minutesOf counts events as a store does, each with 2 credits.
func minutesOf(uses ...use) []relay.UsageMinute {
	by := map[time.Time]*relay.UsageMinute{}
	var order []time.Time
	for _, u := range uses {
		start := u.at.Truncate(time.Minute)
		m := by[start]
		if m == nil {
			m = relay.NewUsageMinute(u.at)
			by[start] = m
			order = append(order, start)
		}
		var us relay.Usage
		if u.topic == relay.TopicChat {
			us = relay.Usage{Counted: true, Chatbot: u.bot, NewConversation: u.first, Credits: 2, HasScore: true, Score: u.score}
		}
		m.Add(u.topic, us)
	}
	slices.SortFunc(order, time.Time.Compare)
	out := make([]relay.UsageMinute, 0, len(order))
	for _, start := range order {
		out = append(out, *by[start])
	}
	return out
}

func TestUsageCounter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	h := &history{}
	u := newUsageCounter(h, func() time.Time { return now })
	h.set(minutesOf(
		use{now.Add(-30 * time.Hour), relay.TopicChat, "a", true, 0.9}, // past the day
		use{now.Add(-5 * time.Hour), relay.TopicChat, "a", true, 0.2},
		use{now.Add(-10 * time.Minute), relay.TopicChat, "a", false, 0.3},
		use{now.Add(-5 * time.Minute), relay.TopicChat, "b", true, 0.8},
		use{now.Add(-2 * time.Minute), relay.TopicEscalation, "b", true, 0.1},
		use{now.Add(-time.Minute), relay.TopicChat, "b", false, 0.4},
		use{now.Add(-20 * time.Second), relay.TopicChat, "a", true, 0.95},
	), nil)
	if _, ready := u.period(now.Add(-time.Hour)); ready {
		t.Fatal("ready before the first refresh")
	}
	if err := u.refresh(t.Context()); err != nil {
		t.Fatal(err)
	}

	type want struct {
		events              int
		convs, answers, low int
		credits             float64
		botConvs, botLow    map[string]int
	}
	check := func(name string, since time.Time, w want) {
		t.Helper()
		p, ready := u.period(since)
		if !ready {
			t.Fatalf("%s: not ready", name)
		}
		if p.Events != w.events {
			t.Errorf("%s: %d events, want %d", name, p.Events, w.events)
		}
		var got relay.UsageCount
		for _, b := range p.Bots {
			got.Merge(b.UsageCount)
			if b.Conversations != w.botConvs[b.Chatbot] || b.Low != w.botLow[b.Chatbot] {
				t.Errorf("%s: bot %s: %d conversations, %d low; want %d, %d", name, b.Chatbot, b.Conversations, b.Low,
					w.botConvs[b.Chatbot], w.botLow[b.Chatbot])
			}
		}
		if got.Conversations != w.convs || got.Answers != w.answers || got.Low != w.low || got.Credits != w.credits {
			t.Errorf("%s: %+v, want %d conversations, %d answers, %d low, %v credits", name, got, w.convs, w.answers, w.low, w.credits)
		}
	}
	// The escalation counts as an event, not as usage.
	hour := want{events: 5, convs: 2, answers: 4, low: 2, credits: 8,
		botConvs: map[string]int{"a": 1, "b": 1}, botLow: map[string]int{"a": 1, "b": 1}}
	day := want{events: 6, convs: 3, answers: 5, low: 3, credits: 10,
		botConvs: map[string]int{"a": 2, "b": 1}, botLow: map[string]int{"a": 2, "b": 1}}
	check("hour", now.Add(-time.Hour), hour)
	check("day", now.Add(-24*time.Hour), day)

	// A read that fails keeps the figures read last.
	h.set(nil, errors.New("store unavailable"))
	if err := u.refresh(t.Context()); err == nil {
		t.Fatal("refresh hid the store's error")
	}
	check("day, after a failed read", now.Add(-24*time.Hour), day)
}

// TestUsageLabelsBounded: however many chatbots and topics the store
// holds, the overview shows at most the metric's number of chatbots and
// maxTopics topics, the rest summed as "other".
func TestUsageLabelsBounded(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var uses []use
	const bots, topics = relay.MaxChatbotLabels + 50, maxTopics + 5
	for i := range bots {
		uses = append(uses, use{now.Add(-time.Duration(i) * time.Second), relay.TopicChat, fmt.Sprint("bot-", i), true, 0.9})
	}
	uses = append(uses, use{now, relay.TopicChat, "", true, 0.9}) // no chatbot: "unknown", never folded
	for i := range topics {
		uses = append(uses, use{now, fmt.Sprint("topic-", i), "", false, 0})
	}
	h := &history{}
	h.set(minutesOf(uses...), nil)
	u := newUsageCounter(h, func() time.Time { return now })
	if err := u.refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	p, _ := u.period(now.Add(-time.Hour))
	convs, other, unknown := 0, 0, 0
	for _, b := range p.Bots {
		convs += b.Conversations
		switch b.Chatbot {
		case relay.LabelOther:
			other = b.Conversations
		case relay.LabelUnknown:
			unknown = b.Conversations
		}
	}
	if len(p.Bots) != relay.MaxChatbotLabels+2 || other != 50 || unknown != 1 || convs != bots+1 {
		t.Errorf("%d chatbot rows, %d in other, %d unknown, %d conversations; want %d, 50, 1, %d",
			len(p.Bots), other, unknown, convs, relay.MaxChatbotLabels+2, bots+1)
	}
	if len(p.Topics) != maxTopics+1 || p.Events != bots+1+topics {
		t.Errorf("%d topic rows, %d events; want %d, %d", len(p.Topics), p.Events, maxTopics+1, bots+1+topics)
	}
}

// usageFrom is a store whose usage figures are h's.
type usageFrom struct {
	*bolt.Store
	h *history
}

func (s usageFrom) Usage(ctx context.Context, since time.Time) ([]relay.UsageMinute, error) {
	return s.h.Usage(ctx, since)
}

// TestUsageReadOnlyWhileWatched: a console nobody looks at never reads the
// usage figures, however long it runs; with a live overview open it reads
// them once each UsageEvery.
func TestUsageReadOnlyWhileWatched(t *testing.T) {
	t.Parallel()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	store, err := bolt.Open(t.TempDir(), bolt.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	h := &history{}
	c, err := New(Config{
		Store: usageFrom{store, h},
		Ops:   admin.NewOps(admin.Config{Store: store, Now: clock.Now}), Clock: clock,
		Every: 2 * time.Second, UsageEvery: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var st runState
	steps := []struct {
		name    string
		advance time.Duration
		watch   bool
		reads   int
	}{
		{"start, nobody watching", 0, false, 0},
		{"an hour on, nobody watching", time.Hour, false, 0},
		{"a live overview opens", 0, true, 1},
		{"2s on", 2 * time.Second, true, 1},
		{"5s on", 3 * time.Second, true, 2},
		{"the page closes", 10 * time.Second, false, 2},
		{"a day on", 24 * time.Hour, false, 2},
	}
	var page chan string
	for _, s := range steps {
		clock.Advance(s.advance)
		switch {
		case s.watch && page == nil:
			page = c.hub.subscribe()
		case !s.watch && page != nil:
			c.hub.unsubscribe(page)
			page = nil
		}
		for range 3 { // Run steps at every tick; what is not due is not read
			c.step(ctx, &st)
		}
		if got := h.count(); got != s.reads {
			t.Fatalf("%s: %d reads of the usage figures, want %d", s.name, got, s.reads)
		}
	}
}

func TestRatesLastHour(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := relay.NewMetrics(reg)
	m.InitSink("s")
	r := newRates(reg)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	r.sample(t0)
	m.Deliveries.WithLabelValues("s", relay.ResultDelivered).Add(3)
	m.DeliveryFailures.WithLabelValues("s", string(relay.ReasonServerError)).Add(2)
	m.Deliveries.WithLabelValues("s", relay.ResultDead).Inc()

	got, since := r.lastHour(t0.Add(30 * time.Minute))
	if got["s"] != (deliveryCounts{Delivered: 3, Failed: 2, Parked: 1}) || !since.Equal(t0) {
		t.Fatalf("half an hour in: %+v since %v", got["s"], since)
	}
	// A sample a minute for 90 minutes; then the hour before counts.
	for i := 1; i <= 90; i++ {
		if i == 45 {
			m.Deliveries.WithLabelValues("s", relay.ResultDelivered).Add(10)
		}
		r.sample(t0.Add(time.Duration(i) * time.Minute))
	}
	got, since = r.lastHour(t0.Add(90 * time.Minute))
	if got["s"] != (deliveryCounts{Delivered: 10}) || !since.Equal(t0.Add(30*time.Minute)) {
		t.Fatalf("after 90 minutes: %+v since %v, want the 10 of minute 45 since minute 30", got["s"], since)
	}
}
