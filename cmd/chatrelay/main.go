// Command chatrelay mirrors Chat Data chatbot conversations into Slack,
// Discord and any webhook: it verifies each event, stores it durably, and
// delivers it to every configured sink in conversation order, with retries,
// rate limits and a dead-letter list.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Set at build time with -ldflags "-X main.version=… -X main.commit=…".
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// Exit codes (SPEC §9).
const (
	exitFailed = 1 // the operation failed: not found, refused, a sink down
	exitUsage  = 2 // usage or config error; for status: the relay cannot be reached
)

// exitError carries a process exit code: 2 for a bad config or usage, 1 for
// everything else.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func configError(err error) error { return &exitError{code: exitUsage, err: err} }

// failed is an operation that did not succeed (exit 1).
func failed(err error) error { return &exitError{code: exitFailed, err: err} }

// usageError is a command line that cobra or a command refused: an unknown
// command or flag, a missing or extra argument (exit 2).
func usageError(cmd *cobra.Command, err error) error {
	return &exitError{code: exitUsage, err: fmt.Errorf("%w; run '%s --help' for usage", err, cmd.CommandPath())}
}

// run is main without the process: tests call it with their own streams.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		fmt.Fprintf(stderr, "chatrelay: %v\n", ee.err)
		return ee.code
	}
	fmt.Fprintf(stderr, "chatrelay: %v\n", err)
	return 1
}
