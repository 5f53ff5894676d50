package relay

import (
	"maps"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// LowScore is the answer score under which an answer counts as low
// confidence: the threshold the platforms flag (SPEC §6).
const LowScore = 0.5

// Usage is what one event tells about the use of a chatbot: the figures
// of the console's overview and of the chatrelay_conversations_total,
// chatrelay_cost_credits_total and chatrelay_answer_score metrics. Only
// chat events count (one per answered turn): an escalation or a lead may
// repeat a turn a chat event already carried.
type Usage struct {
	Counted bool   // a chat event; nothing else below is set otherwise
	Chatbot string // as sent; "" when the event names none
	Source  string // widget, iframe, API, …; "" when not sent
	// NewConversation is set on a conversation's first turn: its history
	// (messages, which excludes the latest answer) holds one user
	// message. So each conversation counts once, on whichever replica
	// and whenever it arrives, without remembering conversations.
	NewConversation bool
	Credits         float64 // cost_credits; 0 when absent or not a number
	HasScore        bool
	Score           float64
}

// LowConfidence reports whether the answer's score is under LowScore.
func (u Usage) LowConfidence() bool { return u.HasScore && u.Score < LowScore }

// UsageOf reads the usage figures of an event.
func UsageOf(ev *Event) Usage {
	if ev.Topic != TopicChat {
		return Usage{}
	}
	u := Usage{Counted: true, Chatbot: ev.ChatbotID, Source: ev.Source}
	if ev.ConversationID != "" {
		users := 0
		for _, m := range ev.Messages {
			if strings.EqualFold(m.Role, "user") {
				users++
			}
		}
		u.NewConversation = users == 1
	}
	for _, f := range ev.Fields {
		if f.Key == "cost_credits" {
			if c, err := strconv.ParseFloat(strings.TrimSpace(f.Value), 64); err == nil && c > 0 && !math.IsInf(c, 0) {
				u.Credits = c
			}
		}
	}
	if s, ok := ev.Score(); ok && !math.IsNaN(s) && !math.IsInf(s, 0) {
		u.HasScore, u.Score = true, s
	}
	return u
}

// UsageKept is how long the stores keep the usage figures of each minute
// (History.Usage) at least: the console shows the last day's.
const UsageKept = 24 * time.Hour

// UsageCount sums the usage of one chatbot's chat events.
type UsageCount struct {
	Conversations int     // conversations started: first turns
	Credits       float64 // cost_credits
	Answers       int     // answers with a score
	Low           int     // of them, under LowScore
}

// Add counts the usage of one chat event.
func (c *UsageCount) Add(u Usage) {
	if u.NewConversation {
		c.Conversations++
	}
	c.Credits += u.Credits
	if u.HasScore {
		c.Answers++
		if u.LowConfidence() {
			c.Low++
		}
	}
}

// Merge adds the counts of o.
func (c *UsageCount) Merge(o UsageCount) {
	c.Conversations += o.Conversations
	c.Credits += o.Credits
	c.Answers += o.Answers
	c.Low += o.Low
}

// UsageMinute is what the events received in one minute tell about use:
// how many there were of each topic, and the usage of each chatbot's chat
// events. Topics and chatbots are under their LabelOf. The stores keep one
// per minute (History.Usage), counted as events are appended.
type UsageMinute struct {
	Start  time.Time             // the minute's first instant, UTC
	Topics map[string]int        // events per topic
	Bots   map[string]UsageCount // per chatbot, the chat events' usage
}

// NewUsageMinute returns the empty figures of the minute that holds t.
func NewUsageMinute(t time.Time) *UsageMinute {
	return &UsageMinute{Start: t.UTC().Truncate(time.Minute), Topics: map[string]int{}, Bots: map[string]UsageCount{}}
}

// Add counts one event of topic whose usage is u.
func (m *UsageMinute) Add(topic string, u Usage) {
	m.Topics[LabelOf(topic)]++
	if u.Counted {
		bot := LabelOf(u.Chatbot)
		c := m.Bots[bot]
		c.Add(u)
		m.Bots[bot] = c
	}
}

// AddBot adds c to the count of the chatbot labelled bot (a LabelOf).
func (m *UsageMinute) AddBot(bot string, c UsageCount) {
	sum := m.Bots[bot]
	sum.Merge(c)
	m.Bots[bot] = sum
}

// Clone returns a copy that shares nothing with m.
func (m *UsageMinute) Clone() UsageMinute {
	return UsageMinute{Start: m.Start, Topics: maps.Clone(m.Topics), Bots: maps.Clone(m.Bots)}
}

// Label values of the usage metrics that are not a chatbot or source as
// sent.
const (
	LabelUnknown = "unknown" // the event names none
	LabelOther   = "other"   // past the cap of distinct values, or unfit as a label
)

// Caps on the distinct label values of the usage metrics. Chatbot ids and
// sources are bounded by the user's own chatbots, but they come from
// request bodies: past the cap, new values fold into "other" so that a
// flood of made-up ids cannot grow the metrics without bound.
const (
	MaxChatbotLabels = 200
	MaxSourceLabels  = 20
	maxLabelLen      = 64
)

// LabelOf is the label of v in the usage figures and metrics: v as sent,
// LabelUnknown when empty, LabelOther when unfit as a label (too long, not
// UTF-8, or one of those two words). The stores keep usage under it, and
// a LabelSet bounds the count of distinct ones further.
func LabelOf(v string) string {
	switch {
	case v == "":
		return LabelUnknown
	case len(v) > maxLabelLen || !utf8.ValidString(v) || v == LabelUnknown || v == LabelOther:
		return LabelOther
	}
	return v
}

// LabelSet folds label values to a bounded set: the first max distinct
// values are kept as they are, every later one becomes LabelOther. The
// zero value keeps nothing; use NewLabelSet. Safe for concurrent use.
type LabelSet struct {
	mu   sync.Mutex
	max  int
	seen map[string]bool
}

// NewLabelSet returns a set that keeps up to max distinct values.
func NewLabelSet(max int) *LabelSet { return &LabelSet{max: max, seen: map[string]bool{}} }

// Fold returns the label for v.
func (l *LabelSet) Fold(v string) string { return l.Bound(LabelOf(v)) }

// Bound returns label (a LabelOf) while it is one of the first max distinct
// ones, else LabelOther; LabelUnknown and LabelOther stay as they are.
func (l *LabelSet) Bound(label string) string {
	if label == LabelUnknown || label == LabelOther {
		return label
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen[label] {
		return label
	}
	if len(l.seen) >= l.max {
		return LabelOther
	}
	l.seen[label] = true
	return label
}

// UsageMetrics are the usage metrics of SPEC §11, counted when an event is
// accepted.
type UsageMetrics struct {
	Conversations *prometheus.CounterVec
	Credits       *prometheus.CounterVec
	Score         *prometheus.HistogramVec
	chatbots      *LabelSet
	sources       *LabelSet
}

// NewUsageMetrics creates the usage metrics and registers them with reg.
func NewUsageMetrics(reg prometheus.Registerer) *UsageMetrics {
	u := &UsageMetrics{
		Conversations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatrelay_conversations_total",
			Help: "Conversations started (their first chat turn accepted), per chatbot and source. " +
				"Past " + strconv.Itoa(MaxChatbotLabels) + " chatbots or " + strconv.Itoa(MaxSourceLabels) + " sources, new ones count as \"other\".",
		}, []string{"chatbot", "source"}),
		Credits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatrelay_cost_credits_total",
			Help: "Chat Data message credits (cost_credits) of accepted chat events, per chatbot.",
		}, []string{"chatbot"}),
		Score: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "chatrelay_answer_score",
			Help:    "Scores of the answers of accepted chat events, per chatbot (under 0.5: low confidence).",
			Buckets: []float64{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1},
		}, []string{"chatbot"}),
		chatbots: NewLabelSet(MaxChatbotLabels),
		sources:  NewLabelSet(MaxSourceLabels),
	}
	reg.MustRegister(u.Conversations, u.Credits, u.Score)
	return u
}

// Observe counts an accepted event. A nil *UsageMetrics counts nothing.
func (u *UsageMetrics) Observe(ev *Event) {
	if u == nil {
		return
	}
	us := UsageOf(ev)
	if !us.Counted {
		return
	}
	bot := u.chatbots.Fold(us.Chatbot)
	if us.NewConversation {
		u.Conversations.WithLabelValues(bot, u.sources.Fold(us.Source)).Inc()
	}
	if us.Credits > 0 {
		u.Credits.WithLabelValues(bot).Add(us.Credits)
	}
	if us.HasScore {
		u.Score.WithLabelValues(bot).Observe(us.Score)
	}
}
