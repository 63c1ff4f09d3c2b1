package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Tests for the edge hardening: what a hostile client writes on the wire
// (raw sockets, so no Go client normalises the attack away) and what the
// upstream then receives.

// rawWire writes raw (a whole request: line, headers, blank line and
// any body, exactly as given) to addr and reads one response.
func rawWire(t testing.TB, addr, raw string) response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response to %q: %v", firstLine(raw), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body, close: resp.Close}
}

func firstLine(s string) string {
	if i := strings.Index(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

// wireUpstream is a fake scoring endpoint that records, for each request,
// its headers and the trailers that arrived after its body (which
// package upstream does not keep). It admits everything.
type wireUpstream struct {
	URL string
	mu  sync.Mutex
	got []wireRequest
}

type wireRequest struct {
	Method, RequestURI string
	Header, Trailer    http.Header
	BodyLen            int64
}

func newWireUpstream(t testing.TB) *wireUpstream {
	t.Helper()
	u := &wireUpstream{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		declared := make([]string, 0, len(r.Trailer))
		for k := range r.Trailer {
			declared = append(declared, k)
		}
		n, _ := io.Copy(io.Discard, r.Body)
		rec := wireRequest{Method: r.Method, RequestURI: r.RequestURI, Header: r.Header.Clone(), Trailer: r.Trailer.Clone(), BodyLen: n}
		for _, k := range declared {
			if _, ok := rec.Trailer[k]; !ok {
				rec.Trailer[k] = nil // declared, no value
			}
		}
		u.mu.Lock()
		u.got = append(u.got, rec)
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{}`)
	}))
	t.Cleanup(ts.Close)
	u.URL = ts.URL
	return u
}

func (u *wireUpstream) Requests() []wireRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]wireRequest(nil), u.got...)
}

// chunked encodes body as one chunk followed by the trailer block.
func chunked(body, trailer string) string {
	return strings.ToUpper(strconvHex(len(body))) + "\r\n" + body + "\r\n0\r\n" + trailer + "\r\n"
}

func strconvHex(n int) string {
	const digits = "0123456789abcdef"
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 16 {
		b = append([]byte{digits[n%16]}, b...)
	}
	return string(b)
}

// TestClientTrailersNeverReachUpstream sends a chunked body (streamed, and
// buffered) that declares and then sends trailers carrying a credential,
// a forwarding address and an identity claim. Trailers arrive after the
// gateway's own headers, so any that passed would override them at an
// upstream that merges trailers into headers.
func TestClientTrailersNeverReachUpstream(t *testing.T) {
	model := newWireUpstream(t)
	g := startGateway(t, newConfig().Partners().Server("buffer_body_bytes: 1KiB").
		Upstream("model", model.URL+"/score", upstreamKeyAuth).
		Route("fraud", "/fraud", "model", allowPartners))
	trailer := "Authorization: Bearer " + partnerKey + "\r\n" +
		"X-Forwarded-For: 203.0.113.9\r\n" +
		"X-Ms-Client-Principal-Id: spoofed-admin\r\n" +
		"Api-Key: " + partnerKey + "\r\n"
	for _, tt := range []struct {
		name string
		size int
	}{
		{"streamed body", 4 << 10},
		{"buffered body", 100},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(model.Requests())
			raw := "POST /fraud/x HTTP/1.1\r\nHost: " + g.Addr + "\r\nConnection: close\r\n" +
				"Authorization: Bearer " + partnerKey + "\r\n" +
				"Transfer-Encoding: chunked\r\n" +
				"Trailer: Authorization, X-Forwarded-For, X-Ms-Client-Principal-Id, Api-Key\r\n\r\n" +
				chunked(strings.Repeat("a", tt.size), trailer)
			resp := rawWire(t, g.Addr, raw)
			if resp.status != 200 {
				t.Fatalf("status = %d: %s", resp.status, resp.body)
			}
			reqs := model.Requests()
			if len(reqs) != before+1 {
				t.Fatalf("upstream got %d requests, want 1", len(reqs)-before)
			}
			got := reqs[len(reqs)-1]
			if got.BodyLen != int64(tt.size) {
				t.Errorf("upstream body = %d bytes, want %d", got.BodyLen, tt.size)
			}
			if len(got.Trailer) != 0 {
				t.Errorf("upstream received client trailers %q", got.Trailer)
			}
			if v := got.Header.Values("Trailer"); len(v) != 0 {
				t.Errorf("upstream received Trailer: %q", v)
			}
			if a := got.Header.Values("Authorization"); len(a) != 1 || a[0] != "Bearer "+upstreamKey {
				t.Errorf("upstream Authorization = %q, want only the upstream key", a)
			}
		})
	}
}

// rawGet writes a raw request with the given header lines (each "Name:
// value", sent exactly as written) and returns the answer.
func rawSend(t testing.TB, addr, method, target string, lines ...string) response {
	t.Helper()
	raw := method + " " + target + " HTTP/1.1\r\nHost: " + addr + "\r\nConnection: close\r\n"
	for _, l := range lines {
		raw += l + "\r\n"
	}
	return rawWire(t, addr, raw+"\r\n")
}

// TestCredentialHeadersNeverReachUpstream sends the client's key, besides
// Authorization, in every header Azure clients put credentials in, in the
// spellings they use on the wire.
func TestCredentialHeadersNeverReachUpstream(t *testing.T) {
	model := newWireUpstream(t)
	g := startGateway(t, newConfig().Partners().
		Upstream("model", model.URL+"/score", upstreamKeyAuth).
		Route("fraud", "/fraud", "model", allowPartners))
	for _, h := range []string{"api-key", "Api-Key", "API-KEY", "Ocp-Apim-Subscription-Key", "ocp-apim-subscription-key", "X-Api-Key"} {
		t.Run(h, func(t *testing.T) {
			resp := rawSend(t, g.Addr, "GET", "/fraud/x", "Authorization: Bearer "+partnerKey, h+": "+partnerKey)
			if resp.status != 200 {
				t.Fatalf("status = %d: %s", resp.status, resp.body)
			}
			got := model.Requests()[len(model.Requests())-1]
			for k, vs := range got.Header {
				for _, v := range vs {
					if strings.Contains(v, partnerKey) {
						t.Errorf("client key reached the upstream in %s: %q", k, v)
					}
				}
			}
		})
	}
}

// rewriteHeaders are client-sent headers that some upstream server or
// framework reads as the real URL, method, prefix, port or client address.
var rewriteHeaders = []string{
	"X-Original-URL", "X-Rewrite-URL", "X-Original-URI", "X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override",
	"X-Forwarded-Prefix", "X-Forwarded-Port", "X-Forwarded-Server", "X-Forwarded-Ssl", "X-Forwarded-Scheme", "X-Forwarded-Uri",
	"X-Real-IP", "X-Client-IP", "True-Client-IP", "X-Cluster-Client-IP", "CF-Connecting-IP", "Fastly-Client-IP", "X-Original-Forwarded-For",
	"X-Host", "X-Original-Host", "X-Forwarded-Host-Override",
	// CGI, WSGI and Rack read these as HTTP_X_FORWARDED_FOR and HTTP_X_REAL_IP.
	"X_Forwarded_For", "X_Real_IP", "x_forwarded_prefix",
}

// TestClientRewriteHeadersNeverReachUpstream sends every rewrite and
// address header, from an untrusted peer and from a trusted proxy (whose
// X-Forwarded-For chain is extended, but which is no more believed about
// anything else), and checks that none reaches the upstream.
func TestClientRewriteHeadersNeverReachUpstream(t *testing.T) {
	for _, trusted := range []bool{false, true} {
		name := "untrusted peer"
		cfg := newConfig().Partners()
		if trusted {
			name = "trusted proxy"
			cfg.Server("trusted_proxies: [127.0.0.1]")
		}
		t.Run(name, func(t *testing.T) {
			model := newWireUpstream(t)
			g := startGateway(t, cfg.Upstream("model", model.URL+"/score", upstreamKeyAuth).
				Route("fraud", "/fraud", "model", allowPartners))
			lines := []string{"Authorization: Bearer " + partnerKey}
			for _, h := range rewriteHeaders {
				lines = append(lines, h+": /admin?spoofed")
			}
			resp := rawSend(t, g.Addr, "POST", "/fraud/x", lines...)
			if resp.status != 200 {
				t.Fatalf("status = %d: %s", resp.status, resp.body)
			}
			got := model.Requests()[0]
			for _, h := range rewriteHeaders {
				if v := got.Header.Values(h); len(v) != 0 {
					t.Errorf("upstream received %s: %q", h, v)
				}
			}
			if got.Method != "POST" || got.RequestURI != "/score/x" {
				t.Errorf("upstream got %s %s, want POST /score/x", got.Method, got.RequestURI)
			}
		})
	}
}

// TestTraceAndConnectRefused: an upstream that echoes TRACE would reflect
// the credential the gateway injected, and CONNECT asks for a tunnel. Both
// (and IIS's TRACK) are refused before routing, with the JSON error and an
// Allow header, and never reach the upstream.
func TestTraceAndConnectRefused(t *testing.T) {
	model := newWireUpstream(t)
	g := startGateway(t, newConfig().Partners().
		Upstream("model", model.URL+"/score", upstreamKeyAuth).
		Route("fraud", "/fraud", "model", allowPartners).
		PublicRoute("open", "/open", "model"))
	for _, tt := range []struct{ method, target string }{
		{"TRACE", "/fraud/x"},
		{"TRACE", "/open/x"},
		{"TRACE", "*"},
		{"TRACK", "/fraud/x"},
		{"trace", "/open/x"},
		{"CONNECT", "/fraud/x"},
		{"CONNECT", "/open/x"},
		{"CONNECT", g.Addr},
	} {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			resp := rawSend(t, g.Addr, tt.method, tt.target, "Authorization: Bearer "+partnerKey)
			if resp.status != http.StatusMethodNotAllowed {
				t.Fatalf("status = %d, want 405: %s", resp.status, resp.body)
			}
			if e := decodeError(t, resp.body); e.Error.Code != "method_not_allowed" {
				t.Errorf("code = %q, want method_not_allowed", e.Error.Code)
			}
			if a := resp.header.Get("Allow"); a == "" || strings.Contains(a, "TRACE") || strings.Contains(a, "CONNECT") {
				t.Errorf("Allow = %q", a)
			}
			assertNoSecrets(t, "response", string(resp.body))
		})
	}
	if n := len(model.Requests()); n != 0 {
		t.Errorf("upstream received %d requests, want 0", n)
	}
}

// TestParentSegmentsRefused sends paths that some common server (Tomcat,
// Jetty and Spring read "..;" as "..", IIS decodes %u002e and twice-encoded
// escapes, Windows trims trailing dots and spaces, old UTF-8 decoders accept
// overlong forms, NFKC turns U+FF0E into '.') resolves to a parent of the
// route's prefix. Each must be refused with 400 bad_path and never reach the
// upstream; look-alikes that are ordinary names must still pass.
func TestParentSegmentsRefused(t *testing.T) {
	model := newWireUpstream(t)
	g := startGateway(t, newConfig().Partners().
		Upstream("model", model.URL+"/score", upstreamKeyAuth).
		Route("key", "/key", "model", allowPartners).
		PublicRoute("public", "/public", "model"))
	bad := []string{
		"/public/..;/key/x",
		"/public/.;/x",
		"/public/..;jsessionid=1/key/x",
		"/public/%2e%2e;/key/x",
		"/public/%2E%2e/key/x",
		"/public/%2e%2E%2fkey/x",
		"/public/%252e%252e/key/x",
		"/public/%252E%252E%252Fkey/x",
		"/public/%25252e%25252e/key/x",
		"/public/%c0%ae%c0%ae/key/x",
		"/public/%c0%2e%c0%2e/key/x",
		"/public/%e0%80%ae%e0%80%ae/key/x",
		"/public/%u002e%u002e/key/x",
		"/public/%U002E%U002E/key/x",
		"/public/%25u002e%25u002e/key/x",
		"/public/..%5ckey/x",
		"/public/..%255ckey/x",
		"/public/%u005c..%u005ckey",
		"/public/%ef%bc%8e%ef%bc%8e/key/x",
		"/public/..%ef%bc%8fkey/x",
		"/public/...",
		"/public/..%20/key/x",
		"/public/.. ./key/x",
		"/public/%2e%2e%2500/key",
		"/public/x%2500",
	}
	for _, p := range bad {
		t.Run(p, func(t *testing.T) {
			resp := rawSend(t, g.Addr, "GET", p)
			if resp.status != http.StatusBadRequest {
				t.Fatalf("status = %d, want 400: %s", resp.status, resp.body)
			}
			// bad_request: refused by net/http itself (%u escapes, a space
			// in the request line), in the JSON contract on plain HTTP.
			if e := decodeError(t, resp.body); e.Error.Code != "bad_path" && e.Error.Code != "bad_request" {
				t.Errorf("code = %q, want bad_path (or net/http's bad_request)", e.Error.Code)
			}
		})
	}
	if reqs := model.Requests(); len(reqs) != 0 {
		for _, r := range reqs {
			t.Errorf("upstream received %s", r.RequestURI)
		}
	}
	for _, p := range []string{"/public/a.b", "/public/..a", "/public/a..", "/public/v1.0/score", "/public/.well-known/x", "/public/%7Euser", "/public/a%20b", "/public/a;b=c", "/public/caf%c3%a9", "/public/a%25b"} {
		t.Run("ok "+p, func(t *testing.T) {
			if resp := rawSend(t, g.Addr, "GET", p); resp.status != 200 {
				t.Errorf("status = %d, want 200: %s", resp.status, resp.body)
			}
		})
	}
}

// routeWith adds a route like cfgBuilder.Route or PublicRoute (allow empty)
// with extra YAML lines (each "key: value", flow mappings for nested
// values).
func routeWith(b *cfgBuilder, name, path, upstream string, allow []string, extra ...string) *cfgBuilder {
	if len(allow) == 0 {
		b.PublicRoute(name, path, upstream)
	} else {
		b.Route(name, path, upstream, allow...)
	}
	last := &b.routes[len(b.routes)-1]
	for _, l := range extra {
		*last += "    " + l + "\n"
	}
	return b
}

// TestPublicRateLimitKeysOnClientBehindTrustedProxy: behind a trusted load
// balancer every connection comes from the balancer, so a public route's
// per-identity limit must key on the client address the balancer reports
// (the rightmost X-Forwarded-For entry that is not itself a trusted
// proxy), not on the balancer's. From an untrusted peer, X-Forwarded-For
// must not buy a fresh bucket.
func TestPublicRateLimitKeysOnClientBehindTrustedProxy(t *testing.T) {
	model := newWireUpstream(t)
	limit := `rate_limit: { per_identity: "1/m", burst: 1 }`
	start := func(server ...string) *testGateway {
		return startGateway(t, routeWith(newConfig().Server(server...).Upstream("model", model.URL+"/score", upstreamKeyAuth),
			"open", "/open", "model", nil, limit))
	}
	send := func(g *testGateway, xff string) int {
		t.Helper()
		var lines []string
		if xff != "" {
			lines = append(lines, "X-Forwarded-For: "+xff)
		}
		return rawSend(t, g.Addr, "GET", "/open/x", lines...).status
	}
	t.Run("trusted proxy", func(t *testing.T) {
		g := start("trusted_proxies: [127.0.0.1, 10.0.0.0/8]")
		for _, step := range []struct {
			xff  string
			want int
		}{
			{"198.51.100.1", 200},
			{"198.51.100.2", 200},              // another client: its own bucket
			{"198.51.100.1", 429},              // the first client again
			{"203.0.113.7, 10.1.2.3", 200},     // a second trusted hop is skipped
			{"203.0.113.7", 429},               // ... so this is the same client
			{"198.51.100.1, 203.0.113.8", 200}, // the client may prepend anything; the nearest untrusted entry counts
		} {
			if got := send(g, step.xff); got != step.want {
				t.Errorf("X-Forwarded-For %q: status %d, want %d", step.xff, got, step.want)
			}
		}
	})
	t.Run("untrusted peer", func(t *testing.T) {
		g := start()
		if got := send(g, "198.51.100.1"); got != 200 {
			t.Fatalf("first request: %d", got)
		}
		if got := send(g, "198.51.100.2"); got != 429 {
			t.Errorf("spoofed X-Forwarded-For from an untrusted peer: status %d, want 429 (one bucket per peer)", got)
		}
	})
}

// TestCredentialHeadersSetting: with server.credential_headers listing
// api-key, an Azure OpenAI SDK client (AzureOpenAI sends "api-key: <key>")
// is admitted by its raw key; "Bearer <key>" there is malformed; and the
// header never reaches the upstream. By default only Authorization counts.
func TestCredentialHeadersSetting(t *testing.T) {
	model := newWireUpstream(t)
	cfg := func(server ...string) *cfgBuilder {
		return newConfig().Server(server...).Partners().
			Upstream("model", model.URL+"/score", upstreamKeyAuth).
			Route("fraud", "/fraud", "model", allowPartners)
	}
	listed := startGateway(t, cfg("credential_headers: [api-key, Authorization]"))
	def := startGateway(t, cfg())
	for _, tt := range []struct {
		name  string
		g     *testGateway
		lines []string
		want  int
	}{
		{"api-key raw", listed, []string{"api-key: " + partnerKey}, 200},
		{"api-key bearer is malformed", listed, []string{"api-key: Bearer " + partnerKey}, 401},
		{"api-key wrong", listed, []string{"api-key: mgk_not-a-key-at-all-000000"}, 401},
		{"authorization still works", listed, []string{"Authorization: Bearer " + partnerKey}, 200},
		{"api-key first in order", listed, []string{"api-key: " + partnerKey, "Authorization: Bearer wrong-key-0000000000"}, 200},
		{"default ignores api-key", def, []string{"api-key: " + partnerKey}, 401},
		{"default ignores ocp-apim", def, []string{"Ocp-Apim-Subscription-Key: " + partnerKey}, 401},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(model.Requests())
			resp := rawSend(t, tt.g.Addr, "POST", "/fraud/x", tt.lines...)
			if resp.status != tt.want {
				t.Fatalf("status = %d, want %d: %s", resp.status, tt.want, resp.body)
			}
			assertNoSecrets(t, "response", string(resp.body))
			reqs := model.Requests()
			if tt.want != 200 {
				if len(reqs) != before {
					t.Fatalf("a refused request reached the upstream")
				}
				return
			}
			got := reqs[len(reqs)-1]
			for k, vs := range got.Header {
				for _, v := range vs {
					if strings.Contains(v, partnerKey) {
						t.Errorf("client key reached the upstream in %s", k)
					}
				}
			}
			if a := got.Header.Get("Authorization"); a != "Bearer "+upstreamKey {
				t.Errorf("upstream Authorization = %q", a)
			}
		})
	}
}

// TestCORS: a route with cors answers preflights itself, without a
// credential and without the upstream; the actual request still needs its
// credential, and its answer (or its refusal) carries the CORS headers. A
// route without cors treats a preflight as today: no credential, 401.
func TestCORS(t *testing.T) {
	model := newWireUpstream(t)
	const app = "https://app.contoso.example"
	b := newConfig().Server("credential_headers: [Authorization, api-key]").Partners().
		Upstream("model", model.URL+"/score", upstreamKeyAuth)
	routeWith(b, "chat", "/chat", "model", []string{allowPartners},
		`cors: { allow_origins: ["`+app+`"], allow_headers: [Content-Type, X-Ms-Client-Request-Id], expose_headers: [X-Request-Id], max_age: 10m }`)
	routeWith(b, "any", "/any", "model", []string{allowPartners}, `cors: { allow_origins: ["*"] }`)
	b.Route("plain", "/plain", "model", allowPartners)
	g := startGateway(t, b)
	preflight := func(path, origin string) response {
		return rawSend(t, g.Addr, "OPTIONS", path, "Origin: "+origin,
			"Access-Control-Request-Method: POST", "Access-Control-Request-Headers: api-key, content-type")
	}

	t.Run("preflight allowed origin", func(t *testing.T) {
		resp := preflight("/chat/completions", app)
		if resp.status != http.StatusNoContent {
			t.Fatalf("status = %d, want 204: %s", resp.status, resp.body)
		}
		h := resp.header
		if got := h.Get("Access-Control-Allow-Origin"); got != app {
			t.Errorf("Allow-Origin = %q", got)
		}
		ah := strings.ToLower(h.Get("Access-Control-Allow-Headers"))
		for _, want := range []string{"authorization", "api-key", "content-type", "x-ms-client-request-id"} {
			if !strings.Contains(ah, want) {
				t.Errorf("Allow-Headers %q lacks %s", ah, want)
			}
		}
		if !strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") {
			t.Errorf("Allow-Methods = %q", h.Get("Access-Control-Allow-Methods"))
		}
		if got := h.Get("Access-Control-Max-Age"); got != "600" {
			t.Errorf("Max-Age = %q, want 600", got)
		}
		if got := h.Get("Access-Control-Allow-Credentials"); got != "" {
			t.Errorf("Allow-Credentials = %q, want none", got)
		}
		if !strings.Contains(h.Get("Vary"), "Origin") {
			t.Errorf("Vary = %q, want Origin", h.Get("Vary"))
		}
	})
	t.Run("preflight other origin", func(t *testing.T) {
		resp := preflight("/chat/completions", "https://evil.example")
		if resp.status != http.StatusForbidden {
			t.Fatalf("status = %d, want 403: %s", resp.status, resp.body)
		}
		decodeError(t, resp.body)
		if got := resp.header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("Allow-Origin = %q, want none", got)
		}
	})
	t.Run("preflight any origin", func(t *testing.T) {
		resp := preflight("/any/x", "https://whoever.example")
		if resp.status != http.StatusNoContent || resp.header.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("status = %d, Allow-Origin = %q", resp.status, resp.header.Get("Access-Control-Allow-Origin"))
		}
	})
	t.Run("preflight without cors", func(t *testing.T) {
		if resp := preflight("/plain/x", app); resp.status != http.StatusUnauthorized {
			t.Fatalf("status = %d, want 401 (as without cors): %s", resp.status, resp.body)
		}
	})
	if n := len(model.Requests()); n != 0 {
		t.Fatalf("preflights reached the upstream: %d", n)
	}
	t.Run("actual request needs its credential", func(t *testing.T) {
		resp := rawSend(t, g.Addr, "POST", "/chat/completions", "Origin: "+app)
		if resp.status != http.StatusUnauthorized {
			t.Fatalf("status = %d, want 401", resp.status)
		}
		if got := resp.header.Get("Access-Control-Allow-Origin"); got != app {
			t.Errorf("refusal's Allow-Origin = %q, want %q (so the page can read the error)", got, app)
		}
	})
	t.Run("actual request admitted", func(t *testing.T) {
		resp := rawSend(t, g.Addr, "POST", "/chat/completions", "Origin: "+app, "api-key: "+partnerKey)
		if resp.status != 200 {
			t.Fatalf("status = %d: %s", resp.status, resp.body)
		}
		if got := resp.header.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != app {
			t.Errorf("Allow-Origin = %q", got)
		}
		if got := resp.header.Get("Access-Control-Expose-Headers"); !strings.Contains(got, "X-Request-Id") {
			t.Errorf("Expose-Headers = %q", got)
		}
	})
}
