package relay

import "time"

// RetryPolicy is the retry section of the config, and the one backoff of
// chatrelay: the dispatcher's between attempts, and a store's after its own
// failures (relay/nats).
type RetryPolicy struct {
	Initial time.Duration // first backoff
	Max     time.Duration // backoff cap; also how often a down sink is probed
	MaxAge  time.Duration // past this, a delivery goes to the dead letters
}

// Backoff returns the wait before attempt n+1 after n failed attempts:
// exponential with full jitter, uniform in [Initial, min(Max, Initial·2^(n-1))].
// rnd is a uniform number in [0, 1).
func (p RetryPolicy) Backoff(n int, rnd float64) time.Duration {
	ceil := p.Initial
	for i := 1; i < n && ceil < p.Max; i++ {
		ceil *= 2
	}
	ceil = min(ceil, p.Max)
	if ceil <= p.Initial {
		return ceil
	}
	return p.Initial + time.Duration(rnd*float64(ceil-p.Initial))
}
