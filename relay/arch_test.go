package relay_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoPlatformKnowledge keeps relay free of platforms: nothing under
// relay/ may depend on sinks/... or a platform SDK, and no sink may import
// another.
func TestNoPlatformKnowledge(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", "github.com/chatrelay/chatrelay/relay/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "/sinks/") || strings.Contains(dep, "discordgo") || strings.Contains(dep, "slack-go") {
			t.Errorf("relay depends on %s", dep)
		}
	}
	out, err = exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "github.com/chatrelay/chatrelay/sinks/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkgs := strings.Fields(line)
		if len(pkgs) == 0 {
			continue
		}
		self := sinkOf(pkgs[0])
		for _, imp := range pkgs[1:] {
			if other := sinkOf(imp); other != "" && other != self {
				t.Errorf("%s imports %s: sinks must not import each other", pkgs[0], imp)
			}
		}
	}
}

// sinkOf returns the sink a package belongs to ("slack" for
// .../sinks/slack/slacktest), or "".
func sinkOf(pkg string) string {
	_, rest, ok := strings.Cut(pkg, "/chatrelay/sinks/")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, "/")
	return name
}
