package discord

import "github.com/chatrelay/chatrelay/relay"

// replyTurn is what the channel shows of an agent reply routed to the sink
// (a route with topic agent-reply): who answered the visitor, and what
// they wrote, as typed (literal: no markup, no mention).
func replyTurn(ev *relay.Event) turn {
	r := ev.AgentReply()
	if r == nil {
		return genericTurn(ev)
	}
	return turn{head: newHead("🧑‍💻 "+literal(r.Replied()), colorOther), text: quote(literal(r.Text))}
}
