package main

import (
	"bytes"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestResolveBuildInfo(t *testing.T) {
	t.Parallel()
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	const rev = "0123456789abcdef0123456789abcdef01234567"
	tests := []struct {
		name                 string
		ldVersion, ldCommit  string
		bi                   *debug.BuildInfo
		wantVersion, wantRev string
	}{
		{name: "ldflags win", ldVersion: "1.2.3", ldCommit: "abc1234",
			bi:          &debug.BuildInfo{Main: debug.Module{Version: "v9.9.9"}, Settings: vcs(rev, "false")},
			wantVersion: "1.2.3", wantRev: "abc1234"},
		{name: "go install of a tagged module", ldVersion: "dev", ldCommit: "unknown",
			bi:          &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}},
			wantVersion: "v1.4.0", wantRev: "unknown"},
		{name: "build in a clean checkout", ldVersion: "dev", ldCommit: "unknown",
			bi:          &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "false")},
			wantVersion: "dev", wantRev: "0123456789ab"},
		{name: "build in a modified checkout", ldVersion: "dev", ldCommit: "unknown",
			bi:          &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "true")},
			wantVersion: "dev", wantRev: "0123456789ab-dirty"},
		{name: "no build info", ldVersion: "dev", ldCommit: "unknown", wantVersion: "dev", wantRev: "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := resolveBuildInfo(tt.ldVersion, tt.ldCommit, func() (*debug.BuildInfo, bool) { return tt.bi, tt.bi != nil })
			if got.Version != tt.wantVersion || got.Commit != tt.wantRev || got.GoVersion == "" {
				t.Fatalf("got %+v, want version %s commit %s", got, tt.wantVersion, tt.wantRev)
			}
		})
	}
}

func TestVersionCommandAndBuildInfoMetric(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	if code := run(t.Context(), []string{"version"}, nil, &out, &errOut, os.Getenv); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	bi := readBuildInfo()
	want := "chatrelay " + bi.Version + " (commit " + bi.Commit + ", " + bi.GoVersion + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	if out.String() != want {
		t.Fatalf("version printed %q, want %q", out.String(), want)
	}
	if !strings.Contains(userAgent(), "chatrelay/"+bi.Version) {
		t.Fatalf("User-Agent %q lacks the version", userAgent())
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(newBuildInfoMetric(buildInfo{Version: "1.2.3", Commit: "abc1234", GoVersion: "go1.26.8"}))
	expected := `
# HELP chatrelay_build_info Always 1; the labels say which chatrelay build runs: version, commit and Go version.
# TYPE chatrelay_build_info gauge
chatrelay_build_info{commit="abc1234",goversion="go1.26.8",version="1.2.3"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected), "chatrelay_build_info"); err != nil {
		t.Fatal(err)
	}
}
