package relay_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chatrelay/chatrelay/relay"
)

// TestCheckHeaderAgreesWithNetHTTP: CheckHeader refuses exactly what
// net/http refuses to send, as a permanent error that names the field and
// not the value.
func TestCheckHeaderAgreesWithNetHTTP(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	tests := []struct {
		name, key, value string
		ok               bool
	}{
		{"plain", "X-Chat-Data-Topic", "chat", true},
		{"spaces and tabs", "X-Topic", "a b\tc", true},
		{"not UTF-8", "X-Topic", "chat\xff\xfe", true},
		{"UTF-8", "X-Topic", "chât 💬", true},
		{"CR LF", "X-Topic", "chat\r\nX-Evil: secret-value", false},
		{"LF", "X-Topic", "a\nb", false},
		{"CR", "X-Topic", "a\rb", false},
		{"NUL", "X-Topic", "a\x00b", false},
		{"escape", "X-Topic", "a\x1b[31mb", false},
		{"DEL", "X-Topic", "a\x7fb", false},
		{"name with a space", "X Topic", "v", false},
		{"name with a colon", "X-Topic:", "v", false},
		{"empty name", "", "v", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{tc.key: {tc.value}}
			err := relay.CheckHeader(h)
			if (err == nil) != tc.ok {
				t.Fatalf("CheckHeader = %v, want ok %v", err, tc.ok)
			}
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL, nil)
			req.Header = h
			resp, goErr := srv.Client().Do(req)
			if resp != nil {
				resp.Body.Close()
			}
			if (goErr == nil) != tc.ok {
				t.Errorf("net/http: %v; CheckHeader: %v (they must agree)", goErr, err)
			}
			if err == nil {
				return
			}
			if c, _ := relay.Classify(err); c != relay.ClassPermanent {
				t.Errorf("class %s, want permanent", c)
			}
			if strings.Contains(err.Error(), "secret-value") {
				t.Errorf("the error shows the value: %v", err)
			}
		})
	}
}
