package main

import (
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
)

// mainPackage is this command's import path.
const mainPackage = "github.com/chatrelay/chatrelay/cmd/chatrelay"

// invocation is the command line that runs this chatrelay again from the
// current directory, for the lines we print for a person to paste:
// "go run ./cmd/chatrelay" when it was started with go run (whose binary
// lives in a temporary build directory that is gone once it exits), else
// the binary as it was called ("chatrelay" from PATH, "./chatrelay",
// "/usr/local/bin/chatrelay").
func invocation(arg0, exe, srcDir, cwd string) string {
	if goRun(exe) {
		if srcDir != "" && cwd != "" {
			if rel, err := filepath.Rel(cwd, srcDir); err == nil && !strings.HasPrefix(rel, "..") {
				if rel == "." {
					return "go run ."
				}
				return "go run ./" + filepath.ToSlash(rel)
			}
			if filepath.IsAbs(srcDir) {
				return "go run " + shellQuote(srcDir)
			}
		}
		return "go run " + mainPackage
	}
	if arg0 == "" {
		return "chatrelay"
	}
	return shellQuote(arg0)
}

// goRun reports whether exe is a binary go run built: in the build cache
// (Go 1.24 on), as GOCACHE/cd/cd27…-d/chatrelay, or in a go-build
// temporary directory, as .../go-build123/b001/exe/chatrelay.
func goRun(exe string) bool {
	exe = filepath.ToSlash(exe)
	if strings.Contains(exe, "/go-build") && strings.Contains(exe, "/exe/") {
		return true
	}
	dir := path.Dir(exe)
	hash, shard := path.Base(dir), path.Base(path.Dir(dir))
	return len(shard) == 2 && strings.HasPrefix(hash, shard) && strings.HasSuffix(hash, "-d")
}

// selfInvocation is invocation for this process.
func selfInvocation() string {
	// Either may be unknown (""): invocation then goes by what it has.
	exe, err := os.Executable()
	if err != nil {
		exe = ""
	}
	cwd, err := os.Getwd()
	if err != nil {
		cwd = ""
	}
	arg0 := ""
	if len(os.Args) > 0 {
		arg0 = os.Args[0]
	}
	srcDir := ""
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		if _, err := os.Stat(file); err == nil { // built here, not -trimpath or elsewhere
			srcDir = filepath.Dir(file)
		}
	}
	return invocation(arg0, exe, srcDir, cwd)
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@+,%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
