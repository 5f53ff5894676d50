package chatdatatest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/chatrelay/chatrelay/sinks/chatdata/chatdatatest"
)

func do(t *testing.T, method, url, key, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, out
}

// TestFakeAnswersAsTheAPI: the fake keeps Chat Data's rules: the key, the
// body's required fields, errors as {"status":"error","message"}.
func TestFakeAnswersAsTheAPI(t *testing.T) {
	t.Parallel()
	api := chatdatatest.NewServer(t, chatdatatest.WithConversations("c1"))
	live := api.URL + chatdatatest.LiveChatPath
	ok := `{"chatbotId":"b","conversationId":"c1","message":"hi","role":"human","name":"Dana"}`
	tests := []struct {
		name, method, url, key, body string
		status                       int
		isError                      bool
	}{
		{"appended", "POST", live, api.Key, ok, 200, false},
		{"no key", "POST", live, "", ok, 401, true},
		{"wrong key", "POST", live, "sk-other", ok, 401, true},
		{"not JSON", "POST", live, api.Key, "hi", 400, true},
		{"blank message", "POST", live, api.Key, `{"chatbotId":"b","conversationId":"c1","message":"  ","role":"human"}`, 400, true},
		{"bad role", "POST", live, api.Key, `{"chatbotId":"b","conversationId":"c1","message":"x","role":"agent"}`, 400, true},
		{"name on an assistant message", "POST", live, api.Key, `{"chatbotId":"b","conversationId":"c1","message":"x","role":"assistant","name":"D"}`, 400, true},
		{"four files", "POST", live, api.Key, `{"chatbotId":"b","conversationId":"c1","message":"x","role":"human","files":[{},{},{},{}]}`, 400, true},
		{"unknown conversation", "POST", live, api.Key, `{"chatbotId":"b","conversationId":"c2","message":"x","role":"human"}`, 404, true},
		{"GET live-chat", "GET", live, api.Key, "", 404, false},
		{"current plan", "GET", api.URL + chatdatatest.CurrentPlanPath, api.Key, "", 200, false},
		{"current plan, wrong key", "GET", api.URL + chatdatatest.CurrentPlanPath, "sk-x", "", 401, true},
	}
	for _, tc := range tests {
		status, body := do(t, tc.method, tc.url, tc.key, tc.body)
		if status != tc.status || (body["status"] == "error") != tc.isError {
			t.Errorf("%s: %d %v, want %d error=%v", tc.name, status, body, tc.status, tc.isError)
		}
		if tc.isError && body["message"] == "" {
			t.Errorf("%s: error without a message", tc.name)
		}
	}
	if msgs := api.Messages("c1"); len(msgs) != 1 || msgs[0].Name != "Dana" || msgs[0].Text != "hi" {
		t.Fatalf("messages %+v, want the one appended", msgs)
	}
	if n := len(api.Requests()); n != len(tests) {
		t.Fatalf("%d requests recorded, want %d", n, len(tests))
	}
}

// TestFakeScripted: scripted answers come first, one per request, then the
// fake answers as usual again.
func TestFakeScripted(t *testing.T) {
	t.Parallel()
	api := chatdatatest.NewServer(t)
	api.Script(
		chatdatatest.Response{Error: "Chatbot is paused"},
		chatdatatest.Response{Status: 429, RetryAfter: "2", Error: "slow down"},
		chatdatatest.Response{Status: 500, Body: "oops"},
	)
	body := `{"chatbotId":"b","conversationId":"c","message":"x","role":"human"}`
	want := []struct {
		status  int
		isError bool
	}{{200, true}, {429, true}, {500, false}, {200, false}}
	for i, w := range want {
		status, got := do(t, "POST", api.URL+chatdatatest.LiveChatPath, api.Key, body)
		if status != w.status || (got["status"] == "error") != w.isError {
			t.Errorf("request %d: %d %v, want %d error=%v", i, status, got, w.status, w.isError)
		}
	}
	if n := len(api.Messages("c")); n != 1 {
		t.Fatalf("%d messages appended, want 1 (only the unscripted request)", n)
	}
}
