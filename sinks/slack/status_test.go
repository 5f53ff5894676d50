package slack

import (
	"encoding/json"
	"testing"
)

// A click on a message whose status an earlier click showed replaces that
// status line in the notification's text instead of stacking another.
func TestWithoutStatus(t *testing.T) {
	t.Parallel()
	const esc = ":rotating_light: Live chat escalation\n*A visitor asked to talk to a person.*"
	shown := json.RawMessage(`[{"type":"section","block_id":"b1"},{"type":"context","block_id":"` + statusText + `"}]`)
	original := json.RawMessage(`[{"type":"section","block_id":"b1"},{"type":"actions","block_id":"` + statusBlock + `"}]`)
	for _, tc := range []struct {
		name string
		msg  clicked
		want string
	}{
		{"first click", clicked{Text: esc, Blocks: original}, esc},
		{"status block shown", clicked{Text: "🙋 Claimed by Dana\n" + esc, Blocks: shown}, esc},
		{"status line as Slack names its emoji", clicked{Text: ":raising_hand: Claimed by Dana\n" + esc, Blocks: original}, esc},
		{"resolved line", clicked{Text: "✅ Resolved by Sam\n" + esc}, esc},
		{"status only", clicked{Text: "🙋 Claimed by Dana", Blocks: shown}, ""},
		{"no text", clicked{Blocks: shown}, ""},
		{"a visitor line that only mentions a claim", clicked{Text: "Claimed by nobody\n" + esc, Blocks: original}, "Claimed by nobody\n" + esc},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := withoutStatus(tc.msg); got != tc.want {
				t.Errorf("withoutStatus = %q, want %q", got, tc.want)
			}
		})
	}
}
