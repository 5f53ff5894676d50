package relay_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/chatrelay/chatrelay/relay"
)

// budgetReceiver is a receiver with small limits and a store that keeps
// nothing.
func budgetReceiver(t *testing.T, maxBody, maxInflight int64) (*relay.Receiver, *relay.Metrics) {
	t.Helper()
	m := relay.NewMetrics(prometheus.NewRegistry())
	r, err := relay.NewReceiver(relay.ReceiverConfig{
		Secrets: []relay.Secret{secret}, MaxBody: maxBody, MaxInflight: maxInflight, Store: &memStore{},
		Router: relay.NewRouter([]string{"a"}, nil), Metrics: m,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r, m
}

// paddedBody is a JSON object of exactly n bytes (n >= 32).
func paddedBody(n int) []byte {
	head := `{"conversation_id":"c","pad":"`
	return []byte(head + strings.Repeat("x", n-len(head)-2) + `"}`)
}

// pending is a request whose body the test feeds through a pipe while the
// receiver handles it on its own goroutine.
type pending struct {
	body *io.PipeWriter
	rec  *httptest.ResponseRecorder
	done chan struct{}
}

// startPost sends a POST /webhook whose body arrives through a pipe, with the
// given Content-Length (-1: chunked) and signature.
func startPost(r http.Handler, contentLength int64, sig string) *pending {
	pr, pw := io.Pipe()
	req := httptest.NewRequest("POST", "/webhook", pr)
	req.ContentLength = contentLength
	if contentLength < 0 {
		req.TransferEncoding = []string{"chunked"}
	}
	req.Header.Set(relay.HeaderSignature, sig)
	p := &pending{body: pw, rec: httptest.NewRecorder(), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		r.ServeHTTP(p.rec, req)
		// A handler that stopped reading leaves the writer blocked.
		pr.CloseWithError(io.ErrClosedPipe)
	}()
	return p
}

// feed writes b; it returns once the receiver has read all of it (or
// stopped reading).
func (p *pending) feed(b []byte) { _, _ = p.body.Write(b) }

// answer waits for the receiver's answer.
func (p *pending) answer(t *testing.T) (int, http.Header, answer) {
	t.Helper()
	<-p.done
	var a answer
	_ = json.Unmarshal(p.rec.Body.Bytes(), &a)
	return p.rec.Code, p.rec.Header(), a
}

// assertBusy checks a refusal for want of memory: 503, Retry-After, and
// "Connection: close" (so the server does not read the body to discard it).
func assertBusy(t *testing.T, what string, code int, h http.Header, a answer, closes bool) {
	t.Helper()
	if code != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || a.Status != "unavailable" || a.Error == "" {
		t.Fatalf("%s: %d %+v (Retry-After %q), want 503 unavailable with Retry-After", what, code, a, h.Get("Retry-After"))
	}
	if !closes {
		t.Fatalf("%s: the connection stays open, want Connection: close (the body is not read)", what)
	}
}

// TestInflightBudgetContentLength: bodies with a Content-Length reserve it
// all before the first byte is read; once three slow bodies hold the whole
// budget, a fourth request is answered 503 + Retry-After without its body
// being read, and everything reserved is given back when the requests end.
func TestInflightBudgetContentLength(t *testing.T) {
	t.Parallel()
	const size = 4096
	r, m := budgetReceiver(t, size, 3*size)
	body := paddedBody(size)
	sig := relay.Sign(body, secret)

	var slow []*pending
	for range 3 {
		p := startPost(r, size, sig)
		p.feed(body[:1]) // returns once the receiver reads: it has reserved
		slow = append(slow, p)
	}
	if got := r.InflightBytes(); got != 3*size {
		t.Fatalf("three slow bodies hold %d bytes, want %d", got, 3*size)
	}
	// Even one byte more does not fit; the refused request's body is never
	// read (nothing is fed to it).
	for _, n := range []int64{size, 1} {
		p := startPost(r, n, sig)
		code, h, a := p.answer(t)
		assertBusy(t, fmt.Sprintf("Content-Length %d", n), code, h, a, h.Get("Connection") == "close")
	}
	if n := testutil.ToFloat64(m.EventsReceived.WithLabelValues("chat", relay.ReceiveUnavailable)); n != 2 {
		t.Fatalf("events_received{chat,unavailable} = %v, want 2", n)
	}
	if g := testutil.ToFloat64(m.InflightBodyBytes); g != 3*size {
		t.Fatalf("chatrelay_inflight_body_bytes = %v, want %d", g, 3*size)
	}

	// One slow body completes: its room is free again.
	slow[0].feed(body[1:])
	_ = slow[0].body.Close()
	if code, _, a := slow[0].answer(t); code != 200 || a.Status != "accepted" {
		t.Fatalf("completed body: %d %+v", code, a)
	}
	if got := r.InflightBytes(); got != 2*size {
		t.Fatalf("after one request ended: %d bytes held, want %d", got, 2*size)
	}
	p := startPost(r, size, sig)
	p.feed(body)
	_ = p.body.Close()
	if code, _, a := p.answer(t); code != 200 {
		t.Fatalf("a body that fits again: %d %+v", code, a)
	}

	// The others give up half-way: their reservations are released too.
	for _, p := range slow[1:] {
		_ = p.body.CloseWithError(io.ErrUnexpectedEOF)
		if code, _, _ := p.answer(t); code != http.StatusBadRequest {
			t.Fatalf("cut-off body answered %d, want 400", code)
		}
	}
	if got := r.InflightBytes(); got != 0 {
		t.Fatalf("%d bytes still held after every request ended", got)
	}
	if g := testutil.ToFloat64(m.InflightBodyBytes); g != 0 {
		t.Fatalf("chatrelay_inflight_body_bytes = %v after every request ended", g)
	}
}

// TestInflightBudgetChunked: a body without a Content-Length reserves as it
// grows, so a client trickling it holds only what it reserved; when the
// next growth does not fit, that request is answered 503 mid-body.
func TestInflightBudgetChunked(t *testing.T) {
	t.Parallel()
	const maxBody = 64 << 10
	r, _ := budgetReceiver(t, maxBody, maxBody)
	trickle := bytes.Repeat([]byte("x"), maxBody)

	a := startPost(r, -1, "x")
	a.feed(trickle[:1])
	if got := r.InflightBytes(); got != 16<<10 {
		t.Fatalf("one byte of a chunked body holds %d, want the first 16 KiB step", got)
	}
	a.feed(trickle[1 : 16<<10+1]) // one byte past the first step
	if got := r.InflightBytes(); got != 32<<10 {
		t.Fatalf("16 KiB + 1 of a chunked body holds %d, want 32 KiB", got)
	}
	// What is left of the budget goes to a body with a Content-Length...
	b := startPost(r, 32<<10, "x")
	b.feed(trickle[:1])
	if got := r.InflightBytes(); got != maxBody {
		t.Fatalf("held %d, want the whole budget %d", got, maxBody)
	}
	// ...so the chunked body cannot grow: it is refused there, having
	// never held more than it reserved.
	go a.feed(trickle[16<<10+1:])
	code, h, ans := a.answer(t)
	assertBusy(t, "chunked body past the budget", code, h, ans, h.Get("Connection") == "close")
	if got := r.InflightBytes(); got != 32<<10 {
		t.Fatalf("after the chunked body was refused: %d held, want %d", got, 32<<10)
	}
	b.feed(trickle[1 : 32<<10])
	_ = b.body.Close()
	if code, _, _ := b.answer(t); code != http.StatusForbidden {
		t.Fatalf("the other body, read whole and unsigned: %d, want 403", code)
	}
	if got := r.InflightBytes(); got != 0 {
		t.Fatalf("%d bytes still held after every request ended", got)
	}
}

// TestReceiverBodySizes: bodies up to max_body_bytes are read whole, with
// or without a Content-Length, and one byte more is 413; a Content-Length
// over the limit is refused before anything is read.
func TestReceiverBodySizes(t *testing.T) {
	t.Parallel()
	const maxBody = 40000 // not a multiple of the chunked growth steps
	r, _ := budgetReceiver(t, maxBody, maxBody)
	for _, n := range []int{32, 16<<10 - 1, 16 << 10, 16<<10 + 1, 32 << 10, maxBody - 1, maxBody, maxBody + 1, 3 * maxBody} {
		body := paddedBody(n)
		want := http.StatusOK
		if n > maxBody {
			want = http.StatusRequestEntityTooLarge
		}
		for _, chunked := range []bool{false, true} {
			t.Run(fmt.Sprintf("%d bytes, chunked %v", n, chunked), func(t *testing.T) {
				req := httptest.NewRequest("POST", "/webhook", bytes.NewReader(body))
				if chunked {
					req.ContentLength = -1
				}
				read := &countingReader{r: req.Body}
				req.Body = io.NopCloser(read)
				req.Header.Set(relay.HeaderSignature, relay.Sign(body, secret))
				w := httptest.NewRecorder()
				r.ServeHTTP(w, req)
				if w.Code != want {
					t.Fatalf("answered %d, want %d: %s", w.Code, want, w.Body)
				}
				if !chunked && n > maxBody && read.n != 0 {
					t.Fatalf("read %d bytes of a body whose Content-Length is over the limit", read.n)
				}
				if got := r.InflightBytes(); got != 0 {
					t.Fatalf("%d bytes still held", got)
				}
			})
		}
	}
	// A body shorter than its Content-Length is not an event.
	req := httptest.NewRequest("POST", "/webhook", strings.NewReader(`{}`))
	req.ContentLength = 10
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)
	if w.Code != http.StatusBadRequest || r.InflightBytes() != 0 {
		t.Fatalf("short body: %d, %d held", w.Code, r.InflightBytes())
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestInflightBudgetOverHTTP: over a real connection, the refusal comes at
// once, before the client has sent any of its body, and says the
// connection closes. The first client asks "Expect: 100-continue", so the
// server's "100 Continue" says its handler has reserved and started
// reading.
func TestInflightBudgetOverHTTP(t *testing.T) {
	t.Parallel()
	const size = 4096
	r, _ := budgetReceiver(t, size, size)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()

	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		// Not a timing bound: a server that waited for the body would
		// never answer, and the test must fail rather than hang.
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		return c, bufio.NewReader(c)
	}
	head := func(n int, extra string) string {
		return fmt.Sprintf("POST /webhook HTTP/1.1\r\nHost: relay\r\nContent-Length: %d\r\n%s\r\n", n, extra)
	}

	slow, slowR := dial()
	if _, err := io.WriteString(slow, head(size, "Expect: 100-continue\r\n")); err != nil {
		t.Fatal(err)
	}
	cont, err := http.ReadResponse(slowR, nil)
	if err != nil || cont.StatusCode != http.StatusContinue {
		t.Fatalf("want 100 Continue once the handler reads: %v %v", cont, err)
	}

	refused, refusedR := dial()
	if _, err := io.WriteString(refused, head(size, "")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(refusedR, nil)
	if err != nil {
		t.Fatalf("no answer while the body was not sent: %v", err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var a answer
	_ = json.Unmarshal(raw, &a)
	assertBusy(t, "second body over the budget", resp.StatusCode, resp.Header, a, resp.Close)
	// (net/http still reads and discards up to 256 KiB of a body it was
	// promised, within the server's read timeout, after the answer: that
	// costs a small fixed buffer, not the body.)

	// The first client sends its body after all, unsigned: read and judged.
	if _, err := slow.Write(paddedBody(size)); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(slowR, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("the body that fit: %d, want 403 (unsigned)", resp.StatusCode)
	}
	if got := r.InflightBytes(); got != 0 {
		t.Fatalf("%d bytes still held after both requests were answered", got)
	}
}
