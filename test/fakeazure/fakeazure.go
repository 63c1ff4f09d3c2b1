// Package fakeazure provides small, real HTTP(S) fakes of the Azure services
// modelgate talks to on behalf of its upstreams, for tests on loopback:
//
//   - AAD: an Azure AD (Entra ID) authority over HTTPS — OpenID discovery and
//     the v2.0 token endpoint for client_credentials with a client secret, a
//     certificate assertion or a federated (workload identity) assertion —
//     that azidentity accepts with DisableInstanceDiscovery;
//   - ManagedIdentity: the App Service managed identity endpoint that
//     azidentity uses when IDENTITY_ENDPOINT and IDENTITY_HEADER are set;
//   - AML: the Azure ML workspace service API (web service token and
//     listkeys) and the ARM online-endpoint API (token and listKeys), which
//     accept only ARM tokens the fake AAD issued for the right scope;
//   - Upstream: a scoring endpoint that accepts only currently valid
//     credentials and records what it received.
//
// The fakes speak the wire formats in DESIGN.md. Their knobs (outages, fail
// the next N requests, delays, key regeneration, token revocation) are
// methods, safe to call while requests are in flight. Token lifetimes follow
// an injectable now function shared with the code under test (time.Now by
// default, which in a testing/synctest bubble is the bubble's clock; or a
// fake clock's Now when the code under test is reached over real sockets),
// so expiry is driven by advancing that clock rather than by sleeping.
//
// All HTTPS fakes use httptest's built-in certificate, so the *http.Client
// of any of them (Client) trusts all of them, and CACertPEM can be written to
// a file for SSL_CERT_FILE when testing a separate process. InProcessClient
// reaches one fake without a socket, for tests in a testing/synctest bubble,
// where time.Now is the bubble's clock and the fakes follow it.
package fakeazure

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// nowOrSystem returns now, or time.Now when now is nil.
func nowOrSystem(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}

// randomToken returns prefix followed by 32 random hex digits.
func randomToken(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// resourceOf turns an OAuth scope into the resource it names, the way Azure
// AD does: "https://management.azure.com/.default" and
// "https://management.azure.com" are the same resource.
func resourceOf(scope string) string {
	return strings.TrimSuffix(scope, "/.default")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeAzureError writes the ARM error shape {"error":{"code","message"}}.
func writeAzureError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("x-ms-request-id", randomToken("req-"))
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// faults is the outage / fail-next / delay / hold knob set shared by the
// fakes.
type faults struct {
	mu         sync.Mutex
	outage     bool
	failNext   int
	failStatus int
	delay      time.Duration
	hold       chan struct{}
	held       int
}

// SetOutage makes every request fail with 503 while on.
func (f *faults) SetOutage(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.outage = on
}

// FailNext makes the next n requests fail with status (503 when 0).
func (f *faults) FailNext(n, status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if status == 0 {
		status = http.StatusServiceUnavailable
	}
	f.failNext, f.failStatus = n, status
}

// SetDelay delays every answer by d of real time (the request's context
// still cancels the wait).
func (f *faults) SetDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = d
}

// Hold makes requests wait until release is called (or the client gives up).
// Held reports how many are waiting. Use it to make many callers pile up on
// one fetch.
func (f *faults) Hold() (release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{})
	f.hold = ch
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			if f.hold == ch {
				f.hold = nil
			}
			f.mu.Unlock()
			close(ch)
		})
	}
}

// Held returns how many requests are waiting on Hold.
func (f *faults) Held() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held
}

// inject applies the knobs to r and reports the status to fail with (0 to
// proceed).
func (f *faults) inject(r *http.Request) int {
	f.mu.Lock()
	hold, delay := f.hold, f.delay
	if hold != nil {
		f.held++
	}
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
		}
		f.mu.Lock()
		f.held--
		f.mu.Unlock()
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
		}
		t.Stop()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.outage {
		return http.StatusServiceUnavailable
	}
	if f.failNext > 0 {
		f.failNext--
		return f.failStatus
	}
	return 0
}

// tlsServer starts an httptest TLS server for h and closes it at cleanup.
func tlsServer(tb testing.TB, h http.Handler) *httptest.Server {
	tb.Helper()
	srv := httptest.NewTLSServer(h)
	tb.Cleanup(srv.Close)
	return srv
}

// certPool returns a pool trusting srv's certificate.
func certPool(srv *httptest.Server) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(srv.Certificate())
	return p
}

func certPEM(srv *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

// WriteCACert writes the fakes' CA certificate (PEM) into dir and returns
// its path, for SSL_CERT_FILE in a separate process under test.
func WriteCACert(tb testing.TB, pemBytes []byte, dir string) string {
	tb.Helper()
	p := filepath.Join(dir, "fakeazure-ca.pem")
	if err := os.WriteFile(p, pemBytes, 0o600); err != nil {
		tb.Fatalf("fakeazure: write CA certificate: %v", err)
	}
	return p
}
