// Package upstream is a recording fake of an Azure ML scoring endpoint for
// end-to-end tests: a real HTTP server on loopback that accepts exactly one
// key, as an ACI or AKS web service with key auth does, records every
// request it receives, and answers JSON, server-sent events, slowly, or
// with a chosen status.
//
// It is modelled on tailscale's tstest/integration/testcontrol: exported
// knobs (SetKeys, SetSSE, SetDelay, SetStatus, AbortAfter) change its
// behaviour while it runs, and Requests returns what it saw, so tests
// exercise the real gateway instead of mocks.
//
// # Behaviour
//
// Every request is recorded first (method, request URI, path, raw path, raw
// query, Host, headers and body), whether it is then admitted or not.
// Authorization must equal "Bearer <key>" for one of the keys set with
// SetKeys (compared in constant time); otherwise the answer is 401 with a
// JSON body, like Azure ML's. With no keys set, every request is admitted
// (an upstream with auth: none).
//
// An admitted request then waits the configured delay (before any response
// header, so it trips a proxy's response-header timeout), and answers:
//
//   - with the status set by SetStatus, if any, and a JSON error body;
//   - with a text/event-stream of N "data:" events, flushed one by one and
//     spaced by the interval, then "event: done" with "data: {}", when SetSSE
//     set N > 0 (or the request's query has sse=N, with interval=<duration>);
//   - otherwise 200 with a JSON echo (Echo) of what was received.
//
// Like Azure ML endpoints, it returns the request's X-Request-Id.
//
// All methods are safe for concurrent use.
package upstream

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"
)

// MaxRecordedBody bounds how much of a request body is kept; the rest is
// read and counted but not stored.
const MaxRecordedBody = 16 << 20

// Request is one request as the upstream received it.
type Request struct {
	Method     string
	RequestURI string // exactly as on the request line
	Path       string // decoded
	RawPath    string // as sent, when it differs from Path's default encoding
	RawQuery   string
	Host       string
	Header     http.Header
	Body       []byte
	BodyLen    int64 // bytes read, including any beyond MaxRecordedBody
	BodyErr    string
	Admitted   bool
}

// EscapedPath returns the path as the upstream saw it on the wire.
func (r Request) EscapedPath() string {
	u := url.URL{Path: r.Path, RawPath: r.RawPath}
	return u.EscapedPath()
}

// Echo is the JSON body of a default 200 answer.
type Echo struct {
	Method     string `json:"method"`
	Path       string `json:"path"`
	RawQuery   string `json:"raw_query"`
	Host       string `json:"host"`
	BodyBytes  int64  `json:"body_bytes"`
	BodySHA256 string `json:"body_sha256"`
}

// Server is the fake scoring endpoint.
type Server struct {
	// URL is the base URL, http://127.0.0.1:port.
	URL string

	ts *httptest.Server

	mu         sync.Mutex
	keys       []string
	reqs       []Request
	delay      time.Duration
	status     int
	sseN       int
	sseEvery   time.Duration
	abortAfter int
	arrived    chan struct{}
	cancelled  int
}

// New starts a fake upstream on loopback that accepts "Bearer <key>" for
// each of keys (none: accept every request). It is closed by t.Cleanup.
func New(t testing.TB, keys ...string) *Server {
	t.Helper()
	s := &Server{keys: keys, abortAfter: -1, arrived: make(chan struct{}, 1)}
	s.ts = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.ts.Start()
	s.URL = s.ts.URL
	t.Cleanup(s.Close)
	return s
}

// Close stops the server, cutting any response in progress.
func (s *Server) Close() {
	s.ts.CloseClientConnections()
	s.ts.Close()
}

// Addr returns the listener's host:port.
func (s *Server) Addr() string { return s.ts.Listener.Addr().String() }

// SetKeys replaces the accepted keys, as regenerating a service's keys
// does. No keys means every request is admitted.
func (s *Server) SetKeys(keys ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append([]string(nil), keys...)
}

// SetDelay makes admitted requests wait d before any response header is
// written (the wait ends early if the request is cancelled).
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// SetStatus makes admitted requests answer code with a JSON error body;
// 0 restores normal answers.
func (s *Server) SetStatus(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = code
}

// SetSSE makes admitted requests answer with n server-sent events spaced by
// every, then a final "done" event; n = 0 restores JSON answers.
func (s *Server) SetSSE(n int, every time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sseN, s.sseEvery = n, every
}

// AbortAfter makes event streams break the connection after n events,
// without the final chunk, as a crashing model server does; n < 0 (the
// default) disables it.
func (s *Server) AbortAfter(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.abortAfter = n
}

// Requests returns a copy of every request received so far, in arrival
// order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// Count returns how many requests have been received.
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reqs)
}

// Last returns the most recent request; ok is false if there was none.
func (s *Server) Last() (r Request, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reqs) == 0 {
		return Request{}, false
	}
	return s.reqs[len(s.reqs)-1], true
}

// Cancelled returns how many answers ended early because the request's
// context was cancelled (the client, or the proxy in front, went away)
// while the upstream was waiting or streaming.
func (s *Server) Cancelled() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cancelled
}

func (s *Server) noteCancelled() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cancelled++
}

// Reset forgets the recorded requests.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = nil
}

// Arrived is signalled (without blocking, capacity one) each time a request
// has been recorded, so a test can wait for one without polling.
func (s *Server) Arrived() <-chan struct{} { return s.arrived }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	rec := Request{
		Method: r.Method, RequestURI: r.RequestURI, Path: r.URL.Path, RawPath: r.URL.RawPath,
		RawQuery: r.URL.RawQuery, Host: r.Host, Header: r.Header.Clone(),
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(h, &capWriter{buf: &rec.Body, max: MaxRecordedBody}), r.Body)
	rec.BodyLen = n
	if err != nil {
		rec.BodyErr = err.Error()
	}

	s.mu.Lock()
	rec.Admitted = s.admits(r.Header.Get("Authorization"))
	delay, status, sseN, sseEvery, abort := s.delay, s.status, s.sseN, s.sseEvery, s.abortAfter
	s.reqs = append(s.reqs, rec)
	s.mu.Unlock()
	select {
	case s.arrived <- struct{}{}:
	default:
	}

	if id := r.Header.Get("X-Request-Id"); id != "" {
		w.Header().Set("X-Request-Id", id)
	}
	if !rec.Admitted {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "the model endpoint wants its own key"})
		return
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "could not read the request body"})
		return
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			s.noteCancelled()
			return
		}
	}
	if status != 0 {
		writeJSON(w, status, map[string]string{"error": http.StatusText(status)})
		return
	}
	q := r.URL.Query()
	if v := q.Get("sse"); v != "" {
		sseN, _ = strconv.Atoi(v)
		sseEvery, _ = time.ParseDuration(q.Get("interval"))
	}
	if sseN > 0 {
		if !stream(w, r, sseN, sseEvery, abort) {
			s.noteCancelled()
		}
		return
	}
	writeJSON(w, http.StatusOK, Echo{
		Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Host: r.Host,
		BodyBytes: n, BodySHA256: hex.EncodeToString(h.Sum(nil)),
	})
}

func (s *Server) admits(authz string) bool {
	if len(s.keys) == 0 {
		return true
	}
	ok := 0
	for _, k := range s.keys {
		ok |= subtle.ConstantTimeCompare([]byte(authz), []byte("Bearer "+k))
	}
	return ok == 1
}

// stream writes n events "data: {"i":k}" flushed one by one, then
// "event: done" / "data: {}". With abort >= 0 it breaks the connection after
// that many events instead of finishing. It reports false if the request
// was cancelled or the client stopped reading first.
func stream(w http.ResponseWriter, r *http.Request, n int, every time.Duration, abort int) bool {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	for i := range n {
		if i == abort {
			panic(http.ErrAbortHandler) // closes the connection without the final chunk
		}
		if i > 0 && every > 0 {
			t := time.NewTimer(every)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return false
			}
		}
		fmt.Fprintf(w, "data: {\"i\":%d}\n\n", i)
		if err := rc.Flush(); err != nil {
			return false
		}
	}
	if abort == n {
		panic(http.ErrAbortHandler)
	}
	fmt.Fprint(w, "event: done\ndata: {}\n\n")
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

type capWriter struct {
	buf *[]byte
	max int
}

func (c *capWriter) Write(p []byte) (int, error) {
	if room := c.max - len(*c.buf); room > 0 {
		*c.buf = append(*c.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// ClosedURL returns an http URL on loopback at which nothing listens: a
// port that was just bound and released, so connecting is refused.
func ClosedURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}
