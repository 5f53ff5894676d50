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
// for the last hour and the last day. The store keeps them by minute
// (relay.History.Usage), counted as each event is appended, so that they
// survive restarts and, on NATS, cover every replica; the console only
// reads them, and only while someone looks: when the overview loads, and
// every UsageEvery while a live overview is open. A relay nobody watches
// spends nothing on them.

const (
	usageWindow = 24 * time.Hour
	maxTopics   = 20
	// usageWait bounds how long a page load waits for the figures; past
	// it the page says they are being counted, and a live page gets them
	// when they are.
	usageWait = 2 * time.Second
)

type usageCounter struct {
	hist   relay.History
	now    func() time.Time
	bots   *relay.LabelSet // bounds memory and the page as the metric's labels are bounded
	topics *relay.LabelSet

	refreshing sync.Mutex // one refresh at a time

	mu      sync.Mutex
	minutes []relay.UsageMinute // the last day's, labels bounded
	ready   bool                // a refresh succeeded
}

func newUsageCounter(hist relay.History, now func() time.Time) *usageCounter {
	return &usageCounter{
		hist: hist, now: now,
		bots: relay.NewLabelSet(relay.MaxChatbotLabels), topics: relay.NewLabelSet(maxTopics),
	}
}

// refresh reads the last day's figures from the store.
func (u *usageCounter) refresh(ctx context.Context) error {
	u.refreshing.Lock()
	defer u.refreshing.Unlock()
	return u.refreshLocked(ctx)
}

// tryRefresh refreshes unless a refresh is under way: a page shows what
// was read last.
func (u *usageCounter) tryRefresh(ctx context.Context) {
	if u.refreshing.TryLock() {
		defer u.refreshing.Unlock()
		_ = u.refreshLocked(ctx) // Run logs what fails
	}
}

func (u *usageCounter) refreshLocked(ctx context.Context) error {
	got, err := u.hist.Usage(ctx, u.now().Add(-usageWindow))
	if err != nil {
		return err // the figures read last stay
	}
	minutes := make([]relay.UsageMinute, 0, len(got))
	for _, m := range got {
		b := relay.UsageMinute{Start: m.Start, Topics: make(map[string]int, len(m.Topics)), Bots: make(map[string]relay.UsageCount, len(m.Bots))}
		for t, n := range m.Topics {
			b.Topics[u.topics.Bound(t)] += n
		}
		for name, c := range m.Bots {
			b.AddBot(u.bots.Bound(name), c)
		}
		minutes = append(minutes, b)
	}
	u.mu.Lock()
	u.minutes, u.ready = minutes, true
	u.mu.Unlock()
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
	relay.UsageCount
}

// LowShare is the share of low-confidence answers, in percent.
func (b botRow) LowShare() float64 {
	if b.Answers == 0 {
		return 0
	}
	return 100 * float64(b.Low) / float64(b.Answers)
}

// period sums the minutes from the one that holds since on.
func (u *usageCounter) period(since time.Time) (usagePeriod, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	from := since.Truncate(time.Minute)
	topics := map[string]int{}
	bots := map[string]relay.UsageCount{}
	var p usagePeriod
	for _, m := range u.minutes {
		if m.Start.Before(from) {
			continue
		}
		for t, n := range m.Topics {
			topics[t] += n
			p.Events += n
		}
		for name, c := range m.Bots {
			sum := bots[name]
			sum.Merge(c)
			bots[name] = sum
		}
	}
	for t, n := range topics {
		p.Topics = append(p.Topics, topicRow{t, n})
	}
	slices.SortFunc(p.Topics, func(a, b topicRow) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Topic, b.Topic))
	})
	for name, c := range bots {
		p.Bots = append(p.Bots, botRow{name, c})
	}
	slices.SortFunc(p.Bots, func(a, b botRow) int {
		return cmp.Or(cmp.Compare(b.Conversations, a.Conversations), cmp.Compare(b.Answers, a.Answers), cmp.Compare(a.Chatbot, b.Chatbot))
	})
	return p, u.ready
}
