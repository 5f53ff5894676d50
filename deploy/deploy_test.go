// Package deploy holds chatrelay's packaging: the systemd unit and its
// drop-in here, the container build file at the repository's root. Its
// tests check them without a Docker engine or a running systemd: the
// Dockerfile's instructions (multi-stage, static binary, non-root user,
// /data volume, health check), the binary built exactly as the Dockerfile
// builds it (static, version and commit from -ldflags, the healthcheck
// command), and the unit's settings (and `systemd-analyze verify` where
// the tool exists).
package deploy

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/chatrelay/chatrelay/certs"
	"github.com/chatrelay/chatrelay/certs/certstest"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, …
	args string
}

func parseDockerfile(t *testing.T, path string) [][]instruction {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var stages [][]instruction
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			t.Fatalf("%s: %s before the first FROM", path, in.cmd)
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if rest, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(rest + " ")
			continue
		}
		cur.WriteString(line)
		flush()
	}
	flush()
	return stages
}

func find(stage []instruction, cmd string) []string {
	var out []string
	for _, in := range stage {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// dockerBuild is the Dockerfile's build command; the test builds the
// binary with it (VERSION and COMMIT filled in).
const dockerBuild = `CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o /out/chatrelay ./cmd/chatrelay`

// TestDockerfile checks what hadolint cannot be installed here to check,
// and what the issue asks of the image: multi-stage, static, non-root,
// /data, a health check that works without curl.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	stages := parseDockerfile(t, "../Dockerfile")
	if len(stages) < 2 {
		t.Fatalf("%d stage(s); want a build stage and a small final one", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]
	if from := find(build, "FROM")[0]; !regexp.MustCompile(`^golang:\S+ AS build$`).MatchString(from) {
		t.Errorf("build stage FROM %q; want golang:<version> AS build", from)
	}
	if runs := strings.Join(find(build, "RUN"), "\n"); !strings.Contains(runs, dockerBuild) {
		t.Errorf("the build stage does not run %s", dockerBuild)
	}
	if from := find(final, "FROM")[0]; from != "scratch" && !strings.HasPrefix(from, "gcr.io/distroless/static") {
		t.Errorf("final stage FROM %q; want scratch or distroless/static (the binary is static)", from)
	}

	users := find(final, "USER")
	if len(users) == 0 {
		t.Fatal("the final stage has no USER: it would run as root")
	}
	user := users[len(users)-1]
	uid, _, _ := strings.Cut(user, ":")
	if uid == "root" || uid == "0" || uid == "" {
		t.Errorf("USER %q runs as root", user)
	}
	if n, err := strconv.Atoi(uid); err != nil || n < 1000 {
		t.Errorf("USER %q: use a numeric uid >= 1000 (scratch has no /etc/passwd, and Kubernetes runAsNonRoot needs a number)", user)
	}
	var dataOwned, caCerts, binary bool
	for _, c := range find(final, "COPY") {
		dataOwned = dataOwned || strings.Contains(c, "--chown="+user) && strings.HasSuffix(c, " /data")
		caCerts = caCerts || strings.Contains(c, "ca-certificates.crt")
		binary = binary || strings.HasSuffix(c, " /chatrelay")
	}
	if !dataOwned {
		t.Errorf("/data is not created owned by %s: the user could not write its volume", user)
	}
	if !caCerts && find(final, "FROM")[0] == "scratch" {
		t.Error("no CA certificates in a scratch image: HTTPS to Slack and Discord would fail")
	}
	if !binary {
		t.Error("the binary is not copied to /chatrelay")
	}
	if v := find(final, "VOLUME"); !slices.ContainsFunc(v, func(s string) bool { return strings.Contains(s, `"/data"`) || s == "/data" }) {
		t.Errorf("VOLUME %v lacks /data", v)
	}
	if env := strings.Join(find(final, "ENV"), " "); !strings.Contains(env, "CHATRELAY_STORE_PATH=/data") ||
		!strings.Contains(env, "CHATRELAY_LISTEN=0.0.0.0:") {
		t.Errorf("ENV %q: the store must be on /data and the listener reachable from outside the container", env)
	}
	hc := find(final, "HEALTHCHECK")
	if len(hc) != 1 || !strings.HasSuffix(hc[0], `CMD ["/chatrelay", "healthcheck"]`) {
		t.Errorf("HEALTHCHECK %v; want CMD [\"/chatrelay\", \"healthcheck\"] (exec form: scratch has no shell, nor curl)", hc)
	}
	if ep := find(final, "ENTRYPOINT"); len(ep) != 1 || ep[0] != `["/chatrelay"]` {
		t.Errorf("ENTRYPOINT %v; want [\"/chatrelay\"]", ep)
	}
	if cmd := find(final, "CMD"); len(cmd) != 1 || cmd[0] != `["serve"]` {
		t.Errorf("CMD %v; want [\"serve\"]", cmd)
	}
	ignore, err := os.ReadFile("../.dockerignore")
	if err != nil || !strings.Contains(string(ignore), "chatrelay-data") || !strings.Contains(string(ignore), ".git") {
		t.Errorf(".dockerignore must keep data and .git out of the build context: %v", err)
	}
}

// TestContainerBinary builds the binary as the Dockerfile does and checks
// that it is static (runs on scratch), carries the version and commit, and
// that its health check command answers as the HEALTHCHECK needs: exit 0
// only when the relay is ready.
func TestContainerBinary(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary without cgo")
	}
	consultSources(t)
	bin := filepath.Join(t.TempDir(), "chatrelay")
	build := strings.NewReplacer("${VERSION}", "9.9.9-test", "${COMMIT}", "deadbee", "/out/chatrelay", bin, "./cmd/chatrelay", "../cmd/chatrelay").Replace(dockerBuild)
	cmd := exec.Command("sh", "-c", build)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build, err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has an ELF interpreter: it is dynamically linked and would not run on scratch")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs %v", libs)
	}

	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "chatrelay 9.9.9-test (commit deadbee, go") {
		t.Errorf("version: %v %s", err, out)
	}
	if out, err := exec.Command(bin, "healthcheck", "--help").CombinedOutput(); err != nil {
		t.Errorf("healthcheck --help: %v %s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	hc := exec.Command(bin, "healthcheck", "--timeout", "2s")
	hc.Dir = t.TempDir() // no chatrelay.yaml: embedded defaults plus the image's variables
	hc.Env = append(os.Environ(), "CHATRELAY_LISTEN="+addr)
	out, err = hc.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "not ready: GET http://"+addr+"/readyz") {
		t.Errorf("healthcheck with nothing listening: %v %s; want exit 1, not ready", err, out)
	}
}

// TestSystemdUnit checks the unit's promises (SPEC §12 and the README):
// its own user, a state directory, hardening, restart on failure, no
// capability unless the drop-in grants only CAP_NET_BIND_SERVICE.
func TestSystemdUnit(t *testing.T) {
	t.Parallel()
	unit := parseUnit(t, "chatrelay.service")
	want := map[string]string{
		"DynamicUser": "yes", "StateDirectory": "chatrelay", "Restart": "on-failure", "NoNewPrivileges": "yes",
		"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "CapabilityBoundingSet": "",
		"AmbientCapabilities": "", "WorkingDirectory": "%S/chatrelay",
	}
	for k, v := range want {
		got, ok := unit["Service."+k]
		if !ok || got[len(got)-1] != v {
			t.Errorf("[Service] %s=%v; want %q", k, got, v)
		}
	}
	if exec := unit["Service.ExecStart"]; len(exec) != 1 || !strings.Contains(exec[0], "chatrelay serve --config /etc/chatrelay/chatrelay.yaml") {
		t.Errorf("ExecStart=%v", exec)
	}
	dropIn := parseUnit(t, "bind-privileged-ports.conf")
	if len(dropIn) != 2 || dropIn["Service.CapabilityBoundingSet"][0] != "CAP_NET_BIND_SERVICE" ||
		dropIn["Service.AmbientCapabilities"][0] != "CAP_NET_BIND_SERVICE" {
		t.Errorf("the drop-in must grant CAP_NET_BIND_SERVICE and nothing else: %v", dropIn)
	}

	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze not installed: the unit's syntax is not verified here (.ci/run does where it exists)")
		return
	}
	// verify wants ExecStart to exist: point it at a binary that does.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile("chatrelay.service")
	ports, _ := os.ReadFile("bind-privileged-ports.conf")
	dir := t.TempDir()
	for name, content := range map[string]string{
		"chatrelay.service":       strings.ReplaceAll(string(raw), "/usr/local/bin/chatrelay", self),
		"chatrelay-ports.service": strings.ReplaceAll(string(raw), "/usr/local/bin/chatrelay", self) + string(ports),
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("systemd-analyze", "verify", p).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
		}
	}
}

// TestConfigInstalledReadable: the install steps (the unit's header, the
// README) leave the config readable by the unit's dynamic user, which
// systemd makes up at start and no file can be owned by or grouped with:
// a config installed 0640 root:root stops the service at its first start
// ("permission denied").
func TestConfigInstalledReadable(t *testing.T) {
	t.Parallel()
	install := regexp.MustCompile(`install\s+(?:-\S+\s+)*-m\s*(0?[0-7]{3})\s+(?:-\S+\s+)*chatrelay\.yaml\b`)
	found := 0
	for _, path := range []string{"chatrelay.service", "../README.md"} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range install.FindAllStringSubmatch(string(b), -1) {
			found++
			mode, err := strconv.ParseUint(m[1], 8, 32)
			if err != nil || mode&0o004 == 0 {
				t.Errorf("%s: %q leaves the config unreadable by the service's dynamic user", path, m[0])
			}
		}
	}
	if found < 2 {
		t.Fatalf("found %d config install steps; want the unit's and the README's", found)
	}
}

// parseUnit reads a systemd unit file into "Section.Key" → values.
func parseUnit(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	section := ""
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: %q is not key=value", path, line)
			}
			key := section + "." + strings.TrimSpace(k)
			out[key] = append(out[key], strings.TrimSpace(v))
		}
	}
	return out
}

// consultSources stats every source file the binary is built from: go test
// caches a result by what the test process itself read, and the binary is
// built by a child process, so without this a change in cmd/chatrelay would
// leave a stale cached PASS.
func consultSources(t *testing.T) {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f",
		`{{if .Module}}{{if .Module.Main}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}
{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}
{{end}}{{end}}{{end}}`, "../cmd/chatrelay").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, f := range append(strings.Fields(string(out)), "../go.mod", "../go.sum") {
		if _, err := os.Stat(f); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCertbotDeployHook runs the hook as certbot would and checks that the
// files land renamed into place, the key readable by the group only, and
// that they load as a pair.
func TestCertbotDeployHook(t *testing.T) {
	t.Parallel()
	live, target := t.TempDir(), t.TempDir()
	pair := certstest.SelfSigned(t, certstest.Options{}, "relay.example.com")
	if err := os.WriteFile(filepath.Join(live, "fullchain.pem"), pair.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(live, "privkey.pem"), pair.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	group := strconv.Itoa(os.Getgid())
	cmd := exec.Command("sh", "certbot-deploy-hook.sh")
	cmd.Env = append(os.Environ(), "RENEWED_LINEAGE="+live, "CHATRELAY_TLS_DIR="+target, "CHATRELAY_TLS_GROUP="+group)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hook: %v\n%s", err, out)
	}
	cert, key := filepath.Join(target, "fullchain.pem"), filepath.Join(target, "privkey.pem")
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("privkey.pem: %v %v; want mode 0640", fi, err)
	}
	if _, err := certs.LoadPair(cert, key); err != nil {
		t.Fatal(err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(target, ".*.new")); len(leftovers) > 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}
}
