package main

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// buildInfo is what the binary says about itself in `chatrelay version`,
// the User-Agent, the start-up log and chatrelay_build_info.
type buildInfo struct {
	Version   string // 1.2.3, v1.2.3 (go install …@v1.2.3) or dev
	Commit    string // VCS revision, "-dirty" appended for a modified tree, or unknown
	GoVersion string
}

// readBuildInfo resolves the binary's version and commit: -ldflags
// ("-X main.version=1.2.3 -X main.commit=abc1234") win; without them Go's
// build info gives the module version of `go install …@v1.2.3` and the
// revision of a build in a git checkout (vcs.revision, unless built with
// -buildvcs=false).
func readBuildInfo() buildInfo { return resolveBuildInfo(version, commit, debug.ReadBuildInfo) }

func resolveBuildInfo(ldVersion, ldCommit string, read func() (*debug.BuildInfo, bool)) buildInfo {
	out := buildInfo{Version: ldVersion, Commit: ldCommit, GoVersion: runtime.Version()}
	bi, ok := read()
	if !ok || bi == nil {
		return out
	}
	if bi.GoVersion != "" {
		out.GoVersion = bi.GoVersion
	}
	if out.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		out.Version = bi.Main.Version
	}
	if out.Commit == "unknown" {
		var rev string
		var modified bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if rev != "" {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if modified {
				rev += "-dirty"
			}
			out.Commit = rev
		}
	}
	return out
}

// newBuildInfoMetric is chatrelay_build_info{version,commit,goversion} 1,
// so dashboards show which build runs where.
func newBuildInfoMetric(bi buildInfo) prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "chatrelay_build_info",
		Help: "Always 1; the labels say which chatrelay build runs: version, commit and Go version.",
	}, []string{"version", "commit", "goversion"})
	g.WithLabelValues(bi.Version, bi.Commit, bi.GoVersion).Set(1)
	return g
}
