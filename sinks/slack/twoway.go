package slack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	slackapi "github.com/slack-go/slack"

	"github.com/chatrelay/chatrelay/relay"
)

// What a two-way sink adds to Slack (SPEC §10): Claim and Resolve buttons
// on escalations, and what the relay's follow-ups show: a reaction on an
// agent's message Chat Data accepted, a note in the thread of one that is
// held (once) and of one that was dead-lettered, the status on the message whose button was clicked, an
// unclaimed escalation posted again with the mention.

// The buttons' ids. A click carries the action id, and the conversation as
// the button's value. The status blocks' ids start with statusBlock, so
// that a later edit finds them.
const (
	actionClaim   = "chatrelay_claim"
	actionResolve = "chatrelay_resolve"
	statusBlock   = "chatrelay_status"
	statusText    = statusBlock + "_text"
)

// replyReaction is the reaction on an agent's message once Chat Data
// accepted it.
const replyReaction = "white_check_mark"

// maxButtonValue is Slack's limit on a button's value
// (https://docs.slack.dev/reference/block-kit/block-elements/button-element).
const maxButtonValue = 2000

// twoWay reports whether the sink takes replies.
func (s *Sink) twoWay() bool { return s.cfg.Reply != nil && !s.webhook() }

// buttons is the actions block of a conversation's escalation: Claim and
// Resolve while it is open, Resolve once claimed, none once resolved (nil).
func buttons(conv string, st relay.ConversationState) slackapi.Block {
	if st.Resolved() || conv == "" || len(conv) > maxButtonValue {
		return nil
	}
	var elems []slackapi.BlockElement
	if !st.Claimed() {
		claim := slackapi.NewButtonBlockElement(actionClaim, conv,
			slackapi.NewTextBlockObject(slackapi.PlainTextType, relay.ClaimButton, false, false))
		claim.Style = slackapi.StylePrimary
		elems = append(elems, claim)
	}
	elems = append(elems, slackapi.NewButtonBlockElement(actionResolve, conv,
		slackapi.NewTextBlockObject(slackapi.PlainTextType, relay.ResolveButton, false, false)))
	return slackapi.NewActionBlock(statusBlock, elems...)
}

// hintBlock is the id of the line that tells agents how to answer.
const hintBlock = "chatrelay_hint"

// withButtons adds to an escalation's first message, when the sink is
// two-way, how to answer the visitor from the thread and the Claim and
// Resolve buttons, as the message has room for them.
func (s *Sink) withButtons(ev *relay.Event, msgs []message) []message {
	if !s.twoWay() || ev.Topic != relay.TopicEscalation || len(msgs) == 0 || len(msgs[0].blocks) >= maxBlocks {
		return msgs
	}
	b := buttons(ev.ConversationID, relay.ConversationState{})
	if b == nil {
		return msgs
	}
	if len(msgs[0].blocks) < maxBlocks-1 {
		hint := ":speech_balloon: " + escape(s.cfg.Reply.Rule().Hint())
		msgs[0].blocks = append(msgs[0].blocks,
			slackapi.NewContextBlock(hintBlock, slackapi.NewTextBlockObject(slackapi.MarkdownType, hint, false, false)))
	}
	msgs[0].blocks = append(msgs[0].blocks, b)
	return msgs
}

// followupTurn is the turn of a follow-up: one request, made as its kind
// says.
func (s *Sink) followupTurn(ev *relay.Event) (*relay.Turn, error) {
	fu := ev.Followup
	if fu == nil || s.webhook() {
		return nil, relay.Permanent(fmt.Errorf("slack sink %q: a follow-up needs bot mode and what it follows up", s.cfg.Name),
			relay.ReasonClientError)
	}
	one := func(post func(ctx context.Context, thread string) (relay.Placed, error), threads bool) *relay.Turn {
		return &relay.Turn{Books: s.books, Event: ev, Dest: s.dest, Parts: 1, Threads: threads,
			Post: func(ctx context.Context, _ int, thread string) (relay.Placed, error) { return post(ctx, thread) }}
	}
	switch fu.Kind {
	case relay.FollowupDelivered:
		if fu.Reply == nil {
			break
		}
		return one(func(ctx context.Context, _ string) (relay.Placed, error) {
			return relay.Placed{}, s.react(ctx, fu.Reply.Channel, fu.Reply.MessageID)
		}, false), nil
	case relay.FollowupDead:
		if fu.Reply == nil {
			break
		}
		return one(func(ctx context.Context, _ string) (relay.Placed, error) {
			_, _, err := s.postAPI(ctx, noteMessage(fu), fu.Reply.Thread, false)
			return relay.Placed{}, followupError(err)
		}, false), nil
	case relay.FollowupHeld:
		if fu.Reply == nil {
			break
		}
		return one(func(ctx context.Context, _ string) (relay.Placed, error) {
			_, _, err := s.postAPI(ctx, heldMessage(fu), fu.Reply.Thread, false)
			return relay.Placed{}, followupError(err)
		}, false), nil
	case relay.FollowupStatus:
		if fu.State == nil || fu.MessageID == "" {
			break
		}
		return one(func(ctx context.Context, _ string) (relay.Placed, error) {
			return relay.Placed{}, s.showStatus(ctx, fu, ev.ConversationID)
		}, false), nil
	case relay.FollowupRepage:
		st := relay.ConversationState{}
		if fu.State != nil {
			st = *fu.State
		}
		m := s.repageMessage(ev.ConversationID, fu, st)
		// Into the conversation's thread, and shown in the channel: it is
		// there to be seen.
		return one(func(ctx context.Context, thread string) (relay.Placed, error) {
			ts, threaded, err := s.postAPI(ctx, m, thread, thread != "")
			return placed(thread, ts, threaded, err)
		}, true), nil
	}
	return nil, relay.Permanent(fmt.Errorf("slack sink %q: follow-up %q is incomplete or unknown", s.cfg.Name, fu.Kind),
		relay.ReasonClientError)
}

// react adds the reply reaction to an agent's message; one that is there
// already is success.
func (s *Sink) react(ctx context.Context, channel, ts string) error {
	err := s.call(ctx, "reactions.add", url.Values{"channel": {channel}, "timestamp": {ts}, "name": {replyReaction}}, &plainAnswer{})
	var se *slackError
	if errors.As(err, &se) && se.code == "already_reacted" {
		return nil
	}
	return followupError(err)
}

// followupError keeps a follow-up's failure to itself: an error that would
// mark the whole sink down (a scope the app lacks for reactions, a message
// deleted) parks the follow-up instead, so that the channel's mirror goes
// on; rate limits and temporary failures stay as they are.
func followupError(err error) error {
	if err == nil {
		return nil
	}
	var se *slackError
	if !errors.As(err, &se) {
		return err
	}
	switch se.code {
	case "missing_scope", "no_permission", "message_not_found", "cant_update_message", "edit_window_closed",
		"too_many_reactions", "invalid_name", "not_reactable", "thread_not_found", "invalid_thread_ts":
		return relay.Permanent(err, relay.ReasonClientError)
	}
	return err
}

// noteMessage is the thread's note of a reply that did not reach the
// visitor: why, and the command that sends it again.
func noteMessage(fu *relay.Followup) message {
	var b strings.Builder
	b.WriteString(":warning: " + relay.NotDelivered)
	if r := strings.TrimSpace(fu.Reason); r != "" {
		b.WriteString(": ")
		b.WriteString(escape(r))
	}
	if !strings.HasSuffix(b.String(), ".") {
		b.WriteString(".")
	}
	foot := ""
	if fu.Replay != "" {
		foot = "To send it again: " + command(fu.Replay)
	}
	return threadNote(b.String(), foot)
}

// heldMessage is the thread's note of a reply that waits for Chat Data:
// why, that it is kept and sent later (the ✅ says when), and where an
// operator sees why.
func heldMessage(fu *relay.Followup) message {
	foot := ""
	if fu.Status != "" {
		foot = relay.OperatorSees + " " + command(fu.Status) + "."
	}
	return threadNote(":hourglass_flowing_sand: "+escape(fu.HeldLine()), foot)
}

// threadNote is a note in a reply's thread: text (mrkdwn) in a section,
// and foot, when there is one, in a context block under it; the
// notification's text holds both.
func threadNote(text, foot string) message {
	blocks := []slackapi.Block{slackapi.NewSectionBlock(slackapi.NewTextBlockObject(slackapi.MarkdownType, clip(text, maxSectionText), false, false), nil, nil)}
	if foot != "" {
		blocks = append(blocks, slackapi.NewContextBlock("", slackapi.NewTextBlockObject(slackapi.MarkdownType, clip(foot, maxSectionText), false, false)))
		text += " " + foot
	}
	return message{text: clip(text, maxMessageText), blocks: blocks}
}

// command is a command line an agent may pass on, as inline code.
func command(s string) string { return "`" + escape(strings.ReplaceAll(s, "`", "'")) + "`" }

// clip cuts s to n characters as Slack counts them, ending in "…".
func clip(s string, n int) string {
	if size(s) <= n {
		return s
	}
	return headOf(s, n-size(ellipsis)) + ellipsis
}

// repageMessage is an unclaimed escalation posted again: the mention, what
// it is about, and the buttons.
func (s *Sink) repageMessage(conv string, fu *relay.Followup, st relay.ConversationState) message {
	line := ":rotating_light: *" + escape(fu.RepageLine()) + "*"
	if s.cfg.Mention != "" {
		line = s.cfg.Mention + " " + line
	}
	blocks := []slackapi.Block{slackapi.NewSectionBlock(slackapi.NewTextBlockObject(slackapi.MarkdownType, line, false, false), nil, nil)}
	if b := buttons(conv, st); b != nil {
		blocks = append(blocks, b)
	}
	return message{text: line, blocks: blocks}
}

// showStatus shows a conversation's status on the message whose button
// was clicked: its blocks as Slack sent them with the click, the status
// (and the buttons still useful) in place of the buttons. Without those
// blocks the status goes into the message's thread instead, so that
// nothing of the message is lost.
func (s *Sink) showStatus(ctx context.Context, fu *relay.Followup, conv string) error {
	st := *fu.State
	var msg clicked
	if json.Unmarshal(fu.Message, &msg) != nil {
		msg = clicked{}
	}
	text := escape(st.Status())
	if text == "" {
		text = escape(relay.EscalationLine)
	}
	if rest := withoutStatus(msg); rest != "" {
		// The notification's text (already Slack's), under the status.
		text = clip(text+"\n"+rest, maxMessageText)
	}
	blocks, ok := statusBlocks(msg.Blocks, fu.State, conv)
	if !ok {
		_, _, err := s.postAPI(ctx, message{text: text, blocks: []slackapi.Block{
			slackapi.NewContextBlock(statusText, slackapi.NewTextBlockObject(slackapi.PlainTextType, st.Status(), true, false)),
		}}, fu.MessageID, false)
		return followupError(err)
	}
	form := url.Values{"channel": {fu.Channel}, "ts": {fu.MessageID}, "text": {text}, "blocks": {string(blocks)},
		"parse": {"none"}, "link_names": {"false"}}
	return followupError(s.call(ctx, "chat.update", form, &plainAnswer{}))
}

// withoutStatus is a clicked message's text without the status line an
// earlier click put first (so that statuses do not pile up in the
// notification's text): the line is there when the message shows a status
// block, or when it reads like one (Slack may give emoji back as their
// names).
func withoutStatus(msg clicked) string {
	first, rest, found := strings.Cut(msg.Text, "\n")
	shown := hasBlock(msg.Blocks, statusText)
	for _, p := range [...]string{relay.ClaimedBy, relay.ResolvedBy, ":raising_hand: Claimed by ", ":white_check_mark: Resolved by "} {
		shown = shown || strings.HasPrefix(first, p)
	}
	switch {
	case !shown:
		return msg.Text
	case found:
		return rest
	default:
		return ""
	}
}

// hasBlock says whether raw (a message's blocks) holds a block with id.
func hasBlock(raw json.RawMessage, id string) bool {
	var blocks []blockID
	if json.Unmarshal(raw, &blocks) != nil {
		return false
	}
	return slices.Contains(blocks, blockID{id})
}

type blockID struct {
	BlockID string `json:"block_id"`
}

// statusBlocks is a message's blocks (as Slack sent them) with its status
// blocks replaced by those of st: where they were, or at the end. false
// when the message's blocks cannot be read.
func statusBlocks(raw json.RawMessage, st *relay.ConversationState, conv string) (json.RawMessage, bool) {
	var blocks []json.RawMessage
	if len(raw) == 0 || json.Unmarshal(raw, &blocks) != nil || len(blocks) == 0 {
		return nil, false
	}
	var mine []json.RawMessage
	if line := st.Status(); line != "" {
		ctxBlock := slackapi.NewContextBlock(statusText, slackapi.NewTextBlockObject(slackapi.PlainTextType, line, true, false))
		b, err := json.Marshal(ctxBlock)
		if err != nil {
			return nil, false
		}
		mine = append(mine, b)
	}
	if bt := buttons(conv, *st); bt != nil {
		b, err := json.Marshal(bt)
		if err != nil {
			return nil, false
		}
		mine = append(mine, b)
	}
	// The message's blocks but its status blocks, and where those were.
	others := make([]json.RawMessage, 0, len(blocks))
	at := -1
	for _, b := range blocks {
		var id blockID
		if json.Unmarshal(b, &id) == nil && strings.HasPrefix(id.BlockID, statusBlock) {
			if at < 0 {
				at = len(others)
			}
			continue
		}
		others = append(others, b)
	}
	if at < 0 {
		at = len(others)
	}
	out := make([]json.RawMessage, 0, len(others)+len(mine))
	out = append(append(append(out, others[:at]...), mine...), others[at:]...)
	if len(out) > maxBlocks {
		// No room for the status line: the buttons (or nothing) alone.
		out = others
		if len(mine) == 2 && len(out) < maxBlocks {
			out = append(out, mine[1])
		}
	}
	enc, err := json.Marshal(out)
	return enc, err == nil
}
