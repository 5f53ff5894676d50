package certstest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Pebble is a running Pebble, Let's Encrypt's ACME test server (a tool
// dependency in go.mod, built and cached by `go tool`).
type Pebble struct {
	DirURL  string         // the ACME directory
	Roots   *x509.CertPool // trusts Pebble's own HTTPS (the CA's roots for an ACME client)
	RootPEM []byte         // the same, as a ca_root file holds it
	Issuers *x509.CertPool // trusts the certificates Pebble issues
	// IssuerPEM is the root of the certificates Pebble issues (--cacert).
	IssuerPEM []byte
	log       *buffer
}

// Log is what Pebble printed.
func (p *Pebble) Log() string { return p.log.String() }

// PebbleOptions configure Pebble.
type PebbleOptions struct {
	TLSPort, HTTPPort int  // where its validation connects (TLS-ALPN-01, HTTP-01) on the domain's address
	Validity          int  // of the certificates it issues, in seconds (default 3600)
	AlwaysValid       bool // PEBBLE_VA_ALWAYS_VALID: accept every challenge without checking
}

// FreePort returns a loopback port free right now.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// StartPebble runs Pebble on loopback until the test ends. It validates
// for real unless AlwaysValid, without its random pauses, nonce
// rejections or authorization reuse. Skipped in -short.
func StartPebble(t testing.TB, o PebbleOptions) *Pebble {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the pebble ACME server")
	}
	if o.Validity == 0 {
		o.Validity = 3600
	}
	out, err := exec.Command("go", "tool", "-n", "pebble").CombinedOutput()
	if err != nil {
		t.Fatalf("go tool -n pebble: %v\n%s", err, out)
	}
	bin := strings.TrimSpace(string(out))
	dir := t.TempDir()
	tlsPair := SelfSigned(t, Options{}, "localhost", "127.0.0.1")
	certFile, keyFile := tlsPair.Write(t, dir)
	addr, mgmt := "127.0.0.1:"+strconv.Itoa(FreePort(t)), "127.0.0.1:"+strconv.Itoa(FreePort(t))
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress": addr, "managementListenAddress": mgmt,
		"certificate": certFile, "privateKey": keyFile,
		"httpPort": o.HTTPPort, "tlsPort": o.TLSPort,
		"ocspResponderURL": "", "externalAccountBindingRequired": false,
		"retryAfter":   map[string]int{"authz": 0, "order": 0},
		"keyAlgorithm": "ecdsa",
		"profiles": map[string]any{"default": map[string]any{
			"description": "for tests", "validityPeriod": o.Validity}},
	}}
	b, _ := json.Marshal(conf)
	confFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	p := &Pebble{DirURL: "https://" + addr + "/dir", RootPEM: tlsPair.CertPEM, log: &buffer{}}
	cmd := exec.Command(bin, "-config", confFile)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	if o.AlwaysValid {
		cmd.Env = append(cmd.Env, "PEBBLE_VA_ALWAYS_VALID=1")
	}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("pebble's log:\n%s", p.log)
		}
	})
	p.Roots = x509.NewCertPool()
	p.Roots.AddCert(tlsPair.Leaf)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: p.Roots}, DisableKeepAlives: true}}
	// The process prints its addresses just before it binds them; a
	// process has no event to wait on, so ask until it answers.
	deadline := time.Now().Add(30 * time.Second)
	var root []byte
	for {
		root, err = get(client, "https://"+mgmt+"/roots/0")
		if err == nil {
			if _, err = get(client, p.DirURL); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble did not start: %v\n%s", err, p.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.IssuerPEM = root
	p.Issuers = x509.NewCertPool()
	if !p.Issuers.AppendCertsFromPEM(root) {
		t.Fatalf("pebble's root is not PEM: %q", root)
	}
	return p
}

func get(c *http.Client, url string) ([]byte, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = &statusError{resp.StatusCode}
	}
	return b, err
}

type statusError struct{ code int }

func (e *statusError) Error() string { return "HTTP " + strconv.Itoa(e.code) }
