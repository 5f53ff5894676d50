package console_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/admin"
	"github.com/chatrelay/chatrelay/relay/bolt"
	"github.com/chatrelay/chatrelay/relay/console"
	"github.com/chatrelay/chatrelay/relay/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	token      = "console-test-token-123"
	sessionTTL = 12 * time.Hour
	idleTTL    = 2 * time.Hour
)

// fixture is the whole admin listener (API, guard, console) on a real
// bbolt store, with a fake clock.
type fixture struct {
	srv     *httptest.Server
	store   *bolt.Store
	clock   *clockwork.FakeClock
	metrics *relay.Metrics
	con     *console.Console
}

func setup(t *testing.T, tok string, opts ...func(*console.Config)) *fixture {
	t.Helper()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	store, err := bolt.Open(t.TempDir(), bolt.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	sinks := []string{"a", "b"}
	if _, err := store.Reconcile(t.Context(), sinks); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := relay.NewMetrics(reg)
	cfg := admin.Config{Store: store, Gatherer: reg, Metrics: m, Token: relay.Secret(tok), Sinks: sinks, Now: clock.Now}
	ccfg := console.Config{
		Store: store, Ops: admin.NewOps(cfg), Token: cfg.Token, Gatherer: reg, Clock: clock,
		SessionTTL: sessionTTL, IdleTTL: idleTTL, Version: "test",
	}
	for _, o := range opts {
		o(&ccfg)
	}
	con, err := console.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Console = con.Handler()
	srv := httptest.NewServer(admin.Handler(cfg))
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, store: store, clock: clock, metrics: m, con: con}
}

// browser is a client that keeps cookies and does not follow redirects.
func (f *fixture) browser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

type answer struct {
	code     int
	body     string
	location string
	cookies  []*http.Cookie
}

func do(t *testing.T, c *http.Client, req *http.Request) answer {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if strings.Contains(string(b), token) {
		t.Fatalf("%s %s: the answer shows the admin token", req.Method, req.URL.Path)
	}
	return answer{code: resp.StatusCode, body: string(b), location: resp.Header.Get("Location"), cookies: resp.Cookies()}
}

func (f *fixture) get(t *testing.T, c *http.Client, path string) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
	return do(t, c, req)
}

// post sends a form as a browser on the console's own page would.
func (f *fixture) post(t *testing.T, c *http.Client, path string, form url.Values, header ...string) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", f.srv.URL)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	for i := 0; i+1 < len(header); i += 2 {
		if header[i+1] == "" {
			req.Header.Del(header[i])
		} else {
			req.Header.Set(header[i], header[i+1])
		}
	}
	return do(t, c, req)
}

func (f *fixture) login(t *testing.T, c *http.Client) {
	t.Helper()
	a := f.post(t, c, "/login", url.Values{"token": {token}, "next": {"/dlq"}})
	if a.code != http.StatusSeeOther || a.location != "/dlq" {
		t.Fatalf("login: %d to %q: %s", a.code, a.location, a.body)
	}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the CSRF token from a page, as the page's forms carry it.
func (f *fixture) csrf(t *testing.T, c *http.Client) string {
	t.Helper()
	a := f.get(t, c, "/dlq")
	m := csrfField.FindStringSubmatch(a.body)
	if a.code != http.StatusOK || m == nil {
		t.Fatalf("no CSRF token on /dlq (%d): %.300s", a.code, a.body)
	}
	return m[1]
}

// park appends an event for sink and parks its delivery with reason.
func (f *fixture) park(t *testing.T, sink, conv string, n int, reason string) string {
	t.Helper()
	ev := storetest.NewEvent(t, conv, n)
	if _, err := f.store.Append(t.Context(), ev, []string{sink}); err != nil {
		t.Fatal(err)
	}
	d, err := f.store.Queue(sink).Next(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Term(t.Context(), reason); err != nil {
		t.Fatal(err)
	}
	return relay.DeadLetterID(ev.ID, sink)
}

func (f *fixture) deadCount(t *testing.T) int {
	t.Helper()
	page, err := f.store.FindDead(t.Context(), relay.DeadFilter{}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return page.Total
}

func TestLogin(t *testing.T) {
	t.Parallel()
	f := setup(t, token)
	c := f.browser(t)

	if a := f.get(t, c, "/"); a.code != http.StatusSeeOther || a.location != "/login?next=%2F" {
		t.Fatalf("GET / without a session: %d to %q, want the login form", a.code, a.location)
	}
	if a := f.get(t, c, "/login"); a.code != http.StatusOK || !strings.Contains(a.body, `type="password"`) {
		t.Fatalf("login form: %d", a.code)
	}
	tests := []struct {
		name    string
		tok     string
		header  []string
		want    int
		session bool
	}{
		{"wrong token", "wrong-token-wrong-token", nil, http.StatusUnauthorized, false},
		{"empty token", "", nil, http.StatusUnauthorized, false},
		{"token with a suffix", token + "x", nil, http.StatusUnauthorized, false},
		{"foreign origin", token, []string{"Origin", "https://evil.example"}, http.StatusForbidden, false},
		{"cross-site fetch", token, []string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden, false},
		{"right token", token, nil, http.StatusSeeOther, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := f.post(t, f.browser(t), "/login", url.Values{"token": {tt.tok}}, tt.header...)
			if a.code != tt.want {
				t.Fatalf("login: %d, want %d: %.200s", a.code, tt.want, a.body)
			}
			var got *http.Cookie
			for _, ck := range a.cookies {
				if ck.Name == console.CookieName {
					got = ck
				}
			}
			if (got != nil) != tt.session {
				t.Fatalf("session cookie %v, want one: %v", got, tt.session)
			}
			if got != nil && (!got.HttpOnly || got.SameSite != http.SameSiteStrictMode || got.Path != "/" || got.Secure) {
				t.Fatalf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/, not Secure on plain HTTP", got)
			}
		})
	}

	// Behind a TLS proxy the cookie is Secure.
	a := f.post(t, f.browser(t), "/login", url.Values{"token": {token}}, "X-Forwarded-Proto", "https")
	if len(a.cookies) != 1 || !a.cookies[0].Secure {
		t.Fatalf("cookie over HTTPS: %+v, want Secure", a.cookies)
	}
	// An open redirect is refused: next stays on this site.
	a = f.post(t, f.browser(t), "/login", url.Values{"token": {token}, "next": {"//evil.example/x"}})
	if a.location != "/" {
		t.Fatalf("next=//evil.example: redirected to %q, want /", a.location)
	}
}

func TestLoginIsRateLimited(t *testing.T) {
	t.Parallel()
	f := setup(t, token)
	for i := range 10 {
		if a := f.post(t, f.browser(t), "/login", url.Values{"token": {fmt.Sprint("guess-", i)}}); a.code != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d", i, a.code)
		}
	}
	if a := f.post(t, f.browser(t), "/login", url.Values{"token": {token}}); a.code != http.StatusTooManyRequests {
		t.Fatalf("after 10 wrong tokens: %d, want 429", a.code)
	}
	f.clock.Advance(2 * time.Second)
	if a := f.post(t, f.browser(t), "/login", url.Values{"token": {token}}); a.code != http.StatusSeeOther {
		t.Fatalf("after waiting: %d, want a login", a.code)
	}
}

func TestSessionExpires(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		steps []time.Duration // page loads after these waits; the last one finds the session ended
	}{
		{"idle", []time.Duration{time.Hour, idleTTL}},
		{"absolute, though in use", []time.Duration{90 * time.Minute, 90 * time.Minute, 90 * time.Minute, 90 * time.Minute,
			90 * time.Minute, 90 * time.Minute, 90 * time.Minute, 90 * time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t, token)
			c := f.browser(t)
			f.login(t, c)
			for i, wait := range tt.steps {
				f.clock.Advance(wait)
				a := f.get(t, c, "/events")
				last := i == len(tt.steps)-1
				if last && (a.code != http.StatusSeeOther || !strings.HasPrefix(a.location, "/login")) {
					t.Fatalf("after %v in all: %d to %q, want the login form", f.clock.Since(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)), a.code, a.location)
				}
				if !last && a.code != http.StatusOK {
					t.Fatalf("step %d: %d, want the page", i, a.code)
				}
			}
		})
	}
}

func TestStateChangesNeedCSRFAndOwnOrigin(t *testing.T) {
	t.Parallel()
	f := setup(t, token)
	f.park(t, "a", "A", 1, "HTTP 404")
	c := f.browser(t)
	f.login(t, c)
	csrf := f.csrf(t, c)
	form := func(tok string) url.Values {
		v := url.Values{"action": {"purge-all"}, "until": {f.clock.Now().Add(time.Hour).Format(time.RFC3339)}}
		if tok != "" {
			v.Set("csrf", tok)
		}
		return v
	}
	tests := []struct {
		name   string
		form   url.Values
		header []string
	}{
		{"no CSRF token", form(""), nil},
		{"wrong CSRF token", form(strings.Repeat("x", len(csrf))), nil},
		{"CSRF token in the query only", form(""), nil},
		{"foreign origin", form(csrf), []string{"Origin", "https://evil.example"}},
		{"null origin", form(csrf), []string{"Origin", "null"}},
		{"cross-site fetch", form(csrf), []string{"Sec-Fetch-Site", "cross-site", "Origin", ""}},
	}
	for _, tt := range tests {
		path := "/dlq/apply"
		if tt.name == "CSRF token in the query only" {
			path += "?csrf=" + url.QueryEscape(csrf)
		}
		if a := f.post(t, c, path, tt.form, tt.header...); a.code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", tt.name, a.code)
		}
		if n := f.deadCount(t); n != 1 {
			t.Fatalf("%s: %d dead letters left, want 1 (nothing purged)", tt.name, n)
		}
	}
	// Another browser's session has another token.
	other := f.browser(t)
	f.login(t, other)
	if a := f.post(t, other, "/dlq/apply", form(csrf)); a.code != http.StatusForbidden {
		t.Errorf("another session's CSRF token: %d, want 403", a.code)
	}
	if a := f.post(t, c, "/dlq/apply", form(csrf)); a.code != http.StatusSeeOther {
		t.Fatalf("with the CSRF token: %d: %.300s", a.code, a.body)
	}
	if n := f.deadCount(t); n != 0 {
		t.Fatalf("%d dead letters left after the purge, want 0", n)
	}
}

// TestSessionCookieNeverOpensTheAPI: the API takes the bearer token alone.
func TestSessionCookieNeverOpensTheAPI(t *testing.T) {
	t.Parallel()
	f := setup(t, token)
	f.park(t, "a", "A", 1, "HTTP 404")
	c := f.browser(t)
	f.login(t, c)
	csrf := f.csrf(t, c)
	calls := []struct{ method, path, body string }{
		{http.MethodPost, "/api/v1/dlq/replay", `{"all":true}`},
		{http.MethodPost, "/api/v1/dlq/purge", `{"all":true}`},
		{http.MethodGet, "/api/v1/dlq", ""},
		{http.MethodGet, "/api/v1/events", ""},
	}
	for _, call := range calls {
		req, _ := http.NewRequest(call.method, f.srv.URL+call.path, strings.NewReader(call.body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Origin", f.srv.URL)
		req.Header.Set("X-CSRF-Token", csrf)
		if a := do(t, c, req); a.code != http.StatusUnauthorized {
			t.Errorf("%s %s with the session cookie alone: %d, want 401", call.method, call.path, a.code)
		}
	}
	if n := f.deadCount(t); n != 1 {
		t.Fatalf("%d dead letters, want the 1 untouched", n)
	}
	// The bearer token works as before.
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/api/v1/dlq", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if a := do(t, http.DefaultClient, req); a.code != http.StatusOK {
		t.Fatalf("bearer token: %d", a.code)
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	f := setup(t, token)
	c := f.browser(t)
	f.login(t, c)
	u, _ := url.Parse(f.srv.URL)
	old := c.Jar.Cookies(u)
	csrf := f.csrf(t, c)
	if a := f.post(t, c, "/logout", url.Values{"csrf": {csrf}}); a.code != http.StatusSeeOther || a.location != "/login" {
		t.Fatalf("logout: %d to %q", a.code, a.location)
	}
	if a := f.get(t, c, "/"); a.code != http.StatusSeeOther {
		t.Fatalf("after logout: %d, want the login form", a.code)
	}
	// The old cookie, replayed, is dead too.
	replay := f.browser(t)
	replay.Jar.SetCookies(u, old)
	if a := f.get(t, replay, "/dlq"); a.code != http.StatusSeeOther {
		t.Fatalf("old cookie after logout: %d, want the login form", a.code)
	}
}

// TestWithoutToken: on loopback without admin.token there is no login; the
// admin guard's Host and Origin rules apply to the console as to the API,
// and forms still need the CSRF token.
func TestWithoutToken(t *testing.T) {
	t.Parallel()
	f := setup(t, "")
	f.park(t, "a", "A", 1, "HTTP 404")
	c := f.browser(t)
	if a := f.get(t, c, "/"); a.code != http.StatusOK || !strings.Contains(a.body, "Overview") || strings.Contains(a.body, "Log out") {
		t.Fatalf("GET /: %d, want the overview without a logout button", a.code)
	}
	csrf := f.csrf(t, c)

	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/", nil)
	req.Host = "evil.example"
	if a := do(t, c, req); a.code != http.StatusForbidden {
		t.Errorf("Host evil.example (DNS rebinding): %d, want 403", a.code)
	}
	req, _ = http.NewRequest(http.MethodGet, f.srv.URL+"/dlq", nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if a := do(t, c, req); a.code != http.StatusForbidden {
		t.Errorf("cross-site read: %d, want 403", a.code)
	}
	form := url.Values{"csrf": {csrf}, "action": {"replay-all"}}
	if a := f.post(t, c, "/dlq/confirm", form, "Origin", "http://evil.example"); a.code != http.StatusForbidden {
		t.Errorf("foreign origin: %d, want 403", a.code)
	}
	if a := f.post(t, f.browser(t), "/dlq/confirm", url.Values{"action": {"replay-all"}}); a.code != http.StatusForbidden {
		t.Errorf("form without a session: %d, want 403", a.code)
	}
	if a := f.post(t, c, "/dlq/confirm", form); a.code != http.StatusOK || !strings.Contains(a.body, "Replay 1 dead letter?") {
		t.Fatalf("confirm from the console's page: %d: %.300s", a.code, a.body)
	}
	// The API's state changes still need JSON.
	req, _ = http.NewRequest(http.MethodPost, f.srv.URL+"/api/v1/dlq/replay", strings.NewReader("all=true"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if a := do(t, c, req); a.code != http.StatusForbidden {
		t.Errorf("form-encoded API call: %d, want 403", a.code)
	}
}

var confirmCount = regexp.MustCompile(`<h1 id="confirm-h">(Replay|Purge) (\d+) dead letters?\?</h1>`)

func hiddenFields(body string) url.Values {
	v := url.Values{}
	re := regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)
	for _, m := range re.FindAllStringSubmatch(body, -1) {
		v.Add(m[1], htmlUnescape(m[2]))
	}
	return v
}

func htmlUnescape(s string) string {
	return strings.NewReplacer("&amp;", "&", "&lt;", "<", "&gt;", ">", "&#34;", `"`, "&#39;", "'", "&#43;", "+").Replace(s)
}

// TestReplayByFilterCounts: the confirmation states how many dead letters
// the filter matches across every page, and replaying does exactly those:
// not the ones parked after the confirmation, not other sinks' or reasons'.
func TestReplayByFilterCounts(t *testing.T) {
	t.Parallel()
	f := setup(t, token)
	var want []string
	for i := range 130 { // more than one page of 100
		want = append(want, f.park(t, "a", fmt.Sprint("conv-", i), i, "webhook: HTTP 404 Not Found"))
	}
	f.park(t, "a", "other-reason", 1000, "HTTP 400: bad payload")
	f.park(t, "b", "other-sink", 1001, "HTTP 404")
	f.clock.Advance(time.Minute)

	c := f.browser(t)
	f.login(t, c)
	csrf := f.csrf(t, c)
	list := f.get(t, c, "/dlq?sink=a&reason=404&since=2h")
	if !strings.Contains(list.body, "<strong>130</strong> dead letters match the filter") || !strings.Contains(list.body, "Replay all 130 matching") {
		t.Fatalf("list: %.2000s", list.body)
	}
	a := f.post(t, c, "/dlq/confirm", url.Values{"csrf": {csrf}, "action": {"replay-all"}, "sink": {"a"}, "reason": {"404"},
		"since": {"2h"}, "back": {"sink=a&reason=404&since=2h"}})
	m := confirmCount.FindStringSubmatch(a.body)
	if a.code != http.StatusOK || m == nil || m[1] != "Replay" || m[2] != "130" {
		t.Fatalf("confirmation: %d %v: %.1500s", a.code, m, a.body)
	}
	// Parked after the confirmation: not what was confirmed.
	f.clock.Advance(time.Second)
	late := f.park(t, "a", "late", 2000, "HTTP 404 again")

	a = f.post(t, c, "/dlq/apply", hiddenFields(a.body))
	if a.code != http.StatusSeeOther || !strings.Contains(a.location, "done=replayed") || !strings.Contains(a.location, "n=130") {
		t.Fatalf("apply: %d to %q: %.300s", a.code, a.location, a.body)
	}
	if got := testutil.ToFloat64(f.metrics.Deliveries.WithLabelValues("a", relay.ResultReplayed)); got != 130 {
		t.Fatalf("replayed counter %v, want 130", got)
	}
	left, err := f.store.FindDead(t.Context(), relay.DeadFilter{}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, dl := range left.DeadLetters {
		ids = append(ids, dl.ID)
	}
	if len(ids) != 3 || !strings.Contains(strings.Join(ids, " "), late) {
		t.Fatalf("left %v, want the other reason's, the other sink's and the late one", ids)
	}
	shown := f.get(t, c, a.location)
	if !strings.Contains(shown.body, "Replayed 130 dead letters.") {
		t.Fatalf("the list does not say what was done: %.1000s", shown.body)
	}

	// Purge of a selection counts only ids that are dead letters.
	a = f.post(t, c, "/dlq/confirm", url.Values{"csrf": {csrf}, "action": {"purge-selected"},
		"id": {late, want[0], "nope.a", late}})
	if m := confirmCount.FindStringSubmatch(a.body); m == nil || m[1] != "Purge" || m[2] != "1" {
		t.Fatalf("purge confirmation: %v: %.1000s", m, a.body)
	}
	a = f.post(t, c, "/dlq/apply", hiddenFields(a.body))
	if !strings.Contains(a.location, "n=1") || f.deadCount(t) != 2 {
		t.Fatalf("purge: to %q, %d left; want 1 purged, 2 left", a.location, f.deadCount(t))
	}
	// Nothing matching: no confirmation, the list says so.
	a = f.post(t, c, "/dlq/confirm", url.Values{"csrf": {csrf}, "action": {"replay-all"}, "reason": {"no such reason"}})
	if a.code != http.StatusSeeOther || !strings.Contains(a.location, "done=none") {
		t.Fatalf("nothing matching: %d to %q", a.code, a.location)
	}
}

func TestPages(t *testing.T) {
	t.Parallel()
	f := setup(t, token)
	dead := f.park(t, "a", "conv-x", 1, `HTTP 404: <script>alert(1)</script>`)
	ev := storetest.NewEvent(t, "conv-x", 2)
	if _, err := f.store.Append(t.Context(), ev, []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	c := f.browser(t)
	f.login(t, c)
	eventID, _, _ := strings.Cut(dead, ".")
	tests := []struct {
		path     string
		code     int
		contains []string
	}{
		{"/", 200, []string{"Sinks", "Events per topic", "Usage per chatbot", `data-sink="a"`,
			// The two chat events' figures, read from the store as the page loads.
			`<th scope="row">chat</th><td class="num">2</td><td class="num">2</td>`,
			`data-label="Chatbot">bot</th>`, `data-label="Conversations 24h">2</td>`}},
		{"/events", 200, []string{ev.ID, "conv-x"}},
		{"/events/" + eventID, 200, []string{"q1", "a1", "&lt;script&gt;", "Body as received"}},
		{"/conversations/conv-x", 200, []string{"Conversation", "q1", "q2", "a2", "score 0.50", "state-pending", "state-dead"}},
		{"/conversations/nobody", 404, nil},
		{"/events/nope", 404, nil},
		{"/events?q=conv-x", 303, nil},
		{"/events?q=" + dead, 303, nil},
		{"/events?q=unknown-thing", 404, []string{"No event and no conversation"}},
		{"/dlq?since=yesterday", 400, []string{"since:"}},
		{"/static/console.css", 200, []string{"prefers-color-scheme"}},
		{"/nowhere", 404, nil},
	}
	for _, tt := range tests {
		a := f.get(t, c, tt.path)
		if a.code != tt.code {
			t.Errorf("GET %s: %d, want %d", tt.path, a.code, tt.code)
		}
		for _, s := range tt.contains {
			if !strings.Contains(a.body, s) {
				t.Errorf("GET %s: no %q in %.300s", tt.path, s, a.body)
			}
		}
		if strings.Contains(a.body, "<script>alert") {
			t.Errorf("GET %s: stored text rendered unescaped", tt.path)
		}
	}
}

// TestLiveOverview: the overview streams itself to an open page, and tells
// the page when the session ends.
func TestLiveOverview(t *testing.T) {
	t.Parallel()
	f := setup(t, token)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.con.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	c := f.browser(t)
	f.login(t, c)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.srv.URL+"/live", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	events := make(chan string, 16)
	go func() {
		defer close(events)
		r := bufio.NewReader(resp.Body)
		var name string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				name = strings.TrimSpace(v)
			}
			if line == "\n" && name != "" {
				events <- name
				name = ""
			}
		}
	}()
	next := func() string {
		select {
		case e, ok := <-events:
			if !ok {
				return "(stream ended)"
			}
			return e
		case <-time.After(10 * time.Second):
			t.Fatal("no event within 10s")
		}
		return ""
	}
	if e := next(); e != "overview" {
		t.Fatalf("first event %q, want overview", e)
	}
	// A live page does not keep the session alive: past the idle time the
	// stream says it expired.
	f.clock.Advance(idleTTL + time.Second)
	for e := next(); e != "expired"; e = next() {
		if e != "overview" {
			t.Fatalf("event %q, want overview or expired", e)
		}
	}
}

// TestNeverShowsASecret: text stored before it was scrubbed (a reason, a
// last error, a body) is scrubbed again on its way to the page.
func TestNeverShowsASecret(t *testing.T) {
	t.Parallel()
	const secret = "hooks-secret-path-123"
	scrub := relay.NewScrubber(secret)
	f := setup(t, token, func(c *console.Config) { c.Scrub = scrub.Scrub })
	dead := f.park(t, "a", "conv-s", 1, "POST https://example.com/"+secret+": HTTP 404")
	ev := storetest.NewEvent(t, "conv-s", 2)
	ev.Body = []byte(`{"conversation_id":"conv-s","note":"` + secret + `"}`)
	if _, err := f.store.Append(t.Context(), ev, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	c := f.browser(t)
	f.login(t, c)
	eventID, _, _ := strings.Cut(dead, ".")
	for _, path := range []string{"/dlq", "/events/" + eventID, "/events/" + ev.ID, "/conversations/conv-s"} {
		a := f.get(t, c, path)
		if a.code != http.StatusOK || strings.Contains(a.body, secret) {
			t.Errorf("GET %s: %d, shows the secret: %v", path, a.code, strings.Contains(a.body, secret))
		}
	}
}

// TestTurnsTellTheStory: a conversation page shows an escalation as the
// channels do (SPEC §6): who asked and how to reach them, the conversation
// so far in order with older messages counted, never "no answer"; and a
// lead's fields labelled, in reading order, nested ones as "label: value"
// lines, never JSON.
func TestTurnsTellTheStory(t *testing.T) {
	t.Parallel()
	f := setup(t, token)
	var msgs []string
	for i := range 20 {
		msgs = append(msgs, fmt.Sprintf(`{"role":"user","content":"filler question %d"}`, i),
			fmt.Sprintf(`{"role":"assistant","content":"filler answer %d"}`, i))
	}
	msgs = append(msgs,
		`{"role":"user","content":"I was charged twice for order #4412!"}`,
		`{"role":"assistant","content":"I'm sorry about that. Billing will confirm the refund."}`,
		`{"role":"user","content":"Please hurry, this is urgent."}`)
	escalation := `{"conversation_id":"conv-story","chatbot_id":"bot","messages":[` + strings.Join(msgs, ",") + `],` +
		`"lead":{"uuid":"4f6a2b1c-9d8e-4f7a-8b6c-5d4e3f2a1b0c","name":"Jordan Reyes","email":"jordan@example.com","phone":"+1 415 555 0142"}}`
	lead := `{"conversation_id":"conv-story","chatbot_id":"bot","lead":{"uuid":"0e3f7a52-8c1d-4b6e-9f20-7a5d3c1b9e84",` +
		`"custom_fields":{"company":"Northwind Ltd","seats":40,"interests":["SSO","audit log"]},` +
		`"message":"Interested in the team plan.","email":"priya@example.net","name":"Priya Natarajan"}}`
	for _, e := range []struct{ topic, body string }{{relay.TopicEscalation, escalation}, {relay.TopicLead, lead}} {
		ev, err := relay.DecodeEvent([]byte(e.body))
		if err != nil {
			t.Fatal(err)
		}
		ev.ID, ev.Topic, ev.ReceivedAt = storetest.NewEvent(t, "x", 0).ID, e.topic, f.clock.Now()
		if _, err := f.store.Append(t.Context(), ev, []string{"a"}); err != nil {
			t.Fatal(err)
		}
	}
	c := f.browser(t)
	f.login(t, c)
	a := f.get(t, c, "/conversations/conv-story")
	if a.code != http.StatusOK {
		t.Fatalf("conversation: %d", a.code)
	}
	inOrder := func(what string, parts ...string) {
		t.Helper()
		at := 0
		for _, p := range parts {
			i := strings.Index(a.body[at:], p)
			if i < 0 {
				t.Errorf("%s: %q missing, or not after the parts before it", what, p)
				return
			}
			at += i + len(p)
		}
	}
	inOrder("the escalation", relay.EscalationLine, "Jordan Reyes", "jordan@example.com", "415 555 0142",
		relay.EarlierMessages(23), "filler answer 11", "filler question 12", "I was charged twice for order #4412!",
		"Billing will confirm the refund.", "Please hurry, this is urgent.")
	// 43 messages: the latest 20 are shown, the 23 before them counted.
	if strings.Contains(a.body, "filler question 11<") {
		t.Error("a message counted as earlier is shown")
	}
	inOrder("the lead", "New lead", "Name", "Priya Natarajan", "Email", "priya@example.net", "Message",
		"Interested in the team plan.", "Custom fields", "Company: Northwind Ltd\nSeats: 40\nInterests: SSO, audit log",
		"UUID", "0e3f7a52-8c1d-4b6e-9f20-7a5d3c1b9e84")
	for _, never := range []string{relay.NoAnswer, "&#34;company&#34;", "custom_fields", "4f6a2b1c-9d8e"} {
		if strings.Contains(a.body, never) {
			t.Errorf("the conversation page shows %q", never)
		}
	}
}

// states is a ConversationStates of fixed answers.
type states map[string]console.ConversationState

func (s states) ConversationState(_ context.Context, id string) (console.ConversationState, bool, error) {
	st, ok := s[id]
	return st, ok, nil
}

// TestConversationStatus: a conversation's page says who has it in hand
// (two-way live chat): open, claimed by, resolved by, and when it was
// escalated and posted again.
func TestConversationStatus(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC)
	f := setup(t, token, func(c *console.Config) {
		c.States = states{
			"conv-open":    {EscalatedAt: at, RepagedAt: at.Add(10 * time.Minute)},
			"conv-claimed": {EscalatedAt: at, ClaimedBy: "Dana <b>", ClaimedAt: at.Add(time.Minute)},
			"conv-done":    {ClaimedBy: "Dana", ClaimedAt: at, ResolvedBy: "Sam", ResolvedAt: at.Add(time.Hour)},
		}
	})
	c := f.browser(t)
	f.login(t, c)
	tests := []struct {
		conv     string
		contains []string
	}{
		{"conv-open", []string{">open<", "Escalated", "2026-03-01 11:00:00 UTC", "posted again 11:10:00 UTC"}},
		{"conv-claimed", []string{"claimed by Dana &lt;b&gt;", "Claimed", "2026-03-01 11:01:00 UTC"}},
		{"conv-done", []string{"resolved by Sam", "Claimed</dt><dd>2026-03-01 11:00:00 UTC by Dana", "Resolved</dt><dd>2026-03-01 12:00:00 UTC"}},
		{"conv-none", nil},
	}
	for i, tt := range tests {
		ev := storetest.NewEvent(t, tt.conv, i)
		if _, err := f.store.Append(t.Context(), ev, []string{"a"}); err != nil {
			t.Fatal(err)
		}
		a := f.get(t, c, "/conversations/"+tt.conv)
		if a.code != 200 {
			t.Fatalf("%s: %d", tt.conv, a.code)
		}
		for _, s := range tt.contains {
			if !strings.Contains(a.body, s) {
				t.Errorf("%s: no %q in the page", tt.conv, s)
			}
		}
		if tt.contains == nil && strings.Contains(a.body, "<dt>Status</dt>") {
			t.Errorf("%s: a status shown for a conversation with none", tt.conv)
		}
	}
}
