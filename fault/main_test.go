package fault

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// binDir holds the chatrelay binary built for this test run.
var binDir string

const mainPackage = "github.com/chatrelay/chatrelay/cmd/chatrelay"

// build builds the binary once per test run, on first use.
var build = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(binDir, "chatrelay")
	cmd := exec.Command("go", "build", "-o", bin, mainPackage)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", &buildError{err: err, out: string(out)}
	}
	if err := consultSources(); err != nil {
		return "", err
	}
	return bin, nil
})

// consultSources stats every source file of this module that the binary is
// built from. go test caches a package's result keyed by what the test
// process itself read; the binary is built by a child process, so without
// this a change in cmd/chatrelay would leave a stale cached PASS here.
func consultSources() error {
	out, err := exec.Command("go", "list", "-deps", "-f",
		`{{if .Module}}{{if .Module.Main}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}
{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}
{{end}}{{end}}{{end}}`, mainPackage).Output()
	if err != nil {
		return fmt.Errorf("go list %s: %w", mainPackage, err)
	}
	files := strings.Fields(string(out))
	if len(files) == 0 {
		return fmt.Errorf("go list %s: no source files", mainPackage)
	}
	for _, f := range append(files, "../go.mod", "../go.sum") {
		if _, err := os.Stat(f); err != nil {
			return err
		}
	}
	return nil
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return "go build: " + e.err.Error() + "\n" + e.out }

// binary returns the path of the chatrelay binary, building it if needed.
func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("the fault suite builds and runs the chatrelay binary; not in -short")
	}
	bin, err := build()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chatrelay-fault-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { _ = os.RemoveAll(dir) }))
}
