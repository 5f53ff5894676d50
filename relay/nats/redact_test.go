package nats

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/chatrelay/chatrelay/relay"
)

// TestRedactKeepsErrorsIs (issue 12, item 5): an error whose text shows a
// credential comes back with it blanked, and still answers errors.Is as
// the original does; errors.As cannot reach the original (its text shows
// the credential).
func TestRedactKeepsErrorsIs(t *testing.T) {
	t.Parallel()
	s := &Store{opts: Options{URL: "nats://relay:hunter2-secret@nats-1:4222,nats://tok3n-secret@nats-2:4222",
		Token: relay.Secret("bare-token-secret")}}
	cases := []struct {
		name   string
		err    error
		is     error
		redact bool
	}{
		{"url error", &url.Error{Op: "parse", URL: "nats://relay:hunter2-secret@nats-1:bad", Err: context.DeadlineExceeded},
			context.DeadlineExceeded, true},
		{"wrapped, bare token in the URL", fmt.Errorf("connect to nats://tok3n-secret@nats-2:4222: %w", context.Canceled),
			context.Canceled, true},
		{"the token option", fmt.Errorf("auth with bare-token-secret: %w", relay.ErrUnavailable), relay.ErrUnavailable, true},
		{"nothing to hide", fmt.Errorf("dial: %w", context.DeadlineExceeded), context.DeadlineExceeded, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := s.redact(fmt.Errorf("store.nats: %w", tc.err))
			for _, secret := range []string{"hunter2-secret", "tok3n-secret", "bare-token-secret"} {
				if strings.Contains(got.Error(), secret) {
					t.Fatalf("redacted error shows %q: %v", secret, got)
				}
			}
			if !errors.Is(got, tc.is) {
				t.Fatalf("errors.Is(%v, %v) = false after redaction", got, tc.is)
			}
			var ue *url.Error
			if errors.As(got, &ue) && tc.redact {
				t.Fatalf("errors.As reaches the original *url.Error: %v", ue)
			}
			if !tc.redact && !errors.Is(got, tc.err) {
				t.Fatalf("an error with nothing to hide was replaced: %v", got)
			}
		})
	}
}
