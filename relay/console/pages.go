package console

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/admin"
)

// Limits of what one page shows.
const (
	recentPage       = 50
	deadPage         = 100
	conversationMax  = 500
	maxSelected      = 1000
	maxFieldShown    = 2000
	maxBodyShown     = 256 << 10
	lookupQueryLimit = 200
)

// turnView is one event as a turn of a transcript. Kind says how it
// reads: a chat turn (question and answer), an escalation (the
// conversation so far, as the channel shows it), a lead, or another
// topic's fields. Two-way live chat (SPEC §10) adds its agent replies
// here as their own kind.
type turnView struct {
	ID         string
	Topic      string
	Kind       string
	ReceivedAt time.Time
	Question   string
	Answer     string
	HasScore   bool
	Score      float64
	Low        bool
	// Note says what the turn is, and Empty what stands for a missing
	// answer or conversation, in the words the channels use.
	Note, Empty string
	// Earlier is the line standing for an escalation's messages before
	// Transcript ("3 earlier messages"), or "".
	Earlier string
	// Transcript is an escalation's conversation so far, newest last.
	Transcript []messageView
	// Fields are a lead's fields (for an escalation, who asked and how to
	// reach them), labelled and in reading order; another topic's fields.
	Fields     []relay.Field
	Deliveries []deliveryView
}

// messageView is one message of an escalation's transcript.
type messageView struct {
	Who     string // Visitor, Bot, Agent
	Text    string
	Visitor bool // typed by the chatbot's visitor
	Answer  bool // the event's answer: the turn's score is its score
}

// transcriptMax is how many of an escalation's latest messages a turn
// shows; the event's body, on its page, holds them all.
const transcriptMax = 20

type deliveryView struct {
	relay.DeliveryStatus
	DeadID string // set while it is a dead letter
}

func (c *Console) turnOf(rec relay.EventRecord) turnView {
	ev := rec.Event
	t := turnView{ID: ev.ID, Topic: ev.Topic, ReceivedAt: ev.ReceivedAt}
	if s, ok := ev.Score(); ok {
		t.HasScore, t.Score, t.Low = true, s, s < relay.LowScore
	}
	switch ev.Topic {
	case relay.TopicChat:
		t.Kind, t.Empty = "chat", relay.NoAnswer
		t.Question, t.Answer = c.text(ev.Question()), c.text(ev.AnswerText())
	case relay.TopicEscalation:
		// The story, as Slack and Discord show it (SPEC §6): who asked,
		// how to reach them, the conversation so far; never "no answer".
		t.Kind, t.Note, t.Empty = "escalation", relay.EscalationLine, relay.NoConversation
		t.Fields = c.leadFields(ev.Lead, true)
		earlier, msgs := ev.Transcript(transcriptMax)
		if earlier > 0 {
			t.Earlier = relay.EarlierMessages(earlier)
		}
		for i, m := range msgs {
			t.Transcript = append(t.Transcript, messageView{
				Who: relay.Speaker(m.Role), Text: c.text(strings.TrimSpace(m.Content)), Visitor: relay.UserTyped(m.Role),
				Answer: i == len(msgs)-1 && ev.Answer != nil && strings.TrimSpace(ev.Answer.Content) != "",
			})
		}
	case relay.TopicLead:
		t.Kind, t.Note = "lead", "New lead"
		t.Fields = c.leadFields(ev.Lead, false)
	default:
		t.Kind = "other"
		t.Fields = c.fields(ev.Fields)
	}
	for _, d := range rec.Deliveries {
		d.LastError = c.cfg.Scrub(d.LastError)
		dv := deliveryView{DeliveryStatus: d}
		if d.State == relay.StateDead {
			dv.DeadID = relay.DeadLetterID(ev.ID, d.Sink)
		}
		t.Deliveries = append(t.Deliveries, dv)
	}
	return t
}

func (c *Console) text(s string) string {
	s, _ = relay.Truncate(s, maxFieldShown)
	return c.cfg.Scrub(s)
}

// fields shows fields as the channels do: each key as a label, a nested
// value (custom fields, objects, arrays) as "label: value" lines, never
// JSON.
func (c *Console) fields(fs []relay.Field) []relay.Field {
	out := make([]relay.Field, 0, len(fs))
	for _, f := range fs {
		v := f.Value
		if f.Nested {
			var lines []string
			for _, l := range relay.Readable(f) {
				if l.Key == "" {
					lines = append(lines, l.Value)
				} else {
					lines = append(lines, l.Key+": "+l.Value)
				}
			}
			v = strings.Join(lines, "\n")
		}
		if strings.TrimSpace(v) == "" {
			continue
		}
		out = append(out, relay.Field{Key: relay.Label(f.Key), Value: c.text(v)})
	}
	return out
}

// leadFields are a lead's fields in the order a reader wants them: who,
// how to reach them, what they said, the rest, ids; with contactsOnly,
// who and how to reach them only.
func (c *Console) leadFields(lead []relay.Field, contactsOnly bool) []relay.Field {
	var keep []relay.Field
	for _, f := range relay.ReadingOrder(lead) {
		if k := relay.LeadFieldKind(f.Key); !contactsOnly || k == relay.KindWho || k == relay.KindContact {
			keep = append(keep, f)
		}
	}
	return c.fields(keep)
}

type eventsView struct {
	Query   string
	Missing string // the query found nothing
	Events  []relay.EventSummary
	Older   string // the id to list from for the next page
}

// events lists recent events and finds one by id, or a conversation by its
// id (the query box takes either, or a dead letter's id).
func (c *Console) events(w http.ResponseWriter, r *http.Request) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	v := eventsView{Query: q}
	if q != "" {
		if len(q) > lookupQueryLimit {
			c.message(w, r, http.StatusBadRequest, "Too long", "An event or conversation id is shorter than that.")
			return
		}
		id, _, _ := strings.Cut(q, ".") // a dead letter's id: <event id>.<sink>
		if _, err := c.cfg.Store.Lookup(r.Context(), id); err == nil {
			http.Redirect(w, r, "/events/"+url.PathEscape(id), http.StatusSeeOther)
			return
		} else if !errors.Is(err, relay.ErrNotFound) {
			c.fail(w, r, err)
			return
		}
		_, total, err := c.cfg.Store.Conversation(r.Context(), q, 1)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		if total > 0 {
			http.Redirect(w, r, "/conversations/"+url.PathEscape(q), http.StatusSeeOther)
			return
		}
		v.Missing = q
	}
	before := r.URL.Query().Get("before")
	evs, err := c.cfg.Store.Recent(r.Context(), before, recentPage)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	v.Events = evs
	if len(evs) == recentPage {
		v.Older = evs[len(evs)-1].ID
	}
	status := http.StatusOK
	if v.Missing != "" {
		status = http.StatusNotFound
	}
	c.render(w, r, status, "events", pageData{Title: "Events", Nav: "events", Page: v})
}

type eventView struct {
	Turn           turnView
	ConversationID string
	ChatbotID      string
	Source         string
	Body           string
}

func (c *Console) event(w http.ResponseWriter, r *http.Request) {
	rec, err := c.cfg.Store.Lookup(r.Context(), r.PathValue("id"))
	if err != nil {
		c.fail(w, r, err)
		return
	}
	ev := rec.Event
	v := eventView{Turn: c.turnOf(*rec), ConversationID: ev.ConversationID, ChatbotID: ev.ChatbotID, Source: ev.Source}
	var pretty bytes.Buffer
	if json.Indent(&pretty, ev.Body, "", "  ") != nil {
		pretty.Reset()
		pretty.Write(ev.Body)
	}
	body, cut := relay.Truncate(pretty.String(), maxBodyShown)
	if cut {
		body += "\n(cut at " + strconv.Itoa(maxBodyShown) + " characters)"
	}
	v.Body = c.cfg.Scrub(body)
	c.render(w, r, http.StatusOK, "event", pageData{Title: "Event " + ev.ID, Nav: "events", Page: v})
}

type conversationView struct {
	ID        string
	ChatbotID string
	Turns     []turnView
	Total     int
	Shown     int
	State     *ConversationState
}

func (c *Console) conversation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	recs, total, err := c.cfg.Store.Conversation(r.Context(), id, conversationMax)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if total == 0 {
		c.message(w, r, http.StatusNotFound, "Not found",
			"No event of this conversation is in the store (it may have passed store.retention).")
		return
	}
	v := conversationView{ID: id, Total: total, Shown: len(recs)}
	for _, rec := range recs {
		if v.ChatbotID == "" {
			v.ChatbotID = rec.Event.ChatbotID
		}
		v.Turns = append(v.Turns, c.turnOf(rec))
	}
	if c.cfg.States != nil {
		st, ok, err := c.cfg.States.ConversationState(r.Context(), id)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		if ok {
			v.State = &st
		}
	}
	c.render(w, r, http.StatusOK, "conversation", pageData{Title: "Conversation " + id, Nav: "events", Page: v})
}

type dlqView struct {
	Params  admin.FilterParams // as typed
	Sinks   []string
	Error   string
	Done    string
	Page    relay.DeadPage
	Offset  int
	Prev    string // query strings of the neighbouring pages; "" when none
	Next    string
	Back    string // this page's query string
	Filters bool   // a filter is set
}

// filterQuery is the query string of a filter (and page), for links.
func filterQuery(p admin.FilterParams, offset int) string {
	v := url.Values{}
	for k, s := range map[string]string{"sink": p.Sink, "reason": p.Reason, "since": p.Since, "until": p.Until} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if offset > 0 {
		v.Set("offset", strconv.Itoa(offset))
	}
	return v.Encode()
}

func paramsOf(v url.Values) admin.FilterParams {
	return admin.FilterParams{Sink: v.Get("sink"), Reason: v.Get("reason"), Since: v.Get("since"), Until: v.Get("until")}
}

func (c *Console) deadLetters(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	v := dlqView{Params: paramsOf(q), Sinks: c.cfg.Ops.SinkNames()}
	v.Filters = !v.Params.IsZero()
	if v.Params.Sink != "" && !slices.Contains(v.Sinks, v.Params.Sink) {
		v.Sinks = append(v.Sinks, v.Params.Sink) // a sink no longer configured
	}
	v.Offset, _ = strconv.Atoi(q.Get("offset"))
	v.Offset = max(v.Offset, 0)
	v.Back = filterQuery(v.Params, v.Offset)
	switch q.Get("done") {
	case "replayed", "purged":
		n, _ := strconv.Atoi(q.Get("n"))
		v.Done = fmt.Sprintf("%s %d dead letter%s.", map[string]string{"replayed": "Replayed", "purged": "Purged"}[q.Get("done")], n, plural(n))
	case "none":
		v.Done = "Nothing matched, so nothing was changed."
	}
	f, err := v.Params.Filter(c.cfg.Clock.Now())
	if err != nil {
		v.Error = err.Error()
		c.render(w, r, http.StatusBadRequest, "dlq", pageData{Title: "Dead letters", Nav: "dlq", Page: v})
		return
	}
	v.Page, err = c.cfg.Ops.FindDead(r.Context(), f, v.Offset, deadPage)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	for i := range v.Page.DeadLetters {
		v.Page.DeadLetters[i].Reason = c.cfg.Scrub(v.Page.DeadLetters[i].Reason)
	}
	if v.Offset > 0 {
		v.Prev = filterQuery(v.Params, max(v.Offset-deadPage, 0))
	}
	if v.Offset+len(v.Page.DeadLetters) < v.Page.Total {
		v.Next = filterQuery(v.Params, v.Offset+deadPage)
	}
	c.render(w, r, http.StatusOK, "dlq", pageData{Title: "Dead letters", Nav: "dlq", Page: v})
}

// action is what the dead-letter form asks: replay or purge, of the ticked
// ones or of every one the filter matches.
type action struct {
	Verb string // replay, purge
	All  bool
}

func parseAction(s string) (action, bool) {
	verb, scope, _ := strings.Cut(s, "-")
	if (verb != "replay" && verb != "purge") || (scope != "selected" && scope != "all") {
		return action{}, false
	}
	return action{Verb: verb, All: scope == "all"}, true
}

type confirmView struct {
	Action   string // replay-all, …
	Verb     string
	Count    int
	IDs      []string
	Params   admin.FilterParams // fixed in time: what is confirmed is what is done
	Describe string
	Back     string
}

// confirm states how many dead letters the action would change and asks.
// A filter's open end is fixed at now, so that confirming changes what was
// counted and nothing parked since.
func (c *Console) confirm(w http.ResponseWriter, r *http.Request) {
	act, ok := parseAction(r.PostFormValue("action"))
	if !ok {
		c.message(w, r, http.StatusBadRequest, "Unknown action", "Choose replay or purge.")
		return
	}
	back := backQuery(r.PostFormValue("back"))
	v := confirmView{Action: r.PostFormValue("action"), Verb: act.Verb, Back: back}
	if act.All {
		now := c.cfg.Clock.Now()
		f, err := paramsOf(r.PostForm).Filter(now)
		if err != nil {
			c.message(w, r, http.StatusBadRequest, "Bad filter", err.Error())
			return
		}
		if f.Until.IsZero() {
			f.Until = now.Add(time.Nanosecond)
		}
		page, err := c.cfg.Ops.FindDead(r.Context(), f, 0, 1)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		v.Count, v.Params, v.Describe = page.Total, admin.Params(f), describe(f)
	} else {
		ids := uniqueIDs(r.PostForm["id"])
		if len(ids) > maxSelected {
			c.message(w, r, http.StatusBadRequest, "Too many", fmt.Sprintf("Select at most %d dead letters, or act on the filter.", maxSelected))
			return
		}
		for _, id := range ids {
			if _, _, err := c.cfg.Store.GetDead(r.Context(), id); err == nil {
				v.IDs = append(v.IDs, id)
			} else if !errors.Is(err, relay.ErrNotFound) {
				c.fail(w, r, err)
				return
			}
		}
		v.Count, v.Describe = len(v.IDs), "selected"
	}
	if v.Count == 0 {
		http.Redirect(w, r, "/dlq?"+withDone(back, "none", 0), http.StatusSeeOther)
		return
	}
	c.render(w, r, http.StatusOK, "confirm", pageData{Title: "Confirm", Nav: "dlq", Page: v})
}

// apply does what was confirmed and goes back to the list, which says how
// many dead letters it changed.
func (c *Console) apply(w http.ResponseWriter, r *http.Request) {
	act, ok := parseAction(r.PostFormValue("action"))
	if !ok {
		c.message(w, r, http.StatusBadRequest, "Unknown action", "Choose replay or purge.")
		return
	}
	back := backQuery(r.PostFormValue("back"))
	var n int
	var err error
	if act.All {
		f, ferr := paramsOf(r.PostForm).Filter(c.cfg.Clock.Now())
		if ferr != nil || f.Until.IsZero() {
			c.message(w, r, http.StatusBadRequest, "Bad filter", "The confirmation was incomplete; start again from the list.")
			return
		}
		if act.Verb == "replay" {
			n, err = c.cfg.Ops.ReplayMatching(r.Context(), f)
		} else {
			n, err = c.cfg.Ops.PurgeMatching(r.Context(), f)
		}
	} else {
		ids := uniqueIDs(r.PostForm["id"])
		if len(ids) > maxSelected {
			c.message(w, r, http.StatusBadRequest, "Too many", fmt.Sprintf("Select at most %d dead letters.", maxSelected))
			return
		}
		if act.Verb == "replay" {
			n, err = c.cfg.Ops.ReplayIDs(r.Context(), ids)
		} else {
			n, err = c.cfg.Ops.PurgeIDs(r.Context(), ids)
		}
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.cfg.Logger.Info("console: dead letters "+act.Verb+"d", "count", n, "remote", r.RemoteAddr)
	done := map[string]string{"replay": "replayed", "purge": "purged"}[act.Verb]
	http.Redirect(w, r, "/dlq?"+withDone(back, done, n), http.StatusSeeOther)
}

func uniqueIDs(ids []string) []string {
	var out []string
	for _, id := range ids {
		if id = strings.TrimSpace(id); id != "" && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// backQuery keeps only the list's own parameters of a query string.
func backQuery(q string) string {
	v, _ := url.ParseQuery(q)
	off, _ := strconv.Atoi(v.Get("offset"))
	return filterQuery(paramsOf(v), max(off, 0))
}

func withDone(q, done string, n int) string {
	v, _ := url.ParseQuery(q)
	v.Del("offset")
	v.Set("done", done)
	v.Set("n", strconv.Itoa(n))
	return v.Encode()
}

// describe says in words which dead letters a filter selects.
func describe(f relay.DeadFilter) string {
	var parts []string
	if f.Sink != "" {
		parts = append(parts, "of sink "+f.Sink)
	}
	if f.Reason != "" {
		parts = append(parts, fmt.Sprintf("whose reason contains %q", f.Reason))
	}
	if !f.Since.IsZero() {
		parts = append(parts, "parked since "+f.Since.UTC().Format(time.DateTime)+" UTC")
	}
	parts = append(parts, "parked before "+f.Until.UTC().Format(time.DateTime)+" UTC")
	return strings.Join(parts, ", ")
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
