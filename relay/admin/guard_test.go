package admin

import (
	"net"
	"net/url"
	"strings"
	"testing"
)

func TestLoopbackHost(t *testing.T) {
	t.Parallel()
	tests := []struct {
		host string
		want bool
	}{
		{"127.0.0.1:9090", true},
		{"127.0.0.1", true},
		{"127.8.9.10:1", true},
		{"localhost:9090", true},
		{"LOCALHOST:9090", true},
		{"localhost.:9090", true},
		{"console.localhost:9090", true},
		{"[::1]:9090", true},
		{"[::1]", true},
		{"[::ffff:127.0.0.1]:9090", true},
		{"", false},
		{":9090", false},
		{"attacker.example:9090", false},
		{"attacker.example", false},
		{"localhost.attacker.example:9090", false},
		{"127.0.0.1.attacker.example:9090", false},
		{"localhostx:9090", false},
		{"evil-localhost:9090", false},
		{"10.0.0.1:9090", false},
		{"0.0.0.0:9090", false},
		{"[::]:9090", false},
		{"::1", false}, // IPv6 only in brackets
		{"[::1%lo]:9090", false},
		{"[127.0.0.1]:9090", false},
		{"2130706433:9090", false}, // 127.0.0.1 as one number: browsers send it dotted
		{"127.1:9090", false},
		{"0x7f.0.0.1:9090", false},
		{"localhost:", false},
		{"localhost:99999", false},
		{"localhost:90a", false},
		{"localhost:9090:1", false},
		{"user@localhost:9090", false},
		{"localhost/x", false},
		{"localhost :9090", false},
		{"local host", false},
		{"localhost..:9090", false},
		{"[::1]x", false},
		{"[::1", false},
	}
	for _, tc := range tests {
		if got := LoopbackHost(tc.host); got != tc.want {
			t.Errorf("LoopbackHost(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
}

func TestSameOrigin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		origin, scheme, host string
		want                 bool
	}{
		{"http://127.0.0.1:9090", "http", "127.0.0.1:9090", true},
		{"HTTP://LocalHost:9090", "http", "localhost:9090", true},
		{"http://[::1]:9090", "http", "[::1]:9090", true},
		{"http://[0:0:0:0:0:0:0:1]:9090", "http", "[::1]:9090", true},
		{"http://localhost", "http", "localhost:80", true},
		{"http://localhost:80", "http", "localhost", true},
		{"https://localhost", "https", "localhost:443", true},
		{"http://localhost.:9090", "http", "localhost:9090", true},
		{"http://127.0.0.1:9091", "http", "127.0.0.1:9090", false}, // another port, another origin
		{"http://localhost:9090", "http", "127.0.0.1:9090", false}, // another name
		{"https://127.0.0.1:9090", "http", "127.0.0.1:9090", false},
		{"http://attacker.example", "http", "127.0.0.1:9090", false},
		{"null", "http", "127.0.0.1:9090", false},
		{"", "http", "127.0.0.1:9090", false},
		{"http://127.0.0.1:9090/", "http", "127.0.0.1:9090", false},
		{"http://127.0.0.1:9090/x", "http", "127.0.0.1:9090", false},
		{"http://u@127.0.0.1:9090", "http", "127.0.0.1:9090", false},
		{"http://127.0.0.1:9090?x", "http", "127.0.0.1:9090", false},
		{"http:127.0.0.1:9090", "http", "127.0.0.1:9090", false},
		{"http://127.0.0.1:9090", "http", "", false},
	}
	for _, tc := range tests {
		if got := SameOrigin(tc.origin, tc.scheme, tc.host); got != tc.want {
			t.Errorf("SameOrigin(%q, %q, %q) = %v, want %v", tc.origin, tc.scheme, tc.host, got, tc.want)
		}
	}
}

// hostname returns the host part of a Host value as net/url reads it, or
// false when net/url does not read it as a plain host[:port].
func hostname(host string) (string, string, bool) {
	u, err := url.Parse("http://" + host)
	if err != nil || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" ||
		u.Host != host {
		return "", "", false
	}
	return u.Hostname(), u.Port(), true
}

// FuzzLoopbackHost: a Host LoopbackHost accepts is a plain host[:port] for
// net/url too, and its host is localhost, a name under .localhost, or an
// address net.ParseIP calls loopback.
func FuzzLoopbackHost(f *testing.F) {
	for _, s := range []string{"127.0.0.1:9090", "localhost", "[::1]:1", "a.localhost.", "[::ffff:127.0.0.1]", "attacker.example:9090",
		"127.0.0.1.nip.io", "[::1%25lo]:1", "localhost:65536", "LOCALHOST", "2130706433", "xn--localhost"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		if !LoopbackHost(host) {
			return
		}
		name, port, ok := hostname(host)
		if !ok {
			t.Fatalf("accepted %q, which net/url does not read as host[:port]", host)
		}
		if port != "" && !validPort(port) {
			t.Fatalf("accepted %q with port %q", host, port)
		}
		lower := strings.ToLower(strings.TrimSuffix(name, "."))
		ip := net.ParseIP(name)
		if !(lower == "localhost" || strings.HasSuffix(lower, ".localhost") || (ip != nil && ip.IsLoopback())) {
			t.Fatalf("accepted %q: host %q is not loopback", host, name)
		}
	})
}

// FuzzSameOrigin: an accepted Origin names the request's scheme, host and
// port, and every host LoopbackHost accepts is the same origin as itself.
func FuzzSameOrigin(f *testing.F) {
	for _, s := range [][2]string{{"http://127.0.0.1:9090", "127.0.0.1:9090"}, {"http://localhost", "localhost:80"},
		{"null", "localhost"}, {"http://[::1]:1", "[::1]:1"}, {"http://evil:1/", "evil:1"}, {"http://a@b", "b"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, origin, host string) {
		if LoopbackHost(host) && !SameOrigin("http://"+host, "http", host) {
			t.Fatalf("http://%s is not the origin of Host %q", host, host)
		}
		if !SameOrigin(origin, "http", host) {
			return
		}
		u, err := url.Parse(origin)
		if err != nil || !strings.EqualFold(u.Scheme, "http") || u.User != nil || u.Path != "" || u.RawQuery != "" {
			t.Fatalf("accepted origin %q: not scheme://host[:port] (%v)", origin, err)
		}
		oName, oPort := u.Hostname(), u.Port()
		hName, hPort, ok := hostname(host)
		if !ok {
			t.Fatalf("accepted origin %q for Host %q, which is not host[:port]", origin, host)
		}
		def := func(p string) string {
			if p == "" {
				return "80"
			}
			return p
		}
		if def(oPort) != def(hPort) {
			t.Fatalf("accepted origin %q for Host %q: ports differ", origin, host)
		}
		if oIP, hIP := net.ParseIP(oName), net.ParseIP(hName); oIP != nil || hIP != nil {
			if oIP == nil || hIP == nil || !oIP.Equal(hIP) {
				t.Fatalf("accepted origin %q for Host %q: addresses differ", origin, host)
			}
			return
		}
		if !strings.EqualFold(strings.TrimSuffix(oName, "."), strings.TrimSuffix(hName, ".")) {
			t.Fatalf("accepted origin %q for Host %q: names differ", origin, host)
		}
	})
}
