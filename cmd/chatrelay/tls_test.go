package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/certs/certstest"
	"github.com/chatrelay/chatrelay/relay/relaytest"
)

// httpsClient trusts only the given certificates.
func httpsClient(t testing.TB, trusted ...*x509.Certificate) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	for _, c := range trusted {
		pool.AddCert(c)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}
}

// TestServeHTTPSFromFiles is the README's HTTPS steps: a self-signed
// certificate in files, serve on it, curl --cacert /healthz, send-test
// --url https://… --cacert; then the files are renewed in place and the
// next connection gets the new certificate without a restart.
func TestServeHTTPSFromFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := certstest.SelfSigned(t, certstest.Options{}, "localhost", "127.0.0.1")
	certFile, keyFile := first.Write(t, dir)
	listen, adminAddr := freeAddr(t), freeAddr(t)
	port := listen[strings.LastIndexByte(listen, ':')+1:]
	const signing = "https-signing-secret"
	hook := newHookReceiver(t, 0)
	cfgPath := writeConfig(t, fmt.Sprintf(`
listen: %s
admin: {listen: %s}
signing_secrets: [%s]
log: {level: info, format: json}
store: {path: %s}
tls:
  cert_file: %s
  key_file: %s
sinks:
  - {name: crm, type: webhook, url: %s/in}
`, listen, adminAddr, signing, filepath.Join(dir, "data"), certFile, keyFile, hook.srv.URL))

	var out, errOut bytes.Buffer
	if code := run(t.Context(), []string{"check-config", "--config", cfgPath}, nil, &out, &errOut, os.Getenv); code != 0 ||
		!strings.Contains(out.String(), "listener: HTTPS from "+certFile+": localhost, 127.0.0.1, valid until") {
		t.Fatalf("check-config: exit %d\n%s%s", code, out.String(), errOut.String())
	}

	ctx, cancel := context.WithCancel(t.Context())
	var stdout, stderr relaytest.LogBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve", "--config", cfgPath}, nil, &stdout, &stderr, os.Getenv) }()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exit %d:\n%s", code, stderr.String())
		}
	}()

	client := httpsClient(t, first.Leaf)
	healthz := "https://localhost:" + port + "/healthz"
	relaytest.Eventually(t, 30*time.Second, "the HTTPS listener", func() bool {
		resp, err := client.Get(healthz)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	// Plain HTTP to the HTTPS port is refused, not served.
	if resp, err := http.Get("http://" + listen + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the HTTPS listener answered %d, want 400", resp.StatusCode)
		}
	}

	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, first.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	sendTest := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(t.Context(), append([]string{"send-test", "--config", cfgPath}, args...), nil, &out, &errOut, os.Getenv)
		return code, out.String(), errOut.String()
	}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"--url https://localhost --cacert", []string{"--url", "https://localhost:" + port + "/webhook", "--cacert", caFile}, 0, `"status":"accepted"`},
		{"default URL from the config (https, 127.0.0.1) --cacert", []string{"--cacert", caFile}, 0, `"status":"accepted"`},
		{"--insecure", []string{"--url", "https://localhost:" + port + "/webhook", "--insecure"}, 0, `"status":"accepted"`},
		{"self-signed without --cacert", []string{"--url", "https://localhost:" + port + "/webhook"}, 1, "pass --cacert"},
		{"--cacert that is not PEM", []string{"--cacert", cfgPath}, 2, "no PEM certificate"},
	}
	for _, tt := range tests {
		code, out, errOut := sendTest(tt.args...)
		if code != tt.wantCode || !strings.Contains(out+errOut, tt.wantOut) {
			t.Errorf("send-test %s: exit %d (want %d)\n%s%s", tt.name, code, tt.wantCode, out, errOut)
		}
	}
	for range 3 {
		<-hook.got
	}

	// Renewal: new files renamed over the old ones; the next handshake
	// presents the new certificate.
	second := certstest.SelfSigned(t, certstest.Options{}, "localhost", "127.0.0.1")
	second.Replace(t, certFile, keyFile)
	conn, err := tls.Dial("tcp", "localhost:"+port, &tls.Config{RootCAs: poolOf(second.Leaf)})
	if err != nil {
		t.Fatalf("handshake after renewal: %v", err)
	}
	got := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	if got.SerialNumber.Cmp(second.Leaf.SerialNumber) != 0 {
		t.Fatalf("after renewal the listener presents serial %v, want %v", got.SerialNumber, second.Leaf.SerialNumber)
	}
	if code, _ := httpGet(t, "http://"+adminAddr+"/metrics", ""); code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	_, metrics := httpGet(t, "http://"+adminAddr+"/metrics", "")
	if !strings.Contains(metrics, `chatrelay_build_info{commit="`) {
		t.Errorf("/metrics lacks chatrelay_build_info")
	}
	logs := stderr.String()
	// The refused handshake of send-test without --cacert is routine on
	// the internet: Debug, not a warning.
	if strings.Contains(logs, "TLS handshake error") {
		t.Errorf("a failed handshake was logged above debug:\n%s", logs)
	}
	for _, want := range []string{`"msg":"TLS certificate loaded"`, `"msg":"TLS certificate reloaded"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
}

func poolOf(certs ...*x509.Certificate) *x509.CertPool {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool
}

// TestCheckConfigReportsTLSProblems: every TLS problem is reported by
// check-config (and stops serve) with the key and what to do.
func TestCheckConfigReportsTLSProblems(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := certstest.SelfSigned(t, certstest.Options{}, "relay.example.com")
	other := certstest.SelfSigned(t, certstest.Options{}, "other.example.com")
	certFile, keyFile := good.Write(t, dir)
	otherDir := filepath.Join(dir, "other")
	if err := os.Mkdir(otherDir, 0o700); err != nil {
		t.Fatal(err)
	}
	_, otherKey := other.Write(t, otherDir)
	expired := certstest.SelfSigned(t, certstest.Options{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}, "old.example.com")
	expDir := filepath.Join(dir, "expired")
	if err := os.Mkdir(expDir, 0o700); err != nil {
		t.Fatal(err)
	}
	expCert, expKey := expired.Write(t, expDir)

	tests := []struct {
		name     string
		tls      string
		wantCode int
		want     []string
	}{
		{"cert_file missing", fmt.Sprintf("{cert_file: %s/nope.pem, key_file: %s}", dir, keyFile), 2,
			[]string{"tls.cert_file: " + dir + "/nope.pem does not exist"}},
		{"key of another certificate", fmt.Sprintf("{cert_file: %s, key_file: %s}", certFile, otherKey), 2,
			[]string{"tls.key_file: " + otherKey + " is not the private key of tls.cert_file " + certFile}},
		{"only cert_file", fmt.Sprintf("{cert_file: %s}", certFile), 2, []string{"tls.key_file: missing"}},
		{"only key_file", fmt.Sprintf("{key_file: %s}", keyFile), 2, []string{"tls.cert_file: missing"}},
		{"a directory, not a file", fmt.Sprintf("{cert_file: %s, key_file: %s}", dir, keyFile), 2, []string{"tls.cert_file: " + dir + ":"}},
		{"key and cert swapped", fmt.Sprintf("{cert_file: %s, key_file: %s}", keyFile, certFile), 2, []string{"tls.cert_file:", "no PEM certificate"}},
		{"unknown key", "{cert_fle: x}", 2, []string{`tls.cert_fle: unknown key (did you mean "cert_file"?)`}},
		{"expired: valid config, with a warning", fmt.Sprintf("{cert_file: %s, key_file: %s}", expCert, expKey), 0,
			[]string{"listener: HTTPS from " + expCert + ": old.example.com", "WARNING: expired"}},
		{"acme domain is an IP", "{acme: {domains: [203.0.113.7]}}", 2, []string{"tls.acme.domains[0]: 203.0.113.7 is an IP address"}},
		{"acme wildcard", "{acme: {domains: [relay.example.com, \"*.example.com\"]}}", 2, []string{"tls.acme.domains[1]: *.example.com is a wildcard"}},
		{"acme domain twice", "{acme: {domains: [relay.example.com, Relay.example.com]}}", 2, []string{"tls.acme.domains[1]: Relay.example.com is listed twice"}},
		{"acme internal name with Let's Encrypt", "{acme: {domains: [relay.internal]}}", 2, []string{"tls.acme.domains[0]: relay.internal is an internal name"}},
		{"acme without domains", "{acme: {email: ops@example.com}}", 2, []string{"tls.acme.domains: none"}},
		{"acme and files", fmt.Sprintf("{cert_file: %s, key_file: %s, acme: {domains: [relay.example.com]}}", certFile, keyFile), 2,
			[]string{"tls.acme: set together with tls.cert_file"}},
		{"acme bad email", "{acme: {domains: [relay.example.com], email: ops}}", 2, []string{`tls.acme.email: "ops" is not an e-mail address`}},
		{"acme ca over http", "{acme: {domains: [relay.example.com], ca: http://ca.example.com/dir}}", 2, []string{"tls.acme.ca:", "served over https"}},
		{"acme ca_root missing", fmt.Sprintf("{acme: {domains: [relay.example.com], ca_root: %s/nope.pem}}", dir), 2, []string{"tls.acme.ca_root:", "nope.pem"}},
		{"acme ca_root not PEM", fmt.Sprintf("{acme: {domains: [relay.example.com], ca_root: %s}}", keyFile), 2, []string{"tls.acme.ca_root:", "no PEM certificate"}},
		{"http_listen without tls", `{http_listen: ":80"}`, 2, []string{"tls.http_listen: set without"}},
		{"http_listen not an address", fmt.Sprintf("{cert_file: %s, key_file: %s, http_listen: eighty}", certFile, keyFile), 2, []string{"tls.http_listen:"}},
		{"acme on another port", "{acme: {domains: [relay.example.com]}}", 0,
			[]string{"listener: HTTPS with ACME: relay.example.com", "NOTE: the CA validates on port 443: forward it to port 8080"}},
		{"acme", "{acme: {domains: [relay.example.com], email: ops@example.com}, http_listen: \":80\"}", 0,
			[]string{"listener: HTTPS with ACME: relay.example.com from https://acme-v02.api.letsencrypt.org/directory; HTTP-01 and redirects on :80"}},
		{"good", fmt.Sprintf("{cert_file: %s, key_file: %s}", certFile, keyFile), 0, []string{"listener: HTTPS from " + certFile + ": relay.example.com, valid until"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfgPath := writeConfig(t, fmt.Sprintf(`
signing_secrets: [s3cret-signing]
sinks: [{name: c, type: console}]
tls: %s
`, tt.tls))
			var out, errOut bytes.Buffer
			code := run(t.Context(), []string{"check-config", "--config", cfgPath}, nil, &out, &errOut, os.Getenv)
			text := out.String() + errOut.String()
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d:\n%s", code, tt.wantCode, text)
			}
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("output lacks %q:\n%s", w, text)
				}
			}
		})
	}
}

func TestRedirectToHTTPS(t *testing.T) {
	t.Parallel()
	tests := []struct{ listen, host, path, want string }{
		{":443", "relay.example.com", "/webhook?x=1", "https://relay.example.com/webhook?x=1"},
		{":443", "relay.example.com:80", "/", "https://relay.example.com/"},
		{"0.0.0.0:8443", "relay.example.com", "/healthz", "https://relay.example.com:8443/healthz"},
		{":443", "[2001:db8::1]:80", "/", "https://[2001:db8::1]/"},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "http://"+tt.host+tt.path, nil)
		redirectToHTTPS(tt.listen).ServeHTTP(rec, req)
		if rec.Code != http.StatusPermanentRedirect || rec.Header().Get("Location") != tt.want {
			t.Errorf("%s via %s: %d %q, want 308 %q", tt.host+tt.path, tt.listen, rec.Code, rec.Header().Get("Location"), tt.want)
		}
	}
}
