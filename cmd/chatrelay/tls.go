package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/viper"

	"github.com/chatrelay/chatrelay/certs"
)

// HTTPSConfig is tls: HTTPS on the public listener (SPEC §12), from
// files reloaded when they change. Without it the listener speaks plain
// HTTP (loopback, or behind a proxy that terminates TLS).
type HTTPSConfig struct {
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
}

func setTLSDefaults(v *viper.Viper) {
	v.SetDefault("tls.cert_file", "")
	v.SetDefault("tls.key_file", "")
}

// Enabled reports whether the public listener speaks HTTPS.
func (t HTTPSConfig) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// scheme is the public listener's URL scheme.
func (t HTTPSConfig) scheme() string {
	if t.Enabled() {
		return "https"
	}
	return "http"
}

// validate checks the tls keys, reading the files: a serve that cannot
// load its certificate must not start.
func (t HTTPSConfig) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	switch {
	case t.CertFile == "" && t.KeyFile == "":
		return nil
	case t.CertFile == "":
		bad("tls.cert_file", "missing; tls.key_file needs its certificate: set tls.cert_file to the PEM certificate "+
			"(the full chain, e.g. certbot's fullchain.pem)")
		return errs
	case t.KeyFile == "":
		bad("tls.key_file", "missing; tls.cert_file needs its private key: set tls.key_file to the PEM key "+
			"(e.g. certbot's privkey.pem)")
		return errs
	}
	if _, err := certs.LoadPair(t.CertFile, t.KeyFile); err != nil {
		errs = append(errs, t.pairProblem(err))
	}
	return errs
}

// pairProblem turns a certs.PairError into a config problem naming the key
// and the fix.
func (t HTTPSConfig) pairProblem(err error) error {
	var pe *certs.PairError
	if !errors.As(err, &pe) {
		return fmt.Errorf("tls: %w", err)
	}
	key := "tls." + pe.File
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s: %s does not exist; point it at the PEM file", key, pe.Path)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s: %s is not readable by this user; give the user chatrelay runs as read access "+
			"(see the README's HTTPS section)", key, pe.Path)
	case errors.Is(err, certs.ErrMismatch):
		return fmt.Errorf("%s: %s is not the private key of tls.cert_file %s; use the key that was issued with "+
			"this certificate (certbot: privkey.pem beside fullchain.pem)", key, pe.Path, t.CertFile)
	}
	return fmt.Errorf("%s: %s: %v", key, pe.Path, pe.Err)
}

// summary describes the listener's TLS for check-config, with a warning
// for a certificate that has expired or soon will.
func (t HTTPSConfig) summary(now time.Time) string {
	if !t.Enabled() {
		return "plain HTTP (no tls: set tls.cert_file and tls.key_file to serve HTTPS)"
	}
	cert, err := certs.LoadPair(t.CertFile, t.KeyFile)
	if err != nil {
		return "HTTPS: " + err.Error()
	}
	leaf := cert.Leaf
	left := leaf.NotAfter.Sub(now)
	s := fmt.Sprintf("HTTPS from %s: %s, valid until %s", t.CertFile, strings.Join(certs.Names(leaf), ", "),
		leaf.NotAfter.UTC().Format(time.RFC3339))
	switch {
	case left <= 0:
		s += "; WARNING: expired: renew it (chatrelay picks up the new files without a restart)"
	case left < 14*24*time.Hour:
		s += fmt.Sprintf("; WARNING: expires in %s: check that renewal runs", left.Round(time.Hour))
	}
	return s
}

// frontTLS is HTTPS on the public listener.
type frontTLS struct {
	conf *tls.Config
}

// newFrontTLS prepares the public listener's TLS, or returns nil when it
// speaks plain HTTP.
func newFrontTLS(cfg *Config, logger *slog.Logger) (*frontTLS, error) {
	t := cfg.TLS
	if !t.Enabled() {
		return nil, nil
	}
	files, err := certs.NewFiles(t.CertFile, t.KeyFile, logger.With("component", "tls"))
	if err != nil {
		return nil, configError(t.pairProblem(err))
	}
	conf := files.TLSConfig()
	conf.NextProtos = []string{"h2", "http/1.1"}
	return &frontTLS{conf: conf}, nil
}

// wrap makes ln a TLS listener (with no TLS configured, it is ln).
func (f *frontTLS) wrap(ln net.Listener) net.Listener {
	if f == nil {
		return ln
	}
	return tls.NewListener(ln, f.conf)
}

// run keeps the certificates current until ctx ends.
func (f *frontTLS) run(ctx context.Context) error {
	if f == nil {
		return nil
	}
	return nil
}

// close releases what newFrontTLS took.
func (f *frontTLS) close() {}

// clientTLS is the TLS configuration of a command that talks to chatrelay
// over HTTPS (send-test, healthcheck): the system's roots, or only the
// certificates in cacert (a self-signed certificate, a private CA), or no
// verification at all.
func clientTLS(cacert string, insecure bool) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if insecure {
		conf.InsecureSkipVerify = true
		return conf, nil
	}
	if cacert == "" {
		return conf, nil
	}
	b, err := os.ReadFile(cacert)
	if err != nil {
		return nil, fmt.Errorf("--cacert: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("--cacert %s: no PEM certificate in it", cacert)
	}
	conf.RootCAs = pool
	return conf, nil
}

// tlsHint says what to do about a failed request to chatrelay.
func tlsHint(err error) string {
	var verify *tls.CertificateVerificationError
	var header tls.RecordHeaderError
	switch {
	case errors.As(err, &verify):
		return "(pass --cacert with the server's certificate or its CA, or --insecure for a quick local try)"
	case errors.As(err, &header):
		return "(the server does not speak TLS there: use http://, or set tls in its config)"
	}
	return "(is chatrelay serve running there?)"
}
