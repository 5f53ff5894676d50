package console

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chatrelay/relay"
)

// history is a relay.History holding events in memory, in the order they
// were "committed" (which need not be the order received).
type history struct {
	mu     sync.Mutex
	events []*relay.Event
}

func (h *history) add(ev *relay.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
}

func (h *history) Received(_ context.Context, since time.Time, fn func(*relay.Event) (bool, error)) error {
	h.mu.Lock()
	evs := append([]*relay.Event(nil), h.events...)
	h.mu.Unlock()
	for _, ev := range evs {
		if ev.ReceivedAt.Before(since) {
			continue
		}
		if more, err := fn(ev); err != nil || !more {
			return err
		}
	}
	return nil
}

func (h *history) Conversation(context.Context, string, int) ([]relay.EventRecord, int, error) {
	return nil, 0, nil
}

func (h *history) FindDead(context.Context, relay.DeadFilter, int, int) (relay.DeadPage, error) {
	return relay.DeadPage{}, nil
}

func chat(t *testing.T, n int, at time.Time, bot string, first bool, score float64, topic string) *relay.Event {
	t.Helper()
	msgs := `{"role":"user","content":"q"}`
	if !first {
		msgs += `,{"role":"assistant","content":"a"},{"role":"user","content":"r"}`
	}
	ev, err := relay.DecodeEvent(fmt.Appendf(nil, `{"conversation_id":"c%d","chatbot_id":%q,"cost_credits":2,"messages":[%s],"answer":{"content":"x","score":%v}}`,
		n, bot, msgs, score))
	if err != nil {
		t.Fatal(err)
	}
	ev.ID, ev.Topic, ev.ReceivedAt = fmt.Sprint("ev-", n), topic, at
	return ev
}

func TestUsageCounter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := now
	h := &history{}
	u := newUsageCounter(h, func() time.Time { return clock })

	h.add(chat(t, 1, now.Add(-30*time.Hour), "a", true, 0.9, relay.TopicChat)) // past the day
	h.add(chat(t, 2, now.Add(-5*time.Hour), "a", true, 0.2, relay.TopicChat))
	h.add(chat(t, 3, now.Add(-10*time.Minute), "a", false, 0.3, relay.TopicChat))
	h.add(chat(t, 4, now.Add(-5*time.Minute), "b", true, 0.8, relay.TopicChat))
	h.add(chat(t, 5, now.Add(-2*time.Minute), "b", true, 0.1, relay.TopicEscalation))
	if _, ready := u.period(now.Add(-time.Hour)); ready {
		t.Fatal("ready before the first refresh")
	}
	if err := u.refresh(t.Context()); err != nil {
		t.Fatal(err)
	}

	// A minute later: a new event, and one received before the last
	// refresh but committed only now (a slow write). Each counts once.
	clock = now.Add(time.Minute)
	h.add(chat(t, 6, now.Add(30*time.Second), "b", false, 0.4, relay.TopicChat))
	h.add(chat(t, 7, now.Add(-20*time.Second), "a", true, 0.95, relay.TopicChat))
	if err := u.refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := u.refresh(t.Context()); err != nil { // nothing new: nothing counted twice
		t.Fatal(err)
	}

	type want struct {
		events                 int
		convs, answers, low    int
		credits                float64
		botConvs, botLow, bots map[string]int
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
		var got botCount
		for _, b := range p.Bots {
			got.Conversations += b.Conversations
			got.Answers += b.Answers
			got.Low += b.Low
			got.Credits += b.Credits
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
	check("hour", clock.Add(-time.Hour), want{events: 5, convs: 2, answers: 4, low: 2, credits: 8,
		botConvs: map[string]int{"a": 1, "b": 1}, botLow: map[string]int{"a": 1, "b": 1}})
	check("day", clock.Add(-24*time.Hour), want{events: 6, convs: 3, answers: 5, low: 3, credits: 10,
		botConvs: map[string]int{"a": 2, "b": 1}, botLow: map[string]int{"a": 2, "b": 1}})
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
