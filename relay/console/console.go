// Package console is chatrelay's web console for operators (SPEC §11),
// served on the admin listener: an overview of the sinks and the chatbots'
// usage that updates itself (server-sent events), events and conversations
// as transcripts with each sink's delivery state, and the dead letters with
// filters, replayed or purged by selection or by filter after a
// confirmation that states the count.
//
// Pages are rendered on the server (html/template); a little JavaScript
// keeps the overview live and is not needed for anything else. Every asset
// is embedded: no CDN, it works offline. It reads the store through
// relay.History and acts through admin.Ops, the same operations the API
// and the CLI use.
//
// Access: with admin.token set, a login form takes the token and starts a
// session (an HttpOnly, SameSite=Strict cookie, Secure on HTTPS) that ends
// on logout, after SessionTTL, or after IdleTTL without a page load. Every
// state change carries the session's CSRF token and must not come from
// another origin. The session cookie opens the console only: the API
// (/api/v1) takes the bearer token alone. Without a token (loopback only)
// there is no login: each browser gets a session for its CSRF token, and
// the admin guard's Host and Origin rules apply as they do to the API.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/admin"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Store is what the console reads from the store.
type Store interface {
	relay.History
	Lookup(ctx context.Context, id string) (*relay.EventRecord, error)
	Recent(ctx context.Context, before string, limit int) ([]relay.EventSummary, error)
	GetDead(ctx context.Context, id string) (relay.DeadLetter, *relay.Event, error)
}

// ConversationState is who has a conversation in hand (two-way live chat,
// SPEC §10): shown above its transcript.
type ConversationState struct {
	ClaimedBy  string
	ClaimedAt  time.Time
	ResolvedBy string
	ResolvedAt time.Time
	// EscalatedAt is when the visitor last asked for a person, RepagedAt
	// when that escalation was posted again because nobody claimed it.
	EscalatedAt time.Time
	RepagedAt   time.Time
}

// ConversationStates reports conversations' claim and resolve state.
type ConversationStates interface {
	ConversationState(ctx context.Context, conversationID string) (ConversationState, bool, error)
}

// Config configures the console.
type Config struct {
	Store Store
	Ops   *admin.Ops
	// Token is admin.token: the login form's password. Empty: no login
	// (the admin listener is on loopback, behind the admin guard).
	Token relay.Secret
	// Gatherer is read for the deliveries of the last hour per sink.
	Gatherer prometheus.Gatherer
	// States, when set, gives each conversation's claim and resolve state.
	States ConversationStates
	// Scrub removes configured secrets from every text shown (error
	// texts, event bodies); nil shows text as stored (already scrubbed).
	Scrub   func(string) string
	Version string
	Logger  *slog.Logger
	Clock   clockwork.Clock
	// SessionTTL is how long a login lasts (default 12h); IdleTTL how
	// long a session lasts without a page load (default 2h).
	SessionTTL, IdleTTL time.Duration
	// Every is how often the overview is refreshed for its watchers
	// (default 2s); the usage figures are read from the store when the
	// overview loads and, while a live overview is open, every UsageEvery
	// (default 5s). Nobody watching, nothing is read.
	Every, UsageEvery time.Duration
}

// Console serves the web console. Run keeps its live figures; Handler
// serves it.
type Console struct {
	cfg      Config
	pages    map[string]*template.Template
	static   http.Handler
	sessions *sessions
	usage    *usageCounter
	rates    *rates
	hub      *hub
	// loginLimit bounds wrong tokens at the login form.
	loginLimit *rate.Limiter

	stopped chan struct{} // closed when Run returns: live streams end
	stop    sync.Once
}

// New checks cfg and builds the console; it starts nothing (see Run).
func New(cfg Config) (*Console, error) {
	if cfg.Store == nil || cfg.Ops == nil {
		return nil, errors.New("console: Store and Ops are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Scrub == nil {
		cfg.Scrub = func(s string) string { return s }
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.IdleTTL <= 0 {
		cfg.IdleTTL = 2 * time.Hour
	}
	if cfg.Every <= 0 {
		cfg.Every = 2 * time.Second
	}
	if cfg.UsageEvery <= 0 {
		cfg.UsageEvery = 5 * time.Second
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	c := &Console{
		cfg:        cfg,
		pages:      pages,
		static:     http.StripPrefix("/static/", http.FileServerFS(sub)),
		sessions:   newSessions(cfg.Clock, cfg.SessionTTL, cfg.IdleTTL),
		usage:      newUsageCounter(cfg.Store, cfg.Clock.Now),
		rates:      newRates(cfg.Gatherer),
		hub:        newHub(),
		loginLimit: newLoginLimit(),
		stopped:    make(chan struct{}),
	}
	return c, nil
}

func parsePages() (map[string]*template.Template, error) {
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/parts.html")
	if err != nil {
		return nil, fmt.Errorf("console templates: %w", err)
	}
	pages := map[string]*template.Template{}
	for _, name := range []string{"overview", "events", "event", "conversation", "dlq", "confirm", "login", "message"} {
		t, err := template.Must(base.Clone()).ParseFS(templateFS, "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// Handler returns the console's HTTP handler: every path on the admin
// listener that the API does not serve.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /static/", c.static)
	mux.HandleFunc("GET /login", c.loginPage)
	mux.HandleFunc("POST /login", c.login)
	mux.Handle("POST /logout", c.authed(c.logout))
	mux.Handle("GET /{$}", c.authed(c.overview))
	mux.Handle("GET /live", c.authed(c.live))
	mux.Handle("GET /events", c.authed(c.events))
	mux.Handle("GET /events/{id}", c.authed(c.event))
	mux.Handle("GET /conversations/{id}", c.authed(c.conversation))
	mux.Handle("GET /dlq", c.authed(c.deadLetters))
	mux.Handle("POST /dlq/confirm", c.authed(c.confirm))
	mux.Handle("POST /dlq/apply", c.authed(c.apply))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c.message(w, r, http.StatusNotFound, "Not found", "There is no page at this address.")
	})
	return secureHeaders(mux)
}

// secureHeaders sets what keeps the console's pages from being framed,
// sniffed or made to load anything from elsewhere.
func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
			"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		// same-origin, not no-referrer: with no-referrer a browser sends
		// "Origin: null" on the console's own form posts, which then look
		// like another site's.
		h.Set("Referrer-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

// Run keeps the overview's figures: the deliveries of the last hour, and,
// while a live overview is open, the usage read from the store and a fresh
// overview for every open page each Every. It returns when ctx ends, and
// the live streams end with it.
func (c *Console) Run(ctx context.Context) error {
	defer c.stop.Do(func() { close(c.stopped) })
	tick := c.cfg.Clock.NewTicker(c.cfg.Every)
	defer tick.Stop()
	var st runState
	for {
		c.step(ctx, &st)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.Chan():
		case <-c.hub.joined:
		}
	}
}

// runState is what Run remembers between steps.
type runState struct {
	usageAt  time.Time // the usage figures were last read
	usageErr string    // the last error reading them, logged once
}

// step is one turn of Run.
func (c *Console) step(ctx context.Context, st *runState) {
	now := c.cfg.Clock.Now()
	watching := c.hub.watching()
	if watching && (st.usageAt.IsZero() || now.Sub(st.usageAt) >= c.cfg.UsageEvery) {
		st.usageAt = now
		// Bounded, so that the pages' sink states stay live: a store that
		// reads the figures in steps (NATS, the first time after a start)
		// goes on from where it stopped at the next turn.
		rctx, cancel := context.WithTimeout(ctx, usageWait)
		err := c.usage.refresh(rctx)
		cancel()
		switch {
		case err == nil || ctx.Err() != nil:
			st.usageErr = ""
		case errors.Is(err, context.DeadlineExceeded) && errors.Is(rctx.Err(), context.DeadlineExceeded):
			// Still reading: the page says the figures are being counted.
		default:
			if err.Error() != st.usageErr {
				c.cfg.Logger.Warn("console: could not read the usage figures from the store", "err", err)
			}
			st.usageErr = err.Error()
		}
	}
	c.rates.sample(now)
	if watching {
		c.publish(ctx)
	}
}

// publish renders the live part of the overview once for every watcher.
func (c *Console) publish(ctx context.Context) {
	ov := c.snapshot(ctx)
	var b strings.Builder
	if err := c.pages["overview"].ExecuteTemplate(&b, "live", ov); err != nil {
		c.cfg.Logger.Error("console: render the overview", "err", err)
		return
	}
	c.hub.publish(b.String())
}

// render writes page name with data, wrapped in the layout.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, data pageData) {
	data.Version = c.cfg.Version
	data.Login = !c.cfg.Token.IsZero()
	if s := sessionOf(r); s != nil {
		data.CSRF = s.csrf
	}
	var b strings.Builder
	if err := c.pages[name].ExecuteTemplate(&b, "layout.html", data); err != nil {
		c.cfg.Logger.Error("console: render page", "page", name, "err", err)
		http.Error(w, "the page could not be rendered; see the chatrelay log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

// pageData is what the layout needs, plus the page's own data.
type pageData struct {
	Title   string
	Nav     string // the current section: overview, events, dlq
	Version string
	Login   bool   // a login exists (admin.token set): show the logout button
	CSRF    string // the session's CSRF token, for forms
	Page    any
}

// message renders a page that only says something (not found, refused).
func (c *Console) message(w http.ResponseWriter, r *http.Request, status int, title, text string) {
	c.render(w, r, status, "message", pageData{Title: title, Page: struct{ Title, Text string }{title, text}})
}

// fail renders a store error: the operator sees what kind, the log the
// detail.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, relay.ErrNotFound):
		c.message(w, r, http.StatusNotFound, "Not found", "Nothing with this id is in the store (it may have passed store.retention).")
	case errors.Is(err, relay.ErrUnavailable), errors.Is(err, relay.ErrClosed), errors.Is(err, relay.ErrFull):
		c.message(w, r, http.StatusServiceUnavailable, "Store unavailable", c.cfg.Scrub(err.Error()))
	case errors.Is(err, context.Canceled):
	default:
		c.cfg.Logger.Error("console: request failed", "path", r.URL.Path, "err", err)
		c.message(w, r, http.StatusInternalServerError, "Something went wrong", "The request failed; the chatrelay log has the details.")
	}
}
