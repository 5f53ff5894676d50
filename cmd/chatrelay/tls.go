package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/chatrelay/chatrelay/certs"
	"github.com/chatrelay/chatrelay/certs/natskv"
)

// HTTPSConfig is tls: HTTPS on the public listener (SPEC §12), from
// certificate files reloaded when they change, or from ACME. Without it the
// listener speaks plain HTTP (loopback, or behind a proxy that terminates
// TLS).
type HTTPSConfig struct {
	CertFile string     `mapstructure:"cert_file"`
	KeyFile  string     `mapstructure:"key_file"`
	ACME     ACMEConfig `mapstructure:"acme"`
	// HTTPListen is an optional plain-HTTP listener (":80"): it answers
	// ACME HTTP-01 challenges and redirects everything else to https.
	HTTPListen string `mapstructure:"http_listen"`
}

// ACMEConfig is tls.acme: certificates obtained and renewed by chatrelay.
type ACMEConfig struct {
	Domains []string `mapstructure:"domains"`
	Email   string   `mapstructure:"email"`
	CA      string   `mapstructure:"ca"`      // directory URL; default Let's Encrypt
	CARoot  string   `mapstructure:"ca_root"` // PEM file: roots for a private CA's own HTTPS
}

// Enabled reports whether the public listener speaks HTTPS.
func (t HTTPSConfig) Enabled() bool { return t.files() || t.ACME.enabled() }

func (t HTTPSConfig) files() bool { return t.CertFile != "" || t.KeyFile != "" }

func (a ACMEConfig) enabled() bool {
	return len(a.Domains) > 0 || a.Email != "" || a.CA != "" || a.CARoot != ""
}

// localURL is the URL of path on the public listener for a command on
// this machine (send-test, healthcheck), and the server name to check its
// certificate against: the first ACME domain (the certificate is for it,
// not for 127.0.0.1), else the host in the URL.
func localURL(cfg *Config, path string) (u, serverName string) {
	if cfg == nil || cfg.Listen == "" {
		return "http://127.0.0.1:8080" + path, ""
	}
	scheme := "http"
	if cfg.TLS.Enabled() {
		scheme = "https"
	}
	if len(cfg.TLS.ACME.Domains) > 0 {
		serverName = cfg.TLS.ACME.Domains[0]
	}
	return scheme + "://" + clientAddr(cfg.Listen) + path, serverName
}

// validate checks the tls keys, reading the files: a serve that cannot
// load its certificate must not start.
func (t HTTPSConfig) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if t.HTTPListen != "" {
		if err := checkHostPort(t.HTTPListen); err != nil {
			bad("tls.http_listen", "%v; set it to the plain-HTTP address, like :80", err)
		} else if !t.Enabled() {
			bad("tls.http_listen", "set without tls.cert_file or tls.acme; it only redirects to HTTPS and answers ACME challenges")
		}
	}
	if t.ACME.enabled() {
		if t.files() {
			bad("tls.acme", "set together with tls.cert_file/tls.key_file; use certificate files or ACME, not both")
		}
		return append(errs, t.ACME.validate()...)
	}
	switch {
	case t.CertFile == "" && t.KeyFile == "":
		return errs
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

func (a ACMEConfig) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if len(a.Domains) == 0 {
		bad("tls.acme.domains", "none; list the domain names Chat Data posts to, like [relay.example.com] "+
			"(their DNS must point at this host)")
	}
	seen := map[string]bool{}
	for i, d := range a.Domains {
		key := fmt.Sprintf("tls.acme.domains[%d]", i)
		if err := certs.CheckDomain(d); err != nil {
			bad(key, "%v", err)
		} else if (a.CA == "" || strings.Contains(a.CA, "api.letsencrypt.org")) && !certmagic.SubjectQualifiesForPublicCert(d) {
			bad(key, "%s is an internal name; Let's Encrypt certifies only public domain names: use one, or a private "+
				"CA (tls.acme.ca and ca_root)", d)
		} else if seen[strings.ToLower(d)] {
			bad(key, "%s is listed twice", d)
		}
		seen[strings.ToLower(d)] = true
	}
	if a.Email != "" && (!strings.Contains(a.Email, "@") || strings.ContainsAny(a.Email, " <>,")) {
		bad("tls.acme.email", "%q is not an e-mail address; the CA writes to it about expiring or revoked certificates", a.Email)
	}
	if a.CA != "" {
		u, err := url.Parse(a.CA)
		switch {
		case err != nil || u.Host == "":
			bad("tls.acme.ca", "%q is not a URL; set it to the CA's ACME directory, like %s", a.CA, certs.LetsEncrypt)
		case u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Host)):
			bad("tls.acme.ca", "%q: an ACME directory is served over https", a.CA)
		}
	}
	if a.CARoot != "" {
		if _, err := caRoots(a.CARoot); err != nil {
			bad("tls.acme.ca_root", "%v; point it at the PEM certificate of the CA's root (for a private CA such as step-ca)", err)
		}
	}
	return errs
}

// caRoots reads a PEM file of root certificates.
func caRoots(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return pool, nil
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
func (t HTTPSConfig) summary(now time.Time, listen string) string {
	if !t.Enabled() {
		return "plain HTTP (no tls: set tls.cert_file and tls.key_file, or tls.acme, to serve HTTPS)"
	}
	if t.ACME.enabled() {
		ca := t.ACME.CA
		if ca == "" {
			ca = certs.LetsEncrypt
		}
		s := fmt.Sprintf("HTTPS with ACME: %s from %s", strings.Join(t.ACME.Domains, ", "), ca)
		if t.HTTPListen != "" {
			s += "; HTTP-01 and redirects on " + t.HTTPListen
		} else if _, port, err := net.SplitHostPort(listen); err == nil && port != "443" {
			s += "; NOTE: the CA validates on port 443: forward it to port " + port + ", or set tls.http_listen (port 80)"
		}
		return s
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

// frontTLS is HTTPS on the public listener, and the optional plain-HTTP
// listener beside it.
type frontTLS struct {
	conf    *tls.Config
	acme    *certs.ACME
	httpSrv *http.Server
	httpLn  net.Listener
	closers []func() // in reverse order of opening
	log     *slog.Logger
}

// newFrontTLS prepares the public listener's TLS, or returns nil when it
// speaks plain HTTP. With ACME it opens the certificate storage (the data
// directory, or a bucket on the NATS store's server) and the http_listen
// listener, so that their errors stop serve before anything runs.
func newFrontTLS(ctx context.Context, cfg *Config, logger *slog.Logger) (_ *frontTLS, err error) {
	t := cfg.TLS
	if !t.Enabled() {
		return nil, nil
	}
	f := &frontTLS{log: logger.With("component", "tls")}
	defer func() {
		if err != nil {
			f.close()
		}
	}()
	if t.ACME.enabled() {
		if err := f.startACME(ctx, cfg); err != nil {
			return nil, err
		}
	} else {
		files, err := certs.NewFiles(t.CertFile, t.KeyFile, f.log)
		if err != nil {
			return nil, configError(t.pairProblem(err))
		}
		f.conf = files.TLSConfig()
		f.conf.NextProtos = []string{"h2", "http/1.1"}
	}
	if t.HTTPListen != "" {
		ln, err := net.Listen("tcp", t.HTTPListen)
		if err != nil {
			return nil, fmt.Errorf("tls.http_listen: %w; set it to a free address (port 80 needs root or "+
				"CAP_NET_BIND_SERVICE: see deploy/chatrelay.service)", err)
		}
		f.httpLn = ln
		f.closers = append(f.closers, func() { ln.Close() })
		var h http.Handler = redirectToHTTPS(cfg.Listen)
		if f.acme != nil {
			h = f.acme.HTTPHandler(h)
		}
		f.httpSrv = &http.Server{
			Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10,
			ErrorLog: slog.NewLogLogger(f.log.Handler(), slog.LevelDebug),
		}
	}
	return f, nil
}

func (f *frontTLS) startACME(ctx context.Context, cfg *Config) error {
	a := cfg.TLS.ACME
	var roots *x509.CertPool
	if a.CARoot != "" {
		r, err := caRoots(a.CARoot)
		if err != nil {
			return configError(fmt.Errorf("tls.acme.ca_root: %w", err))
		}
		roots = r
	}
	var storage certmagic.Storage
	where := ""
	switch cfg.Store.Driver {
	case "nats":
		s, closeConn, err := natsCertStorage(ctx, cfg, f.log)
		if err != nil {
			return err
		}
		f.closers = append(f.closers, closeConn)
		storage, where = s, s.String()
	default:
		dir := filepath.Join(cfg.Store.Bolt.Path, "acme")
		storage, where = &certmagic.FileStorage{Path: dir}, dir
	}
	m, err := certs.NewACME(certs.ACMEConfig{
		Domains: a.Domains, Email: a.Email, CA: a.CA, CARoots: roots, Storage: storage,
		ListenAddr: cfg.Listen, HTTPAddr: cfg.TLS.HTTPListen, Logger: f.log,
	})
	if err != nil {
		return configError(fmt.Errorf("tls.acme: %w", err))
	}
	f.acme = m
	f.closers = append(f.closers, m.Stop)
	f.conf = m.TLSConfig()
	f.log.Info("HTTPS with ACME", "domains", strings.Join(a.Domains, ","), "storage", where)
	if _, port, err := net.SplitHostPort(cfg.Listen); err == nil && port != "443" && cfg.TLS.HTTPListen == "" {
		f.log.Warn("the CA validates TLS-ALPN-01 on port 443: forward port 443 to listen's port " + port +
			", or set tls.http_listen on :80 for HTTP-01")
	}
	return nil
}

// natsCertStorage keeps certificates in a bucket on the NATS server the
// store uses, through a connection of its own.
func natsCertStorage(ctx context.Context, cfg *Config, logger *slog.Logger) (*natskv.Storage, func(), error) {
	n := cfg.Store.NATS
	opts := []natsgo.Option{natsgo.Name("chatrelay-certs"), natsgo.MaxReconnects(-1), natsgo.Timeout(10 * time.Second)}
	if n.CredsFile != "" {
		opts = append(opts, natsgo.UserCredentials(n.CredsFile))
	}
	if !n.Token.IsZero() {
		opts = append(opts, natsgo.Token(n.Token.Reveal()))
	}
	if n.TLS.CAFile != "" {
		opts = append(opts, natsgo.RootCAs(n.TLS.CAFile))
	}
	if n.TLS.CertFile != "" {
		opts = append(opts, natsgo.ClientCert(n.TLS.CertFile, n.TLS.KeyFile))
	}
	nc, err := natsgo.Connect(n.URL, opts...)
	if err != nil {
		// The store connected with the same settings a moment ago; the
		// error may quote the URL with its credentials, so it is not shown.
		return nil, nil, errors.New("tls.acme: connecting to NATS for the certificate bucket failed; check store.nats")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("tls.acme: %w", err)
	}
	octx, cancel := context.WithTimeout(ctx, natsStartTimeout)
	defer cancel()
	s, err := natskv.New(octx, js, natskv.Options{Replicas: n.Replicas, Logger: logger})
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("tls.acme: %w", err)
	}
	return s, func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(cctx); err != nil {
			logger.Warn("releasing TLS certificate locks", "err", err)
		}
		nc.Close()
	}, nil
}

// redirectToHTTPS answers plain-HTTP requests with a permanent redirect to
// the same path over HTTPS on the public listener's port (308 keeps the
// method and body of a POST).
func redirectToHTTPS(listen string) http.Handler {
	_, port, _ := net.SplitHostPort(listen)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "" {
			http.Error(w, "use https", http.StatusBadRequest)
			return
		}
		if port != "443" && port != "" {
			host = net.JoinHostPort(host, port)
		} else if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}

// wrap makes ln a TLS listener (with no TLS configured, it is ln).
func (f *frontTLS) wrap(ln net.Listener) net.Listener {
	if f == nil {
		return ln
	}
	return tls.NewListener(ln, f.conf)
}

// run obtains and renews ACME certificates and serves http_listen until
// ctx ends.
func (f *frontTLS) run(ctx context.Context) error {
	if f == nil {
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	if f.acme != nil {
		g.Go(func() error { return f.acme.Run(gctx) })
	}
	if f.httpSrv != nil {
		g.Go(func() error { return serveHTTP(f.httpSrv, f.httpLn) })
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), 5*time.Second)
			defer cancel()
			return f.httpSrv.Shutdown(sctx)
		})
	}
	return g.Wait()
}

// serverLog is the public server's error log. On HTTPS a failed handshake
// (a scanner, a client that does not trust the certificate, a CA's
// validation hanging up) is routine on the internet: it goes to Debug, the
// rest to base.
func (f *frontTLS) serverLog(logger *slog.Logger, base *log.Logger) *log.Logger {
	if f == nil {
		return base
	}
	return log.New(handshakeFilter{debug: logger.With("component", "tls"), base: base}, "", 0)
}

type handshakeFilter struct {
	debug *slog.Logger
	base  *log.Logger
}

func (h handshakeFilter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if strings.HasPrefix(msg, "http: TLS handshake error") {
		h.debug.Debug(msg)
		return len(p), nil
	}
	h.base.Print(msg)
	return len(p), nil
}

// close releases what newFrontTLS opened.
func (f *frontTLS) close() {
	if f == nil {
		return
	}
	for i := len(f.closers) - 1; i >= 0; i-- {
		f.closers[i]()
	}
	f.closers = nil
}

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
