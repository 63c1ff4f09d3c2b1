package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
)

// initialBodyBuffer is the most a buffered body gets before any of it has
// arrived. Past it, the body is kept in blocks of bodyBlock bytes, each
// allocated only once data is there to go in it, so a client that declares
// a large Content-Length and then stalls holds memory for what it sent
// (plus at most one block and a pooled 32 KiB scratch buffer), not for
// what it promised. Blocks are never copied into one buffer: the body is
// forwarded, and replayed, from them.
const (
	initialBodyBuffer = 16 << 10
	bodyBlock         = 64 << 10
)

// errBody wraps a failure reading the client's request body. It travels
// through the Transport to the ReverseProxy's ErrorHandler, so a body that
// stalls, breaks its framing or is cut off is answered as the client's
// fault (408, 400, 413, 499) and never blamed on the upstream.
type errBody struct{ err error }

func (e *errBody) Error() string { return "reading the request body: " + e.err.Error() }
func (e *errBody) Unwrap() error { return e.err }

// bodyReader reads the client's request body under the idle timeout
// (server.read_body_timeout): before each read the connection's read
// deadline is set to now+timeout, so each piece of the body must arrive
// within it while a body that keeps arriving is never cut. At the end of
// the body the deadline is cleared: on HTTP/1.1 the server then reads the
// connection in the background to notice a client that goes away, and a
// deadline left behind would cancel a long model call. It lives inside
// reqState, so it costs no allocation of its own.
type bodyReader struct {
	body    io.ReadCloser
	dl      readDeadliner // nil: no deadline (no timeout, or the writer cannot)
	timeout time.Duration
	armed   bool // a deadline is set on the connection
	// err is the first read error. The Transport reads a streamed body on
	// its own goroutine while the ErrorHandler may look at err.
	err atomic.Pointer[errBody]
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if e := b.err.Load(); e != nil {
		return 0, e
	}
	if b.dl != nil {
		// HTTP/1.x moves the connection's deadline, HTTP/2 the stream's.
		b.armed = b.dl.SetReadDeadline(time.Now().Add(b.timeout)) == nil
	}
	n, err := b.body.Read(p)
	switch {
	case err == io.EOF:
		b.disarm()
	case err != nil:
		e := &errBody{err: err}
		b.err.Store(e)
		err = e
	}
	return n, err
}

// Close closes the underlying body.
func (b *bodyReader) Close() error { return b.body.Close() }

// disarm clears the read deadline once the body is read.
func (b *bodyReader) disarm() {
	if b.armed {
		b.armed = false
		_ = b.dl.SetReadDeadline(time.Time{})
	}
}

// readDeadliner is what http.ResponseController.SetReadDeadline looks for.
type readDeadliner interface{ SetReadDeadline(time.Time) error }

// deadliner finds w's SetReadDeadline the way http.ResponseController
// does, but once per request and without ResponseController's error value
// (an allocation) on writers that have none.
func deadliner(w http.ResponseWriter, timeout time.Duration) readDeadliner {
	if timeout <= 0 {
		return nil
	}
	for {
		switch t := w.(type) {
		case readDeadliner:
			return t
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return nil
		}
	}
}

// prepareBody reads bodies up to the buffer bound into memory (so they can
// be replayed, and so the inbound connection is never read while the answer
// streams: golang/go#40747), and bounds larger ones by MaxBodyBytes. Every
// read of the body goes through st.body, under the read-body timeout.
func (h *Handler) prepareBody(w http.ResponseWriter, r *http.Request, st *reqState) error {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		r.Body, r.ContentLength = http.NoBody, 0
		return nil
	}
	st.body.body, st.body.dl, st.body.timeout = r.Body, deadliner(w, h.bodyTimeout), h.bodyTimeout
	var body io.ReadCloser = &st.body
	if r.ContentLength < 0 {
		body = http.MaxBytesReader(w, body, h.maxBody)
	}
	if r.ContentLength > h.bufBody {
		fullDuplex(w)
		r.Body = body // known length, streams; the server enforces Content-Length
		return nil
	}
	want := r.ContentLength
	if want < 0 {
		want = h.bufBody + 1 // one more tells a body too large to buffer
	}
	full, last, n, err := h.readBody(body, want)
	if err != nil {
		return err
	}
	if n > h.bufBody {
		// Chunked and too large to buffer: stream what was read, then the
		// rest.
		fullDuplex(w)
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(&blocksReader{append(full, last)}, body), body}
		r.ContentLength = -1
		return nil
	}
	st.body.disarm() // a declared length may end without a read that saw EOF
	r.ContentLength = n
	r.TransferEncoding = nil // a buffered chunked body goes upstream with its length
	if full == nil {
		r.Body = io.NopCloser(bytes.NewReader(last))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(last)), nil }
		return nil
	}
	blocks := append(full, last)
	r.Body = io.NopCloser(&blocksReader{slices.Clone(blocks)})
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(&blocksReader{slices.Clone(blocks)}), nil }
	return nil
}

// blocksReader reads a body kept in blocks. It consumes its slice of
// blocks, so each reader needs its own copy of it.
type blocksReader struct{ b [][]byte }

func (r *blocksReader) Read(p []byte) (int, error) {
	for len(r.b) > 0 && len(r.b[0]) == 0 {
		r.b = r.b[1:]
	}
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b[0])
	r.b[0] = r.b[0][n:]
	return n, nil
}

// readBody reads up to want bytes of body, or to its end, and returns them
// as the blocks filled before the last one (nil for a body that fits the
// first), the last one, and the total. The first block is at most
// initialBodyBuffer large; when a block is full the next read goes to a
// pooled scratch buffer and a new block is allocated only for data that
// arrived.
func (h *Handler) readBody(body io.Reader, want int64) (full [][]byte, cur []byte, total int64, err error) {
	cur = make([]byte, 0, min(want, initialBodyBuffer))
	var scratch []byte
	defer func() {
		if scratch != nil {
			h.pool.Put(scratch)
		}
	}()
	for total < want {
		left := want - total
		var n int
		if len(cur) < cap(cur) {
			free := cur[len(cur):cap(cur)]
			n, err = body.Read(free[:min(int64(len(free)), left)])
			cur = cur[:len(cur)+n]
		} else {
			if scratch == nil {
				scratch = h.pool.Get()
			}
			n, err = body.Read(scratch[:min(int64(len(scratch)), left)])
			if n > 0 {
				full = append(full, cur)
				cur = append(make([]byte, 0, min(left, max(bodyBlock, int64(n)))), scratch[:n]...)
			}
		}
		total += int64(n)
		if err == io.EOF {
			return full, cur, total, nil // a short declared length is io.ErrUnexpectedEOF, from the server
		}
		if err != nil {
			return nil, nil, 0, err
		}
	}
	return full, cur, total, nil
}

// fullDuplex lets a request body that is forwarded as it arrives go on
// being read while the answer streams back. Otherwise, when the answer's
// header is flushed, the server drains and closes the unread request body
// under the Transport that is still sending it upstream, and the Transport
// tears the upstream connection down mid-answer (golang/go#40747). HTTP/2
// is always full duplex (the call then fails harmlessly).
func fullDuplex(w http.ResponseWriter) {
	_ = http.NewResponseController(w).EnableFullDuplex()
}

// classifyBody maps a failure to read the client's body to the answer. It
// blames the client in every case: a body over max_body_bytes is 413, a
// body that stopped arriving 408, a body whose framing is broken (a chunk
// size that is not hex, negative or overflows; HTTP/2 DATA beyond the
// declared length) 400, and a client that went away 499 (logged, not
// sent). net/http's chunked-encoding errors are not exported, so they are
// what is left once the connection's own failures are accounted for.
func classifyBody(ctx context.Context, err error) (status int, code, msg string) {
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, CodeBodyTooLarge, tooLargeMessage(mbe.Limit)
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		// Before the context: on HTTP/1.x any failed read of the
		// connection, a deadline too, cancels the request's context.
		return http.StatusRequestTimeout, CodeRequestTimeout,
			"the request body stopped arriving for longer than this gateway waits: send the whole body without pausing"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return http.StatusBadRequest, CodeBadRequest, "the request body ended before its Content-Length: send the whole body"
	case ctx.Err() != nil, errors.As(err, &ne), errors.Is(err, net.ErrClosed), errors.Is(err, io.EOF):
		// The connection broke (reset, closed): the client is gone.
		return StatusClientClosedRequest, CodeClientClosedRequest, "the client closed the request"
	}
	return http.StatusBadRequest, CodeBadRequest,
		"the request body is malformed (broken chunked encoding or a length that does not match): send a well-formed body"
}

func tooLargeMessage(limit int64) string {
	return "the request body is larger than this gateway accepts: send at most " + strconv.FormatInt(limit, 10) + " bytes"
}

// discardRefused reads and drops what is left of a refused request body
// after the answer has been flushed, so that a client that sends its whole
// body before reading (Python's urllib, most HTTP/1.1 clients) reads the
// answer instead of a connection reset: closing a connection with unread
// data makes the kernel send RST, which discards the answer on the client.
// net/http does the same for up to 256 KiB after a handler; the gateway
// reads up to twice max_body_bytes, under the read-body timeout, and does
// not start when the declared length is beyond that. HTTP/2 needs none of
// this: the stream is reset, not the connection.
func (h *Handler) discardRefused(w http.ResponseWriter, r *http.Request, st *reqState) {
	if r.ProtoMajor != 1 || r.ContentLength > 2*h.maxBody {
		return
	}
	_ = http.NewResponseController(w).Flush()
	raw := st.body.body
	if raw == nil {
		raw = r.Body
	}
	b := &bodyReader{body: raw, dl: deadliner(w, h.bodyTimeout), timeout: h.bodyTimeout}
	_, _ = io.CopyN(io.Discard, b, 2*h.maxBody)
	b.disarm()
}
