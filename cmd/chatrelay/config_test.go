package main

import (
	"bytes"
	"fmt"
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
	"github.com/chatrelay/chatrelay/sinks/slack"
	"github.com/chatrelay/chatrelay/sinks/webhook"
)

func paceOf(b builtSink) (time.Duration, int) {
	if p, ok := b.sink.(relay.Paced); ok {
		return p.Pace()
	}
	return 0, 0
}

// specOf is a sink's own config, as its package decoded it.
func specOf[C any](t testing.TB, sc SinkConfig) *C {
	t.Helper()
	spec, ok := sc.Spec.(*C)
	if !ok {
		t.Fatalf("sink %q: spec %T, want *%T", sc.Name, sc.Spec, *new(C))
	}
	return spec
}

// reveal is what secrets hold.
func reveal(secrets []relay.Secret) []string {
	out := make([]string, len(secrets))
	for i, s := range secrets {
		out[i] = s.Reveal()
	}
	return out
}

func writeConfig(t testing.TB, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "chatrelay.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestExampleConfigIsValid(t *testing.T) {
	t.Parallel()
	cfg, err := LoadConfig("../../config.example.yaml", true, env(map[string]string{
		"CHAT_DATA_SIGNING_SECRET": "example-signing-secret",
		"SLACK_WEBHOOK_URL":        "https://hooks.slack.com/services/T0/B0/XXXXXXXX",
		"DISCORD_WEBHOOK_URL":      "https://discord.com/api/webhooks/1/abcdef",
		"CRM_WEBHOOK_SECRET":       "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config.example.yaml does not validate:\n%v", err)
	}
	sinks, err := buildSinks(cfg, sinkEnv{stdout: io.Discard, logger: slog.New(slog.DiscardHandler),
		clock: clockwork.NewRealClock(), store: probeKV{}})
	if err != nil || len(sinks) != 3 {
		t.Fatalf("building the example's sinks: %v", err)
	}
	for _, s := range sinks {
		if _, ok := s.sink.(relay.Prober); !ok && s.conf.Type != TypeWebhook {
			t.Errorf("%s sink cannot be probed", s.conf.Type)
		}
	}
	if every, _ := paceOf(sinks[0]); every < time.Second {
		t.Errorf("slack pace %s, want at least Slack's 1s", every)
	}
	if len(cfg.Sinks) != 3 || len(cfg.Routes) != 3 || cfg.MaxBodyBytes != 1<<20 || cfg.Store.Bolt.MaxSize != 1<<30 ||
		cfg.Retry.MaxAge != 24*time.Hour || specOf[webhook.Config](t, cfg.Sinks[2]).Headers["x-team"].Reveal() != "support" {
		t.Fatalf("unexpected values: %+v", cfg)
	}
}

const minimal = `
signing_secrets: [abc-secret-123]
sinks:
  - name: hook
    type: webhook
    url: http://127.0.0.1:9/x
`

func TestValidateNamesKeyAndFix(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want []string // every substring must appear
	}{
		{"unknown top-level key", minimal + "listn: 1.2.3.4:5\n", []string{`listn: unknown key (did you mean "listen"?)`}},
		{"unknown sink key", strings.Replace(minimal, "url: http", "ulr: x\n    url: http", 1), []string{`sinks[0].ulr: unknown key (did you mean "url"?)`}},
		{"bad URL", strings.Replace(minimal, "http://127.0.0.1:9/x", "127.0.0.1/x", 1), []string{"sinks[0].url: not a URL", "set it to"}},
		{"secret not echoed", strings.Replace(minimal, "http://127.0.0.1:9/x", "ftp://host/SECRETTOKEN", 1), []string{"sinks[0].url: scheme \"ftp\""}},
		{"missing credentials", "signing_secrets: [abcdef1]\nsinks:\n  - name: s\n    type: slack\n", []string{"sinks[0].webhook_url: missing", "token + channel"}},
		{"discord key on slack", "signing_secrets: [abcdef1]\nsinks:\n  - name: s\n    type: slack\n    token: xoxb-1\n    channel_id: C1\n",
			[]string{"sinks[0].channel_id: not a key of slack sinks; did you mean channel?", "sinks[0].channel: missing"}},
		{"bad duration", minimal + "retry:\n  initial: 5 minutes\n", []string{`retry.initial: "5 minutes" is not a duration; write 5m`}},
		{"bare number duration", minimal + "shutdown_timeout: 15\n", []string{"shutdown_timeout", "bare number, not a duration"}},
		{"retry order", minimal + "retry:\n  initial: 1m\n  max: 10s\n", []string{"retry.max: 10s is below retry.initial 1m0s"}},
		{"no secrets", "sinks:\n  - {name: c, type: console}\n", []string{"signing_secrets: none set"}},
		{"unset env var named", "signing_secrets: [\"${NOPE_SECRET}\"]\nsinks:\n  - {name: c, type: console}\n",
			[]string{"signing_secrets[0]: ${NOPE_SECRET} is not set"}},
		{"admin token needed off loopback", minimal + "admin:\n  listen: 0.0.0.0:9090\n", []string{"admin.token: required because admin.listen"}},
		{"duplicate sink", minimal + "  - name: hook\n    type: console\n", []string{`sinks[1].name: "hook" is already the name of sinks[0]`}},
		{"unknown sink type", minimal + "  - name: x\n    type: teams\n", []string{`sinks[1].type: "teams" is not a sink type`}},
		{"route to unknown sink", minimal + "routes:\n  - match: {topic: [chat]}\n    sinks: [nope]\n", []string{`routes[0].sinks[0]: no sink named "nope"; use one of: hook`}},
		{"empty match", minimal + "routes:\n  - match: {}\n    sinks: [hook]\n", []string{"routes[0].match: empty"}},
		{"bad score range", minimal + "routes:\n  - match: {min_score: 0.8, max_score: 0.2}\n    sinks: [hook]\n", []string{"routes[0].match: min_score 0.8 is above max_score 0.2"}},
		{"score out of range", minimal + "routes:\n  - match: {max_score: 5}\n    sinks: [hook]\n", []string{"routes[0].match.max_score: 5 is outside 0..1"}},
		{"bad rate", strings.Replace(minimal, "type: webhook", "type: webhook\n    rate: fast", 1), []string{`sinks[0].rate: "fast" is not a rate`}},
		{"bad template", strings.Replace(minimal, "type: webhook", "type: console\n    template: '{{.Nope'", 1), []string{"sinks[0].template:"}},
		{"bad redact path", strings.Replace(minimal, "type: webhook", "type: webhook\n    redact: ['lead..x']", 1), []string{"sinks[0].redact[0]:"}},
		{"bad webhook secret", strings.Replace(minimal, "type: webhook", "type: webhook\n    secret: hunter22", 1), []string{"sinks[0].secret: not a Standard Webhooks secret"}},
		{"bad store driver", minimal + "store:\n  driver: redis\n", []string{`store.driver: "redis" is not a store; use bolt`}},
		{"bad log level", minimal + "log:\n  level: loud\n", []string{`log.level: "loud" is not a level`}},
		// The driver's own rule: check-config used to accept up to 1024, which the store then refused.
		{"nats partitions past the store's limit", minimal + "store:\n  driver: nats\n  nats: {partitions: 1024}\n",
			[]string{"store.nats.partitions: 1024; use 1 to 1000"}},
		{"nats dedupe past retention", minimal + "store:\n  driver: nats\n  retention: 1h\n  dedupe_window: 2h\n",
			[]string{"store.dedupe_window: 2h0m0s exceeds retention (1h0m0s)"}},
		{"unknown nats key", minimal + "store:\n  nats: {partitons: 3}\n", []string{`store.nats.partitons: unknown key (did you mean "partitions"?)`}},
		{"bolt max_size", minimal + "store:\n  max_size: 1KiB\n", []string{"store.max_size: 1024 bytes is too small"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := LoadConfig(writeConfig(t, tc.yaml), true, env(nil))
			if err == nil {
				err = cfg.Validate()
			}
			if err == nil {
				t.Fatal("config accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			for _, secret := range []string{"SECRETTOKEN", "hunter22", "xoxb-1"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error echoes a secret: %v", err)
				}
			}
		})
	}
}

func TestEnvExpansionAndSecretFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	secretsFile := filepath.Join(dir, "secrets")
	os.WriteFile(tokenFile, []byte("admin-token-from-file\n"), 0o600)
	os.WriteFile(secretsFile, []byte("# rotation\nfirst-secret\n\nsecond-secret\n"), 0o600)
	cfg, err := LoadConfig(writeConfig(t, `
admin:
  token_file: `+tokenFile+`
signing_secrets_file: `+secretsFile+`
sinks:
  - name: hook
    type: webhook
    url: ${HOOK_URL}
    secret: "${HOOK_SECRET}"
`), true, env(map[string]string{"HOOK_URL": "https://example.com/in?token=$abc", "HOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Admin.Token.Reveal() != "admin-token-from-file" || strings.Join(reveal(cfg.SigningSecrets), ",") != "first-secret,second-secret" ||
		specOf[webhook.Config](t, cfg.Sinks[0]).URL.Reveal() != "https://example.com/in?token=$abc" {
		t.Fatalf("got %+v", cfg)
	}
}

// TestEnvValuesStayWhole: a value from the environment is one value, whatever
// it holds (a "#", ": ", quotes, a newline), whether or not the reference is
// quoted in the file; numbers, durations and booleans from the environment
// are read as if written in the file.
func TestEnvValuesStayWhole(t *testing.T) {
	t.Parallel()
	awkward := `s3cr#t: with "quotes" and 'more' # not a comment` + "\nsecond line"
	cfg, err := LoadConfig(writeConfig(t, `
signing_secrets: [${AWKWARD}, "${PLAIN}"]   # a comment stays a comment
shutdown_timeout: ${GRACE}
sinks:
  - name: hook
    type: webhook
    url: https://example.com/in?token=${TOKEN}&x=1
    concurrency: ${CONC}
  - {name: team, type: slack, webhook_url: "https://hooks.slack.com/services/T0/B0/${SLACK_KEY}", pack: ${PACK}}
`), true, env(map[string]string{"AWKWARD": awkward, "PLAIN": "plain-secret", "GRACE": "7s",
		"TOKEN": "a#b: c", "CONC": "3", "PACK": "false", "SLACK_KEY": "k3y"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(reveal(cfg.SigningSecrets), []string{awkward, "plain-secret"}) {
		t.Errorf("signing_secrets = %q", cfg.SigningSecrets)
	}
	// ${NAME:-} of an unset variable standing alone leaves its key to the
	// default, as "key:" would; quoted, it is an empty string.
	unset, err := LoadConfig(writeConfig(t, `
signing_secrets: [abcdef-123]
retry: {max: ${RETRY_MAX:-}}
sinks:
  - {name: team, type: slack, webhook_url: "https://hooks.slack.com/services/T0/B0/x", pack: ${PACK:-}, mention: "${MENTION:-}"}
`), true, env(nil))
	if err == nil {
		err = unset.Validate()
	}
	if err != nil {
		t.Fatalf("unset variables allowed empty: %v", err)
	}
	if mention := specOf[slack.Config](t, unset.Sinks[0]).Mention; unset.Retry.Max != 5*time.Minute || unset.Sinks[0].Pack != nil || mention != "" {
		t.Errorf("unset: retry.max %s, pack %v, mention %q; want the defaults", unset.Retry.Max, unset.Sinks[0].Pack, mention)
	}
	// A reference in a comment only is no reference.
	if _, err := LoadConfig(writeConfig(t, "# token: ${NOT_SET}\n"), true, env(nil)); err != nil {
		t.Errorf("a file of comments: %v", err)
	}
	hook, team := cfg.Sinks[0], cfg.Sinks[1]
	hookURL, teamURL := specOf[webhook.Config](t, hook).URL.Reveal(), specOf[slack.Config](t, team).WebhookURL.Reveal()
	if hookURL != "https://example.com/in?token=a#b: c&x=1" || hook.Concurrency != 3 || cfg.ShutdownTimeout != 7*time.Second {
		t.Errorf("url %q concurrency %d shutdown_timeout %s", hookURL, hook.Concurrency, cfg.ShutdownTimeout)
	}
	if teamURL != "https://hooks.slack.com/services/T0/B0/k3y" || team.Pack == nil || *team.Pack {
		t.Errorf("slack webhook_url %q pack %v", teamURL, team.Pack)
	}
}

// Not parallel: sets process environment variables, which viper reads.
func TestEnvironmentOverrides(t *testing.T) {
	t.Setenv("CHATRELAY_LISTEN", "127.0.0.1:18080")
	t.Setenv("CHATRELAY_ADMIN_TOKEN", "from-env-token")
	t.Setenv("CHATRELAY_SIGNING_SECRETS", "one-secret,two-secret")
	t.Setenv("CHATRELAY_RETRY_MAX_AGE", "2h")
	t.Setenv("CHATRELAY_STORE_MAX_SIZE", "64MiB")
	cfg, err := LoadConfig(writeConfig(t, minimal), true, os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:18080" || cfg.Admin.Token.Reveal() != "from-env-token" || len(cfg.SigningSecrets) != 2 ||
		cfg.Retry.MaxAge != 2*time.Hour || cfg.Store.Bolt.MaxSize != 64<<20 {
		t.Fatalf("environment not applied: %+v", cfg)
	}
}

func TestEmbeddedDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := LoadConfig(filepath.Join(t.TempDir(), "absent.yaml"), false, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if !cfg.Embedded() || cfg.Listen != "127.0.0.1:8080" || cfg.Store.Bolt.Path != "./chatrelay-data" {
		t.Fatalf("defaults: %+v", cfg)
	}
	if s := defaultSinks(cfg); len(s) != 1 || s[0].Type != TypeConsole {
		t.Fatalf("default sinks %+v", s)
	}
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "absent.yaml"), true, env(nil)); err == nil {
		t.Fatal("an explicit --config that does not exist was accepted")
	}
}

func TestParseRate(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{"1/s": time.Second, "5/2s": 400 * time.Millisecond, "30/m": 2 * time.Second, "2/1m30s": 45 * time.Second} {
		got, burst, err := ParseRate(in)
		if err != nil || got != want || burst != 1 {
			t.Errorf("ParseRate(%q) = %s %d %v, want %s", in, got, burst, err, want)
		}
	}
	for _, bad := range []string{"", "1", "0/s", "x/s", "1/0s", "-1/s"} {
		if _, _, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) accepted", bad)
		}
	}
}

// TestSecretsIncludeCredentialHeaders: extra header values that may be
// credentials are kept out of stored text and logs (SPEC §9), whatever the
// header's name says (a token may hide in X-Client-Context as well as in
// Authorization); a plain label (X-Team: support) is not, or every line
// naming the sink support-slack would read "[redacted]-slack".
func TestSecretsIncludeCredentialHeaders(t *testing.T) {
	t.Parallel()
	cfg := &Config{Sinks: []SinkConfig{{Type: TypeWebhook, Spec: &webhook.Config{URL: "https://x.example/in",
		Headers: map[string]relay.Secret{"authorization": "Bearer abcdef123456", "x-client-context": "ctx-7f3e9a1b",
			"x-team": "support", "x-api-key": "plainword"}}}}}
	got := cfg.Secrets()
	for _, want := range []string{"Bearer abcdef123456", "ctx-7f3e9a1b", "plainword", "https://x.example/in"} {
		if !slices.Contains(got, want) {
			t.Errorf("secrets %q lack %q", got, want)
		}
	}
	if slices.Contains(got, "support") {
		t.Errorf("secrets %q hold the label support", got)
	}
	scrub := relay.NewScrubber(got...)
	if s := scrub.Scrub("got Authorization: Bearer abcdef123456"); strings.Contains(s, "abcdef123456") {
		t.Errorf("the bearer token survived scrubbing: %q", s)
	}
	if s := scrub.Scrub("sink support-slack is down"); s != "sink support-slack is down" {
		t.Errorf("a label was scrubbed: %q", s)
	}
}

func TestSecretFilter(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	logger := newLogger(&out, "debug", "json", relay.NewScrubber("https://hooks.slack.com/services/T/B/SECRETPART"))
	logger.Info("posting", "url", "https://hooks.slack.com/services/T/B/SECRETPART", "err", os.ErrNotExist)
	if strings.Contains(out.String(), "SECRETPART") || !strings.Contains(out.String(), "[redacted]") {
		t.Fatalf("log line: %s", out.String())
	}
}

// TestValidateMaxInflightBytes: max_inflight_bytes defaults to 64 MiB and
// cannot be below max_body_bytes (no body of the largest size could be
// read).
func TestValidateMaxInflightBytes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want int64
		err  string
	}{
		{"default", minimal, 64 << 20, ""},
		{"set", minimal + "max_inflight_bytes: 8MiB\n", 8 << 20, ""},
		{"equal to max_body_bytes", minimal + "max_body_bytes: 2MiB\nmax_inflight_bytes: 2MiB\n", 2 << 20, ""},
		{"below max_body_bytes", minimal + "max_inflight_bytes: 512KiB\n", 512 << 10,
			"max_inflight_bytes: 524288 is below max_body_bytes 1048576"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := LoadConfig(writeConfig(t, tc.yaml), true, env(nil))
			if err != nil {
				t.Fatal(err)
			}
			if int64(cfg.MaxInflightBytes) != tc.want {
				t.Fatalf("max_inflight_bytes = %d, want %d", cfg.MaxInflightBytes, tc.want)
			}
			err = cfg.Validate()
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
		})
	}
}

// TestValidateAdminTokenLength: off loopback the admin token must have at
// least 16 characters (SPEC §9); on loopback any token, or none, will do.
// The token is never echoed.
func TestValidateAdminTokenLength(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, admin string
		ok          bool
	}{
		{"short token off loopback", "admin: {listen: 0.0.0.0:9090, token: sh0rt-t0ken}\n", false},
		{"15 characters off loopback", "admin: {listen: 192.0.2.1:9090, token: abcdefghijklmn5}\n", false},
		{"16 characters off loopback", "admin: {listen: 0.0.0.0:9090, token: abcdefghijklmn16}\n", true},
		{"short token on loopback", "admin: {listen: 127.0.0.1:9090, token: sh0rt-t0ken}\n", true},
		{"short token on localhost", "admin: {listen: 'localhost:9090', token: sh0rt-t0ken}\n", true},
		{"no token on loopback", "admin: {listen: '[::1]:9090'}\n", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := LoadConfig(writeConfig(t, minimal+tc.admin), true, env(nil))
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.Validate()
			if tc.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "admin.token: shorter than 16 characters") {
				t.Fatalf("error %v, want admin.token: shorter than 16 characters", err)
			}
			for _, tok := range []string{"sh0rt-t0ken", "abcdefghijklmn5"} {
				if strings.Contains(err.Error(), tok) {
					t.Fatalf("error echoes the token: %v", err)
				}
			}
		})
	}
}

// TestUnsetVariableIsAnError (issue 11, finding 4): "secret: ${CRM_SECRET}"
// with the variable unset passed check-config, and the webhook sink then
// posted unsigned. It is an error naming the key and the variable;
// ${NAME:-} opts in to empty and ${NAME:-text} gives a default.
func TestUnsetVariableIsAnError(t *testing.T) {
	t.Parallel()
	const base = "signing_secrets: [abc-secret-123]\nsinks:\n  - {name: crm, type: webhook, url: \"https://example.com/in\", secret: %s}\n"
	for _, tc := range []struct {
		value  string
		env    map[string]string
		secret string // what the sink gets; "" with want: an error
		want   string
	}{
		{"${CRM_SECRET}", nil, "", "sinks[0].secret: ${CRM_SECRET} is not set; set the environment variable CRM_SECRET, or write ${CRM_SECRET:-}"},
		{`"${CRM_SECRET}"`, map[string]string{"CRM_SECRET": ""}, "", "sinks[0].secret: ${CRM_SECRET} is not set"},
		{"${CRM_SECRET}", map[string]string{"CRM_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", ""},
		{"${CRM_SECRET:-}", nil, "", ""},
		{"${CRM_SECRET:-whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}", nil, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", ""},
	} {
		cfgPath := writeConfig(t, fmt.Sprintf(base, tc.value))
		var out, errOut bytes.Buffer
		code := run(t.Context(), []string{"check-config", "--config", cfgPath}, nil, &out, &errOut, env(tc.env))
		if tc.want != "" {
			if code != 2 || !strings.Contains(errOut.String(), tc.want) {
				t.Errorf("secret: %s, env %v: exit %d, %q; want exit 2 saying %q", tc.value, tc.env, code, errOut.String(), tc.want)
			}
			continue
		}
		cfg, err := LoadConfig(cfgPath, true, env(tc.env))
		if err == nil {
			err = cfg.Check()
		}
		if secret := specOf[webhook.Config](t, cfg.Sinks[0]).Secret.Reveal(); code != 0 || err != nil || secret != tc.secret {
			t.Errorf("secret: %s, env %v: exit %d %q, %v, secret %q; want %q", tc.value, tc.env, code, errOut.String(), err, secret, tc.secret)
		}
	}
}

// TestEmptySecretFileIsAnError: a *_file that holds nothing (a secret
// mount whose key was never filled, a file truncated by an editor) is the
// same mistake as an unset ${NAME}: it would turn "sign with this secret"
// into "post unsigned" (or "no admin token") without a word. It is an
// error naming the key and the file.
func TestEmptySecretFileIsAnError(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty, blank := filepath.Join(dir, "empty"), filepath.Join(dir, "blank")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blank, []byte(" \n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"sinks:\n  - {name: crm, type: webhook, url: \"https://example.com/in\", secret_file: %q}\n", "sinks[0].secret_file: %s is empty"},
		{"admin: {token_file: %q}\nsinks:\n  - {name: c, type: console}\n", "admin.token_file: %s is empty"},
		{"sinks:\n  - {name: team, type: slack, webhook_url_file: %q}\n", "sinks[0].webhook_url_file: %s is empty"},
	} {
		for _, file := range []string{empty, blank} {
			cfgPath := writeConfig(t, "signing_secrets: [abc-secret-123]\n"+fmt.Sprintf(tc.yaml, file))
			var out, errOut bytes.Buffer
			code := run(t.Context(), []string{"check-config", "--config", cfgPath}, nil, &out, &errOut, env(nil))
			if want := fmt.Sprintf(tc.want, file); code != 2 || !strings.Contains(errOut.String(), want) {
				t.Errorf("exit %d, %q; want exit 2 saying %q", code, errOut.String(), want)
			}
		}
	}
}

// TestEveryProblemInOneRun: decoding, validation and each sink's own
// checks are reported together, one line per key, in key order, each
// "key: what is wrong; the fix".
func TestEveryProblemInOneRun(t *testing.T) {
	t.Parallel()
	cfgPath := writeConfig(t, `
signing_secrets: [abc-secret-123]
listn: 127.0.0.1:8080
retry: {max: 5mins}
sinks:
  - {name: crm, type: webhook, url: "https://example.com/in", secret: "${CRM_SECRET}", concurrency: many}
  - {name: team, type: slack, token: xoxb-1-2, channel: general}
  - {name: review, type: discord, webhook_url: "https://discord.com/api/webhooks/1/abc", thread_name: "{{.ConversationID}}"}
  - {name: ops, type: webhook, url: "ftp://example.com/x", timeout: 10}
`)
	var out, errOut bytes.Buffer
	code := run(t.Context(), []string{"check-config", "--config", cfgPath}, nil, &out, &errOut, env(nil))
	want := []string{
		`listn: unknown key (did you mean "listen"?)`,
		`retry.max: "5mins" is not a duration; write 5m`,
		`sinks[0].concurrency: "many" is not a whole number`,
		`sinks[0].secret: ${CRM_SECRET} is not set`,
		`sinks[1].channel: "general" is not a channel ID`,  // slack's own check
		`sinks[2].thread_name: plain text, not a template`, // discord's own check
		`sinks[3].timeout: 10 is a bare number, not a duration; write 10s`,
		`sinks[3].url: scheme "ftp" is not http or https`,
	}
	if code != 2 {
		t.Fatalf("exit %d, want 2:\n%s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
	if len(lines) != len(want)+1 { // + "chatrelay: <file> is not valid:"
		t.Errorf("%d lines, want %d:\n%s", len(lines), len(want)+1, errOut.String())
	}
	for i, w := range want {
		if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], w) {
			t.Errorf("line %d: want %q first, got:\n%s", i+1, w, errOut.String())
			break
		}
	}
}

// TestBadDurationNamesTheValue: a value that is not a duration is named,
// with the duration it most likely means.
func TestBadDurationNamesTheValue(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		`"5mins"`:     `retry.max: "5mins" is not a duration; write 5m`,
		`10 seconds`:  `retry.max: "10 seconds" is not a duration; write 10s`,
		`2 days`:      `retry.max: "2 days" is not a duration; write 48h`,
		`1h 30m`:      `retry.max: "1h 30m" is not a duration; write 1h30m0s`,
		`"15"`:        `retry.max: "15" is not a duration; write 15s`,
		`15`:          `retry.max: 15 is a bare number, not a duration; write 15s`,
		`1.5 hours`:   `retry.max: "1.5 hours" is not a duration; write 1.5h`,
		`soon`:        `retry.max: "soon" is not a duration; write it with a unit, like 500ms, 30s, 5m or 24h`,
		`[1m]`:        `retry.max: a list where`,
		`{a: 1}`:      `retry.max: a mapping of keys where`,
		`"5 minutos"`: `retry.max: "5 minutos" is not a duration; write it with a unit`,
	} {
		cfg, err := LoadConfig(writeConfig(t, minimal+"retry: {max: "+in+"}\n"), true, env(nil))
		if err == nil {
			err = cfg.Check()
		}
		if err == nil || !strings.Contains(err.Error(), want) || strings.Count(err.Error(), "retry.max") != 1 {
			t.Errorf("retry.max: %s: got %v; want one line %q", in, err, want)
		}
	}
}

// TestYmlIsFound: chatrelay.yml is read like chatrelay.yaml when --config
// is not given. Not parallel: it changes the working directory.
func TestYmlIsFound(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.WriteFile(filepath.Join(dir, "chatrelay.yml"), []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run(t.Context(), []string{"check-config"}, nil, &out, &errOut, env(nil)); code != 0 ||
		!strings.HasPrefix(out.String(), "chatrelay.yml: OK") || !strings.Contains(out.String(), "hook (webhook)") {
		t.Fatalf("exit %d: %s %s", code, out.String(), errOut.String())
	}
	// chatrelay.yaml wins when both exist.
	if err := os.WriteFile(filepath.Join(dir, "chatrelay.yaml"), []byte(strings.Replace(minimal, "name: hook", "name: other", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run(t.Context(), []string{"check-config"}, nil, &out, &errOut, env(nil)); code != 0 || !strings.HasPrefix(out.String(), "chatrelay.yaml: OK") {
		t.Fatalf("both files: exit %d: %s %s", code, out.String(), errOut.String())
	}
}
