package main

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/sinks/chatdata"
	"github.com/chatrelay/chatrelay/sinks/chatdata/chatdatatest"
)

const twoWayBase = `
signing_secrets: [abc-secret-123]
sinks:
  - {name: crm, type: webhook, url: "http://127.0.0.1:9/x"}
`

// TestChatDataSection: the chatdata section makes the Chat Data destination
// of agent replies, a sink named chatdata after the configured ones; its
// key comes from the file, an api_key_file or CHATRELAY_CHATDATA_API_KEY,
// and is scrubbed like every secret.
func TestChatDataSection(t *testing.T) {
	t.Parallel()
	keyFile := filepath.Join(t.TempDir(), "chatdata-key")
	if err := os.WriteFile(keyFile, []byte("sk-from-a-file-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, yaml string
		env        map[string]string
		key, url   string
	}{
		{"inline, from the environment", twoWayBase + "chatdata:\n  api_key: ${CHAT_DATA_API_KEY}\n",
			map[string]string{"CHAT_DATA_API_KEY": "sk-inline-0123456789"}, "sk-inline-0123456789", ""},
		{"api_key_file", twoWayBase + "chatdata:\n  api_key_file: " + keyFile + "\n  api_url: http://127.0.0.1:9999/\n",
			nil, "sk-from-a-file-0123456789", "http://127.0.0.1:9999/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := LoadConfig(writeConfig(t, tc.yaml), true, env(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if err := cfg.Check(); err != nil {
				t.Fatalf("Check: %v", err)
			}
			if cfg.ChatData.APIKey.Reveal() != tc.key || cfg.ChatData.APIURL != tc.url {
				t.Fatalf("chatdata = key %v url %q", cfg.ChatData.APIKey.Reveal() == tc.key, cfg.ChatData.APIURL)
			}
			if !slices.Contains(cfg.Secrets(), tc.key) {
				t.Fatal("the API key is not among the secrets scrubbed")
			}
			sinks, err := buildSinks(cfg, sinkEnv{stdout: io.Discard, logger: slog.New(slog.DiscardHandler),
				clock: clockwork.NewRealClock(), store: probeKV{}})
			if err != nil {
				t.Fatal(err)
			}
			last := sinks[len(sinks)-1]
			if len(sinks) != 2 || last.sink.Name() != chatdata.Name || last.conf.Type != TypeChatData {
				t.Fatalf("sinks %v, want crm then chatdata", sinks)
			}
			if _, ok := last.sink.(relay.Prober); !ok {
				t.Fatal("the chatdata destination cannot be probed")
			}
			// Agent replies go to it; Chat Data's events never do.
			router := relay.NewRouter([]string{"crm", chatdata.Name}, nil, replyDestinations(cfg)...)
			if got := router.Route(&relay.Event{Topic: relay.TopicAgentReply}); !slices.Equal(got, []string{chatdata.Name}) {
				t.Fatalf("agent reply routed to %v", got)
			}
			if got := router.Route(&relay.Event{Topic: relay.TopicChat}); !slices.Equal(got, []string{"crm"}) {
				t.Fatalf("chat routed to %v", got)
			}
		})
	}
}

// TestChatDataKeyFromTheEnvironment: CHATRELAY_CHATDATA_API_KEY alone
// sets the section (viper reads CHATRELAY_* from the process: not
// parallel).
func TestChatDataKeyFromTheEnvironment(t *testing.T) {
	t.Setenv("CHATRELAY_CHATDATA_API_KEY", "sk-env-override-0123")
	cfg, err := LoadConfig(writeConfig(t, twoWayBase), true, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Check(); err != nil || cfg.ChatData.APIKey.Reveal() != "sk-env-override-0123" || !chatDataSet(cfg.ChatData) {
		t.Fatalf("Check = %v; key set %v", err, cfg.ChatData.APIKey.Reveal() == "sk-env-override-0123")
	}
}

func TestChatDataSectionOptional(t *testing.T) {
	t.Parallel()
	cfg, err := LoadConfig(writeConfig(t, twoWayBase), true, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	sinks, err := buildSinks(cfg, sinkEnv{stdout: io.Discard, logger: slog.New(slog.DiscardHandler),
		clock: clockwork.NewRealClock(), store: probeKV{}})
	if err != nil || len(sinks) != 1 || len(replyDestinations(cfg)) != 0 {
		t.Fatalf("without a chatdata section: %d sinks (%v), want only crm", len(sinks), err)
	}
}

// TestChatDataProblems: each problem names its key and the fix, never the
// key's value.
func TestChatDataProblems(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, yaml string
		want       []string // lines that must appear, each starting with its key
	}{
		{"url without a key", twoWayBase + "chatdata:\n  api_url: https://api.chat-data.com\n",
			[]string{"chatdata.api_key: missing"}},
		{"bad url and timeout", twoWayBase + "chatdata:\n  api_key: sk-0123456789\n  api_url: api.chat-data.com\n  timeout: 10\n",
			[]string{"chatdata.api_url: not a URL", "chatdata.timeout: 10 is a bare number"}},
		{"unknown key", twoWayBase + "chatdata:\n  apikey: sk-0123456789\n",
			[]string{`chatdata.apikey: unknown key (did you mean "api_key"?)`}},
		{"key and key file", twoWayBase + "chatdata:\n  api_key: sk-0123456789\n  api_key_file: /nonexistent\n",
			[]string{"chatdata.api_key_file: set together with chatdata.api_key"}},
		{"reserved sink name", "signing_secrets: [abc-secret-123]\nsinks:\n  - {name: chatdata, type: webhook, url: \"http://127.0.0.1:9/x\"}\n",
			[]string{`sinks[0].name: "chatdata" is the name of the Chat Data destination`}},
		{"reply without chatdata", "signing_secrets: [abc-secret-123]\nsinks:\n  - name: support-slack\n    type: slack\n" +
			"    token: xoxb-0123456789\n    channel: C0123456789\n    reply: {signing_secret: sig-0123456789}\n",
			[]string{"sinks[0].reply: two-way live chat needs the chatdata section"}},
		{"reply on a webhook", twoWayBase +
			"  - name: support-slack\n    type: slack\n    webhook_url: https://hooks.slack.com/services/T0/B0/x\n" +
			"    reply: {signing_secret: sig-0123456789}\nchatdata: {api_key: sk-0123456789}\n",
			[]string{"sinks[1].reply: needs bot mode"}},
		{"unknown reply key", twoWayBase +
			"  - name: support-slack\n    type: slack\n    token: xoxb-0123456789\n    channel: C0123456789\n" +
			"    reply: {signing_secret: sig-0123456789, prefx: 'r:', repage_after: soon}\nchatdata: {api_key: sk-0123456789}\n",
			[]string{`sinks[1].reply.prefx: unknown key (did you mean "prefix"?)`, `sinks[1].reply.repage_after: "soon" is not a duration`}},
		{"Slack's reply keys on a discord sink", twoWayBase +
			"  - name: chat-monitor\n    type: discord\n    token: bot-token-0123456789\n    channel_id: \"123456789012345678\"\n" +
			"    reply: {signing_secret: sig-0123456789, app_token_file: /nonexistent, prefx: 'r:'}\nchatdata: {api_key: sk-0123456789}\n",
			[]string{"sinks[1].reply.signing_secret: a key of slack sinks' reply, not of discord sinks' (they take prefix, mode, repage_after); remove it",
				"sinks[1].reply.app_token_file: a key of slack sinks' reply, not of discord sinks'",
				`sinks[1].reply.prefx: unknown key (did you mean "prefix"?)`}},
		{"route to chatdata", twoWayBase + "chatdata: {api_key: sk-0123456789}\nroutes:\n  - {match: {topic: [agent-reply]}, sinks: [crm, chatdata]}\n",
			[]string{"routes[0].sinks[1]: chatdata takes agent replies"}},
	}
	for _, tc := range tests {
		cfg, err := LoadConfig(writeConfig(t, tc.yaml), true, env(nil))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		err = cfg.Check()
		if err == nil {
			t.Fatalf("%s: Check passed", tc.name)
		}
		for _, w := range tc.want {
			found := false
			for _, line := range strings.Split(err.Error(), "\n") {
				found = found || strings.HasPrefix(line, w)
			}
			if !found {
				t.Errorf("%s: no line starting %q in:\n%v", tc.name, w, err)
			}
		}
		if strings.Contains(err.Error(), "sk-0123456789") || strings.Contains(err.Error(), "sig-0123456789") {
			t.Errorf("%s: the key is in the message:\n%v", tc.name, err)
		}
	}
}

// TestCheckConfigProbesChatData: check-config --probe checks the key with
// GET /api/v2/current-plan and names what failed, under the key the file
// has (chatdata, not a sinks[N] the file does not have).
func TestCheckConfigProbesChatData(t *testing.T) {
	t.Parallel()
	api := chatdatatest.NewServer(t)
	for _, tc := range []struct {
		name, key string
		code      int
		says      string
	}{
		{"right key", api.Key, 0, "\n  chatdata: credentials OK\n"},
		{"revoked key", "sk-revoked-0123456789", 1, "\n  chatdata: FAILED: chatdata: the API key was refused (check chatdata.api_key)"},
	} {
		path := writeConfig(t, twoWayBase+"chatdata:\n  api_key: "+tc.key+"\n  api_url: "+api.URL+"\n")
		code, out, errOut := cli(t, "--config", path, "check-config", "--probe")
		if code != tc.code || !strings.Contains(out, tc.says) || strings.Contains(out, "] chatdata") {
			t.Errorf("%s: exit %d, want %d; stdout:\n%s\nstderr:\n%s", tc.name, code, tc.code, out, errOut)
		}
		if strings.Contains(out+errOut, tc.key) {
			t.Errorf("%s: the key is printed", tc.name)
		}
	}
	if n := len(api.Messages("")); n != 0 {
		t.Fatalf("the probe posted %d messages", n)
	}
}

// exampleEnv is what the variables config.example.yaml names stand for in
// the tests.
func exampleEnv() func(string) string {
	return env(map[string]string{
		"CHAT_DATA_SIGNING_SECRET": "example-signing-secret",
		"SLACK_WEBHOOK_URL":        "https://hooks.slack.com/services/T0/B0/XXXXXXXX",
		"DISCORD_WEBHOOK_URL":      "https://discord.com/api/webhooks/1/abcdef",
		"CRM_WEBHOOK_SECRET":       "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		"CHAT_DATA_API_KEY":        "sk-example-0123456789",
		"SLACK_BOT_TOKEN":          "xoxb-1-example-0123456789",
		"SLACK_SIGNING_SECRET":     "example-slack-signing-secret",
	})
}

// uncomment returns lines with the commented-out block that starts with
// the line start uncommented: that line and those after it that continue
// it (commented at the same column, indented further) lose their "# ".
func uncomment(t *testing.T, lines []string, start string) []string {
	t.Helper()
	at := slices.Index(lines, start)
	if at < 0 {
		t.Fatalf("no %q in config.example.yaml", start)
	}
	col := strings.Index(start, "# ")
	out := slices.Clone(lines)
	out[at] = start[:col] + start[col+2:]
	for i := at + 1; i < len(out) && strings.HasPrefix(out[i], start[:col]+"#   "); i++ {
		out[i] = out[i][:col] + out[i][col+2:]
	}
	return out
}

// TestExampleTwoWay: the two-way example config.example.yaml shows
// (commented out: the chatdata section, the support-live sink and its
// route) is one check-config accepts once uncommented, with the reply:
// keys it says.
func TestExampleTwoWay(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	for _, start := range []string{"# chatdata:", "  # - name: support-live", "  # - match: { topic: [chat, live-chat-escalation] }   # the two-way sink's conversations (their threads)"} {
		lines = uncomment(t, lines, start)
	}
	path := writeConfig(t, strings.Join(lines, "\n"))
	var out, errOut bytes.Buffer
	if code := run(t.Context(), []string{"--config", path, "check-config"}, nil, &out, &errOut, exampleEnv()); code != 0 {
		t.Fatalf("check-config of the uncommented two-way example: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	cfg, err := LoadConfig(path, true, exampleEnv())
	if err != nil {
		t.Fatal(err)
	}
	if !chatDataSet(cfg.ChatData) || cfg.ChatData.APIURL != chatdata.DefaultAPIURL || len(cfg.Routes) != 4 {
		t.Fatalf("the example's chatdata section or route: %+v, %d routes", cfg.ChatData.APIURL, len(cfg.Routes))
	}
	sinks, err := buildSinks(cfg, sinkEnv{stdout: io.Discard, logger: slog.New(slog.DiscardHandler),
		clock: clockwork.NewRealClock(), store: probeKV{}})
	if err != nil || len(sinks) != 5 { // four sinks and the chatdata destination
		t.Fatalf("building the example's sinks: %d, %v", len(sinks), err)
	}
	tw := twoWay(sinks)
	if live, ok := tw["support-live"]; len(tw) != 1 || !ok || live.RepageAfter != 10*time.Minute ||
		live.Rule().Prefix != "reply:" || live.Rule().Mode != relay.ReplyPrefix {
		t.Errorf("two-way sinks %+v, want support-live: prefix reply:, re-paging after 10m", tw)
	}
}
