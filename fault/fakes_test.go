package fault

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/sinks/slack/slacktest"
)

// turn identifies one event the tests send: conversation c, turn n. Its
// marker travels in the user's question, so every destination shows it
// whatever the format (JSON, Block Kit, a packed message).
type turn struct{ conv, n int }

func (tu turn) String() string { return fmt.Sprintf("c%d/t%d", tu.conv, tu.n) }

func (tu turn) marker() string { return fmt.Sprintf("zq%dq%dqz", tu.conv, tu.n) }

var markerRE = regexp.MustCompile(`zq(\d+)q(\d+)qz`)

// markers returns the turns named in text, each once, in order of first
// appearance.
func markers(text string) []turn {
	var out []turn
	for _, m := range markerRE.FindAllStringSubmatch(text, -1) {
		c, _ := strconv.Atoi(m[1])
		n, _ := strconv.Atoi(m[2])
		if tu := (turn{c, n}); !slices.Contains(out, tu) {
			out = append(out, tu)
		}
	}
	return out
}

// chatBody is a Chat Data chat event for one turn; pad adds that many
// bytes to the answer.
func chatBody(tu turn, source string, pad int) []byte {
	return fmt.Appendf(nil, `{"conversation_id":"conv-%d","chatbot_id":"654aee418bc9a33b0e50d0ad","source":%q,`+
		`"messages":[{"role":"user","content":"question %s"}],"answer":{"content":"answer %s","score":0.8}}`,
		tu.conv, source, tu.marker(), strings.Repeat("x", pad))
}

// hookDelivery is one request a webhook destination received.
type hookDelivery struct {
	at        time.Time
	webhookID string
	turns     []turn
}

// hookServer is a generic-webhook destination. Its behaviour per request
// is decided by answer (nil: 204).
type hookServer struct {
	srv    *httptest.Server
	answer func(n int, w http.ResponseWriter, r *http.Request) bool // true: answered, not a delivery

	mu    sync.Mutex
	n     int
	got   []hookDelivery
	tried []turn // the turns of every request, answered or not
}

func newHookServer(t *testing.T, answer func(n int, w http.ResponseWriter, r *http.Request) bool) *hookServer {
	t.Helper()
	h := &hookServer{answer: answer}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookServer) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		return
	}
	h.mu.Lock()
	n := h.n
	h.n++
	h.tried = append(h.tried, markers(string(body))...)
	h.mu.Unlock()
	if h.answer != nil && h.answer(n, w, r) {
		return
	}
	h.mu.Lock()
	h.got = append(h.got, hookDelivery{at: time.Now(), webhookID: r.Header.Get("webhook-id"), turns: markers(string(body))})
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// deliveries returns the successful deliveries so far, in arrival order.
func (h *hookServer) deliveries() []hookDelivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.got)
}

// attempts returns the turns of every request so far, answered or not.
func (h *hookServer) attempts() []turn {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.tried)
}

// requests is how many requests arrived, answered or not.
func (h *hookServer) requests() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// hookTurns flattens deliveries into the turns they carried, in order.
func hookTurns(ds []hookDelivery) []turn {
	var out []turn
	for _, d := range ds {
		out = append(out, d.turns...)
	}
	return out
}

// slackTurns returns the turns the fake Slack's channel shows, in the
// order the messages were accepted (and within a packed message, in its
// order).
func slackTurns(s *slacktest.Server) []turn {
	var out []turn
	for _, m := range s.Messages() {
		out = append(out, markers(m.Text+"\n"+string(m.Blocks))...)
	}
	return out
}

// missing returns the turns of want that are not in got.
func missing(want []turn, got []turn) []turn {
	seen := map[turn]bool{}
	for _, tu := range got {
		seen[tu] = true
	}
	var out []turn
	for _, tu := range want {
		if !seen[tu] {
			out = append(out, tu)
		}
	}
	return out
}

// orderReport checks a destination's sequence of turns: within a
// conversation a delivery never goes back to an older turn (a repeat of
// the latest is allowed and counted as a duplicate).
type orderReport struct {
	deliveries int
	duplicates int
	violations []string
}

func checkOrder(got []turn) orderReport {
	rep := orderReport{deliveries: len(got)}
	latest := map[int]int{}
	seen := map[turn]bool{}
	for i, tu := range got {
		if seen[tu] {
			rep.duplicates++
		}
		seen[tu] = true
		last, ok := latest[tu.conv]
		switch {
		case !ok || tu.n > last:
			latest[tu.conv] = tu.n
		case tu.n < last:
			rep.violations = append(rep.violations, fmt.Sprintf("delivery %d: conversation %d went back from turn %d to %d", i, tu.conv, last, tu.n))
		}
	}
	return rep
}

// gate sits in front of a fake destination and decides, by mode, whether
// a request reaches it: up forwards, down answers 503, limited answers 429
// with Retry-After. Every request is recorded with its time and answer.
type gate struct {
	srv        *httptest.Server
	proxy      http.Handler
	retryAfter string

	mu   sync.Mutex
	mode string
	log  []gateHit
}

type gateHit struct {
	start, end time.Time // arrival, and when the answer was written
	status     int
}

const (
	gateUp      = "up"
	gateDown    = "down"
	gateLimited = "limited"
)

// newGate puts a gate in front of target (a base URL).
func newGate(t *testing.T, target http.Handler, retryAfter string) *gate {
	t.Helper()
	g := &gate{proxy: target, mode: gateUp, retryAfter: retryAfter}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		g.mu.Lock()
		mode := g.mode
		g.mu.Unlock()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		switch mode {
		case gateDown:
			_, _ = io.Copy(io.Discard, r.Body)
			http.Error(rec, "service unavailable", http.StatusServiceUnavailable)
		case gateLimited:
			_, _ = io.Copy(io.Discard, r.Body)
			rec.Header().Set("Retry-After", g.retryAfter)
			http.Error(rec, "rate_limited", http.StatusTooManyRequests)
		default:
			g.proxy.ServeHTTP(rec, r)
		}
		g.mu.Lock()
		g.log = append(g.log, gateHit{start: start, end: time.Now(), status: rec.status})
		g.mu.Unlock()
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *gate) set(mode string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.mode = mode
}

func (g *gate) hits() []gateHit {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.log)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// proxyTo forwards requests to base (a fake's URL) over its own
// connections, closed when the test ends.
func proxyTo(t *testing.T, base string) http.Handler {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	p := httputil.NewSingleHostReverseProxy(u)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	p.Transport = tr
	return p
}
