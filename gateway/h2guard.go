package gateway

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// HTTP/2 stream-reset budget of one client connection (CVE-2023-44487,
// "rapid reset"). Go's server bounds the handlers running at once per
// connection, but not how fast a client may open and reset streams: one
// connection could send 265,826 HEADERS+RST_STREAM pairs in 8.4 s, and every
// stream that raced its reset reached the upstream and the audit log. A
// connection may reset h2ResetBurst streams at once (twice the concurrent
// stream limit, so a client that cancels everything it has in flight is
// fine) and h2ResetRate a second after that; one more and the gateway
// sends GOAWAY ENHANCE_YOUR_CALM and closes the connection.
const (
	h2MaxConcurrentStreams = 100
	h2ResetBurst           = 2 * h2MaxConcurrentStreams
	h2ResetRate            = 100 // per second
)

// serveH2 replaces net/http's bundled HTTP/2 server on the TLS listener
// with golang.org/x/net/http2's, served over a resetGuard: the bundled
// server takes only a *tls.Conn, which leaves no place to watch the
// client's frames.
// x/net/http2's Server and ServeConn are deprecated in favour of
// net/http's, which has no way to serve a connection it did not accept
// itself; they read their settings from the http.Server (hs.HTTP2).
//
// The http2.Server is configured on hs (http2.ConfigureServer), so that
// hs.Shutdown also shuts its connections down gracefully (GOAWAY, then
// close once idle) instead of waiting out the drain timeout.
func serveH2(hs *http.Server) error {
	//lint:ignore SA1019 net/http cannot serve HTTP/2 over a wrapped connection.
	h2 := &http2.Server{MaxConcurrentStreams: h2MaxConcurrentStreams}
	//lint:ignore SA1019 see above.
	if err := http2.ConfigureServer(hs, h2); err != nil {
		return err
	}
	hs.TLSNextProto["h2"] = func(hs *http.Server, c *tls.Conn, h http.Handler) {
		ctx := context.Background()
		if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
			ctx = bc.BaseContext()
		}
		//lint:ignore SA1019 see above.
		h2.ServeConn(newResetGuard(c), &http2.ServeConnOpts{Context: ctx, Handler: h, BaseConfig: hs})
	}
	return nil
}

// resetGuard is one HTTP/2 server connection that counts the RST_STREAM
// frames its client sends (it follows frame boundaries in both directions,
// without decoding anything else) and, past the budget, writes GOAWAY
// ENHANCE_YOUR_CALM between two of the server's frames and closes.
type resetGuard struct {
	*tls.Conn

	// Read side: only the server's frame reader calls Read.
	in        frameCursor
	preface   int // client preface bytes still to pass
	tokens    float64
	last      time.Time
	maxStream atomic.Uint32 // highest stream the client opened

	// Write side.
	mu      sync.Mutex
	out     frameCursor
	tripped atomic.Bool
	closed  bool
}

func newResetGuard(c *tls.Conn) *resetGuard {
	return &resetGuard{Conn: c, preface: len(http2.ClientPreface), tokens: h2ResetBurst, last: time.Now()}
}

// frameCursor follows HTTP/2 frame boundaries (RFC 9113 §4.1) in a byte
// stream.
type frameCursor struct {
	hdr  [9]byte
	hn   int // header bytes collected
	left int // payload bytes still to pass
}

func (f *frameCursor) atBoundary() bool { return f.hn == 0 && f.left == 0 }

// advance passes p through the cursor. It calls onHeader for each
// complete frame header and stops early, returning how much of p it
// consumed, when onHeader returns false.
func (f *frameCursor) advance(p []byte, onHeader func(typ byte, stream uint32) bool) int {
	i := 0
	for i < len(p) {
		if f.left > 0 {
			k := min(f.left, len(p)-i)
			f.left -= k
			i += k
			continue
		}
		f.hdr[f.hn] = p[i]
		f.hn++
		i++
		if f.hn == len(f.hdr) {
			f.hn = 0
			f.left = int(f.hdr[0])<<16 | int(f.hdr[1])<<8 | int(f.hdr[2])
			if onHeader != nil && !onHeader(f.hdr[3], binary.BigEndian.Uint32(f.hdr[5:])&(1<<31-1)) {
				return i
			}
		}
	}
	return i
}

// toBoundary returns how many bytes of p finish the frame in progress.
func (f *frameCursor) toBoundary(p []byte) int {
	g := *f
	for i := range p {
		if g.atBoundary() {
			return i
		}
		g.advance(p[i:i+1], nil)
	}
	return len(p)
}

const (
	frameHeaders   = 0x1
	frameRSTStream = 0x3
)

func (c *resetGuard) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	i := 0
	if c.preface > 0 {
		i = min(c.preface, n)
		c.preface -= i
	}
	ok := true
	i += c.in.advance(p[i:n], func(typ byte, stream uint32) bool {
		switch typ {
		case frameHeaders:
			if stream > c.maxStream.Load() {
				c.maxStream.Store(stream)
			}
		case frameRSTStream:
			ok = c.allowReset()
		}
		return ok
	})
	if !ok {
		// Nothing after the reset over budget reaches the server.
		c.trip()
		return i, err
	}
	return n, err
}

func (c *resetGuard) allowReset() bool {
	now := time.Now()
	c.tokens = min(h2ResetBurst, c.tokens+now.Sub(c.last).Seconds()*h2ResetRate)
	c.last = now
	if c.tokens < 1 {
		return false
	}
	c.tokens--
	return true
}

// trip sends GOAWAY now if the server is between frames, or has the
// server's next write send it once the frame in progress is out. A writer
// stuck on a client that does not read is cut after a second.
func (c *resetGuard) trip() {
	if c.tripped.Swap(true) {
		return
	}
	if c.mu.TryLock() {
		if c.out.atBoundary() {
			c.goAwayLocked()
		}
		c.mu.Unlock()
	}
	time.AfterFunc(time.Second, func() { _ = c.Conn.Close() })
}

func (c *resetGuard) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	if !c.tripped.Load() {
		n, err := c.Conn.Write(p)
		c.out.advance(p[:n], nil)
		return n, err
	}
	k := c.out.toBoundary(p)
	n, err := c.Conn.Write(p[:k])
	c.out.advance(p[:n], nil)
	if err == nil {
		c.goAwayLocked()
	}
	return n, net.ErrClosed
}

// goAwayLocked writes GOAWAY ENHANCE_YOUR_CALM (RFC 9113 §6.8) naming the
// last stream the client opened, and closes the connection.
func (c *resetGuard) goAwayLocked() {
	var f [17]byte
	f[2] = 8   // length
	f[3] = 0x7 // GOAWAY, stream 0
	binary.BigEndian.PutUint32(f[9:], c.maxStream.Load())
	binary.BigEndian.PutUint32(f[13:], uint32(http2.ErrCodeEnhanceYourCalm))
	_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Conn.Write(f[:])
	_ = c.Conn.Close()
	c.closed = true
}
