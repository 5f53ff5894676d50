package admin

import (
	"mime"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Without a token the admin listener is on loopback only, and the only thing
// between a web page the operator visits and the API is the browser. A page
// can send simple requests (a text/plain POST, an image GET) to 127.0.0.1
// without being allowed to read the answer, and a DNS-rebinding page can
// read answers by making its own name resolve to 127.0.0.1. guard (SPEC §9)
// refuses:
//   - every request whose Host is not a loopback name or address (a
//     rebinding page's requests carry the page's own host name);
//   - every request a browser marks as sent by another origin: an Origin
//     header other than the listener's own, or Sec-Fetch-Site other than
//     same-origin or none (reads too: a profile or trace under
//     /debug/pprof costs CPU even when nobody reads it);
//   - state changes (any method but GET, HEAD, OPTIONS) of the API whose
//     body is not declared application/json, which a page cannot send
//     cross-origin without a CORS preflight the listener never grants.
//     The web console's own forms are exempt from this one: each carries
//     the CSRF token of the operator's session, which no other page can
//     read, and the Host and Origin rules apply to them as to the API.
//
// With a token, none of this applies: a browser never adds the bearer token
// to a request on its own, so a page cannot act with it, and a
// token-protected listener may be reached through a proxy under any name.
// /metrics and /healthz are then as open as they always were.
type guard struct {
	logger interface {
		Warn(msg string, args ...any)
	}
	now func() time.Time

	mu      sync.Mutex
	logged  time.Time
	skipped int
}

// guardLogEvery throttles the log line of refused requests: a hostile page
// can send many.
const guardLogEvery = 10 * time.Second

func (g *guard) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !LoopbackHost(r.Host) {
			g.refuse(w, r, "host", "Host is not a loopback name or address; without admin.token the admin listener "+
				"answers only requests to localhost, 127.0.0.1 or [::1] (set admin.token to reach it under another name)")
			return
		}
		if !fromOwnOrigin(r) {
			g.refuse(w, r, "origin", "sent from another origin (a web page); the admin listener answers only its own "+
				"pages, the chatrelay CLI and scripts")
			return
		}
		// The console's forms are not JSON: its state changes carry a
		// CSRF token of the operator's session instead (relay/console).
		if stateChange(r.Method) && !isJSON(r.Header.Get("Content-Type")) && !consolePath(r.URL.Path) {
			g.refuse(w, r, "content_type", "state changes take a JSON body with Content-Type: application/json")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuse answers 403 with a JSON error, and logs it throttled. Nothing the
// client sent is echoed or logged but its address and the path.
func (g *guard) refuse(w http.ResponseWriter, r *http.Request, check, msg string) {
	g.mu.Lock()
	now := g.now()
	log := g.logged.IsZero() || now.Sub(g.logged) >= guardLogEvery
	skipped := g.skipped
	if log {
		g.logged, g.skipped = now, 0
	} else {
		g.skipped++
	}
	g.mu.Unlock()
	if log {
		args := []any{"check", check, "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr}
		if skipped > 0 {
			args = append(args, "not_logged_since_last", skipped)
		}
		g.logger.Warn("admin request refused: possible cross-site or DNS-rebinding request; set admin.token if this client is legitimate", args...)
	}
	writeError(w, http.StatusForbidden, "request refused: "+msg)
}

// consolePath reports whether path is the web console's rather than the
// API's or the profiler's.
func consolePath(path string) bool {
	return !strings.HasPrefix(path, "/api/") && !strings.HasPrefix(path, "/debug/") && path != "/metrics" && path != "/healthz"
}

func stateChange(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

// fromOwnOrigin reports whether nothing in the request says a browser sent
// it from another origin. Clients that are not browsers send neither
// header.
func fromOwnOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	origin, sent := r.Header["Origin"]
	if !sent {
		return true
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return len(origin) == 1 && SameOrigin(origin[0], scheme, r.Host)
}

// LoopbackHost reports whether host, the value of a Host header (a name or
// an address, with an optional port), names the loopback interface:
// localhost or a name under .localhost (RFC 6761; browsers resolve them to
// loopback themselves, so no DNS answer can point them elsewhere), an
// address in 127.0.0.0/8, or ::1 (also written as an IPv4-mapped address).
func LoopbackHost(host string) bool {
	name, _, ok := splitHostPort(host)
	if !ok {
		return false
	}
	if ip, err := netip.ParseAddr(name); err == nil {
		return ip.Unmap().IsLoopback()
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	return validName(name) && (name == "localhost" || strings.HasSuffix(name, ".localhost"))
}

// SameOrigin reports whether origin, the value of an Origin header, is the
// origin of a request made with scheme to host (a Host header): same
// scheme, host and port, the scheme's default port written or not. "null"
// and anything with a path, user or query is never the same origin.
func SameOrigin(origin, scheme, host string) bool {
	rest, ok := cutPrefixFold(origin, scheme+"://")
	if !ok {
		return false
	}
	oName, oPort, ok := splitHostPort(rest)
	if !ok {
		return false
	}
	hName, hPort, ok := splitHostPort(host)
	if !ok {
		return false
	}
	def := "80"
	if strings.EqualFold(scheme, "https") {
		def = "443"
	}
	if oPort == "" {
		oPort = def
	}
	if hPort == "" {
		hPort = def
	}
	return oPort == hPort && sameHost(oName, hName)
}

func sameHost(a, b string) bool {
	if ia, err := netip.ParseAddr(a); err == nil {
		ib, err := netip.ParseAddr(b)
		return err == nil && ia == ib
	}
	return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// splitHostPort splits "name", "name:port", "1.2.3.4:port", "[::1]" or
// "[::1]:port" strictly: an IPv6 address only in brackets, a port of 1 to 5
// digits up to 65535, nothing else (no user, path or spaces).
func splitHostPort(hostport string) (host, port string, ok bool) {
	if strings.HasPrefix(hostport, "[") {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return "", "", false
		}
		host, rest := hostport[1:end], hostport[end+1:]
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return "", "", false
		}
		if rest == "" {
			return host, "", true
		}
		port, ok := strings.CutPrefix(rest, ":")
		return host, port, ok && validPort(port)
	}
	host, port, hasPort := strings.Cut(hostport, ":")
	if hasPort && !validPort(port) {
		return "", "", false
	}
	if host == "" {
		return "", "", false
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return host, port, ip.Is4()
	}
	return host, port, validName(strings.TrimSuffix(host, "."))
}

func validPort(p string) bool {
	if len(p) == 0 || len(p) > 5 {
		return false
	}
	for _, c := range []byte(p) {
		if c < '0' || c > '9' {
			return false
		}
	}
	n, err := strconv.Atoi(p)
	return err == nil && n <= 65535
}

// validName accepts a DNS name: dot-separated labels of letters, digits,
// '-' and '_', each 1 to 63 bytes.
func validName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
