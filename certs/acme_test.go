package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chatrelay/chatrelay/certs/certstest"
	"github.com/chatrelay/chatrelay/certs/natskv"
	"github.com/chatrelay/chatrelay/relay/relaytest"
)

// acmeSerial: tests that obtain a certificate for localhost (the one name
// pebble's validation resolves to this machine) run one at a time, not in
// parallel, because certmagic keeps the challenges it is solving in
// process-wide memory by domain name: two at once would answer each
// other's validations.

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
	// Not parallel: see acmeSerial.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	p := certstest.StartPebble(t, certstest.PebbleOptions{TLSPort: port, HTTPPort: certstest.FreePort(t), Validity: 12})
	events, onEvent := eventRecorder()
	logger, logs := relaytest.NewLogger()
	a, err := NewACME(ACMEConfig{
		Domains: []string{"localhost"}, Email: "ops@chatrelay.test", CA: p.DirURL, CARoots: p.Roots,
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
	first, err := handshake(t, ln.Addr().String(), "localhost", p.Issuers)
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
		renewed, err := handshake(t, ln.Addr().String(), "localhost", p.Issuers)
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
	// Not parallel: see acmeSerial.
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := certstest.StartPebble(t, certstest.PebbleOptions{TLSPort: certstest.FreePort(t), HTTPPort: httpLn.Addr().(*net.TCPAddr).Port, Validity: 3600})
	events, onEvent := eventRecorder()
	logger, logs := relaytest.NewLogger()
	a, err := NewACME(ACMEConfig{
		Domains: []string{"localhost"}, Email: "ops@chatrelay.test", CA: p.DirURL, CARoots: p.Roots,
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
	if _, err := handshake(t, tlsLn.Addr().String(), "localhost", p.Issuers); err != nil {
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
	p := certstest.StartPebble(t, certstest.PebbleOptions{TLSPort: certstest.FreePort(t), HTTPPort: certstest.FreePort(t), Validity: 3600})
	events, onEvent := eventRecorder()
	logger, logs := relaytest.NewLogger()
	a, err := NewACME(ACMEConfig{
		Domains: []string{"unreachable.localhost"}, Email: "ops@chatrelay.test", CA: p.DirURL, CARoots: p.Roots,
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
	if _, err := handshake(t, ln.Addr().String(), "unreachable.localhost", p.Issuers); err == nil {
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

// TestACMEReplicasShareOneCertificate: two replicas on one NATS bucket
// manage the same domain at once; one obtains the certificate while the
// other waits on its lock, then both serve that same certificate.
// (Not parallel: see acmeSerial.)
func TestACMEReplicasShareOneCertificate(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	lnA, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lnB, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The CA validates on A's port, whichever replica placed the order.
	p := certstest.StartPebble(t, certstest.PebbleOptions{TLSPort: lnA.Addr().(*net.TCPAddr).Port, HTTPPort: certstest.FreePort(t)})
	events, onEvent := eventRecorder()
	logger, logs := relaytest.NewLogger()
	replica := func(ln net.Listener) *ACME {
		nc, err := natsgo.Connect(ns.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		storage, err := natskv.New(t.Context(), js, natskv.Options{Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = storage.Close(context.Background()) })
		a, err := NewACME(ACMEConfig{
			Domains: []string{"localhost"}, Email: "ops@chatrelay.test", CA: p.DirURL, CARoots: p.Roots,
			Storage: storage, ListenAddr: ln.Addr().String(), Logger: logger, OnEvent: onEvent,
		})
		if err != nil {
			t.Fatal(err)
		}
		serveACME(t, ln, a)
		return a
	}
	a, b := replica(lnA), replica(lnB)
	runACME(t, a)
	runACME(t, b)

	obtained, cached := 0, 0
	timeout := time.After(45 * time.Second)
	for cached < 2 {
		select {
		case e := <-events:
			switch e.name {
			case "cert_obtained":
				obtained++
			case "cached_managed_cert":
				cached++
			case "cert_failed":
				t.Fatalf("a replica failed:\n%s", logs)
			}
		case <-timeout:
			t.Fatalf("both replicas did not get a certificate (%d obtained, %d cached):\n%s", obtained, cached, logs)
		}
	}
	if obtained != 1 {
		t.Fatalf("%d certificates obtained for two replicas, want 1:\n%s", obtained, logs)
	}
	certA, err := handshake(t, lnA.Addr().String(), "localhost", p.Issuers)
	if err != nil {
		t.Fatal(err)
	}
	certB, err := handshake(t, lnB.Addr().String(), "localhost", p.Issuers)
	if err != nil {
		t.Fatal(err)
	}
	if certA.SerialNumber.Cmp(certB.SerialNumber) != 0 {
		t.Fatalf("the replicas serve different certificates: %v and %v", certA.SerialNumber, certB.SerialNumber)
	}
}
