package relay_test

import (
	"strings"
	"testing"

	"github.com/chatrelay/chatrelay/relay"
)

func TestRedact(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		body  string
		paths []string
		want  string
	}{
		{"top-level field", `{"a":1,"client_ip":"203.0.113.7","b":2}`, []string{"client_ip"}, `{"a":1,"b":2}`},
		{"nested", `{"lead":{"name":"Ada","email":"ada@example.com"}}`, []string{"lead.email"}, `{"lead":{"name":"Ada"}}`},
		{"wildcard", `{"lead":{"name":"Ada","email":"e"},"x":1}`, []string{"lead.*"}, `{"lead":{},"x":1}`},
		{"inside a JSON-encoded string", `{"lead":"{\"email\":\"ada@example.com\",\"name\":\"Ada\"}"}`, []string{"lead.email"}, `{"lead":"{\"name\":\"Ada\"}"}`},
		{"through arrays", `{"messages":[{"role":"user","content":"secret"},{"role":"assistant","content":"x"}]}`, []string{"messages.content"}, `{"messages":[{"role":"user"},{"role":"assistant"}]}`},
		{"absent field", `{"a":1}`, []string{"lead.phone"}, `{"a":1}`},
		{"several", `{"client_ip":"1","lead":{"phone":"p","email":"e","name":"n"}}`, []string{"client_ip", "lead.phone", "lead.email"}, `{"lead":{"name":"n"}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ev, err := relay.DecodeEvent([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			ev.ID, ev.Topic = "id", relay.TopicLead
			out, err := relay.Redact(ev, tc.paths)
			if err != nil {
				t.Fatal(err)
			}
			if string(out.Body) != tc.want {
				t.Fatalf("body %s, want %s", out.Body, tc.want)
			}
			if out.ID != "id" || out.Topic != relay.TopicLead {
				t.Fatal("identity lost")
			}
			if strings.Contains(string(ev.Body), "ada@example.com") && tc.paths[0] == "lead.email" && out.LeadValue("email") != "" {
				t.Fatal("parsed view still has the redacted email")
			}
		})
	}
}

func TestCheckRedactPath(t *testing.T) {
	t.Parallel()
	for p, ok := range map[string]bool{
		"client_ip": true, "lead.email": true, "lead.*": true, "": false, "*": false, "lead..x": false, "a.*.b": false, "lead.e mail": false,
	} {
		if err := relay.CheckRedactPath(p); (err == nil) != ok {
			t.Errorf("CheckRedactPath(%q) = %v", p, err)
		}
	}
}
