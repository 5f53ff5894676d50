package relay

import (
	"context"
	"slices"
	"strings"
	"time"
)

// History is the read side of a store that operators browse (the web
// console and the admin API): a conversation's turns, dead letters by
// filter, and the usage figures by minute. relay/bolt and relay/nats
// implement it, and relay/storetest checks both.
type History interface {
	// Conversation returns the events of one conversation in acceptance
	// order, each with where its deliveries stand: the last limit of them
	// (all when limit <= 0), and how many the store holds in all. An
	// unknown conversation is no error: no events, total 0.
	Conversation(ctx context.Context, id string, limit int) (events []EventRecord, total int, err error)
	// FindDead returns the dead letters f matches, oldest parked first:
	// up to limit of them (all when limit <= 0) from offset on, and how
	// many match in all.
	FindDead(ctx context.Context, f DeadFilter, offset, limit int) (DeadPage, error)
	// Usage returns the usage figures of the events appended, by the
	// minute of their Event.ReceivedAt, from the minute that holds since
	// on, oldest first; minutes without events are left out. Each event
	// counts once, however many times it was sent (a duplicate is not
	// appended), whichever replica took it, and whenever its write
	// committed. The stores count them as events are appended and keep
	// them apart from the events, so that reading them never decodes an
	// event body and they outlive the events' retention. Minutes more
	// than UsageKept old may be gone.
	Usage(ctx context.Context, since time.Time) ([]UsageMinute, error)
}

// DeadFilter selects dead letters; every condition given must hold.
type DeadFilter struct {
	Sink string // this sink's; "" any
	// Reason is text the reason must contain, compared without regard
	// to case ("404", "max_age", "sink removed"); "" any.
	Reason string
	Since  time.Time // parked at or after; zero: no bound
	Until  time.Time // parked before; zero: no bound
}

// Match reports whether dl passes the filter.
func (f DeadFilter) Match(dl DeadLetter) bool {
	switch {
	case f.Sink != "" && dl.Sink != f.Sink:
		return false
	case !f.Since.IsZero() && dl.ParkedAt.Before(f.Since):
		return false
	case !f.Until.IsZero() && !dl.ParkedAt.Before(f.Until):
		return false
	case f.Reason != "" && !containsFold(dl.Reason, f.Reason):
		return false
	}
	return true
}

// IsZero reports whether the filter selects every dead letter.
func (f DeadFilter) IsZero() bool { return f == DeadFilter{} }

// DeadPage is one page of the dead letters a filter matches.
type DeadPage struct {
	DeadLetters []DeadLetter `json:"dead_letters"`
	Total       int          `json:"total"` // how many match in all
}

// PageOf sorts the dead letters a filter matched by when they were parked
// (oldest first) and returns up to limit of them (all when limit <= 0) from
// offset on, with the count of all: the one way both drivers make a page.
func PageOf(matched []DeadLetter, offset, limit int) DeadPage {
	slices.SortStableFunc(matched, func(a, b DeadLetter) int { return a.ParkedAt.Compare(b.ParkedAt) })
	page := DeadPage{Total: len(matched), DeadLetters: []DeadLetter{}}
	if offset < 0 {
		offset = 0
	}
	if offset < len(matched) {
		end := len(matched)
		if limit > 0 {
			end = min(end, offset+limit)
		}
		page.DeadLetters = matched[offset:end]
	}
	return page
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}
