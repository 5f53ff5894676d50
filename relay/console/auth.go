package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"golang.org/x/time/rate"

	"github.com/chatrelay/chatrelay/relay/admin"
)

// CookieName is the session cookie's name.
const CookieName = "chatrelay_session"

// maxSessions bounds the sessions kept; past it the oldest is ended.
const maxSessions = 1000

// session is one browser's login. The cookie holds a random token; the
// server keeps only its SHA-256, so a memory dump or a timing of the map
// lookup gives nothing to replay.
type session struct {
	key     [32]byte
	csrf    string
	created time.Time
	seen    time.Time // last page load
}

type sessions struct {
	clock     clockwork.Clock
	ttl, idle time.Duration

	mu sync.Mutex
	m  map[[32]byte]*session
}

func newSessions(clock clockwork.Clock, ttl, idle time.Duration) *sessions {
	return &sessions{clock: clock, ttl: ttl, idle: idle, m: map[[32]byte]*session{}}
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session and returns the cookie value for it.
func (s *sessions) create() (string, *session) {
	tok := randomToken()
	now := s.clock.Now()
	sess := &session{key: sha256.Sum256([]byte(tok)), csrf: randomToken(), created: now, seen: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(now)
	for len(s.m) >= maxSessions {
		var oldest *session
		for _, o := range s.m {
			if oldest == nil || o.created.Before(oldest.created) {
				oldest = o
			}
		}
		delete(s.m, oldest.key)
	}
	s.m[sess.key] = sess
	return tok, sess
}

// get returns the live session of a cookie value, or nil. touch counts it
// as a page load (live streams do not keep a session alive).
func (s *sessions) get(tok string, touch bool) *session {
	if tok == "" {
		return nil
	}
	key := sha256.Sum256([]byte(tok))
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.m[key]
	if !ok {
		return nil
	}
	if s.expired(sess, now) {
		delete(s.m, key)
		return nil
	}
	if touch {
		sess.seen = now
	}
	return sess
}

// alive reports whether sess has neither ended nor expired.
func (s *sessions) alive(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.m[sess.key]
	return ok && cur == sess && !s.expired(sess, s.clock.Now())
}

func (s *sessions) end(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, sess.key)
}

func (s *sessions) expired(sess *session, now time.Time) bool {
	return !now.Before(sess.created.Add(s.ttl)) || !now.Before(sess.seen.Add(s.idle))
}

func (s *sessions) expireLocked(now time.Time) {
	for k, sess := range s.m {
		if s.expired(sess, now) {
			delete(s.m, k)
		}
	}
}

type sessionKey struct{}

func sessionOf(r *http.Request) *session {
	s, _ := r.Context().Value(sessionKey{}).(*session)
	return s
}

// secure reports whether the browser reached us over HTTPS (directly, or
// through a proxy that says so).
func secure(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure(r),
	})
}

func cookieValue(r *http.Request) string {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return ""
	}
	return c.Value
}

// fromOwnOrigin reports whether nothing in the request says a browser sent
// it from another origin (another site's form or script).
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
	return len(origin) == 1 && (admin.SameOrigin(origin[0], "http", r.Host) || admin.SameOrigin(origin[0], "https", r.Host))
}

// authed lets a request through with its session: with a login, only a
// logged-in browser's; without one, every browser gets a session for its
// CSRF token. A state change must come from the console's own pages and
// carry the session's CSRF token.
func (c *Console) authed(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		live := r.URL.Path == "/live"
		sess := c.sessions.get(cookieValue(r), !live)
		change := r.Method != http.MethodGet && r.Method != http.MethodHead
		if sess == nil {
			switch {
			case c.cfg.Token.IsZero() && !change:
				var tok string
				tok, sess = c.sessions.create()
				setCookie(w, r, tok, int(c.cfg.SessionTTL/time.Second))
			case live:
				endStream(w, "expired")
				return
			case change:
				c.message(w, r, http.StatusForbidden, "Session ended",
					"Your session has ended, so nothing was changed. Log in again and repeat what you did.")
				return
			default:
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
		}
		if change {
			if !fromOwnOrigin(r) {
				c.message(w, r, http.StatusForbidden, "Refused", "This request came from another site, so nothing was changed.")
				return
			}
			if !validCSRF(r, sess) {
				c.message(w, r, http.StatusForbidden, "Refused",
					"The form had no valid security token (CSRF), so nothing was changed. Reload the page and try again.")
				return
			}
		}
		h(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, sess)))
	})
}

func validCSRF(r *http.Request, sess *session) bool {
	got := r.PostFormValue("csrf")
	if got == "" {
		got = r.Header.Get("X-CSRF-Token")
	}
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(sess.csrf)) == 1
}

// newLoginLimit bounds wrong tokens: a burst of 10, then one a second.
func newLoginLimit() *rate.Limiter { return rate.NewLimiter(rate.Every(time.Second), 10) }

type loginView struct {
	Next  string
	Error string
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if c.cfg.Token.IsZero() || c.sessions.get(cookieValue(r), false) != nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	c.render(w, r, http.StatusOK, "login", pageData{Title: "Log in", Page: loginView{Next: safeNext(r.URL.Query().Get("next"))}})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if c.cfg.Token.IsZero() {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	if !fromOwnOrigin(r) {
		c.message(w, r, http.StatusForbidden, "Refused", "This login came from another site.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	next := safeNext(r.PostFormValue("next"))
	now := c.cfg.Clock.Now()
	if c.loginLimit.TokensAt(now) < 1 {
		c.render(w, r, http.StatusTooManyRequests, "login", pageData{Title: "Log in",
			Page: loginView{Next: next, Error: "Too many wrong tokens; wait a few seconds and try again."}})
		return
	}
	given := sha256.Sum256([]byte(strings.TrimSpace(r.PostFormValue("token"))))
	want := sha256.Sum256([]byte(c.cfg.Token.Reveal()))
	if subtle.ConstantTimeCompare(given[:], want[:]) != 1 {
		c.loginLimit.AllowN(now, 1)
		c.cfg.Logger.Warn("console: login with a wrong token", "remote", r.RemoteAddr)
		c.render(w, r, http.StatusUnauthorized, "login", pageData{Title: "Log in",
			Page: loginView{Next: next, Error: "That is not the admin token (admin.token in the config)."}})
		return
	}
	if old := c.sessions.get(cookieValue(r), false); old != nil {
		c.sessions.end(old)
	}
	tok, _ := c.sessions.create()
	setCookie(w, r, tok, int(c.cfg.SessionTTL/time.Second))
	c.cfg.Logger.Info("console: logged in", "remote", r.RemoteAddr)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	c.sessions.end(sessionOf(r))
	setCookie(w, r, "", -1)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// safeNext keeps a redirect target on this site: a path, never another
// host ("//evil", "/\evil", "https://…").
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") ||
		strings.ContainsAny(next, "\r\n") || strings.HasPrefix(next, "/login") {
		return "/"
	}
	return next
}
