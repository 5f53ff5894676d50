package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
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

	"github.com/caddyserver/certmagic"

	"github.com/chatrelay/chatrelay/certs/certstest"
	"github.com/chatrelay/chatrelay/relay/relaytest"
)

// buildPebble builds Let's Encrypt's test ACME server (a tool dependency
// in go.mod) once per test run.
var buildPebble = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(toolDir, "pebble")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/letsencrypt/pebble/v2/cmd/pebble").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build pebble: %w\n%s", err, out)
	}
	return bin, nil
})

// pebble is a running Pebble ACME server.
type pebble struct {
	dirURL  string         // the ACME directory
	roots   *x509.CertPool // trusts pebble's own HTTPS (ACMEConfig.CARoots)
	rootPEM []byte         // the same, as a ca_root file holds it
	issuers *x509.CertPool // trusts the certificates pebble issues
	out     *relaytest.LogBuffer
}

type pebbleOptions struct {
	tlsPort, httpPort int // where its validation connects (TLS-ALPN-01, HTTP-01)
	validity          int // seconds
	alwaysValid       bool
}

// freePort returns a loopback port free right now.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startPebble runs pebble on loopback for the test. It validates for real
// (PEBBLE_VA_ALWAYS_VALID unset) unless told otherwise, without its random
// pauses and nonce rejections.
func startPebble(t *testing.T, o pebbleOptions) *pebble {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the pebble ACME server")
	}
	bin, err := buildPebble()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tlsPair := certstest.SelfSigned(t, certstest.Options{}, "localhost", "127.0.0.1")
	certFile, keyFile := tlsPair.Write(t, dir)
	addr, mgmt := "127.0.0.1:"+strconv.Itoa(freePort(t)), "127.0.0.1:"+strconv.Itoa(freePort(t))
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress": addr, "managementListenAddress": mgmt,
		"certificate": certFile, "privateKey": keyFile,
		"httpPort": o.httpPort, "tlsPort": o.tlsPort,
		"ocspResponderURL": "", "externalAccountBindingRequired": false,
		"retryAfter":   map[string]int{"authz": 0, "order": 0},
		"keyAlgorithm": "ecdsa",
		"profiles": map[string]any{"default": map[string]any{
			"description": "short-lived, for renewal tests", "validityPeriod": o.validity}},
	}}
	b, _ := json.Marshal(conf)
	confFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	p := &pebble{dirURL: "https://" + addr + "/dir", out: &relaytest.LogBuffer{}}
	cmd := exec.Command(bin, "-config", confFile)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	if o.alwaysValid {
		cmd.Env = append(cmd.Env, "PEBBLE_VA_ALWAYS_VALID=1")
	}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("pebble's log:\n%s", p.out)
		}
	})
	p.rootPEM = tlsPair.CertPEM
	p.roots = x509.NewCertPool()
	p.roots.AddCert(tlsPair.Leaf)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: p.roots}, DisableKeepAlives: true}}
	// The process announces its listeners just before it binds them; a
	// process has no event to wait on, so ask until it answers.
	deadline := time.Now().Add(30 * time.Second)
	var root []byte
	for {
		resp, err := client.Get("https://" + mgmt + "/roots/0")
		if err == nil {
			root, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				if r2, err := client.Get(p.dirURL); err == nil {
					r2.Body.Close()
					if r2.StatusCode == 200 {
						break
					}
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble did not start: %v\n%s", err, p.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.issuers = x509.NewCertPool()
	if !p.issuers.AppendCertsFromPEM(root) {
		t.Fatalf("pebble's root is not PEM: %q", root)
	}
	return p
}

// event is one certmagic event seen through ACMEConfig.OnEvent.
type event struct {
	name    string
	domain  string
	renewal bool
}

func eventRecorder() (chan event, func(string, map[string]any)) {
	ch := make(chan event, 100)
	return ch, func(name string, data map[string]any) {
		id, _ := data["identifier"].(string)
		if sans, ok := data["sans"].([]string); ok && len(sans) > 0 {
			id = sans[0] // cached_managed_cert
		}
		renewal, _ := data["renewal"].(bool)
		select {
		case ch <- event{name: name, domain: id, renewal: renewal}:
		default:
		}
	}
}

func waitEvent(t *testing.T, ch <-chan event, logs fmt.Stringer, want event) {
	t.Helper()
	timeout := time.After(45 * time.Second)
	for {
		select {
		case e := <-ch:
			if e.name == "cert_failed" {
				t.Fatalf("certificate failed while waiting for %+v:\n%s", want, logs)
			}
			if e == want {
				return
			}
		case <-timeout:
			t.Fatalf("no %+v within 45s:\n%s", want, logs)
		}
	}
}

// serveACME serves the ACME manager's TLS configuration on ln until the
// test ends.
func serveACME(t *testing.T, ln net.Listener, a *ACME) {
	t.Helper()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }),
		ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(tls.NewListener(ln, a.TLSConfig())) }()
	t.Cleanup(func() { srv.Close(); <-done })
}

// runACME runs a until the test ends.
func runACME(t *testing.T, a *ACME) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// handshake connects to addr as a client that trusts only pebble's issuer
// would, and returns the leaf certificate presented.
func handshake(t *testing.T, addr, serverName string, issuers *x509.CertPool) (*x509.Certificate, error) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: serverName, RootCAs: issuers})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// TestACMEObtainsServesAndRenews runs the whole life of a certificate
// against a real ACME server: pebble validates TLS-ALPN-01 on the
// listener itself, the certificate (valid 12 seconds) is served, renewed
// before it expires, and the renewed one served, all without a restart.
func TestACMEObtainsServesAndRenews(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	p := startPebble(t, pebbleOptions{tlsPort: port, httpPort: freePort(t), validity: 12})
	events, onEvent := eventRecorder()
	logger, logs := relaytest.NewLogger()
	a, err := NewACME(ACMEConfig{
		Domains: []string{"localhost"}, Email: "ops@chatrelay.test", CA: p.dirURL, CARoots: p.roots,
		Storage: &certmagic.FileStorage{Path: t.TempDir()}, ListenAddr: ln.Addr().String(),
		RenewCheckInterval: 500 * time.Millisecond, Logger: logger, OnEvent: onEvent,
	})
	if err != nil {
		t.Fatal(err)
	}
	serveACME(t, ln, a)
	runACME(t, a)

	// Obtained, then put in the cache that handshakes read.
	waitEvent(t, events, logs, event{name: "cert_obtained", domain: "localhost"})
	waitEvent(t, events, logs, event{name: "cached_managed_cert", domain: "localhost"})
	first, err := handshake(t, ln.Addr().String(), "localhost", p.issuers)
	if err != nil {
		t.Fatalf("handshake with the obtained certificate: %v", err)
	}
	if first.NotAfter.Sub(first.NotBefore) > time.Minute {
		t.Fatalf("certificate valid %s; the test wants pebble's short-lived one", first.NotAfter.Sub(first.NotBefore))
	}
	// A client that sends no server name (an IP in the URL, a health
	// check) gets the certificate too.
	if c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true}); err != nil {
		t.Errorf("handshake without a server name: %v", err)
	} else {
		c.Close()
	}

	waitEvent(t, events, logs, event{name: "cert_obtained", domain: "localhost", renewal: true})
	// certmagic puts the renewed certificate in its cache right after this
	// event and tells nobody; ask until it is served.
	deadline := time.Now().Add(10 * time.Second)
	for {
		renewed, err := handshake(t, ln.Addr().String(), "localhost", p.issuers)
		if err != nil {
			t.Fatalf("handshake after renewal: %v", err)
		}
		if renewed.SerialNumber.Cmp(first.SerialNumber) != 0 {
			if renewed.NotAfter.Before(first.NotAfter) {
				t.Fatalf("renewed certificate expires %s, before the first's %s", renewed.NotAfter, first.NotAfter)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the renewed certificate is not served:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, want := range []string{"obtaining a TLS certificate", "TLS certificate obtained", "TLS certificate renewed"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

// TestACMEHTTP01OnThePlainListener: with an HTTP listener configured, the
// HTTP-01 challenge is answered there (here the only one that can pass:
// pebble's TLS-ALPN-01 goes to a port nobody listens on), and every other
// request falls through to the handler behind.
func TestACMEHTTP01OnThePlainListener(t *testing.T) {
	t.Parallel()
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := startPebble(t, pebbleOptions{tlsPort: freePort(t), httpPort: httpLn.Addr().(*net.TCPAddr).Port, validity: 3600})
	events, onEvent := eventRecorder()
	logger, logs := relaytest.NewLogger()
	a, err := NewACME(ACMEConfig{
		Domains: []string{"localhost"}, Email: "ops@chatrelay.test", CA: p.dirURL, CARoots: p.roots,
		Storage: &certmagic.FileStorage{Path: t.TempDir()}, ListenAddr: tlsLn.Addr().String(),
		HTTPAddr: httpLn.Addr().String(), Logger: logger, OnEvent: onEvent,
	})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var challenges int
	fallthroughs := 0
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fallthroughs++
		mu.Unlock()
		w.WriteHeader(http.StatusTeapot)
	})
	h := a.HTTPHandler(next)
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
			mu.Lock()
			challenges++
			mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(httpLn) }()
	t.Cleanup(func() { srv.Close(); <-done })
	serveACME(t, tlsLn, a)
	runACME(t, a)

	// TLS-ALPN-01 may be tried first and fail; the order then succeeds on
	// HTTP-01.
	timeout := time.After(45 * time.Second)
	for cached := false; !cached; {
		select {
		case e := <-events:
			cached = e.name == "cached_managed_cert"
		case <-timeout:
			t.Fatalf("no certificate:\n%s", logs)
		}
	}
	mu.Lock()
	n := challenges
	mu.Unlock()
	if n == 0 {
		t.Fatal("the certificate was obtained without an HTTP-01 request")
	}
	if _, err := handshake(t, tlsLn.Addr().String(), "localhost", p.issuers); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + httpLn.Addr().String() + "/webhook")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	if resp.StatusCode != http.StatusTeapot || fallthroughs != 1 {
		t.Fatalf("a plain request answered %d (%d reached the handler behind)", resp.StatusCode, fallthroughs)
	}
}

// TestACMEFailureIsLoggedAndRetried: a domain the CA cannot validate (its
// name does not resolve, as when DNS does not point here yet) gives one
// clear warning, and the listener refuses handshakes rather than serve
// anything else. (certmagic keeps each name's retry backoff process-wide:
// this test's name is its own.)
func TestACMEFailureIsLoggedAndRetried(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := startPebble(t, pebbleOptions{tlsPort: freePort(t), httpPort: freePort(t), validity: 3600})
	events, onEvent := eventRecorder()
	logger, logs := relaytest.NewLogger()
	a, err := NewACME(ACMEConfig{
		Domains: []string{"unreachable.localhost"}, Email: "ops@chatrelay.test", CA: p.dirURL, CARoots: p.roots,
		Storage: &certmagic.FileStorage{Path: t.TempDir()}, ListenAddr: ln.Addr().String(),
		Logger: logger, OnEvent: onEvent,
	})
	if err != nil {
		t.Fatal(err)
	}
	serveACME(t, ln, a)
	runACME(t, a)
	timeout := time.After(45 * time.Second)
	for failed := false; !failed; {
		select {
		case e := <-events:
			if e.name == "cert_obtained" {
				t.Fatal("obtained a certificate nobody could validate")
			}
			failed = e.name == "cert_failed"
		case <-timeout:
			t.Fatalf("no failure reported:\n%s", logs)
		}
	}
	if !strings.Contains(logs.String(), "could not obtain a TLS certificate; retrying") ||
		!strings.Contains(logs.String(), "domain=unreachable.localhost") {
		t.Fatalf("the failure is not logged with its domain:\n%s", logs)
	}
	if _, err := handshake(t, ln.Addr().String(), "unreachable.localhost", p.issuers); err == nil {
		t.Fatal("a handshake succeeded without a certificate")
	}
}

func TestCheckDomain(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, want string
	}{
		{"relay.example.com", ""}, {"localhost", ""}, {"xn--bcher-kva.example", ""},
		{"203.0.113.7", "is an IP address"}, {"::1", "is an IP address"},
		{"*.example.com", "wildcard"}, {"relay", "not a domain name"}, {"https://relay.example.com", "not a domain name"},
		{"relay.example.com:443", "not a domain name"}, {"", "not a domain name"}, {".example.com", "not a domain name"},
	} {
		err := CheckDomain(tt.name)
		if (tt.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.want) {
			t.Errorf("CheckDomain(%q) = %v, want %q", tt.name, err, tt.want)
		}
	}
}

// pemCerts is the PEM of certificates, for a ca_root file.
func pemCerts(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}
