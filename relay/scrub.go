package relay

import (
	"cmp"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
)

// MinScrubLen is the length below which a configured value is not
// scrubbed: replacing "a" or "/in" everywhere would garble every text while
// protecting nothing a guess would not find.
const MinScrubLen = 6

// minScrubSegment is the length from which one path segment or query value
// of a configured URL is scrubbed on its own (a webhook's token, the last
// segment of /services/T…/B…/<token>), as a destination's answer may echo
// it alone. Shorter segments ("hooks", "v1") are words, not tokens.
const minScrubSegment = 16

// Scrubber removes configured secrets (signing secrets, tokens, webhook URLs
// and their paths, extra header values) from text that is stored or served:
// dead-letter reasons, a delivery's last error, admin API answers and log
// lines. Each secret is found as configured and in the forms a destination
// may echo it in: a URL's path, query, token segments and password, a
// header's credential without its scheme ("Bearer …"), percent- and
// JSON-escaped. A nil *Scrubber scrubs nothing. It is safe for concurrent
// use.
type Scrubber struct {
	r *strings.Replacer
}

// NewScrubber returns a scrubber for secrets. Empty values and values
// shorter than MinScrubLen are ignored.
func NewScrubber(secrets ...string) *Scrubber {
	seen := map[string]bool{}
	var forms []string
	add := func(s string) {
		if len(s) >= MinScrubLen && !seen[s] {
			seen[s] = true
			forms = append(forms, s)
		}
	}
	for _, s := range secrets {
		if len(strings.TrimSpace(s)) < MinScrubLen {
			continue
		}
		for _, f := range secretForms(s) {
			add(f)
			add(url.QueryEscape(f))
			add(url.PathEscape(f))
			if b, err := json.Marshal(f); err == nil {
				add(string(b[1 : len(b)-1]))
			}
		}
	}
	if len(forms) == 0 {
		return &Scrubber{}
	}
	// At each position the first listed match wins: the longest first, so
	// that a URL is replaced whole rather than leaving pieces around its
	// path.
	slices.SortStableFunc(forms, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	pairs := make([]string, 0, 2*len(forms))
	for _, f := range forms {
		pairs = append(pairs, f, redacted)
	}
	return &Scrubber{r: strings.NewReplacer(pairs...)}
}

// secretForms returns s and the parts of it that identify it on their own.
func secretForms(s string) []string {
	forms := []string{s}
	t := strings.TrimSpace(s)
	forms = append(forms, t)
	// "Bearer <token>", "Basic <credentials>", "Bot <token>": the
	// credential alone.
	if scheme, cred, ok := strings.Cut(t, " "); ok && !strings.ContainsAny(scheme, ":/") {
		forms = append(forms, strings.TrimSpace(cred))
	}
	u, err := url.Parse(t)
	if err != nil || u.Host == "" || u.Scheme == "" {
		return forms
	}
	// Without the scheme, as "Cannot POST host/path" pages show it.
	forms = append(forms, strings.TrimPrefix(t, u.Scheme+"://"))
	if u.User != nil {
		forms = append(forms, u.User.String(), u.User.Username())
		if p, ok := u.User.Password(); ok {
			forms = append(forms, p)
		}
	}
	if len(u.Path) > 1 {
		forms = append(forms, u.EscapedPath(), u.Path)
		for seg := range strings.SplitSeq(u.Path, "/") {
			if len(seg) >= minScrubSegment {
				forms = append(forms, seg)
			}
		}
	}
	if u.RawQuery != "" {
		forms = append(forms, u.RawQuery)
		for _, vs := range u.Query() {
			for _, v := range vs {
				if len(v) >= minScrubSegment {
					forms = append(forms, v)
				}
			}
		}
	}
	return forms
}

// Scrub returns text with every secret replaced by "[redacted]".
func (s *Scrubber) Scrub(text string) string {
	if s == nil || s.r == nil {
		return text
	}
	return s.r.Replace(text)
}

// Error returns err with its text scrubbed, or err itself when its text
// holds no secret. The result unwraps to err, so that classification
// (Classify, errors.Is, errors.As) sees what it would have seen; only what
// it prints changes.
func (s *Scrubber) Error(err error) error {
	if err == nil || s == nil || s.r == nil {
		return err
	}
	text := err.Error()
	clean := s.r.Replace(text)
	if clean == text {
		return err
	}
	return &scrubbedError{text: clean, err: err}
}

type scrubbedError struct {
	text string
	err  error
}

func (e *scrubbedError) Error() string { return e.text }
func (e *scrubbedError) Unwrap() error { return e.err }

// SecretHolder is implemented by configuration types that tell which of
// their values are secrets themselves, where the type of a field says too
// little (a webhook sink's extra header values).
type SecretHolder interface {
	SecretValues() []string
}

// CredentialHeader reports whether an extra header's value is to be kept
// secret: always when the header's name says it carries a credential
// (Authorization, X-Api-Key, Cookie, …), else unless the value reads as a
// plain label (under 16 characters of letters, spaces, '-', '_' and '.',
// no digit): "support" or "eu-west" name things, "ctx-7f3e9a1b" may be a
// token. Scrubbing a label would garble every text that mentions it (a
// sink named support-slack) while protecting nothing.
func CredentialHeader(name, value string) bool {
	n := strings.ToLower(name)
	for _, w := range []string{"auth", "token", "key", "secret", "signature", "cookie", "password", "session", "credential"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	if len(value) >= minScrubSegment {
		return true
	}
	for _, r := range value {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '-', r == '_', r == '.', r == ' ':
		default:
			return true
		}
	}
	return false
}
