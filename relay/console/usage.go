package console

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

// The usage figures of the overview (events per topic; per chatbot:
// conversations started, cost credits, answers and low-confidence answers)
// for the last hour and the last day, counted from the store, so that they
// survive restarts and, on NATS, cover every replica. The first refresh
// reads the last day; later ones read from a little before where the last
// stopped (an event committed late may come after later ones) and skip the
// events already counted.

const (
	usageWindow  = 24 * time.Hour
	usageOverlap = time.Minute
	maxTopics    = 20
)

type botCount struct {
	Conversations int
	Credits       float64
	Answers, Low  int
}

type minuteCount struct {
	topics map[string]int
	bots   map[string]*botCount
}

type usageCounter struct {
	hist   relay.History
	now    func() time.Time
	bots   *relay.LabelSet // bounds memory as the metric's labels are bounded
	topics *relay.LabelSet

	refreshing sync.Mutex           // one refresh at a time; it alone touches seen and mark
	seen       map[string]time.Time // ids counted, with when they were received
	mark       time.Time            // the last refresh began here

	mu      sync.Mutex
	minutes map[int64]*minuteCount // by unix minute
	ready   bool                   // the first refresh is done
}

func newUsageCounter(hist relay.History, now func() time.Time) *usageCounter {
	return &usageCounter{
		hist: hist, now: now,
		bots: relay.NewLabelSet(relay.MaxChatbotLabels), topics: relay.NewLabelSet(maxTopics),
		seen: map[string]time.Time{}, minutes: map[int64]*minuteCount{},
	}
}

// refresh counts the events received since the last refresh.
func (u *usageCounter) refresh(ctx context.Context) error {
	u.refreshing.Lock()
	defer u.refreshing.Unlock()
	return u.refreshLocked(ctx)
}

// tryRefresh refreshes unless a refresh is under way (the first one, over
// a day of events, can take a while): a page shows what is counted so far.
func (u *usageCounter) tryRefresh(ctx context.Context) {
	if u.refreshing.TryLock() {
		defer u.refreshing.Unlock()
		_ = u.refreshLocked(ctx) // Run logs what fails
	}
}

func (u *usageCounter) refreshLocked(ctx context.Context) error {
	start := u.now()
	since := start.Add(-usageWindow)
	if from := u.mark.Add(-usageOverlap); !u.mark.IsZero() && from.After(since) {
		since = from
	}
	type counted struct {
		minute int64
		topic  string
		use    relay.Usage
	}
	var found []counted
	err := u.hist.Received(ctx, since, func(ev *relay.Event) (bool, error) {
		if _, ok := u.seen[ev.ID]; ok {
			return true, nil
		}
		u.seen[ev.ID] = ev.ReceivedAt
		found = append(found, counted{ev.ReceivedAt.Unix() / 60, u.topics.Fold(ev.Topic), relay.UsageOf(ev)})
		return true, nil
	})
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, f := range found {
		m := u.minutes[f.minute]
		if m == nil {
			m = &minuteCount{topics: map[string]int{}, bots: map[string]*botCount{}}
			u.minutes[f.minute] = m
		}
		m.topics[f.topic]++
		if !f.use.Counted {
			continue
		}
		bot := u.bots.Fold(f.use.Chatbot)
		b := m.bots[bot]
		if b == nil {
			b = &botCount{}
			m.bots[bot] = b
		}
		if f.use.NewConversation {
			b.Conversations++
		}
		b.Credits += f.use.Credits
		if f.use.HasScore {
			b.Answers++
			if f.use.LowConfidence() {
				b.Low++
			}
		}
	}
	if err != nil {
		return err // what was read is counted; the next refresh reads again from mark
	}
	oldest := (start.Add(-usageWindow).Unix() / 60) - 1
	for k := range u.minutes {
		if k < oldest {
			delete(u.minutes, k)
		}
	}
	for id, at := range u.seen {
		if at.Before(start.Add(-2 * usageOverlap)) {
			delete(u.seen, id)
		}
	}
	u.mark, u.ready = start, true
	return nil
}

// usagePeriod is what the overview shows for one period.
type usagePeriod struct {
	Events int
	Topics []topicRow
	Bots   []botRow
}

type topicRow struct {
	Topic string
	Count int
}

type botRow struct {
	Chatbot string
	botCount
}

// LowShare is the share of low-confidence answers, in percent.
func (b botRow) LowShare() float64 {
	if b.Answers == 0 {
		return 0
	}
	return 100 * float64(b.Low) / float64(b.Answers)
}

// period sums the minutes from since on.
func (u *usageCounter) period(since time.Time) (usagePeriod, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	from := since.Unix() / 60
	topics := map[string]int{}
	bots := map[string]*botCount{}
	var p usagePeriod
	for k, m := range u.minutes {
		if k < from {
			continue
		}
		for t, n := range m.topics {
			topics[t] += n
			p.Events += n
		}
		for name, b := range m.bots {
			sum := bots[name]
			if sum == nil {
				sum = &botCount{}
				bots[name] = sum
			}
			sum.Conversations += b.Conversations
			sum.Credits += b.Credits
			sum.Answers += b.Answers
			sum.Low += b.Low
		}
	}
	for t, n := range topics {
		p.Topics = append(p.Topics, topicRow{t, n})
	}
	slices.SortFunc(p.Topics, func(a, b topicRow) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Topic, b.Topic))
	})
	for name, b := range bots {
		p.Bots = append(p.Bots, botRow{name, *b})
	}
	slices.SortFunc(p.Bots, func(a, b botRow) int {
		return cmp.Or(cmp.Compare(b.Conversations, a.Conversations), cmp.Compare(b.Answers, a.Answers), cmp.Compare(a.Chatbot, b.Chatbot))
	})
	return p, u.ready
}
