package slack_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/chatdata"
	"github.com/chatrelay/chatrelay/sinks/slack"
)

// TestSocketModeUnreachableIsLogged: when Socket Mode cannot connect
// (Slack's API answers 503, the network blocks it), slack-go retries by
// itself with backoff; the operator is told at WARN, naming the sink and
// the error (its token scrubbed), and keeps being told while it lasts,
// not once per attempt.
func TestSocketModeUnreachableIsLogged(t *testing.T) {
	t.Parallel()
	var opens atomic.Int32
	logs, stop := runSocket(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/apps.connections.open") {
			opens.Add(1)
		}
		http.Error(w, "upstream unavailable", http.StatusServiceUnavailable)
	}))
	relaytest.Eventually(t, 20*time.Second, "a WARN that Socket Mode cannot connect", func() bool {
		return strings.Contains(logs.String(), "Socket Mode cannot connect")
	})
	relaytest.Eventually(t, 20*time.Second, "slack-go retrying (3 attempts)", func() bool { return opens.Load() >= 3 })
	stop()
	out := logs.String()
	if n := strings.Count(out, "Socket Mode cannot connect"); n != 1 {
		t.Errorf("%d warnings for %d attempts within a few seconds, want 1 (then one per %s while it lasts):\n%s",
			n, opens.Load(), slack.SocketWarnEvery, out)
	}
	for _, want := range []string{"level=WARN", sinkName, "503"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log lacks %q:\n%s", want, out)
		}
	}
}

// TestSocketModeRefusedTokenStops: Slack refusing the app-level token in
// a way slack-go retries (not_allowed_token_type) ends the attempts with
// the ERROR that names the fix, as invalid_auth does.
func TestSocketModeRefusedTokenStops(t *testing.T) {
	t.Parallel()
	var opens atomic.Int32
	logs, stop := runSocket(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		opens.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":false,"error":"not_allowed_token_type"}`))
	}))
	relaytest.Eventually(t, 20*time.Second, "the ERROR that Slack refuses the token", func() bool {
		return strings.Contains(logs.String(), "Slack refuses reply.app_token")
	})
	stop()
	if n := opens.Load(); n != 1 {
		t.Errorf("%d attempts, want 1: a refused token is not tried again", n)
	}
}

// runSocket runs the Socket Mode source of a sink whose Web API is api;
// stop ends it and checks that the log holds no token.
func runSocket(t *testing.T, api http.Handler) (logs *relaytest.LogBuffer, stop func()) {
	t.Helper()
	const appToken = "xapp-1-A0SOCKET-unreachable-7f3e9c"
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	store, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	logger, buf := relaytest.NewLogger()
	logs = buf
	sink, err := slack.New(slack.Config{Name: sinkName, Token: "xoxb-socket-test-token", Channel: channel, APIURL: srv.URL + "/api/",
		Reply: &slack.ReplyConfig{AppToken: appToken}}, relay.SinkDeps{KV: store.KV(sinkName), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := sink.Replies()
	inbox, err := relay.NewInbox(relay.InboxConfig{Store: store, Router: relay.NewRouter([]string{sinkName, chatdata.Name}, nil, relay.ReplyDestinations(chatdata.Name)),
		Threads: relay.StoreThreads{KV: store.KV}, Rules: map[string]relay.ReplyRule{sinkName: rc.Rule()},
		Metrics: relay.NewMetrics(prometheus.NewRegistry()), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	sources, err := slack.Sources([]relay.Sink{sink}, relay.SourceDeps{Inbox: inbox, Logger: logger})
	if err != nil || len(sources) != 1 {
		t.Fatalf("sources %v, %v", sources, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := sources[0].Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			relaytest.AssertNoSecret(t, "logs", logs.String(), appToken, "xoxb-socket-test-token")
		})
	}
	t.Cleanup(stop)
	return logs, stop
}
