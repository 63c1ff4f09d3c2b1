package e2e

import (
	"bytes"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelgate/modelgate/test/upstream"
)

// statusConfig has one route per failure mode worth a status.
func statusConfig(model, slow, down, locked, lockedSingle string) *cfgBuilder {
	return newConfig().
		Server("max_body_bytes: 4KiB", "buffer_body_bytes: 1KiB", "shutdown_timeout: 5s",
			"upstream: { dial_timeout: 2s, response_header_timeout: 300ms }").
		Partners().
		KeySet("partners", "old-acme", "key: ${EXPIRED_KEY}", "not_after: 2020-01-01T00:00:00Z").
		KeySet("batch", "batch-job", "sha256: "+strconv.Quote(sha256Hex(batchKey))).
		Upstream("model", model+"/api/v1/service/fraud", upstreamKeysAuth).
		Upstream("slow", slow+"/score", upstreamKeyAuth).
		Upstream("down", down+"/score", upstreamKeyAuth).
		Upstream("locked", locked+"/score", upstreamKeysAuth).
		Upstream("locked-single", lockedSingle+"/score", upstreamKeyAuth).
		Route("fraud", "/fraud", "model", allowPartners).
		Route("batch", "/batch", "model", "key_set: batch").
		Route("slow", "/slow", "slow", allowPartners).
		Route("down", "/down", "down", allowPartners).
		Route("locked", "/locked", "locked", allowPartners).
		Route("locked-single", "/locked-single", "locked-single", allowPartners)
}

// TestStatusPaths walks every status the gateway itself answers with (and
// the admitted 200), checking status, the exact JSON error shape, the
// headers, that no configured credential appears in the answer, and
// whether the request reached the upstream.
func TestStatusPaths(t *testing.T) {
	model := upstream.New(t, upstreamKey)
	slow := upstream.New(t, upstreamKey)
	slow.SetDelay(3 * time.Second)
	locked := upstream.New(t, "regenerated-elsewhere-key-1")
	lockedSingle := upstream.New(t, "regenerated-elsewhere-key-2")
	g := startGateway(t, statusConfig(model.URL, slow.URL, upstream.ClosedURL(t), locked.URL, lockedSingle.URL))

	big := strings.Repeat("x", 5<<10) // over max_body_bytes (4KiB)
	tests := []struct {
		name      string
		req       request
		raw       string // raw request line instead of req (paths no client would send)
		status    int
		code      string // "" for an admitted answer from the upstream
		challenge string // substring of WWW-Authenticate; "" means none expected
		reaches   *upstream.Server
		nreach    int // upstream requests this row causes on reaches
	}{
		{
			name: "200 admitted", req: request{method: "POST", path: "/fraud/score", header: bearer(partnerKey), body: strings.NewReader(`{"amount":1}`)},
			status: 200, reaches: model, nreach: 1,
		},
		{
			name: "401 missing credential", req: request{method: "POST", path: "/fraud/score", body: strings.NewReader(`{}`)},
			status: 401, code: "missing_credential", challenge: `Bearer realm="modelgate"`, reaches: model,
		},
		{
			name: "401 wrong key", req: request{path: "/fraud/score", header: bearer("mgk_not-a-key-at-all-123456")},
			status: 401, code: "invalid_credential", challenge: `error="invalid_token"`, reaches: model,
		},
		{
			name: "401 basic scheme", req: request{path: "/fraud/score", header: http.Header{"Authorization": {"Basic YWNtZTpzZWNyZXQ="}}},
			status: 401, code: "invalid_credential", challenge: `Bearer realm="modelgate", error="invalid_request"`, reaches: model,
		},
		{
			name: "401 key sent with basic scheme", req: request{path: "/fraud/score", header: http.Header{"Authorization": {"Basic " + partnerKey}}},
			status: 401, code: "invalid_credential", challenge: `error="invalid_request"`, reaches: model,
		},
		{
			name: "401 expired key", req: request{path: "/fraud/score", header: bearer(expiredKey)},
			status: 401, code: "invalid_credential", challenge: `error="invalid_token"`, reaches: model,
		},
		{
			name: "401 token on a key-only route", req: request{path: "/fraud/score", header: bearer(jwtCanary)},
			status: 401, code: "invalid_credential", challenge: `error="invalid_token"`, reaches: model,
		},
		{
			name: "403 key of another key set", req: request{path: "/fraud/score", header: bearer(batchKey)},
			status: 403, code: "forbidden", challenge: `error="insufficient_scope"`, reaches: model,
		},
		{
			name: "404 no route", req: request{path: "/nothing/here", header: bearer(partnerKey)},
			status: 404, code: "no_route", reaches: model,
		},
		{
			name: "400 traversal", raw: "GET /fraud/../batch/score HTTP/1.1",
			status: 400, code: "bad_path", reaches: model,
		},
		{
			name: "413 by content-length", req: request{method: "POST", path: "/fraud/score", header: bearer(partnerKey), body: strings.NewReader(big)},
			status: 413, code: "body_too_large", reaches: model,
		},
		{
			// Over buffer_body_bytes, so it streams, and is cut at
			// max_body_bytes while being forwarded: the upstream sees a
			// broken request, the client a 413.
			name: "413 chunked body", req: request{method: "POST", path: "/fraud/score", header: bearer(partnerKey), body: strings.NewReader(big), chunked: true},
			status: 413, code: "body_too_large", nreach: -1,
		},
		{
			name: "502 upstream refuses connections", req: request{path: "/down/x", header: bearer(partnerKey)},
			status: 502, code: "upstream_unavailable",
		},
		{
			name: "504 upstream slower than response_header_timeout", req: request{path: "/slow/x", header: bearer(partnerKey)},
			status: 504, code: "upstream_timeout", reaches: slow, nreach: 1,
		},
		{
			name: "502 upstream rejects primary and secondary keys", req: request{method: "POST", path: "/locked/x", header: bearer(partnerKey), body: strings.NewReader(`{}`)},
			status: 502, code: "upstream_credential_rejected", reaches: locked, nreach: 2,
		},
		{
			name: "502 upstream rejects the only key", req: request{method: "POST", path: "/locked-single/x", header: bearer(partnerKey), body: strings.NewReader(`{}`)},
			status: 502, code: "upstream_credential_rejected", reaches: lockedSingle, nreach: 1,
		},
	}
	c := client()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := 0
			if tt.reaches != nil {
				before = tt.reaches.Count()
			}
			var resp response
			if tt.raw != "" {
				resp = rawRequest(t, g.Addr, tt.raw, bearer(partnerKey))
			} else {
				resp = do(t, c, g.URL, tt.req)
			}
			if resp.status != tt.status {
				t.Fatalf("status = %d, want %d; body %s", resp.status, tt.status, resp.body)
			}
			if resp.header.Get("X-Request-Id") == "" {
				t.Errorf("no X-Request-Id in the answer")
			}
			assertNoSecrets(t, "response body", string(resp.body))
			for k, vs := range resp.header {
				assertNoSecrets(t, "response header "+k, strings.Join(vs, "\n"))
			}
			if tt.code != "" {
				e := decodeError(t, resp.body)
				if e.Error.Code != tt.code {
					t.Errorf("code = %q, want %q (message %q)", e.Error.Code, tt.code, e.Error.Message)
				}
				for k, want := range map[string]string{"Content-Type": "application/json", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"} {
					if got := resp.header.Get(k); got != want {
						t.Errorf("%s = %q, want %q", k, got, want)
					}
				}
			}
			got := resp.header.Values("Www-Authenticate")
			switch {
			case tt.challenge == "" && len(got) > 0:
				t.Errorf("WWW-Authenticate = %q, want none", got)
			case tt.challenge != "" && (len(got) != 1 || !strings.HasPrefix(got[0], `Bearer realm="modelgate"`) || !strings.Contains(got[0], tt.challenge)):
				t.Errorf("WWW-Authenticate = %q, want one Bearer challenge containing %q", got, tt.challenge)
			}
			if tt.reaches != nil && tt.nreach >= 0 {
				if n := tt.reaches.Count() - before; n != tt.nreach {
					t.Errorf("upstream received %d requests, want %d", n, tt.nreach)
				}
			}
		})
	}
	t.Run("502 message for a single rejected key does not blame the body", func(t *testing.T) {
		resp := do(t, c, g.URL, request{method: "POST", path: "/locked-single/x", header: bearer(partnerKey), body: strings.NewReader(`{}`)})
		if e := decodeError(t, resp.body); strings.Contains(e.Error.Message, "too large") {
			t.Errorf("message %q blames the request size; the body was 2 bytes", e.Error.Message)
		}
	})
	t.Run("no credential in any log line", func(t *testing.T) {
		assertNoSecrets(t, "log", g.Logs.String())
	})
}

// TestBodyLimits checks max_body_bytes with bodies that are buffered
// (buffer_body_bytes = max_body_bytes) and bodies that stream (buffer
// smaller than max), with and without Content-Length.
func TestBodyLimits(t *testing.T) {
	for _, buffer := range []string{"4KiB", "1KiB"} {
		t.Run("buffer "+buffer, func(t *testing.T) {
			model := upstream.New(t, upstreamKey)
			g := startGateway(t, newConfig().Server("max_body_bytes: 4KiB", "buffer_body_bytes: "+buffer).Partners().
				Upstream("model", model.URL, upstreamKeyAuth).
				Route("fraud", "/fraud", "model", allowPartners))
			c := client()
			tests := []struct {
				name    string
				size    int
				chunked bool
				status  int
			}{
				{name: "content-length at the limit", size: 4 << 10, status: 200},
				{name: "chunked at the limit", size: 4 << 10, chunked: true, status: 200},
				{name: "content-length one over", size: 4<<10 + 1, status: 413},
				{name: "chunked one over", size: 4<<10 + 1, chunked: true, status: 413},
				{name: "chunked far over", size: 64 << 10, chunked: true, status: 413},
				{name: "small chunked", size: 10, chunked: true, status: 200},
				{name: "empty", size: 0, status: 200},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					body := bytes.Repeat([]byte{'b'}, tt.size)
					row := url.QueryEscape(tt.name)
					resp := do(t, c, g.URL, request{method: "POST", path: "/fraud/x?row=" + row, header: bearer(partnerKey), body: bytes.NewReader(body), chunked: tt.chunked})
					if resp.status != tt.status {
						t.Fatalf("status = %d, want %d; body %s", resp.status, tt.status, resp.body)
					}
					if tt.status != 200 {
						if e := decodeError(t, resp.body); e.Error.Code != "body_too_large" || !strings.Contains(e.Error.Message, "4096") {
							t.Errorf("error = %+v, want body_too_large naming the 4096-byte limit", e.Error)
						}
						// The rest of the body is not read: the connection
						// must not be reused.
						if !resp.close {
							t.Errorf("no Connection: close")
						}
						return
					}
					// A refused streamed body may be recorded late (when its
					// connection is torn down), so find this row's request.
					var got []upstream.Request
					for _, r := range model.Requests() {
						if r.RawQuery == "row="+row {
							got = append(got, r)
						}
					}
					if len(got) != 1 || !bytes.Equal(got[0].Body, body) {
						t.Errorf("upstream got %d requests for this row, want one with the %d bytes sent", len(got), len(body))
					}
				})
			}
		})
	}
}
