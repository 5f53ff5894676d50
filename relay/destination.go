package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"time"
)

// DefaultTimeout bounds one request to a destination when a sink's config
// sets no timeout. Every sink uses it, so that "timeout" means the same
// everywhere; a send that takes several requests gets a multiple of it
// (Budgeted).
const DefaultTimeout = 10 * time.Second

// CheckURL checks a destination's URL as configured: any absolute http or
// https URL, posted to exactly as written (a proxy or a loopback test server
// works). Its error never holds the URL, which may carry a token; the sink
// adds the key and the fix.
func CheckURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "":
		return errors.New("not a URL (value hidden: it may carry a token)")
	case u.Scheme != "http" && u.Scheme != "https":
		if len(u.Scheme) <= 10 {
			return fmt.Errorf("scheme %q is not http or https", u.Scheme)
		}
		return errors.New("its scheme is not http or https")
	}
	return nil
}

// WarnPlainHTTP logs, once at start, that the URL a sink's config gives
// under key sends messages and tokens unencrypted to another machine. The
// URL itself is not logged. A loopback host, or https, says nothing.
func WarnPlainHTTP(logger *slog.Logger, key, raw string) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || LoopbackHost(u.Hostname()) {
		return
	}
	logger.Warn(key + " uses plain http to another host: messages and tokens travel unencrypted; use https")
}

// LoopbackHost reports whether host (a name or an address, no port) names
// this machine's loopback interface.
func LoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
