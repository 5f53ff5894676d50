package main

import "testing"

// TestInvocation: the command line printed for a person to paste runs this
// chatrelay again, however it was started.
func TestInvocation(t *testing.T) {
	t.Parallel()
	const src = "/home/me/chatrelay/cmd/chatrelay"
	goRun := "/tmp/go-build2931/b001/exe/chatrelay"
	cached := "/root/.cache/go-build/cd/cd27ca155d5baee905296ca483636e68b553d29c636d6dfb8f9b118d418da845-d/chatrelay" // Go 1.24 on
	for _, tc := range []struct {
		arg0, exe, srcDir, cwd string
		want                   string
	}{
		{goRun, goRun, src, "/home/me/chatrelay", "go run ./cmd/chatrelay"},
		{cached, cached, src, "/home/me/chatrelay", "go run ./cmd/chatrelay"},
		{"/home/me/bin/cd-d/chatrelay", "/home/me/bin/cd-d/chatrelay", src, "/tmp", "/home/me/bin/cd-d/chatrelay"},
		{goRun, goRun, src, src, "go run ."},
		{goRun, goRun, src, "/tmp", "go run /home/me/chatrelay/cmd/chatrelay"},
		{goRun, goRun, "", "/tmp", "go run github.com/chatrelay/chatrelay/cmd/chatrelay"},
		{"chatrelay", "/usr/local/bin/chatrelay", src, "/tmp", "chatrelay"},
		{"./chatrelay", "/home/me/chatrelay/chatrelay", src, "/home/me/chatrelay", "./chatrelay"},
		{"/opt/chat relay/chatrelay", "/opt/chat relay/chatrelay", "", "/", "'/opt/chat relay/chatrelay'"},
	} {
		if got := invocation(tc.arg0, tc.exe, tc.srcDir, tc.cwd); got != tc.want {
			t.Errorf("invocation(%q, %q, %q, %q) = %q, want %q", tc.arg0, tc.exe, tc.srcDir, tc.cwd, got, tc.want)
		}
	}
}
