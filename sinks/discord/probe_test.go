package discord_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/bwmarrin/discordgo"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/discord/discordtest"
)

// TestProbeBot: check-config --probe of a bot names what it lacks: the
// permissions the relay needs in the channel (computed from @everyone,
// the bot's roles and the channel's overwrites) and, for a two-way sink,
// Add Reactions and the Message Content intent. It only reads.
func TestProbeBot(t *testing.T) {
	t.Parallel()
	const all = discordtest.BotPermissions
	cases := []struct {
		name    string
		twoWay  bool
		setup   func(f *fixture)
		missing []string // named in the error; none: the probe passes
	}{
		{"mirror only", false, nil, nil},
		{"two-way", true, nil, nil},
		{"intent off, mirror only", false, func(f *fixture) { f.srv.SetAppFlags(0) }, nil},
		{"intent off", true, func(f *fixture) { f.srv.SetAppFlags(0) }, []string{"Message Content Intent"}},
		{"limited intent is enough", true, func(f *fixture) { f.srv.SetAppFlags(discordtest.AppFlagMessageContentLimited) }, nil},
		{"no reactions", true, func(f *fixture) { f.srv.SetEveryone(all &^ discordgo.PermissionAddReactions) }, []string{"Add Reactions"}},
		{"no reactions, mirror only", false, func(f *fixture) { f.srv.SetEveryone(all &^ discordgo.PermissionAddReactions) }, nil},
		{"channel denies threads", true, func(f *fixture) {
			f.srv.Overwrite(f.channel, discordtest.GuildID, false, 0,
				discordgo.PermissionCreatePublicThreads|discordgo.PermissionSendMessagesInThreads)
		}, []string{"Create Public Threads, Send Messages in Threads"}},
		{"a role gives it back", true, func(f *fixture) {
			f.srv.SetEveryone(discordgo.PermissionViewChannel)
			f.srv.AddMember(discordgo.User{ID: discordtest.BotID, Username: "chatrelay", Bot: true}, "", "",
				f.srv.AddRole("Relay", all))
		}, nil},
		{"the member's overwrite wins", true, func(f *fixture) {
			f.srv.Overwrite(f.channel, discordtest.BotID, true, 0, discordgo.PermissionSendMessages)
		}, []string{"Send Messages"}},
		{"administrator", true, func(f *fixture) {
			f.srv.SetEveryone(0)
			f.srv.AddMember(discordgo.User{ID: discordtest.BotID, Username: "chatrelay", Bot: true}, "", "",
				f.srv.AddRole("Admin", discordgo.PermissionAdministrator))
			f.srv.Overwrite(f.channel, discordtest.GuildID, false, 0, all)
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, true, discordgo.ChannelTypeGuildText, discordtest.WithRateLimit(0, 0))
			if tc.twoWay {
				f.cfg.Reply = &relay.ReplyConfig{}
			}
			if tc.setup != nil {
				tc.setup(f)
			}
			err := f.sink(t, relay.SinkDeps{}).Probe(t.Context())
			// The fake computes permissions on its own: it agrees.
			perms, perr := f.srv.Permissions(f.channel, discordtest.BotID)
			need := int64(discordtest.BotPermissions)
			if !tc.twoWay {
				need &^= discordgo.PermissionAddReactions
			}
			if perr != nil || (perms&need == need) != !strings.Contains(fmt.Sprint(err), "the bot lacks") {
				t.Errorf("the fake's permissions %b (%v) disagree with the probe: %v", perms, perr, err)
			}
			if len(tc.missing) == 0 {
				if err != nil {
					t.Fatalf("Probe: %v", err)
				}
			} else {
				if err == nil {
					t.Fatal("Probe passed")
				}
				for _, m := range tc.missing {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("error does not name %q: %v", m, err)
					}
				}
				if c, _ := relay.Classify(err); c != relay.ClassBroken {
					t.Errorf("class %s", c)
				}
				relaytest.AssertNoSecret(t, "error", err.Error(), f.secrets()...)
			}
			for _, r := range f.srv.Requests() {
				if r.Method != http.MethodGet {
					t.Errorf("Probe sent %s %s", r.Method, r.Path)
				}
			}
		})
	}
}
