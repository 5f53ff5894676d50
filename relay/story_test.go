package relay_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/chatrelay/chatrelay/relay"
)

func TestTranscript(t *testing.T) {
	t.Parallel()
	msgs := `[{"role":"assistant","content":"Hi!"},{"role":"user","content":"I was charged twice for order #4412!"},` +
		`{"role":"assistant","content":"Sorry, let me look."},{"role":"user","content":"   "},{"role":"user","content":"Please hurry, this is urgent."}]`
	cases := []struct {
		name    string
		body    string
		max     int
		earlier int
		want    []string // contents, oldest first
	}{
		{"all fit, blank left out", `{"messages":` + msgs + `}`, 10, 0,
			[]string{"Hi!", "I was charged twice for order #4412!", "Sorry, let me look.", "Please hurry, this is urgent."}},
		{"the latest kept", `{"messages":` + msgs + `}`, 2, 2, []string{"Sorry, let me look.", "Please hurry, this is urgent."}},
		{"answer last", `{"messages":` + msgs + `,"answer":{"content":"Connecting you now."}}`, 2, 3,
			[]string{"Please hurry, this is urgent.", "Connecting you now."}},
		{"empty answer left out", `{"messages":[{"role":"user","content":"Help"}],"answer":{"content":""}}`, 5, 0, []string{"Help"}},
		{"nothing", `{}`, 5, 0, nil},
		{"max zero", `{"messages":` + msgs + `}`, 0, 4, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ev, err := relay.DecodeEvent([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			earlier, turns := ev.Transcript(tc.max)
			var got []string
			for _, m := range turns {
				got = append(got, m.Content)
			}
			if earlier != tc.earlier || !slices.Equal(got, tc.want) {
				t.Errorf("Transcript(%d) = %d, %q; want %d, %q", tc.max, earlier, got, tc.earlier, tc.want)
			}
		})
	}
	if got := relay.EarlierMessages(1); got != "1 earlier message" {
		t.Errorf("EarlierMessages(1) = %q", got)
	}
	if got := relay.EarlierMessages(3); got != "3 earlier messages" {
		t.Errorf("EarlierMessages(3) = %q", got)
	}
}

func TestSpeakerAndLabel(t *testing.T) {
	t.Parallel()
	for role, want := range map[string]string{"user": "Visitor", "assistant": "Bot", "human": "Agent", "": "Message", "system": "System"} {
		if got := relay.Speaker(role); got != want {
			t.Errorf("Speaker(%q) = %q, want %q", role, got, want)
		}
	}
	for key, want := range map[string]string{
		"first_name": "First name", "firstName": "First name", "uuid": "UUID", "chatbot_id": "Chatbot ID",
		"custom_fields": "Custom fields", "SKU": "SKU", "": "(unnamed)", "phone-number": "Phone number", "sso": "SSO",
	} {
		if got := relay.Label(key); got != want {
			t.Errorf("Label(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestReadingOrder(t *testing.T) {
	t.Parallel()
	ev, err := relay.DecodeEvent([]byte(`{"lead":{"uuid":"u-1","message":"Call me","custom_fields":{"seats":40},"phone":"+1 555 0100",` +
		`"company":"Northwind","name":"Priya","email":"p@example.net","lead_id":"x"}}`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range relay.ReadingOrder(ev.Lead) {
		got = append(got, f.Key)
	}
	want := []string{"name", "company", "email", "phone", "message", "custom_fields", "uuid", "lead_id"}
	if !slices.Equal(got, want) {
		t.Errorf("reading order %q, want %q", got, want)
	}
}

func TestReadable(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		value  string
		want   []string // "label: value"
		joined string
	}{
		{"object", `{"company":"Northwind Ltd","seats":40,"timeline":"Q3","interests":["SSO","audit log"]}`,
			[]string{"Company: Northwind Ltd", "Seats: 40", "Timeline: Q3", "Interests: SSO, audit log"},
			"Company: Northwind Ltd; Seats: 40; Timeline: Q3; Interests: SSO, audit log"},
		{"array of plain values", `["SSO","audit log",3,true]`, []string{": SSO, audit log, 3, true"}, "SSO, audit log, 3, true"},
		{"deeper objects", `{"address":{"city":"Paris","zip":"75001"},"empty":"","none":null}`,
			[]string{"Address › City: Paris", "Address › Zip: 75001"}, "Address › City: Paris; Address › Zip: 75001"},
		{"array of objects", `[{"name":"A"},{"name":"B"}]`, []string{"1 › Name: A", "2 › Name: B"}, "1 › Name: A; 2 › Name: B"},
		{"empty", `{}`, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ev, err := relay.DecodeEvent([]byte(`{"lead":{"f":` + tc.value + `}}`))
			if err != nil {
				t.Fatal(err)
			}
			f := ev.Lead[0]
			if !f.Nested {
				t.Fatalf("field %+v not marked nested", f)
			}
			var got []string
			for _, l := range relay.Readable(f) {
				got = append(got, l.Key+": "+l.Value)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Readable = %q, want %q", got, tc.want)
			}
			if j := relay.JoinedValue(f); j != tc.joined {
				t.Errorf("JoinedValue = %q, want %q", j, tc.joined)
			}
		})
	}
	if relay.Readable(relay.Field{Key: "k", Value: `{"a":1}`}) != nil {
		t.Error("a plain value that looks like JSON is read as nested")
	}
}

func TestContactOf(t *testing.T) {
	t.Parallel()
	cases := []struct {
		key, in string
		kind    relay.Contact
		href    string
	}{
		{"", "ada@example.com", relay.ContactEmail, "mailto:ada@example.com"},
		{"", " priya@example.net ", relay.ContactEmail, "mailto:priya@example.net"},
		{"", "+1 555 0100", relay.ContactPhone, "tel:+15550100"},
		{"", "+44 20 7946 0958", relay.ContactPhone, "tel:+442079460958"},
		{"phone", "(020) 7946-0958", relay.ContactPhone, "tel:02079460958"},
		{"", "https://example.com/a?b=1", relay.ContactURL, "https://example.com/a?b=1"},
		{"", "12", relay.NotContact, ""},
		{"", "40", relay.NotContact, ""},
		{"start", "2026-11-25", relay.NotContact, ""},
		{"mobile", "555 0100", relay.ContactPhone, "tel:5550100"},
		{"", "<@U123>@x.com", relay.NotContact, ""},
		{"", "a|b@example.com", relay.NotContact, ""},
		{"", "javascript:alert(1)", relay.NotContact, ""},
		{"", "https://evil.example/<!channel>", relay.NotContact, ""},
		{"", "Ada Lovelace", relay.NotContact, ""},
	}
	for _, tc := range cases {
		kind, href := relay.ContactOf(tc.key, tc.in)
		if kind != tc.kind || href != tc.href {
			t.Errorf("ContactOf(%q, %q) = %v, %q; want %v, %q", tc.key, tc.in, kind, href, tc.kind, tc.href)
		}
	}
}

func TestScoreText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		score string
		level relay.Confidence
		text  string
	}{
		{`0.92`, relay.ConfidenceGood, "0.92"},
		{`0.8`, relay.ConfidenceGood, "0.80"},
		{`0.62`, relay.ConfidenceFair, "0.62"},
		{`0.12`, relay.ConfidenceLow, "0.12 (low confidence)"},
		{`null`, relay.ConfidenceNone, ""},
	} {
		ev, err := relay.DecodeEvent(fmt.Appendf(nil, `{"answer":{"content":"x","score":%s}}`, tc.score))
		if err != nil {
			t.Fatal(err)
		}
		if ev.Confidence() != tc.level || ev.ScoreText() != tc.text {
			t.Errorf("score %s: %v %q; want %v %q", tc.score, ev.Confidence(), ev.ScoreText(), tc.level, tc.text)
		}
	}
}

func TestAlignTable(t *testing.T) {
	t.Parallel()
	got := relay.AlignTable([][]string{{"Item", "Window"}, {"Shoes", "30 days"}, {"配送", "2 日"}, {"🇨🇦 Sale", ""}})
	want := []string{
		"Item    | Window",
		"--------+--------",
		"Shoes   | 30 days",
		"配送    | 2 日",
		"🇨🇦 Sale |",
	}
	if !slices.Equal(got, want) {
		t.Errorf("AlignTable:\n got %q\nwant %q", got, want)
	}
}
