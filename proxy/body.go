package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

// initialBodyBuffer is the most a buffered body gets before any of it has
// arrived. Past it, the buffer doubles only once data is there to fill it,
// so a client that declares a large Content-Length and then stalls holds
// memory for what it sent, not for what it promised.
const initialBodyBuffer = 16 << 10

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
	w       http.ResponseWriter // for http.ResponseController
	timeout time.Duration       // 0: no deadline
	armed   bool                // a deadline is set on the connection
	// err is the first read error. The Transport reads a streamed body on
	// its own goroutine while the ErrorHandler may look at err.
	err atomic.Pointer[errBody]
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if e := b.err.Load(); e != nil {
		return 0, e
	}
	if b.timeout > 0 {
		// HTTP/1.x moves the connection's deadline, HTTP/2 the stream's.
		// A writer that cannot (tests, other servers) reads without one.
		b.armed = http.NewResponseController(b.w).SetReadDeadline(time.Now().Add(b.timeout)) == nil
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
		_ = http.NewResponseController(b.w).SetReadDeadline(time.Time{})
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
	st.body.body, st.body.w, st.body.timeout = r.Body, w, h.bodyTimeout
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
	buf, err := h.readBody(body, want)
	if err != nil {
		return err
	}
	if int64(len(buf)) > h.bufBody {
		// Chunked and too large to buffer: stream what was read, then the
		// rest.
		fullDuplex(w)
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), body), body}
		r.ContentLength = -1
		return nil
	}
	st.body.disarm() // a declared length may end without a read that saw EOF
	r.ContentLength = int64(len(buf))
	r.Body = io.NopCloser(bytes.NewReader(buf))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	return nil
}

// readBody reads up to want bytes of body, or to its end. The buffer starts
// at most initialBodyBuffer large and grows, at most doubling, only after
// data has arrived that does not fit: while it is full the next read goes
// to a pooled scratch buffer first.
func (h *Handler) readBody(body io.Reader, want int64) ([]byte, error) {
	buf := make([]byte, 0, min(want, initialBodyBuffer))
	var scratch []byte
	defer func() {
		if scratch != nil {
			h.pool.Put(scratch)
		}
	}()
	for int64(len(buf)) < want {
		left := want - int64(len(buf))
		var n int
		var err error
		if len(buf) < cap(buf) {
			free := buf[len(buf):cap(buf)]
			n, err = body.Read(free[:min(int64(len(free)), left)])
			buf = buf[:len(buf)+n]
		} else {
			if scratch == nil {
				scratch = h.pool.Get()
			}
			n, err = body.Read(scratch[:min(int64(len(scratch)), left)])
			if n > 0 {
				grown := make([]byte, len(buf), min(want, max(2*int64(cap(buf)), int64(len(buf)+n))))
				copy(grown, buf)
				buf = append(grown, scratch[:n]...)
			}
		}
		if err == io.EOF {
			break // a short declared length is io.ErrUnexpectedEOF, from the server
		}
		if err != nil {
			return nil, err
		}
	}
	return buf, nil
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
	if r.ProtoMajor != 1 {
		return
	}
	if r.ContentLength > 2*h.maxBody {
		return
	}
	_ = http.NewResponseController(w).Flush()
	raw := st.body.body
	if raw == nil {
		raw = r.Body
	}
	b := &bodyReader{body: raw, w: w, timeout: h.bodyTimeout}
	_, _ = io.CopyN(io.Discard, b, 2*h.maxBody)
	b.disarm()
}
