// Package admin serves chatrelay's operator interface on the admin
// listener: Prometheus metrics, the dead-letter API (list, show, replay,
// purge), event lookup and sink status.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/chatrelay/chatrelay/relay"
)

// Store is what the admin API reads and changes.
type Store interface {
	relay.DeadLetters
	FindDead(ctx context.Context, f relay.DeadFilter, offset, limit int) (relay.DeadPage, error)
	Conversation(ctx context.Context, id string, limit int) ([]relay.EventRecord, int, error)
	Lookup(ctx context.Context, id string) (*relay.EventRecord, error)
	Recent(ctx context.Context, before string, limit int) ([]relay.EventSummary, error)
	Stats(ctx context.Context) ([]relay.QueueStats, error)
	Ready(ctx context.Context) error
}

// SinkState reports how a sink's destination is doing (its dispatcher).
type SinkState interface {
	Health() relay.SinkHealth
}

// StoreInfo describes the store for chatrelay status.
type StoreInfo struct {
	Driver string `json:"driver"`
	// Path is where the data is: the bolt file, or the NATS server(s)
	// without credentials.
	Path string `json:"path"`
	// SizeBytes is the store's size on disk; nil when unknown.
	SizeBytes *int64 `json:"size_bytes,omitempty"`
}

// Config configures the admin API.
type Config struct {
	Store    Store
	Gatherer prometheus.Gatherer
	Metrics  *relay.Metrics
	// Token, when set, is required as "Authorization: Bearer <token>" on
	// /api/v1/ and /debug/pprof/. Metrics and health stay open (they carry
	// no secrets). Without a token (allowed on loopback only) every request
	// must be addressed to a loopback Host and not come from another origin,
	// and state changes must be application/json (SPEC §9; see guard).
	Token relay.Secret
	// Sinks are the configured sink names, in config order, with their
	// pacers (for up/down state).
	Sinks  []string
	States map[string]SinkState
	// Version is chatrelay's version, for /api/v1/status.
	Version string
	// Store describes the store, for /api/v1/status; nil: not shown.
	StoreInfo func(ctx context.Context) StoreInfo
	Logger    *slog.Logger
	Now       func() time.Time
	// Scrub removes configured secrets from the error text the API
	// serves (dead-letter reasons, last errors), also from text stored
	// before it was scrubbed on its way in; nil scrubs nothing.
	Scrub *relay.Scrubber
	// Console, when set, serves every path the API does not: the web
	// console (relay/console), behind the same guard without a token.
	Console http.Handler
}

// Handler returns the admin HTTP handler.
func Handler(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &api{cfg: cfg}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{ErrorLog: nil}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	api := http.NewServeMux()
	api.HandleFunc("GET /api/v1/dlq", a.listDead)
	api.HandleFunc("GET /api/v1/dlq/{id}", a.showDead)
	api.HandleFunc("POST /api/v1/dlq/replay", a.replay)
	api.HandleFunc("POST /api/v1/dlq/purge", a.purge)
	api.HandleFunc("GET /api/v1/events", a.listEvents)
	api.HandleFunc("GET /api/v1/events/{id}", a.showEvent)
	api.HandleFunc("GET /api/v1/conversations/{id}", a.conversation)
	api.HandleFunc("GET /api/v1/sinks", a.sinks)
	api.HandleFunc("GET /api/v1/ready", a.ready)
	api.HandleFunc("GET /api/v1/status", a.status)
	mux.Handle("/api/", a.auth(api))
	// Profiles for diagnosing a live process, behind the same token.
	prof := http.NewServeMux()
	prof.HandleFunc("/debug/pprof/", pprof.Index)
	prof.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	prof.HandleFunc("/debug/pprof/profile", pprof.Profile)
	prof.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	prof.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/debug/pprof/", a.auth(prof))
	if cfg.Console != nil {
		mux.Handle("/", cfg.Console)
	}
	if cfg.Token.IsZero() {
		// No token (loopback only): the browser-facing checks of SPEC §9
		// stand in for it, on every path. See guard.
		g := &guard{logger: cfg.Logger, now: cfg.Now}
		return g.wrap(mux)
	}
	return mux
}

type api struct{ cfg Config }

// auth requires the bearer token when one is configured. The answer never
// echoes what the client sent.
func (a *api) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.cfg.Token.IsZero() {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(a.cfg.Token.Reveal())) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="chatrelay"`)
				writeError(w, http.StatusUnauthorized, "missing or wrong bearer token (admin.token)")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (a *api) listDead(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, err := FilterParams{Sink: q.Get("sink"), Reason: q.Get("reason"), Since: q.Get("since"), Until: q.Get("until")}.Filter(a.cfg.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	page, err := a.cfg.Store.FindDead(r.Context(), f, intParam(r, "offset", 0), intParam(r, "limit", 1000))
	if err != nil {
		a.fail(w, err)
		return
	}
	for i := range page.DeadLetters {
		page.DeadLetters[i].Reason = a.cfg.Scrub.Scrub(page.DeadLetters[i].Reason)
	}
	// total: how many match the filter, on every page.
	writeJSON(w, http.StatusOK, page)
}

// EventView is an event as the API shows it.
type EventView struct {
	ID         string                 `json:"id"`
	Topic      string                 `json:"topic"`
	ReceivedAt time.Time              `json:"received_at"`
	Body       json.RawMessage        `json:"body"`
	Deliveries []relay.DeliveryStatus `json:"deliveries,omitempty"`
}

func view(ev *relay.Event) EventView {
	body := json.RawMessage(ev.Body)
	if !json.Valid(body) {
		body, _ = json.Marshal(string(ev.Body))
	}
	return EventView{ID: ev.ID, Topic: ev.Topic, ReceivedAt: ev.ReceivedAt, Body: body}
}

func (a *api) showDead(w http.ResponseWriter, r *http.Request) {
	dl, ev, err := a.cfg.Store.GetDead(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, err)
		return
	}
	dl.Reason = a.cfg.Scrub.Scrub(dl.Reason)
	writeJSON(w, http.StatusOK, map[string]any{"dead_letter": dl, "event": view(ev)})
}

// Selection picks dead letters: by ids, or all (of one sink or every sink).
type Selection struct {
	IDs  []string `json:"ids,omitempty"`
	All  bool     `json:"all,omitempty"`
	Sink string   `json:"sink,omitempty"`
	// With All: only the dead letters whose reason contains Reason
	// (ignoring case) and that were parked since Since and before Until
	// (each a duration before now, "2h", or an RFC 3339 time).
	Reason string `json:"reason,omitempty"`
	Since  string `json:"since,omitempty"`
	Until  string `json:"until,omitempty"`
}

func (a *api) selection(w http.ResponseWriter, r *http.Request) (Selection, bool) {
	var sel Selection
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sel); err != nil {
		writeError(w, http.StatusBadRequest, `body must be {"ids":[...]} or {"all":true,"sink":"..."}`)
		return sel, false
	}
	if sel.All == (len(sel.IDs) > 0) {
		writeError(w, http.StatusBadRequest, `give either "ids" or "all":true`)
		return sel, false
	}
	if sel.Sink != "" && !slices.Contains(a.cfg.Sinks, sel.Sink) {
		writeError(w, http.StatusNotFound, "no sink named "+strconv.Quote(sel.Sink))
		return sel, false
	}
	return sel, true
}

// SelectionResult is the answer of replay and purge. For a selection by
// ids, NotFound lists the ids that are no dead letter, and SinkRemoved
// (replay only) those whose sink is no longer configured, so nothing can
// send them.
type SelectionResult struct {
	Requeued    *int     `json:"requeued,omitempty"`
	Purged      *int     `json:"purged,omitempty"`
	NotFound    []string `json:"not_found,omitempty"`
	SinkRemoved []string `json:"sink_removed,omitempty"`
}

// sortIDs splits ids into those that are dead letters of a configured sink
// (by sink, in order), those that are no dead letter, and (when
// needSink) those of a sink no longer configured.
func (a *api) sortIDs(ctx context.Context, ids []string, needSink bool) (bySink map[string][]string, sinks, notFound, removed []string, err error) {
	bySink = map[string][]string{}
	for _, id := range ids {
		dl, _, err := a.cfg.Store.GetDead(ctx, id)
		switch {
		case errors.Is(err, relay.ErrNotFound):
			notFound = append(notFound, id)
			continue
		case err != nil:
			return nil, nil, nil, nil, err
		case needSink && !slices.Contains(a.cfg.Sinks, dl.Sink):
			removed = append(removed, id)
			continue
		}
		if _, seen := bySink[dl.Sink]; !seen {
			sinks = append(sinks, dl.Sink)
		}
		bySink[dl.Sink] = append(bySink[dl.Sink], id)
	}
	return bySink, sinks, notFound, removed, nil
}

func (a *api) replay(w http.ResponseWriter, r *http.Request) {
	sel, ok := a.selection(w, r)
	if !ok {
		return
	}
	if sel.filtered() {
		a.byFilter(w, r, sel, true)
		return
	}
	// Count per sink, for chatrelay_deliveries_total{result="replayed"}.
	var res SelectionResult
	var bySink map[string][]string
	var sinks []string
	if sel.All {
		sinks = a.cfg.Sinks
		if sel.Sink != "" {
			sinks = []string{sel.Sink}
		}
	} else {
		var err error
		bySink, sinks, res.NotFound, res.SinkRemoved, err = a.sortIDs(r.Context(), sel.IDs, true)
		if err != nil {
			a.fail(w, err)
			return
		}
	}
	total := 0
	for _, sink := range sinks {
		var n int
		var err error
		if sel.All {
			n, err = a.cfg.Store.RequeueAll(r.Context(), sink)
		} else {
			n, err = a.cfg.Store.Requeue(r.Context(), bySink[sink])
		}
		total += n
		if n > 0 && a.cfg.Metrics != nil && slices.Contains(a.cfg.Sinks, sink) {
			a.cfg.Metrics.Deliveries.WithLabelValues(sink, relay.ResultReplayed).Add(float64(n))
		}
		if err != nil {
			a.fail(w, err)
			return
		}
	}
	a.cfg.Logger.Info("dead letters replayed", "count", total, "sink", sel.Sink,
		"not_found", len(res.NotFound), "sink_removed", len(res.SinkRemoved))
	res.Requeued = &total
	writeJSON(w, http.StatusOK, res)
}

func (a *api) purge(w http.ResponseWriter, r *http.Request) {
	sel, ok := a.selection(w, r)
	if !ok {
		return
	}
	if sel.filtered() {
		a.byFilter(w, r, sel, false)
		return
	}
	var res SelectionResult
	var n int
	var err error
	if sel.All {
		n, err = a.cfg.Store.PurgeAll(r.Context(), sel.Sink)
	} else {
		var bySink map[string][]string
		var sinks []string
		bySink, sinks, res.NotFound, _, err = a.sortIDs(r.Context(), sel.IDs, false)
		var ids []string
		for _, sink := range sinks {
			ids = append(ids, bySink[sink]...)
		}
		if err == nil && len(ids) > 0 {
			n, err = a.cfg.Store.Purge(r.Context(), ids)
		}
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	a.cfg.Logger.Info("dead letters purged", "count", n, "sink", sel.Sink, "not_found", len(res.NotFound))
	res.Purged = &n
	writeJSON(w, http.StatusOK, res)
}

func (a *api) listEvents(w http.ResponseWriter, r *http.Request) {
	evs, err := a.cfg.Store.Recent(r.Context(), r.URL.Query().Get("before"), intParam(r, "limit", 50))
	if err != nil {
		a.fail(w, err)
		return
	}
	if evs == nil {
		evs = []relay.EventSummary{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": evs})
}

func (a *api) showEvent(w http.ResponseWriter, r *http.Request) {
	rec, err := a.cfg.Store.Lookup(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, err)
		return
	}
	v := view(rec.Event)
	v.Deliveries = rec.Deliveries
	for i := range v.Deliveries {
		v.Deliveries[i].LastError = a.cfg.Scrub.Scrub(v.Deliveries[i].LastError)
	}
	writeJSON(w, http.StatusOK, v)
}

// SinkView is one sink's status.
type SinkView struct {
	Name string `json:"name"`
	Up   bool   `json:"up"`
	// DownSince and DownCause ("unreachable" or "broken") are set while
	// the sink is down.
	DownSince            *time.Time `json:"down_since,omitempty"`
	DownCause            string     `json:"down_cause,omitempty"`
	Depth                int        `json:"queue_depth"`
	OldestPendingSeconds float64    `json:"oldest_pending_seconds"`
	DeadLetters          int        `json:"dead_letters"`
	// RateLimitedUntil is set while a rate-limit hold (429) pauses the
	// sink.
	RateLimitedUntil *time.Time `json:"rate_limited_until,omitempty"`
	LastError        string     `json:"last_error,omitempty"`
	LastErrorAt      *time.Time `json:"last_error_at,omitempty"`
}

// sinkViews is every configured sink's status, in config order.
func (a *api) sinkViews(ctx context.Context) ([]SinkView, error) {
	stats, err := a.cfg.Store.Stats(ctx)
	if err != nil {
		return nil, err
	}
	now := a.cfg.Now()
	when := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		t = t.UTC()
		return &t
	}
	out := make([]SinkView, 0, len(a.cfg.Sinks))
	for _, name := range a.cfg.Sinks {
		v := SinkView{Name: name, Up: true}
		if st, ok := a.cfg.States[name]; ok {
			h := st.Health()
			v.Up, v.DownSince, v.DownCause = h.Up, when(h.DownSince), h.DownCause
			v.RateLimitedUntil, v.LastError, v.LastErrorAt = when(h.HeldUntil), h.LastError, when(h.LastErrorAt)
		}
		for _, s := range stats {
			if s.Sink == name {
				v.Depth, v.DeadLetters = s.Depth, s.Dead
				if !s.Oldest.IsZero() {
					v.OldestPendingSeconds = max(now.Sub(s.Oldest).Seconds(), 0)
				}
			}
		}
		out = append(out, v)
	}
	return out, nil
}

func (a *api) sinks(w http.ResponseWriter, r *http.Request) {
	out, err := a.sinkViews(r.Context())
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"sinks": out})
}

// ReadyView is the store's readiness with its detail: what /readyz on the
// public listener reduces to a reason code.
type ReadyView struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"` // relay.ReadyReason
	Error  string `json:"error,omitempty"`  // the store's own words
}

func (a *api) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	v := ReadyView{Ready: true}
	if err := a.cfg.Store.Ready(ctx); err != nil {
		v = ReadyView{Reason: relay.ReadyReason(err), Error: err.Error()}
	}
	writeJSON(w, http.StatusOK, v)
}

// Status is the answer of GET /api/v1/status: what chatrelay status shows.
type Status struct {
	Version string     `json:"version"`
	Store   *StoreInfo `json:"store,omitempty"`
	Sinks   []SinkView `json:"sinks"`
}

func (a *api) status(w http.ResponseWriter, r *http.Request) {
	out, err := a.sinkViews(r.Context())
	if err != nil {
		a.fail(w, err)
		return
	}
	st := Status{Version: a.cfg.Version, Sinks: out}
	if a.cfg.StoreInfo != nil {
		info := a.cfg.StoreInfo(r.Context())
		st.Store = &info
	}
	writeJSON(w, http.StatusOK, st)
}

func (a *api) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, relay.ErrNotFound):
		writeError(w, http.StatusNotFound, "not found")
	case errors.Is(err, relay.ErrUnavailable), errors.Is(err, relay.ErrFull), errors.Is(err, relay.ErrClosed):
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "store unavailable: "+a.cfg.Scrub.Scrub(err.Error()))
	default:
		a.cfg.Logger.Error("admin API request failed", "err", err)
		writeError(w, http.StatusInternalServerError, "internal error; see the chatrelay log")
	}
}

func intParam(r *http.Request, name string, def int) int {
	if v, err := strconv.Atoi(r.URL.Query().Get(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
