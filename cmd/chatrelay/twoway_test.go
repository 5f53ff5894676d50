package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/chatrelay/chatrelay/relay"
)

// fixedSource serves fixed handlers and runs nothing.
type fixedSource map[string]http.Handler

func (s fixedSource) Handlers() map[string]http.Handler { return s }
func (fixedSource) Run(context.Context) error           { return nil }

func text(s string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, s) })
}

// TestPublicHandler: what sources serve is mounted beside the receiver,
// which keeps everything else; two sources may not serve one pattern.
func TestPublicHandler(t *testing.T) {
	t.Parallel()
	receiver := text("receiver")
	h, err := publicHandler(receiver, []relay.Source{fixedSource{"POST /slack/events": text("slack")}, fixedSource{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ method, path, want string }{
		{"POST", "/slack/events", "slack"},
		{"POST", "/webhook", "receiver"},
		{"GET", "/readyz", "receiver"},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Body.String() != tc.want {
			t.Errorf("%s %s answered by %q, want %q", tc.method, tc.path, rec.Body.String(), tc.want)
		}
	}
	if _, err := publicHandler(receiver, []relay.Source{fixedSource{"POST /x": receiver}, fixedSource{"POST /x": receiver}}); err == nil {
		t.Fatal("two sources were given one pattern")
	}
	if h, err := publicHandler(receiver, nil); err != nil || h == nil {
		t.Fatalf("no sources: %v", err)
	}
}
