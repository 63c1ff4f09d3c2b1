// Package e2e runs the real gateway — config.Parse, gateway.Build,
// gateway.Server.Run on loopback listeners — against recording fake scoring
// endpoints (package upstream), and checks what clients and upstreams see.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelgate/modelgate/gateway"
	"github.com/modelgate/modelgate/internal/logtest"
)

// Keys used across the tests. They double as log canaries: none may ever
// appear in a log line, an error body or anything an upstream receives
// (other than the upstream keys, each to its own upstream).
const (
	partnerKey   = "mgk_canary-partner-key-3b7f0c1e9a"
	expiredKey   = "mgk_canary-expired-key-d41d8cd98f"
	batchKey     = "mgk_canary-batch-key-9e107d9d372b"
	upstreamKey  = "canary-upstream-primary-5e8ff9bf55ba"
	upstreamKey2 = "canary-upstream-secondary-7c4a8d09ca37"
	// jwtCanary has a JWT's shape, so the policy treats it as a token.
	jwtCanary = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImNhbmFyeSJ9.eyJzdWIiOiJjYW5hcnktand0LXN1YmplY3QifQ.Y2FuYXJ5LXNpZ25hdHVyZS0xYzVkMmY"
)

// secrets lists every configured or presented credential, for "never
// leaks" assertions.
var secrets = []string{partnerKey, expiredKey, batchKey, upstreamKey, upstreamKey2, jwtCanary}

// baseEnv resolves the ${NAME} references of the test configurations.
var baseEnv = map[string]string{
	"PARTNER_KEY":    partnerKey,
	"EXPIRED_KEY":    expiredKey,
	"UPSTREAM_KEY":   upstreamKey,
	"UPSTREAM_KEY_2": upstreamKey2,
}

// testGateway is one gateway running in-process on loopback.
type testGateway struct {
	// URL is the public base URL, http://127.0.0.1:port.
	URL string
	// Admin is the admin base URL.
	Admin string
	// Addr is the public listener's host:port.
	Addr string
	// Logs holds everything the gateway logged (slog JSON, one line each).
	Logs *logBuffer
	// Server is the running server.
	Server *gateway.Server

	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	runErr error
}

// startGateway renders cfg, loads it with the real config loader (${NAME}
// resolves from baseEnv), builds the gateway and runs it on two loopback
// listeners until the test ends.
func startGateway(t testing.TB, cfg *cfgBuilder) *testGateway {
	t.Helper()
	return startGatewayWith(t, cfg, nil, gateway.Deps{})
}

// Stop cancels Run's context and waits (at most 10s) for Run to return. It
// returns Run's error; calling it again returns the same.
func (g *testGateway) Stop() error {
	g.once.Do(func() {
		g.cancel()
		select {
		case g.runErr = <-g.done:
		case <-time.After(10 * time.Second):
			g.runErr = errors.New("Run did not return within 10s of cancellation")
		}
	})
	return g.runErr
}

// logBuffer collects the gateway's log output; safe for concurrent use.
type logBuffer struct{ logtest.Buffer }

// Lines decodes every JSON log line.
func (b *logBuffer) Lines(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// RequestLines returns the per-request lines ("msg":"request").
func (b *logBuffer) RequestLines(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range b.Lines(t) {
		if m["msg"] == "request" {
			out = append(out, m)
		}
	}
	return out
}

// waitFor polls cond every few milliseconds until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// client is a plain HTTP client with a bounded timeout and its own
// connection pool.
func client() *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// request is one client request for do.
type request struct {
	method string
	path   string // path and query, appended to the base URL
	host   string // Host header; "" keeps the URL's
	header http.Header
	body   io.Reader
	// chunked sends the body without Content-Length.
	chunked bool
}

// response is what the client got.
type response struct {
	status int
	header http.Header
	body   []byte
	close  bool // the answer said Connection: close (Go removes the header)
}

// do sends r to base and reads the whole answer.
func do(t testing.TB, c *http.Client, base string, r request) response {
	t.Helper()
	method := r.method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequest(method, base+r.path, r.body)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	for k, vs := range r.header {
		req.Header[k] = vs
	}
	if r.host != "" {
		req.Host = r.host
	}
	if r.chunked {
		req.ContentLength = -1
		req.GetBody = nil
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, r.path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, r.path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body, close: resp.Close}
}

// bearer returns a header with Authorization: Bearer key.
func bearer(key string) http.Header {
	return http.Header{"Authorization": {"Bearer " + key}}
}

// rawRequest writes a raw HTTP/1.1 request (the request line exactly as
// given, so no client cleans the path) and reads the response. The Host
// header is addr unless header sets one.
func rawRequest(t testing.TB, addr, requestLine string, header http.Header) response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	host := addr
	if h := header.Get("Host"); h != "" {
		host = h
	}
	b.WriteString(requestLine + "\r\nHost: " + host + "\r\nConnection: close\r\n")
	for k, vs := range header {
		if k == "Host" {
			continue
		}
		for _, v := range vs {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response to %q: %v", requestLine, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body, close: resp.Close}
}

// errorBody is the gateway's JSON error shape.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// decodeError checks that body is exactly {"error":{"code","message"}} and
// returns it.
func decodeError(t testing.TB, body []byte) errorBody {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var e errorBody
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("error body %q is not {\"error\":{\"code\",\"message\"}}: %v", body, err)
	}
	if e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("error body %q lacks code or message", body)
	}
	return e
}

// assertNoSecrets fails if any configured or presented credential appears
// in s.
func assertNoSecrets(t testing.TB, what, s string) {
	t.Helper()
	for _, k := range secrets {
		if strings.Contains(s, k) {
			t.Errorf("%s contains the credential %q:\n%s", what, k, s)
		}
	}
}
