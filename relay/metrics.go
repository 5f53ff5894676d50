package relay

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Delivery results, the values of chatrelay_deliveries_total's result label.
const (
	ResultDelivered   = "delivered"
	ResultRetried     = "retried"
	ResultRateLimited = "rate_limited"
	ResultDead        = "dead"
	ResultReplayed    = "replayed"
)

// Receive results, the values of chatrelay_events_received_total's result
// label.
const (
	ReceiveAccepted          = "accepted"
	ReceiveDuplicate         = "duplicate"
	ReceiveUnrouted          = "unrouted"
	ReceiveRejectedSignature = "rejected_signature"
	ReceiveRejectedBody      = "rejected_body"
	ReceiveUnavailable       = "unavailable"
)

// Agent reply results, the values of chatrelay_agent_replies_total's result
// label: what became of a thread message an inbound adapter handed over
// (SPEC §10).
const (
	ReplyAccepted          = "accepted"           // stored, on its way to the visitor
	ReplyDuplicate         = "duplicate"          // the same message again (a platform's retry)
	ReplyIgnored           = "ignored"            // a note, a bot's or an edit, not in a relay thread
	ReplyRejectedSignature = "rejected_signature" // a request whose signature did not hold
	ReplyUnavailable       = "unavailable"        // the store could not take it; the platform retries
)

// Metrics are chatrelay's Prometheus metrics (SPEC §7). Labels are bounded:
// sink names from the config, fixed results and reasons, topics folded to
// the three known ones plus "other".
type Metrics struct {
	EventsReceived   *prometheus.CounterVec
	Deliveries       *prometheus.CounterVec
	DeliveryAttempts *prometheus.CounterVec
	DeliveryFailures *prometheus.CounterVec
	DeliveryDuration *prometheus.HistogramVec
	RateLimited      *prometheus.CounterVec
	SinkUp           *prometheus.GaugeVec
	PackedEvents     *prometheus.CounterVec
	// InflightBodyBytes is what the receiver holds for request bodies now
	// (bounded by max_inflight_bytes).
	InflightBodyBytes prometheus.Gauge
	// AgentReplies counts thread messages of two-way sinks by outcome.
	AgentReplies *prometheus.CounterVec
	// Usage counts what accepted events say about the chatbots' use.
	Usage *UsageMetrics
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		EventsReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatrelay_events_received_total",
			Help: "Webhook requests received, by topic and result.",
		}, []string{"topic", "result"}),
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatrelay_deliveries_total",
			Help: "Delivery outcomes per sink: delivered, retried, rate_limited, dead, replayed.",
		}, []string{"sink", "result"}),
		DeliveryAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatrelay_delivery_attempts_total",
			Help: "Send attempts per sink.",
		}, []string{"sink"}),
		DeliveryFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatrelay_delivery_failures_total",
			Help: "Failed send attempts per sink and reason.",
		}, []string{"sink", "reason"}),
		DeliveryDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "chatrelay_delivery_duration_seconds",
			Help:    "Time of one send attempt per sink.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"sink"}),
		RateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatrelay_rate_limited_total",
			Help: "Rate-limit answers (429 or platform equivalent) per sink.",
		}, []string{"sink"}),
		SinkUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "chatrelay_sink_up",
			Help: "1 when the sink's destination works, 0 while it is marked down (broken credentials or destination).",
		}, []string{"sink"}),
		PackedEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatrelay_packed_events_total",
			Help: "Events delivered packed with others into one message, per sink.",
		}, []string{"sink"}),
		InflightBodyBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chatrelay_inflight_body_bytes",
			Help: "Bytes held for webhook request bodies being read or handled (bounded by max_inflight_bytes).",
		}),
		AgentReplies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatrelay_agent_replies_total",
			Help: "Thread messages of two-way sinks by result: accepted (on its way to the visitor), duplicate, ignored, rejected_signature, unavailable.",
		}, []string{"sink", "result"}),
	}
	m.Usage = NewUsageMetrics(reg)
	reg.MustRegister(m.EventsReceived, m.Deliveries, m.DeliveryAttempts, m.DeliveryFailures,
		m.DeliveryDuration, m.RateLimited, m.SinkUp, m.PackedEvents, m.InflightBodyBytes, m.AgentReplies)
	for _, topic := range []string{TopicChat, TopicLead, TopicEscalation, "other"} {
		for _, r := range []string{ReceiveAccepted, ReceiveDuplicate, ReceiveUnrouted,
			ReceiveRejectedSignature, ReceiveRejectedBody, ReceiveUnavailable} {
			m.EventsReceived.WithLabelValues(topic, r)
		}
	}
	return m
}

// InitSink creates every series of one sink at its starting value, so rates
// work from zero.
func (m *Metrics) InitSink(sink string) {
	for _, r := range []string{ResultDelivered, ResultRetried, ResultRateLimited, ResultDead, ResultReplayed} {
		m.Deliveries.WithLabelValues(sink, r)
	}
	m.DeliveryAttempts.WithLabelValues(sink)
	for _, r := range []Reason{ReasonRateLimited, ReasonServerError, ReasonClientError, ReasonAuth, ReasonGone,
		ReasonTimeout, ReasonCanceled, ReasonNetwork, ReasonOther} {
		m.DeliveryFailures.WithLabelValues(sink, string(r))
	}
	m.DeliveryDuration.WithLabelValues(sink)
	m.RateLimited.WithLabelValues(sink)
	m.PackedEvents.WithLabelValues(sink)
	m.SinkUp.WithLabelValues(sink).Set(1)
}

// InitReplies creates the agent-reply series of a sink that takes replies,
// so rates work from zero.
func (m *Metrics) InitReplies(sink string) {
	for _, r := range []string{ReplyAccepted, ReplyDuplicate, ReplyIgnored, ReplyRejectedSignature, ReplyUnavailable} {
		m.AgentReplies.WithLabelValues(sink, r)
	}
}

// StatsSource is what the queue collector reads at each scrape.
type StatsSource interface {
	Stats(ctx context.Context) ([]QueueStats, error)
}

// QueueCollector exports chatrelay_queue_depth, chatrelay_oldest_pending_seconds
// and chatrelay_dead_letters from the store at scrape time.
type QueueCollector struct {
	src   StatsSource
	now   func() time.Time
	depth *prometheus.Desc
	age   *prometheus.Desc
	dead  *prometheus.Desc
}

// NewQueueCollector returns a collector reading src.
func NewQueueCollector(src StatsSource, now func() time.Time) *QueueCollector {
	return &QueueCollector{
		src:   src,
		now:   now,
		depth: prometheus.NewDesc("chatrelay_queue_depth", "Pending deliveries per sink.", []string{"sink"}, nil),
		age:   prometheus.NewDesc("chatrelay_oldest_pending_seconds", "Age of the oldest pending delivery per sink (0 when none).", []string{"sink"}, nil),
		dead:  prometheus.NewDesc("chatrelay_dead_letters", "Dead letters kept per sink.", []string{"sink"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.depth
	ch <- c.age
	ch <- c.dead
}

// Collect implements prometheus.Collector.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stats, err := c.src.Stats(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.depth, err)
		return
	}
	now := c.now()
	for _, s := range stats {
		age := 0.0
		if !s.Oldest.IsZero() {
			age = max(now.Sub(s.Oldest).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(s.Depth), s.Sink)
		ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, age, s.Sink)
		ch <- prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(s.Dead), s.Sink)
	}
}
