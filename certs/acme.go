package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
)

// LetsEncrypt is the default ACME directory.
const LetsEncrypt = certmagic.LetsEncryptProductionCA

// ACMEConfig configures ACME.
type ACMEConfig struct {
	// Domains get one certificate each; they must resolve to this host
	// (or to the load balancer in front of the replicas).
	Domains []string
	// Email is the ACME account's contact (expiry and problem notices).
	Email string
	// CA is the ACME directory URL (default Let's Encrypt).
	CA string
	// CARoots are trusted for the CA's own HTTPS (a private CA such as
	// step-ca or Pebble); nil trusts the system's roots.
	CARoots *x509.CertPool
	// Storage keeps the account, certificates, keys and locks: a directory
	// (certmagic.FileStorage) or a store shared by the replicas, so they
	// use one certificate and one of them obtains or renews it at a time.
	Storage certmagic.Storage
	// ListenAddr is the public HTTPS listener; the CA's TLS-ALPN-01
	// validation reaches it (on port 443 from the outside).
	ListenAddr string
	// HTTPAddr, when set, is the plain-HTTP listener, where the CA's
	// HTTP-01 validation reaches HTTPHandler (port 80 from the outside).
	// Without it only TLS-ALPN-01 is used.
	HTTPAddr string
	// RenewCheckInterval is how often certificates are checked for renewal
	// (default 10m).
	RenewCheckInterval time.Duration
	Logger             *slog.Logger
	// OnEvent, when set, is told of every certmagic event (cert_obtaining,
	// cert_obtained, cert_failed, …) after it is logged.
	OnEvent func(event string, data map[string]any)
}

// ACME obtains and renews certificates with certmagic and serves them.
// NewACME starts certmagic's certificate cache (its maintenance goroutine
// renews certificates); Run manages the domains until its context ends and
// then stops the cache. Call Stop if Run is never called.
type ACME struct {
	conf   ACMEConfig
	log    *slog.Logger
	magic  *certmagic.Config
	issuer *certmagic.ACMEIssuer
	cache  *certmagic.Cache
	stop   sync.Once
}

// NewACME checks cfg and prepares certificate management.
func NewACME(cfg ACMEConfig) (*ACME, error) {
	if len(cfg.Domains) == 0 {
		return nil, errors.New("no domains")
	}
	for _, d := range cfg.Domains {
		if err := CheckDomain(d); err != nil {
			return nil, err
		}
	}
	if cfg.Storage == nil {
		return nil, errors.New("no storage")
	}
	if cfg.CA == "" {
		cfg.CA = LetsEncrypt
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &ACME{conf: cfg, log: cfg.Logger}
	zl := zapToSlog(cfg.Logger)

	// The cache asks for the config of a certificate it maintains; there
	// is one config, set right after the cache exists.
	var magic atomic.Pointer[certmagic.Config]
	a.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) {
			if c := magic.Load(); c != nil {
				return c, nil
			}
			return nil, errors.New("certificate management is starting")
		},
		RenewCheckInterval: cfg.RenewCheckInterval,
		Logger:             zl,
	})
	a.magic = certmagic.New(a.cache, certmagic.Config{
		Storage: cfg.Storage,
		Logger:  zl,
		OnEvent: a.onEvent,
		// Clients that send no server name (an IP address in the URL, a
		// load balancer's health check) get the first domain's certificate.
		DefaultServerName: cfg.Domains[0],
	})
	magic.Store(a.magic)

	tlsHost, tlsPort, err := hostPort(cfg.ListenAddr)
	if err != nil {
		a.Stop()
		return nil, fmt.Errorf("listen address: %w", err)
	}
	issuer := certmagic.ACMEIssuer{
		CA:           cfg.CA,
		Email:        cfg.Email,
		Agreed:       true, // configuring a CA is agreeing to its terms; there is no one to ask
		TrustedRoots: cfg.CARoots,
		Logger:       zl,
		// The CA validates on the public listener: certmagic finds that port
		// in use and answers through GetCertificate instead of binding 443.
		ListenHost:     tlsHost,
		AltTLSALPNPort: tlsPort,
	}
	if cfg.HTTPAddr != "" {
		_, httpPort, err := hostPort(cfg.HTTPAddr)
		if err != nil {
			a.Stop()
			return nil, fmt.Errorf("http listen address: %w", err)
		}
		issuer.AltHTTPPort = httpPort
	} else {
		// Nothing answers on port 80; never let certmagic bind it.
		issuer.DisableHTTPChallenge = true
	}
	a.issuer = certmagic.NewACMEIssuer(a.magic, issuer)
	a.magic.Issuers = []certmagic.Issuer{a.issuer}
	return a, nil
}

func hostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("%q: no port", addr)
	}
	return host, port, nil
}

// TLSConfig returns the listener's configuration: the managed
// certificates, and the TLS-ALPN-01 challenge answered on the same port.
func (a *ACME) TLSConfig() *tls.Config {
	c := a.magic.TLSConfig()
	c.MinVersion = tls.VersionTLS12
	c.NextProtos = append([]string{"h2", "http/1.1"}, c.NextProtos...)
	return c
}

// HTTPHandler answers the CA's HTTP-01 challenges (those of any replica,
// through the shared storage) and passes every other request to next.
func (a *ACME) HTTPHandler(next http.Handler) http.Handler {
	return a.issuer.HTTPChallengeHandler(next)
}

// Run obtains certificates for the domains that have none in storage and
// renews them before they expire, until ctx ends. A certificate already in
// storage is served at once; a missing one is obtained in the background,
// retried with backoff while it fails (DNS not pointing here yet, the port
// unreachable), and the listener refuses handshakes until it arrives.
func (a *ACME) Run(ctx context.Context) error {
	defer a.Stop()
	a.log.Info("managing TLS certificates with ACME", "domains", strings.Join(a.conf.Domains, ","), "ca", a.conf.CA)
	if err := a.magic.ManageAsync(ctx, a.conf.Domains); err != nil {
		return fmt.Errorf("tls.acme: %w", err)
	}
	<-ctx.Done()
	return nil
}

// Stop ends certificate maintenance. It is safe to call more than once.
func (a *ACME) Stop() { a.stop.Do(a.cache.Stop) }

// onEvent gives the story of each certificate in a few lines; certmagic's
// own step-by-step lines are at Debug (zap.go).
func (a *ACME) onEvent(_ context.Context, event string, data map[string]any) error {
	id, _ := data["identifier"].(string)
	switch event {
	case "cert_obtaining":
		if renewal, _ := data["renewal"].(bool); renewal {
			a.log.Info("renewing a TLS certificate", "domain", id, "ca", a.conf.CA)
		} else {
			a.log.Info("obtaining a TLS certificate", "domain", id, "ca", a.conf.CA)
		}
	case "cert_obtained":
		renewal, _ := data["renewal"].(bool)
		msg := "TLS certificate obtained"
		if renewal {
			msg = "TLS certificate renewed"
		}
		a.log.Info(msg, "domain", id)
	case "cert_failed":
		renewal, _ := data["renewal"].(bool)
		err, _ := data["error"].(error)
		a.log.Warn("could not obtain a TLS certificate; retrying with backoff. Check that the domain's DNS points "+
			"at this host and that port 443 (or 80, with tls.http_listen) is reachable from the internet",
			"domain", id, "renewal", renewal, "err", err)
	}
	if a.conf.OnEvent != nil {
		a.conf.OnEvent(event, data)
	}
	return nil
}

// CheckDomain reports why name cannot get a certificate over ACME here:
// an IP address, a wildcard (needs the DNS-01 challenge) or not a host
// name.
func CheckDomain(name string) error {
	switch {
	case net.ParseIP(name) != nil:
		return fmt.Errorf("%s is an IP address; ACME certificates here are for domain names: point a DNS name at this host and use it", name)
	case strings.Contains(name, "*"):
		return fmt.Errorf("%s is a wildcard, which needs the DNS-01 challenge; list each name chatrelay answers on", name)
	case !certmagic.SubjectQualifiesForCert(name) || strings.ContainsAny(name, "/:_") || !strings.Contains(name, ".") && name != "localhost":
		return fmt.Errorf("%q is not a domain name like relay.example.com", name)
	}
	return nil
}
