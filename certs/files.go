// Package certs provides the certificates of chatrelay's public listener:
// a key pair read from PEM files and reloaded when the files change
// (Files), or certificates obtained and renewed over ACME with certmagic
// (ACME). Both hand a *tls.Config to the listener; the relay itself never
// sees a certificate.
package certs

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// Files serves a certificate and key read from PEM files and reloads them
// when either file changes: a renewal by certbot (a symlink moved to new
// files), cert-manager or a Kubernetes secret (an atomic rename or symlink
// swap) or a copy over the old file is picked up at the next TLS handshake,
// without a restart. Every handshake re-stats both files (two stat calls,
// no read); they are read again only when one changed. A pair that does
// not load (half-written, key and certificate from different renewals) is
// logged once and the previous pair kept, so a renewal in progress never
// breaks the listener.
type Files struct {
	certFile, keyFile string
	log               *slog.Logger
	now               func() time.Time

	mu      sync.Mutex
	cur     *tls.Certificate
	curAt   [2]os.FileInfo // what the files were when cur was read
	tried   [2]os.FileInfo // the last attempt that failed, and when
	triedAt time.Time
	missing bool // a file was missing at the last handshake (logged)
}

// retryFailedLoad is how soon a pair that failed to load is read again
// when the files show no further change (a change is retried at once).
const retryFailedLoad = time.Second

// NewFiles reads the pair once and fails if it does not load; the error
// names the file at fault. logger gets a line for every reload and every
// failed one.
func NewFiles(certFile, keyFile string, logger *slog.Logger) (*Files, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := &Files{certFile: certFile, keyFile: keyFile, log: logger, now: time.Now}
	st, err := f.stat()
	if err != nil {
		return nil, err
	}
	cert, err := LoadPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	f.cur, f.curAt = cert, st
	if now := f.now(); now.After(cert.Leaf.NotAfter) {
		f.log.Warn("TLS certificate loaded, but it has expired: clients will refuse it until the files are renewed",
			certAttrs(cert.Leaf, now)...)
	} else {
		f.log.Info("TLS certificate loaded", certAttrs(cert.Leaf, now)...)
	}
	return f, nil
}

// TLSConfig returns a server configuration that serves the current pair.
func (f *Files) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: f.GetCertificate}
}

// GetCertificate implements tls.Config.GetCertificate.
func (f *Files) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return f.Current(), nil
}

// Current returns the pair to serve, reloading it first if the files
// changed since it was read.
func (f *Files) Current() *tls.Certificate {
	st, statErr := f.stat()
	f.mu.Lock()
	defer f.mu.Unlock()
	if statErr != nil {
		// Between a delete and a rename, or a mount being swapped: keep
		// serving, and say so once.
		if !f.missing {
			f.log.Warn("TLS certificate files cannot be read; serving the certificate loaded before", "err", statErr)
			f.missing = true
		}
		return f.cur
	}
	f.missing = false
	if sameFiles(st, f.curAt) {
		return f.cur
	}
	now := f.now()
	if sameFiles(st, f.tried) && now.Sub(f.triedAt) < retryFailedLoad {
		return f.cur
	}
	cert, err := LoadPair(f.certFile, f.keyFile)
	if err != nil {
		if !sameFiles(st, f.tried) {
			f.log.Warn("TLS certificate files changed but do not load; serving the certificate loaded before "+
				"until they do", "err", err)
		}
		f.tried, f.triedAt = st, now
		return f.cur
	}
	f.cur, f.curAt, f.tried = cert, st, [2]os.FileInfo{}
	f.log.Info("TLS certificate reloaded", certAttrs(cert.Leaf, now)...)
	return f.cur
}

func (f *Files) stat() ([2]os.FileInfo, error) {
	var out [2]os.FileInfo
	for i, p := range []string{f.certFile, f.keyFile} {
		fi, err := os.Stat(p)
		if err != nil {
			return out, err
		}
		out[i] = fi
	}
	return out, nil
}

// sameFiles reports whether both files are unchanged: the same file (device
// and inode: a rename or a moved symlink makes another one), size and
// modification time (a copy over the old file).
func sameFiles(a, b [2]os.FileInfo) bool {
	for i := range a {
		if a[i] == nil || b[i] == nil || !os.SameFile(a[i], b[i]) ||
			a[i].Size() != b[i].Size() || !a[i].ModTime().Equal(b[i].ModTime()) {
			return false
		}
	}
	return true
}

func certAttrs(leaf *x509.Certificate, now time.Time) []any {
	if leaf == nil {
		return nil
	}
	attrs := []any{"names", strings.Join(Names(leaf), ","), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339)}
	if now.After(leaf.NotAfter) {
		attrs = append(attrs, "expired", true)
	}
	return attrs
}

// Names are the DNS names and IP addresses a certificate is valid for.
func Names(leaf *x509.Certificate) []string {
	out := append([]string(nil), leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		out = append(out, ip.String())
	}
	if len(out) == 0 && leaf.Subject.CommonName != "" {
		out = append(out, leaf.Subject.CommonName)
	}
	return out
}

// PairError says which of the two files is at fault and why.
type PairError struct {
	File string // "cert_file" or "key_file"
	Path string
	Err  error
}

func (e *PairError) Error() string { return e.File + " " + e.Path + ": " + e.Err.Error() }
func (e *PairError) Unwrap() error { return e.Err }

// ErrMismatch is wrapped by a PairError when the key is not the
// certificate's.
var ErrMismatch = errors.New("the private key does not belong to the certificate")

// LoadPair reads and checks a PEM certificate (chain) and its private key.
// Its error is a *PairError naming the file at fault: unreadable, not PEM,
// no certificate or key in it, or a key that is not the certificate's.
func LoadPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, &PairError{File: "cert_file", Path: certFile, Err: readErr(err)}
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, &PairError{File: "key_file", Path: keyFile, Err: readErr(err)}
	}
	leaf, err := parseCert(certPEM)
	if err != nil {
		return nil, &PairError{File: "cert_file", Path: certFile, Err: err}
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, &PairError{File: "key_file", Path: keyFile, Err: err}
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return nil, &PairError{File: "key_file", Path: keyFile, Err: fmt.Errorf("%w %s", ErrMismatch, certFile)}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil { // checked above; this is what remains (an unsupported key type)
		return nil, &PairError{File: "key_file", Path: keyFile, Err: err}
	}
	return &cert, nil
}

// parseCert returns the first certificate of a PEM chain.
func parseCert(b []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, errors.New("no PEM certificate in it (a block starting with -----BEGIN CERTIFICATE-----)")
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("not a valid certificate: %w", err)
		}
		return leaf, nil
	}
}

// parseKey returns the first private key of a PEM file: PKCS #8, PKCS #1
// (RSA) or SEC 1 (EC), as certbot, openssl and cert-manager write them.
func parseKey(b []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, errors.New("no PEM private key in it (a block starting with -----BEGIN … PRIVATE KEY-----)")
		}
		if !strings.HasSuffix(block.Type, "PRIVATE KEY") {
			continue
		}
		if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
			if s, ok := k.(crypto.Signer); ok {
				return s, nil
			}
			return nil, fmt.Errorf("unsupported private key type %T", k)
		}
		if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
			return k, nil
		}
		if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
			return k, nil
		}
		return nil, fmt.Errorf("the %s block is not a private key Go can read (an encrypted key needs decrypting first: openssl pkey -in KEY -out KEY.plain)", block.Type)
	}
}

func readErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err // the path is already in PairError
	}
	return err
}
