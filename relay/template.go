package relay

import (
	"bytes"
	"fmt"
	"strings"
	"text/template"
	"time"
)

// TemplateFuncs are the helper functions every sink's message template can
// use:
//
//	truncate N S   S cut to N runes, ending in "…" when cut
//	default D S    S, or D when S is empty
//	score          formats a score as 0.85 ("" when absent): {{score .}}
//	lead K         the lead field K: {{lead . "email"}}
//	upper, lower, trim, join, replace: as in package strings
func TemplateFuncs() template.FuncMap {
	return template.FuncMap{
		"truncate": func(n int, s string) string { out, _ := Truncate(s, n); return out },
		"default": func(d, s string) string {
			if strings.TrimSpace(s) == "" {
				return d
			}
			return s
		},
		"score": func(ev *Event) string {
			if v, ok := ev.Score(); ok {
				return fmt.Sprintf("%.2f", v)
			}
			return ""
		},
		"lead":    func(ev *Event, key string) string { return ev.LeadValue(key) },
		"upper":   strings.ToUpper,
		"lower":   strings.ToLower,
		"trim":    strings.TrimSpace,
		"join":    strings.Join,
		"replace": strings.ReplaceAll,
	}
}

// ParseTemplate parses a sink's message template and executes it once
// against a sample event of every known topic, so that mistakes show at
// start, not at delivery. The template's data is the *Event.
func ParseTemplate(name, text string) (*template.Template, error) {
	tmpl, err := template.New(name).Funcs(TemplateFuncs()).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, err
	}
	for _, body := range []string{
		`{"messages":[{"role":"user","content":"Hi"}],"answer":{"role":"assistant","content":"Hello","score":0.9},"chatbot_id":"b","conversation_id":"c","source":"widget"}`,
		`{"chatbot_id":"b","conversation_id":"c","lead":{"name":"Ada","email":"ada@example.com"}}`,
		`{}`,
	} {
		ev, err := DecodeEvent([]byte(body))
		if err != nil {
			return nil, err
		}
		ev.ID, ev.Topic, ev.ReceivedAt = "sample", TopicChat, time.Unix(0, 0).UTC()
		if _, err := ExecuteTemplate(tmpl, ev); err != nil {
			return nil, err
		}
	}
	return tmpl, nil
}

// ExecuteTemplate renders tmpl for ev.
func ExecuteTemplate(tmpl *template.Template, ev *Event) (string, error) {
	var b bytes.Buffer
	if err := tmpl.Execute(&b, ev); err != nil {
		return "", err
	}
	return b.String(), nil
}
