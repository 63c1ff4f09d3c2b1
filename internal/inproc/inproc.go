// Package inproc reaches an httptest server's handler without a socket, for
// tests in a testing/synctest bubble: a goroutine blocked on a real socket
// is not durably blocked, so the bubble's clock could not advance, whereas
// a handler called in the calling goroutine waits on the bubble's timers
// and reads the bubble's clock. Start the server outside the bubble, where
// its listener's goroutine belongs.
package inproc

import (
	"fmt"
	"net/http"
	"net/http/httptest"
)

// Client returns an HTTP client that serves requests to srv's host with
// srv's handler, in the calling goroutine and without a socket or TLS, and
// answers any other host with an error. The handler gets a copy of the
// request shaped as a server would pass it (Host, RequestURI, RemoteAddr, a
// non-nil Body), so it may parse and change it freely.
func Client(srv *httptest.Server) *http.Client {
	host, h := srv.Listener.Addr().String(), srv.Config.Handler
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.URL.Host != host {
			return nil, fmt.Errorf("inproc: %s is not the fake (%s)", r.URL.Host, host)
		}
		sr := r.Clone(r.Context())
		sr.Host, sr.RequestURI, sr.RemoteAddr = host, r.URL.RequestURI(), "127.0.0.1:1"
		if sr.Body == nil {
			sr.Body = http.NoBody
		}
		defer sr.Body.Close()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, sr)
		if err := r.Context().Err(); err != nil {
			return nil, err
		}
		resp := rec.Result()
		resp.Request = r
		return resp, nil
	})}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
