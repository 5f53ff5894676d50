package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
)

// minAdminToken is the shortest admin.token accepted off loopback (SPEC §9).
const minAdminToken = 16

// Validate checks everything that can be checked without the network and
// returns every problem, each naming the key and the fix.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, problem{key: key, msg: fmt.Sprintf(format, args...)})
	}
	if err := checkHostPort(c.Listen); err != nil {
		bad("listen", "%v; set it to an address like 127.0.0.1:8080", err)
	}
	if err := checkHostPort(c.Admin.Listen); err != nil {
		bad("admin.listen", "%v; set it to an address like 127.0.0.1:9090", err)
	} else if c.Admin.Token.IsZero() && !isLoopback(c.Admin.Listen) {
		bad("admin.token", "required because admin.listen %q is not a loopback address; set admin.token "+
			"(or CHATRELAY_ADMIN_TOKEN), or listen on 127.0.0.1", c.Admin.Listen)
	} else if len(c.Admin.Token) < minAdminToken && !c.Admin.Token.IsZero() && !isLoopback(c.Admin.Listen) {
		bad("admin.token", "shorter than %d characters, too easy to guess on a listener that is not loopback (%q); "+
			"use a random one, e.g. from: openssl rand -hex 24", minAdminToken, c.Admin.Listen)
	}
	if !c.Embedded() && len(c.SigningSecrets) == 0 {
		bad("signing_secrets", "none set; set at least one: the signing secret Chat Data shows under Settings → Webhooks "+
			"(e.g. signing_secrets: [\"${CHAT_DATA_SIGNING_SECRET}\"])")
	}
	for i, s := range c.SigningSecrets {
		if strings.TrimSpace(s.Reveal()) == "" {
			bad(fmt.Sprintf("signing_secrets[%d]", i), "empty; set it to the signing secret Chat Data shows under Settings → Webhooks")
		}
	}
	if c.MaxBodyBytes < 1024 {
		bad("max_body_bytes", "%d is too small; use at least 1KiB (default 1MiB)", c.MaxBodyBytes)
	}
	if c.MaxInflightBytes < c.MaxBodyBytes {
		bad("max_inflight_bytes", "%d is below max_body_bytes %d, so a body of the largest size could never be read; "+
			"make it at least max_body_bytes (default 64MiB)", c.MaxInflightBytes, c.MaxBodyBytes)
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout", "must be positive, like 15s")
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		bad("log.level", "%q is not a level; use debug, info, warn or error", c.Log.Level)
	}
	if !slices.Contains([]string{"auto", "text", "json"}, c.Log.Format) {
		bad("log.format", "%q is not a format; use auto, text or json", c.Log.Format)
	}
	switch c.Store.Driver {
	case "bolt":
		errs = append(errs, under("store.", c.Store.Bolt.Validate())...)
	case "nats":
		errs = append(errs, under("store.", c.Store.NATS.Validate())...)
	default:
		bad("store.driver", "%q is not a store; use bolt (embedded, the default) or nats (JetStream, for several replicas)", c.Store.Driver)
	}
	if c.Retry.Initial <= 0 {
		bad("retry.initial", "must be positive, like 1s")
	}
	if c.Retry.Max < c.Retry.Initial {
		bad("retry.max", "%s is below retry.initial %s; make it at least as long", c.Retry.Max, c.Retry.Initial)
	}
	if c.Retry.MaxAge < c.Retry.Max {
		bad("retry.max_age", "%s is below retry.max %s; make it longer, like 24h", c.Retry.MaxAge, c.Retry.Max)
	}
	if !c.Embedded() && len(c.Sinks) == 0 {
		bad("sinks", "none configured; add at least one sink (slack, discord, webhook or console; see config.example.yaml)")
	}
	names := map[string]int{}
	types := sinkTypes()
	for i, s := range c.Sinks {
		errs = append(errs, s.validate(i, names, types)...)
	}
	errs = append(errs, c.validateChatData()...)
	errs = append(errs, c.validateRoutes(names)...)
	errs = append(errs, c.TLS.validate()...)
	return joinProblems(append(slices.Clone(c.loadProblems), errs...))
}

// joinProblems joins problems one per line, in key order, keeping the
// first of several about the same key: a key that could not be loaded (an
// unset ${NAME}, a value of the wrong type) is not also reported as
// missing or out of range.
func joinProblems(problems []error) error {
	seen := map[string]bool{}
	var out []error
	for _, p := range problems {
		k := keyOf(p)
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, p)
	}
	slices.SortStableFunc(out, func(a, b error) int { return compareKeys(keyOf(a), keyOf(b)) })
	return errors.Join(out...)
}

// keyOf is the key a problem is about: what comes before its first ": ".
func keyOf(err error) string {
	var p problem
	if errors.As(err, &p) {
		return p.key
	}
	k, _, _ := strings.Cut(err.Error(), ": ")
	return k
}

// compareKeys orders keys as they read, with indexes as numbers
// (sinks[2] before sinks[10]).
func compareKeys(a, b string) int {
	for a != "" && b != "" {
		ia, ib := strings.IndexAny(a, "0123456789"), strings.IndexAny(b, "0123456789")
		if ia < 0 || ib < 0 || a[:ia] != b[:ib] {
			return strings.Compare(a, b)
		}
		a, b = a[ia:], b[ib:]
		ea, eb := len(a)-len(strings.TrimLeft(a, "0123456789")), len(b)-len(strings.TrimLeft(b, "0123456789"))
		na, _ := strconv.Atoi(a[:ea])
		nb, _ := strconv.Atoi(b[:eb])
		if na != nb {
			return na - nb
		}
		a, b = a[ea:], b[eb:]
	}
	return strings.Compare(a, b)
}

// Check is Validate plus what each sink's constructor refuses (a setting
// that only the built sink can judge), all reported together, one line
// per key.
func (c *Config) Check() error {
	var problems []error
	if err := c.Validate(); err != nil {
		problems = err.(interface{ Unwrap() []error }).Unwrap()
	}
	_, err := buildSinks(c, sinkEnv{stdout: io.Discard, logger: slog.New(slog.DiscardHandler),
		clock: clockwork.NewRealClock(), store: probeKV{}})
	if err != nil {
		problems = append(problems, err.(interface{ Unwrap() []error }).Unwrap()...)
	}
	return joinProblems(problems)
}

var sinkName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)

// validate checks the keys every sink takes, and has the sink's package
// check its own (Spec), under the sink's index.
func (s SinkConfig) validate(i int, names map[string]int, types map[string]sinkType) []error {
	var errs []error
	key := func(k string) string { return fmt.Sprintf("sinks[%d].%s", i, k) }
	bad := func(k, format string, args ...any) {
		errs = append(errs, problem{key: key(k), msg: fmt.Sprintf(format, args...)})
	}
	switch {
	case s.Name == "":
		bad("name", "missing; give the sink a name (letters, digits, - and _), used in routes, logs and metrics")
	case !sinkName.MatchString(s.Name):
		bad("name", "%q: use letters, digits, - and _ only (up to 63), starting with a letter or digit", s.Name)
	default:
		if j, dup := names[s.Name]; dup {
			bad("name", "%q is already the name of sinks[%d]; sink names must be unique", s.Name, j)
		}
		names[s.Name] = i
	}
	typ, known := types[s.Type]
	switch {
	case s.Type == "":
		bad("type", "missing; use %s", typeList(types))
	case !known:
		bad("type", "%q is not a sink type; use %s", s.Type, typeList(types))
	case s.Spec != nil:
		if err := typ.validate(s.Name, s.Spec); err != nil {
			errs = append(errs, sinkProblems(i, err)...)
		}
	}
	if s.Concurrency < 0 || s.Concurrency > 256 {
		bad("concurrency", "%d; use 1 to 256", s.Concurrency)
	}
	if s.Rate != "" {
		if _, _, err := ParseRate(s.Rate); err != nil {
			bad("rate", "%v", err)
		}
	}
	for j, r := range s.Redact {
		if err := relay.CheckRedactPath(r); err != nil {
			bad(fmt.Sprintf("redact[%d]", j), "%v", err)
		}
	}
	return errs
}

func (c *Config) validateRoutes(names map[string]int) []error {
	var errs []error
	for i, r := range c.Routes {
		key := fmt.Sprintf("routes[%d]", i)
		m := r.Match
		if m.toMatch().Empty() {
			errs = append(errs, fmt.Errorf("%s.match: empty; give at least one of topic, chatbot_id, source, min_score, max_score "+
				"(to send every event to a sink, list it in no route and drop routes, or add a topic list)", key))
		}
		for _, sc := range []struct {
			k string
			v *float64
		}{{"min_score", m.MinScore}, {"max_score", m.MaxScore}} {
			if sc.v != nil && (*sc.v < 0 || *sc.v > 1) {
				errs = append(errs, fmt.Errorf("%s.match.%s: %g is outside 0..1, the range of answer scores", key, sc.k, *sc.v))
			}
		}
		if m.MinScore != nil && m.MaxScore != nil && *m.MinScore > *m.MaxScore {
			errs = append(errs, fmt.Errorf("%s.match: min_score %g is above max_score %g; no event could match", key, *m.MinScore, *m.MaxScore))
		}
		for j, t := range m.Topic {
			if strings.TrimSpace(t) == "" {
				errs = append(errs, fmt.Errorf("%s.match.topic[%d]: empty", key, j))
			}
		}
		if len(r.Sinks) == 0 {
			errs = append(errs, fmt.Errorf("%s.sinks: empty; list the sinks this route sends to", key))
		}
		for j, s := range r.Sinks {
			if _, ok := names[s]; !ok {
				errs = append(errs, fmt.Errorf("%s.sinks[%d]: no sink named %q; use one of: %s", key, j, s, strings.Join(sortedKeys(names), ", ")))
			}
		}
	}
	return errs
}

func (m MatchConfig) toMatch() relay.Match {
	return relay.Match{Topic: m.Topic, ChatbotID: m.ChatbotID, Source: m.Source, MinScore: m.MinScore, MaxScore: m.MaxScore}
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b string) int { return m[a] - m[b] })
	return out
}

func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has no valid port", addr)
	}
	return nil
}

// isLoopback reports whether addr listens only on a loopback interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && relay.LoopbackHost(host)
}

// ParseRate reads a sink's rate: "1/s", "5/2s", "30/m", "2/1m30s". It
// returns the spacing between sends and the burst (always 1: evenly spaced
// sends never exceed a window limit).
func ParseRate(s string) (time.Duration, int, error) {
	n, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	count, err := strconv.Atoi(strings.TrimSpace(n))
	if !ok || err != nil || count < 1 {
		return 0, 0, fmt.Errorf("%q is not a rate; write it as messages/period, like 1/s, 5/2s or 30/m", s)
	}
	per = strings.TrimSpace(per)
	switch per {
	case "s", "m", "h":
		per = "1" + per
	}
	d, err := time.ParseDuration(per)
	if err != nil || d <= 0 {
		return 0, 0, fmt.Errorf("%q is not a rate; write it as messages/period, like 1/s, 5/2s or 30/m", s)
	}
	return d / time.Duration(count), 1, nil
}
