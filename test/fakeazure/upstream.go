package fakeazure

import (
	"bytes"
	"crypto/subtle"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/modelgate/modelgate/internal/inproc"
)

// Request is what Upstream recorded of one request.
type Request struct {
	Method string
	// Path and RawQuery are as received.
	Path     string
	RawQuery string
	// Header is a copy of the request headers, Authorization included.
	Header http.Header
	// Body is the complete request body.
	Body []byte
	// Accepted says whether the credential was accepted (else 401).
	Accepted bool
}

// Upstream is a fake scoring endpoint. It accepts a request only when its
// "Authorization: Bearer <value>" passes the accept function (for example
// Deployment.Accepts, AAD.Accepts, or StaticKeys) and Refuse has not been
// called for that value; otherwise it answers 401 with
// WWW-Authenticate: Bearer. An accepted request is answered by the handler
// set with SetHandler, by default 200 echoing the body back with the
// request's Content-Type.
//
// It records every request (headers and body) for assertions, such as that
// no client credential reached it.
type Upstream struct {
	srv *httptest.Server

	mu       sync.Mutex
	accept   func(string) bool
	handler  http.Handler
	refused  map[string]bool
	requests []Request
}

// NewUpstream starts a plain-HTTP fake upstream on loopback (scoring URIs of
// ACI and AKS services are often http), closed when tb ends.
func NewUpstream(tb testing.TB, accept func(bearer string) bool) *Upstream {
	tb.Helper()
	u := &Upstream{accept: accept, refused: map[string]bool{}}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	tb.Cleanup(u.srv.Close)
	return u
}

// NewTLSUpstream is NewUpstream over HTTPS with the fakes' certificate
// (online endpoints are https).
func NewTLSUpstream(tb testing.TB, accept func(bearer string) bool) *Upstream {
	tb.Helper()
	u := &Upstream{accept: accept, refused: map[string]bool{}}
	u.srv = tlsServer(tb, http.HandlerFunc(u.serve))
	return u
}

// StaticKeys returns an accept function for a fixed set of keys.
func StaticKeys(keys ...string) func(string) bool {
	return func(b string) bool {
		ok := false
		for _, k := range keys {
			if k != "" && subtle.ConstantTimeCompare([]byte(b), []byte(k)) == 1 {
				ok = true
			}
		}
		return ok
	}
}

// URL is the upstream's base URL.
func (u *Upstream) URL() string { return u.srv.URL }

// Client returns a client for the upstream (trusting its certificate when
// it is TLS).
func (u *Upstream) Client() *http.Client { return u.srv.Client() }

// InProcessClient returns an HTTP client that reaches the upstream without a
// socket or TLS, in the calling goroutine; see the package doc.
func (u *Upstream) InProcessClient() *http.Client { return inproc.Client(u.srv) }

// SetAccept replaces the accept function, for a test that starts the
// upstream before the deployment whose credentials it should take (outside a
// testing/synctest bubble, say).
func (u *Upstream) SetAccept(accept func(bearer string) bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.accept = accept
}

// SetHandler sets what answers accepted requests (nil: echo).
func (u *Upstream) SetHandler(h http.Handler) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.handler = h
}

// Refuse makes the upstream reject bearer even if the accept function
// accepts it, or accept it again (refuse false). It simulates a key that the
// control plane still lists but the upstream no longer takes.
func (u *Upstream) Refuse(bearer string, refuse bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.refused[bearer] = refuse
}

// Requests returns a copy of what the upstream received, in order.
func (u *Upstream) Requests() []Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Request(nil), u.requests...)
}

// Counts returns how many requests were accepted and rejected.
func (u *Upstream) Counts() (accepted, rejected int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, r := range u.requests {
		if r.Accepted {
			accepted++
		} else {
			rejected++
		}
	}
	return accepted, rejected
}

func (u *Upstream) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	b := bearer(r)
	u.mu.Lock()
	ok := b != "" && !u.refused[b]
	h, accept := u.handler, u.accept
	u.mu.Unlock()
	ok = ok && accept != nil && accept(b)
	u.mu.Lock()
	u.requests = append(u.requests, Request{
		Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
		Header: r.Header.Clone(), Body: body, Accepted: ok,
	})
	u.mu.Unlock()
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid or expired credential"})
		return
	}
	if h != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, r)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}
