package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

// TestJSONDurationsAreStrings: JSON logs write durations as Go duration
// strings ("15s"), as the text logs and the config do, not nanoseconds.
func TestJSONDurationsAreStrings(t *testing.T) {
	t.Parallel()
	for _, secrets := range [][]string{nil, {"some-configured-secret"}} {
		var out strings.Builder
		logger := newLogger(&out, "info", "json", relay.NewScrubber(secrets...))
		logger.With("probe_every", 5*time.Minute).WithGroup("g").Warn("delivery failed; will retry", "delay", 15*time.Second)
		var line struct {
			ProbeEvery any `json:"probe_every"`
			G          struct {
				Delay any `json:"delay"`
			} `json:"g"`
		}
		if err := json.Unmarshal([]byte(out.String()), &line); err != nil {
			t.Fatal(err)
		}
		if line.ProbeEvery != "5m0s" || line.G.Delay != "15s" {
			t.Errorf("secrets %v: durations written as %v and %v, want \"5m0s\" and \"15s\": %s", secrets, line.ProbeEvery, line.G.Delay, out.String())
		}
	}
}
