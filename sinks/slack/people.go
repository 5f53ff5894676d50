package slack

import (
	"context"
	"net/url"
	"strings"
	"sync"
	"time"

	slackapi "github.com/slack-go/slack"
	"golang.org/x/sync/singleflight"

	"github.com/chatrelay/chatrelay/relay"
)

// person is how Slack names an agent: the display name, else the real
// name, else the handle; and the 72-pixel avatar.
type person struct {
	name   string
	avatar string
	at     time.Time // when it was looked up
}

// People looks agents up with users.info and keeps what it found for
// peopleTTL, at most maxPeople of them: a reply must not wait for Slack
// each time (Slack wants its answer within 3 s), and a name changed in
// Slack shows within the hour. Concurrent lookups of one agent make one
// request. It is safe for concurrent use.
type people struct {
	sink *Sink

	group singleflight.Group
	mu    sync.Mutex
	known map[string]person
	order []string // ids, oldest lookup first
}

const (
	peopleTTL = time.Hour
	maxPeople = 2000
	maxName   = 80 // runes of a name shown to the visitor
)

func newPeople(s *Sink) *people { return &people{sink: s, known: map[string]person{}} }

// usersInfoAnswer is users.info's answer.
type usersInfoAnswer struct {
	slackapi.SlackResponse
	User struct {
		ID       string `json:"id"`
		Name     string `json:"name"`
		RealName string `json:"real_name"`
		Profile  struct {
			DisplayName string `json:"display_name"`
			RealName    string `json:"real_name"`
			Image72     string `json:"image_72"`
		} `json:"profile"`
	} `json:"user"`
}

func (a *usersInfoAnswer) response() *slackapi.SlackResponse { return &a.SlackResponse }

// find returns how Slack names user id.
func (p *people) find(ctx context.Context, id string) (person, error) {
	now := p.sink.deps.Clock.Now()
	p.mu.Lock()
	known, ok := p.known[id]
	p.mu.Unlock()
	if ok && now.Sub(known.at) < peopleTTL {
		return known, nil
	}
	v, err, _ := p.group.Do(id, func() (any, error) {
		var a usersInfoAnswer
		if err := p.sink.call(ctx, "users.info", url.Values{"user": {id}}, &a); err != nil {
			return person{}, err
		}
		pr := person{name: firstName(a.User.Profile.DisplayName, a.User.Profile.RealName, a.User.RealName, a.User.Name),
			avatar: a.User.Profile.Image72, at: now}
		p.keep(id, pr)
		return pr, nil
	})
	if err != nil {
		return person{}, err
	}
	return v.(person), nil
}

// keep remembers pr, forgetting the oldest past maxPeople.
func (p *people) keep(id string, pr person) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.known[id]; !ok {
		p.order = append(p.order, id)
	}
	p.known[id] = pr
	for len(p.order) > maxPeople {
		delete(p.known, p.order[0])
		p.order = p.order[1:]
	}
}

// firstName is the first of names that is not blank, its spaces folded
// and at most maxName runes long.
func firstName(names ...string) string {
	for _, n := range names {
		if n = strings.Join(strings.Fields(n), " "); n != "" {
			if cut, over := relay.Truncate(n, maxName); over {
				return cut
			}
			return n
		}
	}
	return ""
}
