package discord

import (
	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay"
)

// Discord's message limits. Discord counts "characters" without saying
// whether it means code points or UTF-16 units, so every limit here is
// counted in UTF-16 units (len16), which is never less than either.
const (
	// https://discord.com/developers/docs/resources/message#create-message-jsonform-params
	maxContent = 2000
	maxEmbeds  = 10

	// https://discord.com/developers/docs/resources/message#embed-object-embed-limits
	maxTitle       = 256
	maxDescription = 4096
	maxFields      = 25
	maxFieldName   = 256
	maxFieldValue  = 1024
	maxFooter      = 2048
	maxAuthorName  = 256
	maxEmbedsTotal = 6000 // title + description + fields + footer + author, summed over all embeds of a message

	// https://discord.com/developers/docs/resources/channel#start-thread-from-message-json-params
	maxThreadName = 100

	// maxMessagesPerTurn is how many messages one turn may take before its
	// text is cut (SPEC §5).
	maxMessagesPerTurn = 4

	// maxAnswerRunes is how much of an answer is parsed as Markdown: twice
	// what maxMessagesPerTurn messages can show, so that no shown text is
	// lost, and the work per event is bounded whatever the answer's size.
	maxAnswerRunes = 2 * maxMessagesPerTurn * maxEmbedsTotal
	// packSource is how long a turn's question and answer may be, in
	// bytes, for it to be considered for packing at all: a longer one
	// never fits one embed, and is not rendered to find out (CanPack, then
	// Send, would render it twice).
	packSource = 4 * maxDescription
	// memoSize is how many turns rendered by CanPack are kept for the send
	// that follows.
	memoSize = 4 * maxEmbeds
)

// len16 is the length of s in UTF-16 code units: the conservative way to
// count Discord's "characters".
func len16(s string) int {
	n := 0
	for _, r := range s {
		if r >= 0x10000 {
			n += 2
		} else {
			n++
		}
	}
	return n
}

// prefix16 returns the byte length and rune count of the longest prefix of
// s that is at most limit UTF-16 units.
func prefix16(s string, limit int) (bytes, runes int) {
	n := 0
	for i, r := range s {
		w := 1
		if r >= 0x10000 {
			w = 2
		}
		if n+w > limit {
			return i, runes
		}
		n += w
		runes++
	}
	return len(s), runes
}

// truncate cuts s to at most limit UTF-16 units, ending in "…" when cut (at
// a word boundary when one is near), as relay.Truncate does for runes.
func truncate(s string, limit int) (string, bool) {
	if len16(s) <= limit {
		return s, false
	}
	_, runes := prefix16(s, limit)
	return relay.Truncate(s, runes)
}

// embedSize is what an embed counts towards the 6000 total.
func embedSize(e *discordgo.MessageEmbed) int {
	n := len16(e.Title) + len16(e.Description)
	for _, f := range e.Fields {
		n += len16(f.Name) + len16(f.Value)
	}
	if e.Footer != nil {
		n += len16(e.Footer.Text)
	}
	if e.Author != nil {
		n += len16(e.Author.Name)
	}
	return n
}
