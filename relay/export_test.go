package relay

import "time"

// HoldUntil holds every send of d's sink until t, as a 429 would.
func HoldUntil(d *Dispatcher, t time.Time) { d.hold.Until(t) }

// HeldFollowup is the held note's words for w (its Reason and Until).
func HeldFollowup(w Wait) *Followup {
	why, until := heldWords(w)
	return &Followup{Kind: FollowupHeld, Reason: why, Until: until}
}
