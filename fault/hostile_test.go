package fault

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/relaytest"
	"github.com/chatrelay/chatrelay/sinks/slack/slacktest"
)

// transcript keeps every answer the relay gave, to look for secrets in.
type transcript struct {
	mu  sync.Mutex
	buf bytes.Buffer
	n   int
}

func (tr *transcript) add(what, text string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	fmt.Fprintf(&tr.buf, "== %s\n%s\n", what, text)
	tr.n++
}

func (tr *transcript) String() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.buf.String()
}

func randomToken(prefix string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// TestFaultHostileClients: slow-header clients are cut off by the server's
// timeouts; a thousand requests with bad signatures, malformed or oversized
// bodies change nothing in the store and are counted as rejected; the admin
// API refuses missing and wrong tokens; and no answer, log line or CLI
// output ever carries the signing secret, the admin token, a webhook URL's
// token or a header secret.
func TestFaultHostileClients(t *testing.T) {
	t.Parallel()
	var (
		signing    = randomToken("sign-")
		adminToken = randomToken("adm-")
		crmPath    = "/hooks/" + randomToken("crmtok-")
		leakyPath  = "/hooks/" + randomToken("leaktok-")
		hdrSecret  = randomToken("hdrtok-")
		whsec      = "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("k"), 32))
	)
	crm := newHookServer(t, nil)
	slack := slacktest.NewServer(t)
	// A destination that answers 404 and echoes the path, as many web
	// frameworks do ("Cannot POST /hooks/…").
	leaky := newHookServer(t, func(_ int, w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, "<pre>Cannot POST %s</pre>", r.URL.Path)
		return true
	})
	r := newRelay(t, relayConfig{Secret: signing, AdminToken: adminToken, Extra: fmt.Sprintf(`
max_body_bytes: 4KiB
retry: {initial: 100ms, max: 500ms, max_age: 1h}
sinks:
  - name: crm
    type: webhook
    url: %q
    secret: %q
    headers: {Authorization: "Bearer %s"}
  - {name: team, type: slack, webhook_url: %q, rate: 20/s}
  - {name: leaky, type: webhook, url: %q}
`, crm.srv.URL+crmPath, whsec, hdrSecret, slack.WebhookURL(), leaky.srv.URL+leakyPath)})
	secrets := map[string]string{
		"signing secret": signing, "admin token": adminToken, "crm URL token": crmPath, "leaky URL token": leakyPath,
		"header secret": hdrSecret, "whsec secret": whsec, "slack webhook token": slack.WebhookPath(),
	}
	c := newClient(t, adminToken)
	r.start()
	var answers transcript

	// Slow clients run while the flood below goes on.
	type slowResult struct {
		name   string
		closed time.Duration
		err    error
	}
	slow := []struct{ name, head, drip string }{
		{"partial request line", "POS", "T /webhook HTTP/1.1\r\nHost: relay\r\n\r\n"},
		{"partial headers", "POST /webhook HTTP/1.1\r\nHost: relay\r\n", "X-Slow: " + strings.Repeat("a", 64) + "\r\n\r\n"},
	}
	slowDone := make(chan slowResult, len(slow))
	for _, s := range slow {
		go func() {
			d, err := slowClient(mustAddr(r), s.head, s.drip, 250*time.Millisecond, 20*time.Second)
			slowDone <- slowResult{s.name, d, err}
		}()
	}

	// A thousand bad requests, in parallel.
	type badReq struct {
		kind   string
		body   []byte
		sig    string
		status int
		result string // chatrelay_events_received_total's result
	}
	valid := chatBody(turn{9, 0}, "widget", 0)
	other := relay.Sign(valid, relay.Secret("a rotated-out secret"))
	var bad []badReq
	add := func(n int, b badReq) {
		for range n {
			bad = append(bad, b)
		}
	}
	add(200, badReq{kind: "signed with another secret", body: valid, sig: other, status: 403, result: "rejected_signature"})
	add(150, badReq{kind: "no signature", body: valid, status: 403, result: "rejected_signature"})
	add(100, badReq{kind: "signature not base64", body: valid, sig: "%%%not-base64%%%", status: 403, result: "rejected_signature"})
	add(50, badReq{kind: "signature of another body", body: valid, sig: relay.Sign([]byte(`{}`), relay.Secret(signing)), status: 403, result: "rejected_signature"})
	for i, body := range []string{"not json", "[1,2,3]", `"a string"`, `{"conversation_id":`, "", "null", "42", `{"a":1}{"b":2}`, "\xff\xfe{}", "{\"a\":\"\x00\"}"} {
		add(49, badReq{kind: fmt.Sprintf("malformed body %d", i), body: []byte(body), sig: relay.Sign([]byte(body), relay.Secret(signing)), status: 400, result: "rejected_body"})
	}
	big := fmt.Appendf(nil, `{"conversation_id":"big","pad":%q}`, strings.Repeat("x", 8<<10))
	add(5, badReq{kind: "oversized, signed", body: big, sig: relay.Sign(big, relay.Secret(signing)), status: 413, result: "rejected_body"})
	add(5, badReq{kind: "oversized, unsigned", body: big, status: 413, result: "rejected_body"})
	if len(bad) != 1000 {
		t.Fatalf("%d bad requests planned", len(bad))
	}
	work := make(chan badReq)
	var wg sync.WaitGroup
	var mu sync.Mutex
	wrong := map[string]int{}
	for range 8 {
		wg.Go(func() {
			for b := range work {
				rep, err := c.post(mustAddr(r), b.body, b.sig, "")
				mu.Lock()
				switch {
				case err != nil:
					wrong[b.kind+": "+err.Error()]++
				case rep.Code != b.status:
					wrong[fmt.Sprintf("%s: %d, want %d", b.kind, rep.Code, b.status)]++
				}
				mu.Unlock()
				if err == nil {
					answers.add("receiver answer to "+b.kind, rep.Body)
				}
			}
		})
	}
	start := time.Now()
	for _, b := range bad {
		work <- b
	}
	close(work)
	wg.Wait()
	for what, n := range wrong {
		t.Errorf("%d× %s", n, what)
	}
	t.Logf("1000 bad requests answered in %s", time.Since(start).Round(time.Millisecond))
	// Headers past MaxHeaderBytes: 431, nothing read further.
	huge, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+mustAddr(r)+"/webhook", bytes.NewReader(valid))
	if err != nil {
		t.Fatal(err)
	}
	huge.Header.Set(relay.HeaderSignature, relay.Sign(valid, relay.Secret(signing)))
	huge.Header.Set("X-Padding", strings.Repeat("p", 128<<10))
	if rep, err := c.do(huge); err == nil && rep.Code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("128 KiB of headers = %d, want 431", rep.Code)
	}
	// Other methods: 405 with Allow: POST.
	for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		rep := c.call(method, "http://"+mustAddr(r)+"/webhook", "{}", "")
		if rep.Code != http.StatusMethodNotAllowed || !strings.Contains(rep.Header.Get("Allow"), http.MethodPost) {
			t.Errorf("%s /webhook = %d, Allow %q; want 405 with Allow: POST", method, rep.Code, rep.Header.Get("Allow"))
		}
	}

	// Nothing was stored, queued or sent; every request was counted.
	var events struct {
		Events []relay.EventSummary `json:"events"`
	}
	c.adminJSON(r, "/api/v1/events", &events)
	if len(events.Events) != 0 {
		t.Errorf("the store holds %d events after only bad requests", len(events.Events))
	}
	m := c.metrics(r)
	want := map[string]float64{}
	for _, b := range bad {
		want[b.result]++
	}
	for result, n := range want {
		if got := m.get(t, "chatrelay_events_received_total", "topic", "chat", "result", result); got != n {
			t.Errorf("events_received_total{chat,%s} = %v, want %v", result, got, n)
		}
	}
	for _, result := range []string{"accepted", "duplicate", "unrouted", "unavailable"} {
		if got := m.get(t, "chatrelay_events_received_total", "topic", "chat", "result", result); got != 0 {
			t.Errorf("events_received_total{chat,%s} = %v after only bad requests", result, got)
		}
	}
	for _, sink := range []string{"crm", "team", "leaky"} {
		if got := m.get(t, "chatrelay_queue_depth", "sink", sink); got != 0 {
			t.Errorf("queue_depth{%s} = %v", sink, got)
		}
	}
	if n := crm.requests() + leaky.requests() + len(slack.Requests()); n != 0 {
		t.Errorf("the destinations got %d requests from bad requests", n)
	}

	// The server cut the slow clients off, by its header timeout.
	for range slow {
		res := <-slowDone
		switch {
		case res.err != nil:
			t.Errorf("slow client (%s): %v", res.name, res.err)
		case res.closed < 4*time.Second || res.closed > 9*time.Second:
			t.Errorf("slow client (%s): the server closed the connection after %s, want about 5s (ReadHeaderTimeout)", res.name, res.closed)
		default:
			t.Logf("slow client (%s): connection closed by the server after %s", res.name, res.closed.Round(time.Millisecond))
		}
	}

	// The admin API refuses missing and wrong tokens, on every route.
	routes := []struct{ method, path, body string }{
		{"GET", "/api/v1/dlq", ""}, {"GET", "/api/v1/dlq/x.crm", ""}, {"POST", "/api/v1/dlq/replay", `{"all":true}`},
		{"POST", "/api/v1/dlq/purge", `{"all":true}`}, {"GET", "/api/v1/events", ""}, {"GET", "/api/v1/events/x", ""},
		{"GET", "/api/v1/sinks", ""}, {"GET", "/api/v1/nope", ""},
	}
	badAuth := []struct{ name, header string }{
		{"no header", ""}, {"wrong token", "Bearer wrong-" + adminToken[4:]}, {"empty bearer", "Bearer "},
		{"basic scheme", "Basic " + adminToken}, {"token with a suffix", "Bearer " + adminToken + "x"},
		{"token prefix only", "Bearer " + adminToken[:len(adminToken)-1]}, {"bare token", adminToken},
	}
	admin := "http://" + r.adminAddr()
	for _, rt := range routes {
		for _, a := range badAuth {
			req, err := http.NewRequestWithContext(t.Context(), rt.method, admin+rt.path, strings.NewReader(rt.body))
			if err != nil {
				t.Fatal(err)
			}
			if a.header != "" {
				req.Header.Set("Authorization", a.header)
			}
			rep, err := c.do(req)
			if err != nil {
				t.Fatal(err)
			}
			answers.add(fmt.Sprintf("admin %s %s with %s", rt.method, rt.path, a.name), rep.Body)
			if rep.Code != http.StatusUnauthorized || rep.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s with %s = %d, want 401 with WWW-Authenticate", rt.method, rt.path, a.name, rep.Code)
			}
		}
	}
	for _, path := range []string{"/metrics", "/healthz"} {
		if rep := c.call("GET", admin+path, "", ""); rep.Code != http.StatusOK {
			t.Errorf("%s without a token = %d, want 200 (open, it carries no secrets)", path, rep.Code)
		}
	}

	// Real traffic, including a destination whose errors echo its URL.
	for n := range 3 {
		tu := turn{n, 0}
		rep, a, err := c.postSigned(mustAddr(r), signing, chatBody(tu, "widget", 0))
		if err != nil || rep.Code != http.StatusOK || a.Status != "accepted" {
			t.Fatalf("turn %s: %v %d %s", tu, err, rep.Code, rep.Body)
		}
		answers.add("receiver answer to a good event", rep.Body)
	}
	relaytest.Eventually(t, 20*time.Second, "the good events delivered, or parked for leaky", func() bool {
		m := c.metrics(r)
		return m.get(t, "chatrelay_deliveries_total", "sink", "crm", "result", "delivered") == 3 &&
			m.get(t, "chatrelay_deliveries_total", "sink", "team", "result", "delivered") == 3 &&
			m.get(t, "chatrelay_dead_letters", "sink", "leaky") == 3
	})
	for _, d := range crm.deliveries() {
		if len(d.turns) != 1 {
			t.Errorf("crm delivery %+v", d)
		}
	}
	// Collect everything an operator can see.
	for _, path := range []string{"/metrics", "/healthz", "/api/v1/dlq", "/api/v1/events", "/api/v1/sinks"} {
		answers.add("admin "+path, c.get(admin+path).Body)
	}
	for _, d := range c.deadLetters(r) {
		answers.add("admin dlq "+d.ID, c.get(admin+"/api/v1/dlq/"+d.ID).Body)
		answers.add("admin event "+d.EventID, c.get(admin+"/api/v1/events/"+d.EventID).Body)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		answers.add("receiver "+path, c.get("http://"+mustAddr(r)+path).Body)
	}
	for _, args := range [][]string{{"dlq", "list"}, {"dlq", "list", "--json"}} {
		out, err := r.runCLI(args...)
		if err != nil {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
		answers.add(strings.Join(args, " "), out)
	}
	if dead := c.deadLetters(r); len(dead) > 0 {
		out, err := r.runCLI("dlq", "show", dead[0].ID)
		if err != nil {
			t.Errorf("dlq show: %v\n%s", err, out)
		}
		answers.add("dlq show", out)
	}
	r.stop(15 * time.Second)
	transcripts := map[string]string{"answers": answers.String(), "log": r.logs.String()}
	for where, text := range transcripts {
		for what, secret := range secrets {
			if i := strings.Index(text, secret); i >= 0 {
				// Name the answer it is in, and show the line.
				section := ""
				if j := strings.LastIndex(text[:i], "\n== "); j >= 0 {
					section = " (" + strings.TrimSpace(text[j+4:j+4+strings.IndexByte(text[j+4:], '\n')]) + ")"
				}
				lineStart := strings.LastIndexByte(text[:i], '\n') + 1
				lineEnd := i + strings.IndexByte(text[i:]+"\n", '\n')
				t.Errorf("the %s%s carry the %s: %s", where, section, what, text[max(lineStart, i-300):lineEnd])
			}
		}
	}
	// The test must have looked at something.
	if !strings.Contains(answers.String(), `"dead_letters"`) || !strings.Contains(r.logs.String(), `"msg":"delivered"`) || answers.n < 1050 {
		t.Errorf("the transcripts are too thin to prove anything (%d answers)", answers.n)
	}
	t.Logf("looked for %d secrets in %d answers (%d KiB) and %d KiB of log", len(secrets), answers.n, len(answers.String())>>10, len(r.logs.String())>>10)
}

// slowClient opens a connection, sends head, then drip one byte every
// every, until the server closes the connection; it returns how long after
// the dial that was.
func slowClient(addr, head, drip string, every, bound time.Duration) (time.Duration, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	start := time.Now()
	closed := make(chan error, 1)
	go func() {
		_ = conn.SetReadDeadline(start.Add(bound))
		_, err := io.Copy(io.Discard, conn)
		closed <- err
	}()
	if _, err := io.WriteString(conn, head); err != nil {
		return 0, err
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	sent := 0
	for {
		select {
		case err := <-closed:
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return 0, fmt.Errorf("still open after %s: the server never cut it off", bound)
			}
			if sent == len(drip) {
				return 0, fmt.Errorf("the whole request was sent before the server closed the connection")
			}
			return time.Since(start), nil
		case <-tick.C:
			if sent < len(drip) {
				// A write can fail once the server closed: the read side
				// reports it.
				_, _ = conn.Write([]byte{drip[sent]})
				sent++
			}
		}
	}
}
