package webhook_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/webhook"
)

// TestUnsendableTopicIsPermanent: a topic Go cannot put in a header (CR, LF
// or another control character, from the body's "event" field) can never be
// sent, so the delivery is permanent at once (a dead letter naming why), not
// retried for retry.max_age while its conversation waits; nothing is posted.
// A topic with bytes that are not UTF-8 is still sent: HTTP allows them.
func TestUnsendableTopicIsPermanent(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	s, err := webhook.New(webhook.Config{Name: "crm", URL: relay.Secret(srv.URL + "/in")}, relay.SinkDeps{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, topic string
		sent        bool
	}{
		{"CR LF", "chat\r\nX-Injected: 1", false},
		{"LF", "chat\nx", false},
		{"NUL", "chat\x00", false},
		{"DEL", "chat\x7f", false},
		{"invalid UTF-8", "chat\xff\xfe", true},
		{"tab and space", "my topic\tv2", true},
	} {
		ev := relaytest.SampleEvent(t)
		ev.Topic = tc.topic
		before := hits.Load()
		err := s.Send(t.Context(), ev)
		posted := hits.Load() > before
		if tc.sent {
			if err != nil || !posted {
				t.Errorf("%s: err %v, posted %v; want it sent", tc.name, err, posted)
			}
			continue
		}
		if c, _ := relay.Classify(err); c != relay.ClassPermanent {
			t.Errorf("%s: %v (class %s), want permanent", tc.name, err, c)
		}
		if posted {
			t.Errorf("%s: a request was made", tc.name)
		}
		if err != nil && !strings.Contains(strings.ToLower(err.Error()), relay.HeaderTopic) {
			t.Errorf("%s: %q does not name the header", tc.name, err)
		}
	}
}

// TestHeaderValuesAreChecked: a configured header value Go would refuse to
// send is a config error, not a sink that fails every delivery.
func TestHeaderValuesAreChecked(t *testing.T) {
	t.Parallel()
	_, err := webhook.New(webhook.Config{Name: "crm", URL: "https://crm.example/in",
		Headers: map[string]relay.Secret{"Authorization": "Bearer tok-1234567890\r\nX-Evil: 1"}}, relay.SinkDeps{})
	if err == nil || !strings.Contains(err.Error(), "Authorization") {
		t.Fatalf("New = %v, want an error naming the header", err)
	}
	relaytest.AssertNoSecret(t, "error", err.Error(), "tok-1234567890")
}

// TestEchoedHeaderIsScrubbed: an error page that echoes the request's
// headers brings no configured header value into the error, which is
// stored as last_error or a dead letter's reason.
func TestEchoedHeaderIsScrubbed(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, "bad credentials: Authorization=%q X-Client=%q", r.Header.Get("Authorization"), r.Header.Get("X-Client"))
	}))
	defer srv.Close()
	s, err := webhook.New(webhook.Config{Name: "crm", URL: relay.Secret(srv.URL + "/in"),
		Headers: map[string]relay.Secret{"Authorization": "Bearer tok-1234567890", "X-Client": "client-0a1b2c3d"}}, relay.SinkDeps{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Send(t.Context(), relaytest.SampleEvent(t))
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "bad credentials") {
		t.Fatalf("Send = %v, want the 401 with what the destination said", err)
	}
	relaytest.AssertNoSecret(t, "error", err.Error(), "tok-1234567890", "client-0a1b2c3d")
}
