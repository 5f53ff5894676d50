package relay

import "time"

// HoldUntil holds every send of d's sink until t, as a 429 would.
func HoldUntil(d *Dispatcher, t time.Time) { d.hold.Until(t) }
