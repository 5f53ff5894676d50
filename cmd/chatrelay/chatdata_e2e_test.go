package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/chatdata/chatdatatest"
)

// TestServeWithChatData runs serve with a chatdata section: the Chat Data
// destination runs like a sink (metrics, status, dead letters under the
// name chatdata) and takes none of Chat Data's own events, which still
// reach the other sinks; the API key never reaches the output.
func TestServeWithChatData(t *testing.T) {
	t.Parallel()
	hook := newHookReceiver(t, 0)
	api := chatdatatest.NewServer(t)
	dir := t.TempDir()
	listen, adminAddr := freeAddr(t), freeAddr(t)
	const signing = "e2e-chatdata-signing-secret"
	cfgPath := writeConfig(t, fmt.Sprintf(`
listen: %s
admin: {listen: %s}
signing_secrets: [%s]
log: {level: debug, format: json}
store: {path: %s}
chatdata:
  api_key: %s
  api_url: %s
sinks:
  - {name: crm, type: webhook, url: "%s/in"}
`, listen, adminAddr, signing, filepath.Join(dir, "data"), api.Key, api.URL, hook.srv.URL))

	ctx, cancel := context.WithCancel(t.Context())
	var stdout, stderr relaytest.LogBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve", "--config", cfgPath}, nil, &stdout, &stderr, os.Getenv) }()
	relaytest.Eventually(t, 30*time.Second, "the receiver", func() bool {
		resp, err := http.Get("http://" + listen + "/readyz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	var out, errOut bytes.Buffer
	if code := run(t.Context(), []string{"send-test", "--config", cfgPath}, nil, &out, &errOut, os.Getenv); code != 0 {
		t.Fatalf("send-test exit %d: %s %s", code, out.String(), errOut.String())
	}
	<-hook.got
	var metrics string
	relaytest.Eventually(t, 30*time.Second, "the delivery to be recorded", func() bool {
		_, metrics = httpGet(t, "http://"+adminAddr+"/metrics", "")
		return strings.Contains(metrics, `chatrelay_deliveries_total{result="delivered",sink="crm"} 1`)
	})
	for _, want := range []string{
		`chatrelay_sink_up{sink="chatdata"} 1`,
		`chatrelay_deliveries_total{result="delivered",sink="chatdata"} 0`,
		`chatrelay_queue_depth{sink="chatdata"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	out.Reset()
	if code := run(t.Context(), []string{"status", "--config", cfgPath}, nil, &out, &errOut, os.Getenv); code != 0 ||
		!strings.Contains(out.String(), "chatdata") {
		t.Fatalf("status: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	if n := len(api.Requests()); n != 0 {
		t.Fatalf("Chat Data's API got %d requests; a chat event is no agent reply", n)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("serve exit %d:\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop after its context ended")
	}
	if strings.Contains(stderr.String()+stdout.String()+out.String(), api.Key) {
		t.Error("the Chat Data API key reached the output")
	}
}
