package console

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The deliveries of the last hour per sink (delivered, failed attempts,
// parked) come from this process's counters, sampled once a minute: the
// difference between now and the sample of an hour ago. A process younger
// than an hour shows what it did since it started (and says so).

// deliveryCounts are one sink's counters at one time.
type deliveryCounts struct {
	Delivered, Failed, Parked float64
}

type rateSample struct {
	at   time.Time
	sink map[string]deliveryCounts
}

type rates struct {
	g prometheus.Gatherer

	mu      sync.Mutex
	samples []rateSample // oldest first, one a minute, the last hour's
}

func newRates(g prometheus.Gatherer) *rates { return &rates{g: g} }

// read gathers the counters now.
func (r *rates) read() map[string]deliveryCounts {
	out := map[string]deliveryCounts{}
	if r.g == nil {
		return out
	}
	fams, err := r.g.Gather()
	if err != nil && len(fams) == 0 {
		return out
	}
	for _, f := range fams {
		var pick func(c *deliveryCounts, m *dto.Metric)
		switch f.GetName() {
		case "chatrelay_deliveries_total":
			pick = func(c *deliveryCounts, m *dto.Metric) {
				switch label(m, "result") {
				case "delivered":
					c.Delivered += m.GetCounter().GetValue()
				case "dead":
					c.Parked += m.GetCounter().GetValue()
				}
			}
		case "chatrelay_delivery_failures_total":
			pick = func(c *deliveryCounts, m *dto.Metric) { c.Failed += m.GetCounter().GetValue() }
		default:
			continue
		}
		for _, m := range f.GetMetric() {
			sink := label(m, "sink")
			c := out[sink]
			pick(&c, m)
			out[sink] = c
		}
	}
	return out
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// sample keeps a sample a minute. Only Run calls it.
func (r *rates) sample(now time.Time) {
	r.mu.Lock()
	due := len(r.samples) == 0 || now.Sub(r.samples[len(r.samples)-1].at) >= time.Minute
	r.mu.Unlock()
	if !due {
		return
	}
	s := rateSample{at: now, sink: r.read()} // gathered without the lock
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, s)
	// Keep the newest sample an hour old or older, and what came after.
	for len(r.samples) > 1 && now.Sub(r.samples[1].at) >= time.Hour {
		r.samples = r.samples[1:]
	}
}

// lastHour returns each sink's counts since the sample of about an hour
// ago, and the time they count from.
func (r *rates) lastHour(now time.Time) (map[string]deliveryCounts, time.Time) {
	cur := r.read()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.samples) == 0 {
		return map[string]deliveryCounts{}, now
	}
	base := r.samples[0]
	for _, s := range r.samples {
		if now.Sub(s.at) <= time.Hour {
			base = s
			break
		}
	}
	out := map[string]deliveryCounts{}
	for sink, c := range cur {
		b := base.sink[sink]
		out[sink] = deliveryCounts{
			Delivered: max(c.Delivered-b.Delivered, 0),
			Failed:    max(c.Failed-b.Failed, 0),
			Parked:    max(c.Parked-b.Parked, 0),
		}
	}
	return out, base.at
}
