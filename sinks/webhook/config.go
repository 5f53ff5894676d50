package webhook

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

// Config is one webhook sink's configuration: the keys of a "type: webhook"
// entry under sinks, decoded as they are written.
type Config struct {
	// Name is the sink's configured name (the common key "name").
	Name string `mapstructure:"-"`
	// URL is posted to exactly as configured. It is a Secret because URLs
	// often carry tokens.
	URL relay.Secret `mapstructure:"url"`
	// Secret, if set, is a Standard Webhooks secret "whsec_<base64>"; each
	// request then carries webhook-signature.
	Secret relay.Secret `mapstructure:"secret"`
	// Headers are added to every request. Their values are Secrets (never
	// printed); which of them are scrubbed from stored text is
	// SecretValues' choice (relay.CredentialHeader).
	Headers map[string]relay.Secret `mapstructure:"headers"`
	// Timeout bounds one request (default relay.DefaultTimeout); it is
	// also the dispatcher's deadline for one send (one request).
	Timeout time.Duration `mapstructure:"timeout"`
}

// withDefaults fills what the config left unset.
func (c Config) withDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = relay.DefaultTimeout
	}
	return c
}

// Validate checks c and joins one error per problem, each "key: problem;
// fix" with the key relative to the sink ("url: …"), never repeating a
// credential.
func (c Config) Validate() error {
	var errs []error
	if c.URL.IsZero() {
		errs = append(errs, errors.New("url: missing; set it to the http(s) URL that receives the events"))
	} else if err := relay.CheckURL(c.URL.Reveal()); err != nil {
		errs = append(errs, fmt.Errorf("url: %w; set it to the http(s) URL that receives the events", err))
	}
	if !c.Secret.IsZero() {
		if _, err := DecodeSecret(c.Secret.Reveal()); err != nil {
			errs = append(errs, fmt.Errorf(`secret: %w (generate one with: echo "whsec_$(head -c 32 /dev/urandom | base64)")`, err))
		}
	}
	names := make([]string, 0, len(c.Headers))
	for name := range c.Headers {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		// The error names the header, never its value.
		if err := relay.CheckHeader(http.Header{name: {c.Headers[name].Reveal()}}); err != nil {
			errs = append(errs, fmt.Errorf("headers: %v; write each as one line", err))
		}
	}
	if c.Timeout < 0 {
		errs = append(errs, errors.New("timeout: must be positive, like 10s"))
	}
	return errors.Join(errs...)
}

// SecretValues implements relay.SecretHolder: the URL, the signing secret
// and the header values that may be credentials (relay.CredentialHeader;
// a label such as X-Team: support is not scrubbed).
func (c *Config) SecretValues() []string {
	out := []string{c.URL.Reveal(), c.Secret.Reveal()}
	for name, v := range c.Headers {
		if relay.CredentialHeader(name, v.Reveal()) {
			out = append(out, v.Reveal())
		}
	}
	return out
}
