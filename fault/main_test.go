package fault

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// binDir holds the chatrelay binary built for this test run.
var binDir string

// build builds the binary once per test run, on first use.
var build = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(binDir, "chatrelay")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/chatrelay/chatrelay/cmd/chatrelay")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", &buildError{err: err, out: string(out)}
	}
	return bin, nil
})

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
