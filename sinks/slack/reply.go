package slack

import "github.com/chatrelay/chatrelay/relay"

// replyContent is what the channel shows of an agent reply routed to the
// sink (a route with topic agent-reply): who answered the visitor, and
// what they wrote, as plain text. Short, in the thread it was written in.
func replyContent(ev *relay.Event) (title string, body []tok) {
	r := ev.AgentReply()
	if r == nil {
		return eventTitle(ev.Topic), fieldLines(ev.OtherFields())
	}
	const prefix = ":technologist: "
	title = prefix + r.Replied()
	if size(title) > maxHeaderText {
		title = headOf(title, maxHeaderText-size(ellipsis)) + ellipsis
	}
	return title, plainTokens(r.Text)
}
