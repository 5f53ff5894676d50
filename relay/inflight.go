package relay

import (
	"errors"
	"io"
	"net/http"
	"sync/atomic"
)

// DefaultMaxInflight is the default bound on the bytes of request bodies the
// receiver holds at once (max_inflight_bytes).
const DefaultMaxInflight = 64 << 20

// budget bounds the bytes held for request bodies across all requests in
// flight. A request reserves before it allocates; what cannot be reserved is
// refused, never waited for: a waiting request would hold its connection and
// its goroutine, which is what the bound is there to prevent.
type budget struct {
	limit int64
	used  atomic.Int64
	gauge interface{ Add(float64) } // chatrelay_inflight_body_bytes, or nil
}

// reserve takes n bytes from the budget, or reports false and takes nothing.
func (b *budget) reserve(n int64) bool {
	for {
		cur := b.used.Load()
		if cur+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(cur, cur+n) {
			if b.gauge != nil {
				b.gauge.Add(float64(n))
			}
			return true
		}
	}
}

// release gives n reserved bytes back.
func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.used.Add(-n)
	if b.gauge != nil {
		b.gauge.Add(-float64(n))
	}
}

// Body-reading outcomes besides success and *http.MaxBytesError.
var (
	// errBusy: the body would take the budget past max_inflight_bytes.
	errBusy = errors.New("max_inflight_bytes reached")
	// errTooLarge: the Content-Length is over max_body_bytes.
	errTooLarge = errors.New("content length over max_body_bytes")
)

// chunkedStart is the first reservation for a body sent without a
// Content-Length; it doubles from there as the body arrives.
const chunkedStart = 16 << 10

// readBody reads the request body of at most maxBody bytes, reserving from b
// before it allocates. held is what the caller must release when it no
// longer needs the body, also when err is not nil.
//
// With a Content-Length the whole length is reserved (and allocated) before
// the first byte is read, so a slow client holds exactly what it reserved.
// Without one (chunked), the buffer grows by doubling up to maxBody and each
// growth is reserved first; past the budget the read stops with errBusy, so
// a client trickling a chunked body holds at most its current buffer.
func (b *budget) readBody(w http.ResponseWriter, req *http.Request, maxBody int64) (body []byte, held int64, err error) {
	if n := req.ContentLength; n >= 0 {
		if n > maxBody {
			return nil, 0, errTooLarge
		}
		if !b.reserve(n) {
			return nil, 0, errBusy
		}
		body = make([]byte, n)
		if _, err := io.ReadFull(req.Body, body); err != nil {
			return nil, n, err
		}
		return body, n, nil
	}
	r := http.MaxBytesReader(w, req.Body, maxBody)
	var probe [1]byte
	for {
		if len(body) == cap(body) && int64(cap(body)) < maxBody {
			grow := min(max(int64(cap(body)), chunkedStart), maxBody-int64(cap(body)))
			if !b.reserve(grow) {
				return nil, held, errBusy
			}
			held += grow
			nb := make([]byte, len(body), int64(cap(body))+grow)
			copy(nb, body)
			body = nb
		}
		var err error
		if len(body) < cap(body) {
			var n int
			n, err = r.Read(body[len(body):cap(body)])
			body = body[:len(body)+n]
		} else {
			// maxBody bytes read: what comes next can only be the end of
			// the body or one byte too many (a MaxBytesError).
			_, err = r.Read(probe[:])
		}
		if errors.Is(err, io.EOF) {
			return body, held, nil
		}
		if err != nil {
			return nil, held, err
		}
	}
}
