package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/relay/relaytest"
)

// pair is a self-signed certificate and its key, PEM-encoded.
type pair struct {
	cert, key []byte
	leaf      *x509.Certificate
}

type keyKind int

const (
	ecPKCS8 keyKind = iota
	ecSEC1
	rsaPKCS1
)

func newPair(t testing.TB, kind keyKind, names ...string) pair {
	t.Helper()
	var key crypto.Signer
	var err error
	if kind == rsaPKCS1 {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	var keyBlock *pem.Block
	switch kind {
	case ecPKCS8:
		b, _ := x509.MarshalPKCS8PrivateKey(key)
		keyBlock = &pem.Block{Type: "PRIVATE KEY", Bytes: b}
	case ecSEC1:
		b, _ := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
		keyBlock = &pem.Block{Type: "EC PRIVATE KEY", Bytes: b}
	case rsaPKCS1:
		keyBlock = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))}
	}
	return pair{cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: pem.EncodeToMemory(keyBlock), leaf: leaf}
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// serveTLS serves tlsConf on loopback and returns a function that makes one
// handshake and returns the certificate the server presented.
func serveTLS(t *testing.T, conf *tls.Config) func() *x509.Certificate {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", conf)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// The handshake runs on the first read; the client hangs up after it.
			_, _ = c.Read(make([]byte, 1))
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return func() *x509.Certificate {
		t.Helper()
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0]
	}
}

// TestFilesReloadOnChange renews the files the ways renewal tools do and
// checks that the next handshake serves the new certificate, no restart.
func TestFilesReloadOnChange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		renew func(t *testing.T, dir, certPath, keyPath string, p pair)
	}{
		{"atomic rename (cert-manager, install + mv)", func(t *testing.T, dir, certPath, keyPath string, p pair) {
			for _, f := range []struct {
				path string
				b    []byte
			}{{certPath, p.cert}, {keyPath, p.key}} {
				tmp := f.path + ".new"
				writeFile(t, tmp, f.b)
				if err := os.Rename(tmp, f.path); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"symlink moved to new files (certbot live/ -> archive/)", func(t *testing.T, dir, certPath, keyPath string, p pair) {
			archive := filepath.Join(dir, "archive")
			writeFile(t, filepath.Join(archive, "cert2.pem"), p.cert)
			writeFile(t, filepath.Join(archive, "privkey2.pem"), p.key)
			for _, l := range []struct{ link, target string }{{certPath, "cert2.pem"}, {keyPath, "privkey2.pem"}} {
				tmp := l.link + ".tmp"
				if err := os.Symlink(filepath.Join(archive, l.target), tmp); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmp, l.link); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"copied over the old files", func(t *testing.T, dir, certPath, keyPath string, p pair) {
			writeFile(t, certPath, p.cert)
			writeFile(t, keyPath, p.key)
			// A renewal comes days after the first write; give the files the
			// later time the clock would (a filesystem's timestamps are only
			// as fine as its clock tick).
			later := time.Now().Add(time.Minute)
			for _, p := range []string{certPath, keyPath} {
				if err := os.Chtimes(p, later, later); err != nil {
					t.Fatal(err)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
			first, second := newPair(t, ecPKCS8, "relay.example.com"), newPair(t, ecPKCS8, "relay.example.com")
			if strings.HasPrefix(tt.name, "symlink") {
				archive := filepath.Join(dir, "archive")
				if err := os.Mkdir(archive, 0o700); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(archive, "cert1.pem"), first.cert)
				writeFile(t, filepath.Join(archive, "privkey1.pem"), first.key)
				if err := os.Symlink(filepath.Join(archive, "cert1.pem"), certPath); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(filepath.Join(archive, "privkey1.pem"), keyPath); err != nil {
					t.Fatal(err)
				}
			} else {
				writeFile(t, certPath, first.cert)
				writeFile(t, keyPath, first.key)
			}
			logger, logs := relaytest.NewLogger()
			f, err := NewFiles(certPath, keyPath, logger)
			if err != nil {
				t.Fatal(err)
			}
			handshake := serveTLS(t, f.TLSConfig())
			if got := handshake(); got.SerialNumber.Cmp(first.leaf.SerialNumber) != 0 {
				t.Fatalf("served serial %v, want the first certificate %v", got.SerialNumber, first.leaf.SerialNumber)
			}
			tt.renew(t, dir, certPath, keyPath, second)
			if got := handshake(); got.SerialNumber.Cmp(second.leaf.SerialNumber) != 0 {
				t.Fatalf("after renewal served serial %v, want the renewed certificate %v", got.SerialNumber, second.leaf.SerialNumber)
			}
			if !strings.Contains(logs.String(), "TLS certificate reloaded") {
				t.Errorf("no reload logged:\n%s", logs)
			}
		})
	}
}

// TestFilesKeepServingWhileRenewalIsHalfDone: a certificate written before
// its key, or files briefly missing, never break the listener; the new
// pair is served once both halves are there, and the problem is logged
// once, not per handshake.
func TestFilesKeepServingWhileRenewalIsHalfDone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first, second := newPair(t, ecPKCS8, "relay.example.com"), newPair(t, rsaPKCS1, "relay.example.com")
	writeFile(t, certPath, first.cert)
	writeFile(t, keyPath, first.key)
	logger, logs := relaytest.NewLogger()
	f, err := NewFiles(certPath, keyPath, logger)
	if err != nil {
		t.Fatal(err)
	}
	handshake := serveTLS(t, f.TLSConfig())

	// The new certificate is in place, its key not yet.
	tmp := certPath + ".new"
	writeFile(t, tmp, second.cert)
	if err := os.Rename(tmp, certPath); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got := handshake(); got.SerialNumber.Cmp(first.leaf.SerialNumber) != 0 {
			t.Fatalf("half-renewed: served %v, want the old certificate", got.SerialNumber)
		}
	}
	if n := strings.Count(logs.String(), "do not load"); n != 1 {
		t.Fatalf("the half-done renewal was logged %d times, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "does not belong to the certificate") {
		t.Fatalf("the log does not say why:\n%s", logs)
	}

	// The key goes missing for a moment (a mount being swapped).
	if err := os.Remove(keyPath); err != nil {
		t.Fatal(err)
	}
	if got := handshake(); got.SerialNumber.Cmp(first.leaf.SerialNumber) != 0 {
		t.Fatalf("key missing: served %v, want the old certificate", got.SerialNumber)
	}
	handshake()
	if n := strings.Count(logs.String(), "cannot be read"); n != 1 {
		t.Fatalf("missing files logged %d times, want once:\n%s", n, logs)
	}

	writeFile(t, tmp, second.key)
	if err := os.Rename(tmp, keyPath); err != nil {
		t.Fatal(err)
	}
	if got := handshake(); got.SerialNumber.Cmp(second.leaf.SerialNumber) != 0 {
		t.Fatalf("renewal complete: served %v, want the new certificate %v", got.SerialNumber, second.leaf.SerialNumber)
	}
}

// TestFilesRetryAFailedLoadAfterAPause: files that stay as they were after
// a failed load (same size and time stamp) are read again after
// retryFailedLoad, not on every handshake and not never.
func TestFilesRetryAFailedLoadAfterAPause(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first, second := newPair(t, ecPKCS8, "a.example"), newPair(t, ecPKCS8, "a.example")
	writeFile(t, certPath, first.cert)
	writeFile(t, keyPath, first.key)
	f, err := NewFiles(certPath, keyPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	f.now = func() time.Time { return now }
	writeFile(t, certPath, second.cert) // the key is still the first one's
	if got := f.Current().Leaf; got.SerialNumber.Cmp(first.leaf.SerialNumber) != 0 {
		t.Fatal("served a certificate without its key")
	}
	st, _ := f.stat()
	// The key is now fixed in place without changing what stat shows
	// (same size, time stamp restored): only the retry can find it.
	keyStat := st[1]
	writeFile(t, keyPath, second.key)
	if err := os.Chtimes(keyPath, keyStat.ModTime(), keyStat.ModTime()); err != nil {
		t.Fatal(err)
	}
	if len(second.key) != len(first.key) {
		t.Fatal("P-256 PKCS #8 keys should all be one size")
	}
	if got := f.Current().Leaf; got.SerialNumber.Cmp(first.leaf.SerialNumber) != 0 {
		t.Fatal("reloaded before the retry pause")
	}
	now = now.Add(retryFailedLoad)
	if got := f.Current().Leaf; got.SerialNumber.Cmp(second.leaf.SerialNumber) != 0 {
		t.Fatal("not reloaded after the retry pause")
	}
}

func TestLoadPair(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ec, sec1, rsaKey, other := newPair(t, ecPKCS8, "a.example"), newPair(t, ecSEC1, "b.example"),
		newPair(t, rsaPKCS1, "c.example", "127.0.0.1"), newPair(t, ecPKCS8, "d.example")
	file := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, b)
		return p
	}
	chain := append(append([]byte{}, ec.cert...), other.cert...)
	tests := []struct {
		name      string
		cert, key string
		wantFile  string // "" when it loads
		wantIs    error
		wantText  string
	}{
		{name: "PKCS #8 EC key", cert: file("ec.crt", ec.cert), key: file("ec.key", ec.key)},
		{name: "SEC 1 EC key", cert: file("sec1.crt", sec1.cert), key: file("sec1.key", sec1.key)},
		{name: "PKCS #1 RSA key", cert: file("rsa.crt", rsaKey.cert), key: file("rsa.key", rsaKey.key)},
		{name: "chain, leaf first", cert: file("chain.crt", chain), key: file("ec2.key", ec.key)},
		{name: "cert missing", cert: filepath.Join(dir, "nope.crt"), key: file("k1", ec.key), wantFile: "cert_file", wantIs: fs.ErrNotExist},
		{name: "key missing", cert: file("c1", ec.cert), key: filepath.Join(dir, "nope.key"), wantFile: "key_file", wantIs: fs.ErrNotExist},
		{name: "cert not PEM", cert: file("junk.crt", []byte("hello")), key: file("k2", ec.key), wantFile: "cert_file", wantText: "no PEM certificate"},
		{name: "key file holds a certificate", cert: file("c2", ec.cert), key: file("k3", ec.cert), wantFile: "key_file", wantText: "no PEM private key"},
		{name: "cert file holds a key", cert: file("c3", ec.key), key: file("k4", ec.key), wantFile: "cert_file", wantText: "no PEM certificate"},
		{name: "key of another certificate", cert: file("c4", ec.cert), key: file("k5", other.key), wantFile: "key_file", wantIs: ErrMismatch},
		{name: "RSA key for an EC certificate", cert: file("c5", ec.cert), key: file("k6", rsaKey.key), wantFile: "key_file", wantIs: ErrMismatch},
		{name: "damaged certificate", cert: file("c6", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("xx")})),
			key: file("k7", ec.key), wantFile: "cert_file", wantText: "not a valid certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cert, err := LoadPair(tt.cert, tt.key)
			if tt.wantFile == "" {
				if err != nil || cert.Leaf == nil {
					t.Fatalf("LoadPair: %v", err)
				}
				return
			}
			var pe *PairError
			if !errors.As(err, &pe) || pe.File != tt.wantFile {
				t.Fatalf("err %v, want a PairError about %s", err, tt.wantFile)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Fatalf("err %v is not %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Fatalf("err %q lacks %q", err, tt.wantText)
			}
		})
	}
	if got := Names(rsaKey.leaf); strings.Join(got, ",") != "c.example,127.0.0.1" {
		t.Fatalf("Names = %v", got)
	}
}
