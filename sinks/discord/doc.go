// Package discord is chatrelay's Discord sink. It renders each Chat Data
// event as an embed (question, answer in Discord Markdown, score, source,
// chatbot, conversation, lead; escalations and leads stand out; unknown
// topics are shown field by field) and posts it through a channel webhook
// or as a bot. The user's guide (how to get a webhook URL or a bot token,
// the permissions, a sample configuration and what the channel shows) is
// the section "Discord" of the project's README.md.
//
// # Design
//
// The sink posts with its own *http.Client (SinkDeps.Transport, a timeout,
// the User-Agent Discord asks for) and discordgo's types for every payload
// and answer (WebhookParams, MessageSend, MessageEmbed,
// MessageAllowedMentions, ThreadStart, Message, Channel) and its error
// codes. It does not use discordgo's REST client: that client sleeps before
// a request when its bucket is empty and on a 429, ignoring the context,
// and its errors carry the webhook token. Here every wait belongs to the
// dispatcher: a 429 becomes relay.RetryAfter with Discord's precise
// retry_after, and an empty bucket (X-RateLimit-Remaining 0) is reported
// with the send (relay.Report: hold until now + X-RateLimit-Reset-After).
//
// Every limit is counted in UTF-16 units, never less than Discord's count.
// A long text continues over embeds and up to four messages, split on
// paragraph, line, sentence or word boundaries, with code fences closed and
// reopened; past that it is cut with "…" and the event id. The Markdown
// parsed (to find tables, images and e-mail links) is bounded first
// (relay.BoundMarkdown), so that rendering is linear in the event, and a
// turn is rendered once per send, also when CanPack rendered it first; a
// rendering that outlasts the send's deadline is permanent. When the
// channel falls behind, turns of different conversations are packed into
// one message (relay.Packer: one embed each, up to 10, as many as fit
// whole). In bot mode, a live-chat escalation or a lead in a conversation
// that already has a thread is posted in the channel, linking the thread,
// so that on-call and sales see it (in a forum it stays in the
// conversation's post).
//
// The sink renders and posts (relay.Poster): the relay keeps its books
// (relay.Books, in the store through SinkDeps.KV; in memory without one):
// each conversation's thread, both ways, and how far a turn that takes
// several requests (messages, or a message and then its thread) got, so
// that a retry resumes where the last attempt stopped instead of posting
// parts again.
package discord
