package discord_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/discord"
	"github.com/chatrelay/chatrelay/sinks/discord/discordtest"
)

// followup makes the follow-up event f of the harness's conversation, as
// the relay queues it.
func (w *twoWay) followup(t *testing.T, f relay.Followup) *relay.Event {
	t.Helper()
	f.Sink = "chat"
	if f.Key == "" {
		f.Key = uuid.NewString()
	}
	ev, err := relay.NewFollowupEvent(w.conv.ConversationID, w.conv.ChatbotID, f)
	if err != nil {
		t.Fatal(err)
	}
	ev.ID, ev.ReceivedAt = uuid.NewString(), time.Now()
	return ev
}

// deliverQueued sends what the relay queued for the sink (follow-ups),
// as its dispatcher would, until none is due.
func (w *twoWay) deliverQueued(t *testing.T, n int) {
	t.Helper()
	q := w.store.Queue("chat")
	for range n {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		d, err := q.Next(ctx)
		cancel()
		if err != nil {
			t.Fatalf("nothing queued for the sink: %v", err)
		}
		if err := w.sink.Send(t.Context(), d.Event); err != nil {
			t.Fatalf("send %s: %v", d.Event.Topic, err)
		}
		if err := d.Ack(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if d, err := q.TryNext(t.Context()); err != nil || d != nil {
		t.Fatalf("more queued than expected: %+v, %v", d, err)
	}
}

// TestFollowupReaction: a reply Chat Data accepted gets ✅ on the agent's
// message; one whose message was deleted meanwhile needs nothing; a bot
// that may not react parks the follow-up (not the sink).
func TestFollowupReaction(t *testing.T) {
	t.Parallel()
	w := newTwoWay(t, twoWayOptions{})
	msg := w.rest.Write(w.thread, dana, "reply: refunded")
	reply := &relay.Reply{Sink: "chat", Channel: w.thread, Thread: w.thread, MessageID: msg.ID, Text: "refunded"}
	if err := w.sink.Send(t.Context(), w.followup(t, relay.Followup{Kind: relay.FollowupDelivered, Reply: reply})); err != nil {
		t.Fatal(err)
	}
	if got := w.rest.Reactions(); len(got) != 1 || got[0] != (discordtest.Reaction{ChannelID: w.thread, MessageID: msg.ID, Emoji: "✅"}) {
		t.Fatalf("reactions %+v", got)
	}
	gone := *reply
	gone.MessageID = "1310000000000000999"
	if err := w.sink.Send(t.Context(), w.followup(t, relay.Followup{Kind: relay.FollowupDelivered, Reply: &gone})); err != nil {
		t.Fatalf("reaction on a deleted message: %v", err)
	}
	w.rest.Script("PUT /channels/", discordtest.Reply{Status: 403, Code: discordgo.ErrCodeMissingPermissions, Message: "Missing Permissions"})
	err := w.sink.Send(t.Context(), w.followup(t, relay.Followup{Kind: relay.FollowupDelivered, Reply: reply}))
	if c, _ := relay.Classify(err); c != relay.ClassPermanent {
		t.Fatalf("a reaction the bot may not add: %v (class %s), want permanent", err, c)
	}
}

// TestFollowupNotDelivered: a dead-lettered reply is told in its thread,
// in reply to the agent's message: that it did not reach the visitor,
// why, and the replay command; nothing in it can ping.
func TestFollowupNotDelivered(t *testing.T) {
	t.Parallel()
	w := newTwoWay(t, twoWayOptions{})
	msg := w.rest.Write(w.thread, dana, "reply: refunded")
	reply := &relay.Reply{Sink: "chat", Channel: w.thread, Thread: w.thread, MessageID: msg.ID, Text: "refunded"}
	f := relay.Followup{Kind: relay.FollowupDead, Reply: reply, Reason: "chatdata: HTTP 401: invalid API key <@&1>",
		Replay: "chatrelay dlq replay 0193-ab.chatdata"}
	if err := w.sink.Send(t.Context(), w.followup(t, f)); err != nil {
		t.Fatal(err)
	}
	msgs := w.rest.Messages(w.thread)
	last := msgs[len(msgs)-1]
	for _, want := range []string{"⚠️ This reply did not reach the visitor: chatdata: HTTP 401: invalid API key", "To send it again: chatrelay dlq replay 0193-ab.chatdata"} {
		if !strings.Contains(last.Content, want) {
			t.Errorf("note %q lacks %q", last.Content, want)
		}
	}
	if strings.Contains(last.Content, "<@&1>") {
		t.Errorf("note carries a live mention: %q", last.Content)
	}
	var body struct {
		Reference struct {
			MessageID string `json:"message_id"`
		} `json:"message_reference"`
	}
	if err := json.Unmarshal(last.Payload, &body); err != nil || body.Reference.MessageID != msg.ID {
		t.Fatalf("note not in reply to the agent's message: %s", last.Payload)
	}
}

// TestFollowupHeld: a reply that waits for Chat Data is told in its
// thread, in reply to the agent's message: not delivered yet, why, that
// it is kept and the ✅ says when it went, and the command that shows an
// operator why (as code); nothing in it can ping.
func TestFollowupHeld(t *testing.T) {
	t.Parallel()
	w := newTwoWay(t, twoWayOptions{})
	msg := w.rest.Write(w.thread, dana, "reply: refunded")
	reply := &relay.Reply{Sink: "chat", Channel: w.thread, Thread: w.thread, MessageID: msg.ID, Text: "refunded"}
	f := relay.Followup{Kind: relay.FollowupHeld, Reply: reply, Reason: "Chat Data cannot be reached <@&1> *now*",
		Until: "as soon as Chat Data answers again", Status: "chatrelay --config '/etc/chat`relay.yaml' status"}
	if err := w.sink.Send(t.Context(), w.followup(t, f)); err != nil {
		t.Fatal(err)
	}
	msgs := w.rest.Messages(w.thread)
	last := msgs[len(msgs)-1]
	for _, want := range []string{"⏳ Not delivered yet: Chat Data cannot be reached", "It is kept and sent as soon as Chat Data answers again; " +
		"you will see ✅ when the visitor has it. An operator sees why in `chatrelay --config '/etc/chat'relay.yaml' status`."} {
		if !strings.Contains(last.Content, want) {
			t.Errorf("note %q lacks %q", last.Content, want)
		}
	}
	if strings.Contains(last.Content, "<@&1>") || strings.Contains(last.Content, " *now*") {
		t.Errorf("note carries live markup: %q", last.Content)
	}
	var body struct {
		Reference struct {
			MessageID string `json:"message_id"`
		} `json:"message_reference"`
		AllowedMentions struct {
			Parse []string `json:"parse"`
		} `json:"allowed_mentions"`
	}
	if err := json.Unmarshal(last.Payload, &body); err != nil || body.Reference.MessageID != msg.ID || len(body.AllowedMentions.Parse) != 0 {
		t.Fatalf("note not in reply to the agent's message, or may ping: %s", last.Payload)
	}
	// Without a thread to post in, it is parked, not retried.
	f.Reply = &relay.Reply{Sink: "chat", MessageID: msg.ID}
	if c, _ := relay.Classify(w.sink.Send(t.Context(), w.followup(t, f))); c != relay.ClassPermanent {
		t.Errorf("a held note without its thread: class %s, want permanent", c)
	}
}

// escalationIn is the sample escalation in the harness's conversation
// (which has a thread already).
func (w *twoWay) escalationIn(t *testing.T) *relay.Event {
	t.Helper()
	ev := eventFile(t, "live-chat-escalation.json", relay.TopicEscalation)
	body := strings.ReplaceAll(string(ev.Body), ev.ConversationID, w.conv.ConversationID)
	return withID(eventBody(t, []byte(body), relay.TopicEscalation), 3)
}

// buttonsOf reads the custom ids of a message's buttons.
func buttonsOf(t *testing.T, m discordtest.Message) (ids []string, disabled []bool) {
	t.Helper()
	var rows []struct {
		Components []struct {
			CustomID string `json:"custom_id"`
			Disabled bool   `json:"disabled"`
			Label    string `json:"label"`
		} `json:"components"`
	}
	if err := json.Unmarshal(m.Components, &rows); err != nil || len(rows) != 1 {
		t.Fatalf("components %s: %v", m.Components, err)
	}
	for _, b := range rows[0].Components {
		ids, disabled = append(ids, b.CustomID), append(disabled, b.Disabled)
	}
	return ids, disabled
}

// TestEscalationButtons: on a two-way sink an escalation carries Claim
// and Resolve, naming its conversation and chatbot, and is never packed
// with other turns; a sink without replies posts none.
func TestEscalationButtons(t *testing.T) {
	t.Parallel()
	w := newTwoWay(t, twoWayOptions{})
	esc := w.escalationIn(t)
	if w.sink.CanPack(t.Context(), esc) {
		t.Fatal("an escalation with buttons may be packed")
	}
	if err := w.sink.Send(t.Context(), esc); err != nil {
		t.Fatal(err)
	}
	msgs := w.rest.Messages(w.channel)
	posted := msgs[len(msgs)-1]
	ids, disabled := buttonsOf(t, posted)
	want := []string{"chatrelay:claim:" + w.conv.ConversationID + ":" + w.conv.ChatbotID, "chatrelay:resolve:" + w.conv.ConversationID + ":" + w.conv.ChatbotID}
	if strings.Join(ids, " ") != strings.Join(want, " ") || disabled[0] || disabled[1] {
		t.Fatalf("buttons %v %v, want %v enabled", ids, disabled, want)
	}
	// In the channel (the conversation has a thread): the link to the
	// thread on its line, then how to answer, in small print.
	first, hint, _ := strings.Cut(posted.Content, "\n")
	if !strings.HasSuffix(first, " · conversation thread: <#"+w.thread+">") ||
		hint != `-# 💬 To answer the visitor, start a message in this thread with "reply:"; other messages stay internal notes.` {
		t.Fatalf("escalation content %q: want the thread link, then the hint", posted.Content)
	}

	f := newFixture(t, true, discordgo.ChannelTypeGuildText, discordtest.WithRateLimit(0, 0))
	if err := f.sink(t, relay.SinkDeps{}).Send(t.Context(), eventFile(t, "live-chat-escalation.json", relay.TopicEscalation)); err != nil {
		t.Fatal(err)
	}
	if m := f.srv.Messages(f.channel); len(m[0].Components) != 0 {
		t.Fatalf("a sink without replies posted components %s", m[0].Components)
	}
}

// TestClaimAndResolveRace: two agents click Claim on an escalation at
// once. Both get an answer within 3 s (a deferred update); one wins, the
// other is told who was first, in a message only they see. The message
// clicked, and the conversation's root message, then show "🙋 Claimed by
// …" with Claim disabled; Resolve shows "✅ Resolved by …" with both
// disabled.
func TestClaimAndResolveRace(t *testing.T) {
	t.Parallel()
	w := newTwoWay(t, twoWayOptions{})
	ctx := within(t)
	if err := w.sink.Send(ctx, w.escalationIn(t)); err != nil {
		t.Fatal(err)
	}
	msgs := w.rest.Messages(w.channel)
	esc := msgs[len(msgs)-1]
	ids, _ := buttonsOf(t, esc)
	click := func(id, customID string, who discordgo.User, nick string) {
		t.Helper()
		if _, err := w.gw.Dispatch(ctx, "INTERACTION_CREATE",
			w.gw.ButtonClick(id, w.channel, discordtest.GuildID, esc.ID, customID, who, nick)); err != nil {
			t.Fatal(err)
		}
	}
	click("1310000000000000801", ids[0], dana, "Dana (Billing)")
	click("1310000000000000802", ids[0], sam, "")
	for _, id := range []string{"1310000000000000801", "1310000000000000802"} {
		r, err := w.gw.WaitInteractionResponse(ctx, id)
		if err != nil || r.Response.Type != discordgo.InteractionResponseDeferredMessageUpdate || r.Late {
			t.Fatalf("answer to %s: %+v, %v", id, r, err)
		}
	}
	fus, err := w.gw.WaitFollowups(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if fu := fus[0]; fu.InteractionID != "1310000000000000802" || fu.Flags != 64 ||
		fu.Content != "Someone was first: 🙋 Claimed by Dana (Billing)." {
		t.Fatalf("the second clicker was told %+v", fu)
	}
	st, _, err := w.convs.State(ctx, w.conv.ConversationID)
	if err != nil || st.ClaimedByID != dana.ID || st.ClaimedBy != "Dana (Billing)" {
		t.Fatalf("state %+v, %v", st, err)
	}
	// The status follow-up (one: both clicks leave the same status).
	w.deliverQueued(t, 1)
	checkStatus := func(wantFirst string, claimOff, resolveOff bool) {
		t.Helper()
		m, _ := w.rest.Message(esc.ID)
		if first, _, _ := strings.Cut(m.Content, "\n"); first != wantFirst {
			t.Errorf("escalation's first line %q, want %q", first, wantFirst)
		}
		if _, off := buttonsOf(t, m); off[0] != claimOff || off[1] != resolveOff {
			t.Errorf("buttons disabled %v, want claim %v resolve %v", off, claimOff, resolveOff)
		}
		root, _ := w.rest.Message(w.thread)
		if first, _, _ := strings.Cut(root.Content, "\n"); first != wantFirst {
			t.Errorf("root message's first line %q, want %q", first, wantFirst)
		}
	}
	checkStatus("**🙋 Claimed by Dana (Billing)**", true, false)

	click("1310000000000000803", ids[1], sam, "")
	if _, err := w.gw.WaitInteractionResponse(ctx, "1310000000000000803"); err != nil {
		t.Fatal(err)
	}
	relayStateResolved(t, w)
	w.deliverQueued(t, 1)
	checkStatus("**✅ Resolved by sam**", true, true)
	if fus := len(w.gw.Responses()); fus != 3 {
		t.Fatalf("%d interaction answers", fus)
	}
	if fus, _ := w.gw.WaitFollowups(ctx, 1); len(fus) != 1 {
		t.Fatalf("follow-ups %+v: the winner of Resolve is told nothing more", fus)
	}
}

// relayStateResolved waits for the conversation to be resolved in the
// store (the click's record comes after its answer).
func relayStateResolved(t *testing.T, w *twoWay) {
	t.Helper()
	q := w.store.Queue("chat")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	// The status follow-up is queued once the state is recorded: wait
	// for it, then hand it back for deliverQueued.
	d, err := q.Next(ctx)
	if err != nil {
		t.Fatalf("no status follow-up: %v", err)
	}
	if err := d.Release(ctx); err != nil {
		t.Fatal(err)
	}
	st, _, err := w.convs.State(ctx, w.conv.ConversationID)
	if err != nil || !st.Resolved() || st.ResolvedByID != sam.ID {
		t.Fatalf("state %+v, %v", st, err)
	}
}

// TestFollowupRepage: an escalation nobody claimed is posted again in the
// channel with the sink's mention (allowed to ping), how long it waited,
// a link to its thread and the buttons.
func TestFollowupRepage(t *testing.T) {
	t.Parallel()
	w := newTwoWay(t, twoWayOptions{})
	f := relay.Followup{Kind: relay.FollowupRepage, State: &relay.ConversationState{}, Waited: 10 * time.Minute, Escalation: "e1"}
	if err := w.sink.Send(t.Context(), w.followup(t, f)); err != nil {
		t.Fatal(err)
	}
	msgs := w.rest.Messages(w.channel)
	m := msgs[len(msgs)-1]
	want := "<@&1310000000000000444> Still unclaimed after 10m: a visitor is waiting for a person. · conversation thread: <#" + w.thread + ">"
	if m.Content != want {
		t.Errorf("re-page %q, want %q", m.Content, want)
	}
	if len(m.AllowedMentions.Roles) != 1 || m.AllowedMentions.Roles[0] != "1310000000000000444" {
		t.Errorf("allowed mentions %+v: the mention must ping", m.AllowedMentions)
	}
	if ids, _ := buttonsOf(t, m); len(ids) != 2 {
		t.Errorf("buttons %v", ids)
	}
}

// TestReplyConfig: reply: needs bot mode, and its keys are checked.
func TestReplyConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  discord.Config
		want string
	}{
		{"webhook", discord.Config{WebhookURL: "https://discord.com/api/webhooks/1/abc", Reply: &relay.ReplyConfig{}}, "reply: needs bot mode"},
		{"mode", discord.Config{Token: "t", ChannelID: "1", Reply: &relay.ReplyConfig{Mode: "sometimes"}}, "reply.mode:"},
		{"repage", discord.Config{Token: "t", ChannelID: "1", Reply: &relay.ReplyConfig{RepageAfter: -time.Minute}}, "reply.repage_after:"},
		{"ok", discord.Config{Token: "t", ChannelID: "1", Reply: &relay.ReplyConfig{Mode: relay.ReplyAll}}, ""},
	} {
		err := tc.cfg.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, on := (discord.Config{Token: "t", ChannelID: "1"}).Replies(); on {
		t.Error("a sink without reply: takes replies")
	}
}

// TestRepageOnFakeClock: an escalation posted to a two-way sink with
// repage_after and nobody claiming it is, once the delay has passed on
// the (fake) clock and not before, queued again for the sink, which posts
// it in the channel with the mention, a link to the thread and the
// buttons; once only.
func TestRepageOnFakeClock(t *testing.T) {
	t.Parallel()
	w := newTwoWay(t, twoWayOptions{})
	clock := clockwork.NewFakeClock() // the repager's alone: waiting counts its timer
	convs, err := relay.NewConversations(w.store.KV(relay.ConversationsNamespace), clock)
	if err != nil {
		t.Fatal(err)
	}
	r, err := relay.NewRepager(relay.RepagerConfig{Conversations: convs, Store: w.store, Clock: clock,
		After: map[string]time.Duration{"chat": 10 * time.Minute}, Poll: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waiting := func() {
		t.Helper()
		wctx, wcancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer wcancel()
		if err := clock.BlockUntilContext(wctx, 1); err != nil {
			t.Fatalf("the repager does not wait: %v", err)
		}
	}
	waiting()

	// The escalation is posted, and recorded as the relay's follow-ups do
	// once it was delivered.
	esc := w.escalationIn(t)
	if err := w.sink.Send(t.Context(), esc); err != nil {
		t.Fatal(err)
	}
	if err := convs.Escalated(t.Context(), "chat", esc, 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	waiting()
	posted := len(w.rest.Messages(w.channel))
	clock.Advance(10*time.Minute - time.Second)
	waiting()
	w.deliverQueued(t, 0) // nothing yet
	clock.Advance(time.Second)
	waiting()
	w.deliverQueued(t, 1)
	msgs := w.rest.Messages(w.channel)
	if len(msgs) != posted+1 {
		t.Fatalf("%d messages in the channel, want %d", len(msgs), posted+1)
	}
	m := msgs[len(msgs)-1]
	want := "<@&1310000000000000444> Still unclaimed after 10m: a visitor is waiting for a person. · conversation thread: <#" + w.thread + ">"
	if m.Content != want {
		t.Errorf("re-page %q, want %q", m.Content, want)
	}
	if ids, disabled := buttonsOf(t, m); len(ids) != 2 || disabled[0] || disabled[1] {
		t.Errorf("buttons %v %v", ids, disabled)
	}
	// Once: an hour later, nothing more.
	for range 12 {
		clock.Advance(5 * time.Minute)
		waiting()
	}
	w.deliverQueued(t, 0)
}

// TestClickElsewhereNotTaken: a click is taken only on a message in the
// sink's channel or in a thread of it (a forum post). The bot's buttons in
// another channel (another two-way sink on the same bot token, whose own
// session takes it; a channel the sink posted to before its config
// changed) are not this sink's: no claim, no answer, nothing queued.
func TestClickElsewhereNotTaken(t *testing.T) {
	t.Parallel()
	w := newTwoWay(t, twoWayOptions{})
	ctx := within(t)
	if err := w.sink.Send(ctx, w.escalationIn(t)); err != nil {
		t.Fatal(err)
	}
	msgs := w.rest.Messages(w.channel)
	esc := msgs[len(msgs)-1]
	ids, _ := buttonsOf(t, esc)
	other := w.rest.AddChannel(discordgo.ChannelTypeGuildText)
	dispatch := func(click map[string]any) {
		t.Helper()
		if _, err := w.gw.Dispatch(ctx, "INTERACTION_CREATE", click); err != nil {
			t.Fatal(err)
		}
	}
	// Dana clicks Claim on the bot's message in another channel; then Sam
	// in the sink's channel. Clicks are handled in order: once Sam's is
	// answered, Dana's was decided.
	dispatch(w.gw.ButtonClick("1310000000000000811", other, discordtest.GuildID, "1310000000000000999", ids[0], dana, "Dana"))
	dispatch(w.gw.ButtonClick("1310000000000000812", w.channel, discordtest.GuildID, esc.ID, ids[0], sam, ""))
	if _, err := w.gw.WaitInteractionResponse(ctx, "1310000000000000812"); err != nil {
		t.Fatal(err)
	}
	for _, r := range w.gw.Responses() {
		if r.InteractionID == "1310000000000000811" {
			t.Errorf("the click elsewhere was answered: %+v", r)
		}
	}
	// Sam's click is recorded after its answer.
	var st relay.ConversationState
	relaytest.Eventually(t, 20*time.Second, "the conversation claimed", func() bool {
		var err error
		st, _, err = w.convs.State(ctx, w.conv.ConversationID)
		return err == nil && st.Claimed()
	})
	if st.ClaimedByID != sam.ID {
		t.Fatalf("state %+v: claimed by a click in another channel", st)
	}
	// In a thread of the sink's channel (a forum post's message): taken.
	inThread := w.gw.ButtonClick("1310000000000000813", w.thread, discordtest.GuildID, esc.ID, ids[1], dana, "Dana")
	inThread["channel"] = map[string]any{"id": w.thread, "type": int(discordgo.ChannelTypeGuildPublicThread), "parent_id": w.channel}
	dispatch(inThread)
	relaytest.Eventually(t, 20*time.Second, "the conversation resolved by Dana, in the thread", func() bool {
		st, _, err := w.convs.State(ctx, w.conv.ConversationID)
		return err == nil && st.Resolved() && st.ResolvedByID == dana.ID
	})
}
