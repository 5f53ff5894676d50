// Package slack is the Slack sink: it posts Chat Data events to one channel
// through an incoming webhook, or as a bot with chat.postMessage, where each
// conversation gets a thread. The user's guide (app setup, scopes,
// configuration, what the channel shows) is the section "Slack" of the
// project's README.md.
//
// Rendering: a chat turn is a header, the user's last question and the
// bot's answer (Markdown converted to mrkdwn through goldmark's AST) and a
// context line. Text is kept as tokens until it is cut into sections and
// messages within Slack's limits, so that no cut lands inside a link, a
// style or a code fence. Everything a chatbot user wrote is escaped; the
// configured mention, on live-chat escalations, is the only mention sent.
// Rendering takes time linear in the event: only the part of an answer the
// messages can show is converted (twice that), with its lines and blocks
// bounded for the parser (relay.BoundMarkdown), and a turn is converted once
// per send, also when CanPack rendered it first. A rendering that outlasts
// the send's deadline is permanent for that delivery.
//
// Delivery: the sink never waits or retries. It classifies Slack's answers
// into relay's classes (credentials and channel problems: broken; refused
// messages: permanent; 429 and rate_limited: retry after exactly what Slack
// asked; the rest: retryable), declares Slack's pace of one message per
// second (relay.Paced), packs short turns of different conversations into
// one message when the channel falls behind (relay.Packer: up to 16 turns,
// as many as fit whole; a turn is never cut to fit) and checks credentials
// with auth.test (relay.Prober). In bot mode a live-chat escalation posted
// into an existing thread is also broadcast to the channel. It calls Slack
// with its own HTTP client and slack-go's types (WebhookMessage, Blocks,
// SlackResponse, Message), and reads every answer in one place (api.go).
//
// The sink renders and posts (relay.Poster): the relay keeps its books
// (relay.Books, in the store through SinkDeps.KV): in bot mode each
// conversation's thread, both ways, and for a turn needing several
// messages how many are out, so that threads survive restarts and a retry
// after a failed later part posts only what is missing.
package slack
