package e2e

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelgate/modelgate/test/upstream"
)

// headersConfig fronts one recording upstream that pins a deployment and
// wants the caller's key id in X-Caller-Id.
func headersConfig(model string) *cfgBuilder {
	return newConfig().Partners().
		Upstream("model", model+"/api/v1/service/fraud", upstreamKeyAuth,
			"headers: { azureml-model-deployment: blue }", "identity_headers: { key_id: X-Caller-Id }").
		Route("fraud", "/fraud", "model", allowPartners)
}

// TestUpstreamGetsOnlyItsOwnKey proves the credential swap: the upstream
// receives exactly "Bearer <upstream key>" and the client's key nowhere —
// not in any header, however the client sent it, nor in the URL.
func TestUpstreamGetsOnlyItsOwnKey(t *testing.T) {
	model := upstream.New(t, upstreamKey)
	g := startGateway(t, headersConfig(model.URL))
	tests := []struct {
		name   string
		header http.Header
	}{
		{name: "authorization only", header: bearer(partnerKey)},
		{name: "key also in every other credential header", header: http.Header{
			"Authorization":               {"Bearer " + partnerKey},
			"Proxy-Authorization":         {"Bearer " + partnerKey},
			"Cookie":                      {"session=" + partnerKey},
			"X-Api-Key":                   {partnerKey},
			"Ocp-Apim-Subscription-Key":   {partnerKey},
			"X-Forwarded-Access-Token":    {partnerKey},
			"X-Ms-Token-Aad-Access-Token": {partnerKey},
		}},
		{name: "key in a header named by Connection", header: http.Header{
			"Authorization": {"Bearer " + partnerKey},
			"Connection":    {"X-Key"},
			"X-Key":         {partnerKey},
		}},
	}
	c := client()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			model.Reset()
			resp := do(t, c, g.URL, request{method: "POST", path: "/fraud/score?x=1", header: tt.header, body: strings.NewReader(`{"a":1}`)})
			if resp.status != 200 {
				t.Fatalf("status = %d: %s", resp.status, resp.body)
			}
			reqs := model.Requests()
			if len(reqs) != 1 {
				t.Fatalf("upstream received %d requests, want 1", len(reqs))
			}
			got := reqs[0]
			if a := got.Header.Values("Authorization"); len(a) != 1 || a[0] != "Bearer "+upstreamKey {
				t.Errorf("upstream Authorization = %q, want exactly the upstream key", a)
			}
			if strings.Contains(got.RequestURI, partnerKey) {
				t.Errorf("client key in the upstream URL %q", got.RequestURI)
			}
			for k, vs := range got.Header {
				for _, v := range vs {
					if strings.Contains(v, partnerKey) {
						t.Errorf("client key reached the upstream in %s: %q", k, v)
					}
				}
			}
			assertNoSecrets(t, "response", string(resp.body))
		})
	}
}

// TestHeaderHygiene sends headers that try to remove the injected
// credential or smuggle hop-by-hop, identity and forwarding headers to the
// upstream. Requests are written raw, so the headers go out exactly as
// given.
func TestHeaderHygiene(t *testing.T) {
	model := upstream.New(t, upstreamKey)
	g := startGateway(t, headersConfig(model.URL))
	with := func(h http.Header) http.Header {
		h.Set("Authorization", "Bearer "+partnerKey)
		return h
	}
	tests := []struct {
		name   string
		header http.Header
		absent []string          // must not reach the upstream
		exact  map[string]string // must reach the upstream with exactly this one value
	}{
		{
			name:   "connection names authorization",
			header: with(http.Header{"Connection": {"Authorization"}}),
			exact:  map[string]string{"Authorization": "Bearer " + upstreamKey},
		},
		{
			name:   "connection names a custom header",
			header: with(http.Header{"Connection": {"X-Foo"}, "X-Foo": {"bar"}}),
			absent: []string{"X-Foo", "Connection"},
		},
		{
			name: "connection names every header the gateway sets",
			header: with(http.Header{
				"Connection":               {"Authorization, X-Caller-Id, Azureml-Model-Deployment, X-Request-Id, X-Forwarded-For, Forwarded, Host"},
				"X-Caller-Id":              {"spoofed"},
				"Azureml-Model-Deployment": {"green"},
			}),
			exact: map[string]string{
				"Authorization": "Bearer " + upstreamKey, "X-Caller-Id": "acme", "Azureml-Model-Deployment": "blue",
				"X-Forwarded-For": "127.0.0.1",
			},
		},
		{
			name:   "legacy hop-by-hop headers",
			header: with(http.Header{"Keep-Alive": {"timeout=5"}, "Proxy-Connection": {"keep-alive"}, "Proxy-Authorization": {"Basic Zm9vOmJhcg=="}, "Proxy-Authenticate": {"Basic"}}),
			absent: []string{"Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Proxy-Authenticate"},
		},
		{
			name:   "te other than trailers",
			header: with(http.Header{"Te": {"gzip, deflate"}}),
			absent: []string{"Te"},
		},
		{
			name:   "te trailers is kept",
			header: with(http.Header{"Te": {"trailers"}}),
			exact:  map[string]string{"Te": "trailers"},
		},
		{
			name:   "upgrade without connection",
			header: with(http.Header{"Upgrade": {"websocket"}}),
			absent: []string{"Upgrade", "Connection"},
		},
		{
			name:   "upgrade with connection upgrade",
			header: with(http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Sec-Websocket-Version": {"13"}}),
			absent: []string{"Upgrade", "Connection"},
		},
		{
			name:   "h2c upgrade",
			header: with(http.Header{"Connection": {"Upgrade, HTTP2-Settings"}, "Upgrade": {"h2c"}, "Http2-Settings": {"AAMAAABkAAQCAAAAAAIAAAAA"}}),
			absent: []string{"Upgrade", "Connection", "Http2-Settings"},
		},
		{
			name: "client identity headers are removed and the configured one is set",
			header: with(http.Header{
				"X-Caller-Id":              {"admin"},
				"X-Ms-Client-Principal-Id": {"00000000-0000-0000-0000-000000000000"},
				"X-Ms-Client-Principal":    {"eyJ0eXAiOiJKV1QifQ"},
				"X-Forwarded-User":         {"admin@contoso.com"},
				"X-Forwarded-Email":        {"admin@contoso.com"},
				"X-Remote-User":            {"admin"},
				"Cookie":                   {"session=abc"},
				"X-Api-Key":                {"abc"},
			}),
			absent: []string{"X-Ms-Client-Principal-Id", "X-Ms-Client-Principal", "X-Forwarded-User", "X-Forwarded-Email", "X-Remote-User", "Cookie", "X-Api-Key"},
			exact:  map[string]string{"X-Caller-Id": "acme"},
		},
		{
			name:   "configured upstream header overrides the client's",
			header: with(http.Header{"Azureml-Model-Deployment": {"green"}}),
			exact:  map[string]string{"Azureml-Model-Deployment": "blue"},
		},
		{
			name:   "ordinary headers pass",
			header: with(http.Header{"Content-Type": {"application/json"}, "X-Custom": {"kept"}, "User-Agent": {"e2e/1"}}),
			exact:  map[string]string{"X-Custom": "kept", "User-Agent": "e2e/1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			model.Reset()
			resp := rawRequest(t, g.Addr, "GET /fraud/score HTTP/1.1", tt.header)
			if resp.status != 200 {
				t.Fatalf("status = %d: %s", resp.status, resp.body)
			}
			got, ok := model.Last()
			if !ok {
				t.Fatal("the request did not reach the upstream")
			}
			if a := got.Header.Values("Authorization"); len(a) != 1 || a[0] != "Bearer "+upstreamKey {
				t.Errorf("upstream Authorization = %q, want exactly the upstream key", a)
			}
			if got.Host != model.Addr() {
				t.Errorf("upstream Host = %q, want %q", got.Host, model.Addr())
			}
			for _, k := range tt.absent {
				if v, ok := got.Header[http.CanonicalHeaderKey(k)]; ok {
					t.Errorf("%s reached the upstream: %q", k, v)
				}
			}
			for k, want := range tt.exact {
				if v := got.Header.Values(k); len(v) != 1 || v[0] != want {
					t.Errorf("upstream %s = %q, want [%q]", k, v, want)
				}
			}
		})
	}
}

// TestForwardingHeaders checks that client-sent Forwarded and X-Forwarded-*
// are replaced when the peer is not a trusted proxy, and extended when it
// is (server.trusted_proxies: 127.0.0.1/32).
func TestForwardingHeaders(t *testing.T) {
	spoof := http.Header{
		"Authorization":     {"Bearer " + partnerKey},
		"X-Forwarded-For":   {"203.0.113.7"},
		"X-Forwarded-Host":  {"evil.example"},
		"X-Forwarded-Proto": {"https"},
		"Forwarded":         {"for=203.0.113.7;proto=https"},
	}
	tests := []struct {
		name    string
		trusted bool
		header  http.Header
		want    func(host string) map[string]string
	}{
		{
			name: "untrusted peer: replaced", header: spoof,
			want: func(host string) map[string]string {
				return map[string]string{
					"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": host, "X-Forwarded-Proto": "http",
					"Forwarded": `for=127.0.0.1;host="` + host + `";proto=http`,
				}
			},
		},
		{
			name: "untrusted peer, no client headers", header: bearer(partnerKey),
			want: func(host string) map[string]string {
				return map[string]string{
					"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": host, "X-Forwarded-Proto": "http",
					"Forwarded": `for=127.0.0.1;host="` + host + `";proto=http`,
				}
			},
		},
		{
			name: "trusted peer: extended", trusted: true, header: spoof,
			want: func(host string) map[string]string {
				return map[string]string{
					"X-Forwarded-For": "203.0.113.7, 127.0.0.1", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
					"Forwarded": `for=203.0.113.7;proto=https, for=127.0.0.1;host="` + host + `";proto=http`,
				}
			},
		},
		{
			name: "trusted peer, no client headers", trusted: true, header: bearer(partnerKey),
			want: func(host string) map[string]string {
				return map[string]string{
					"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": host, "X-Forwarded-Proto": "http",
					"Forwarded": `for=127.0.0.1;host="` + host + `";proto=http`,
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			model := upstream.New(t, upstreamKey)
			cfg := headersConfig(model.URL)
			if tt.trusted {
				cfg.Server(`trusted_proxies: ["127.0.0.1/32"]`)
			}
			g := startGateway(t, cfg)
			resp := rawRequest(t, g.Addr, "GET /fraud/x HTTP/1.1", tt.header)
			if resp.status != 200 {
				t.Fatalf("status = %d: %s", resp.status, resp.body)
			}
			got, _ := model.Last()
			for k, want := range tt.want(g.Addr) {
				if v := got.Header.Values(k); len(v) != 1 || v[0] != want {
					t.Errorf("upstream %s = %q, want [%q]", k, v, want)
				}
			}
		})
	}
}

// TestRequestID checks that a sane client X-Request-Id is used, an insane
// one replaced, and that the id the client gets back is the one forwarded
// and logged — exactly once, even though the upstream echoes it.
func TestRequestID(t *testing.T) {
	model := upstream.New(t, upstreamKey)
	g := startGateway(t, headersConfig(model.URL))
	tests := []struct {
		name   string
		sent   []string
		honour bool
	}{
		{name: "none", sent: nil},
		{name: "sane", sent: []string{"client-req.42:abc_DEF"}, honour: true},
		{name: "with spaces", sent: []string{"bad id"}},
		{name: "with a newline-like escape", sent: []string{"id%0d%0aX-Injected:1"}},
		{name: "too long", sent: []string{strings.Repeat("a", 129)}},
		{name: "at the length limit", sent: []string{strings.Repeat("b", 128)}, honour: true},
	}
	c := client()
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := bearer(partnerKey)
			if tt.sent != nil {
				h["X-Request-Id"] = tt.sent
			}
			resp := do(t, c, g.URL, request{path: "/fraud/x", header: h})
			if resp.status != 200 {
				t.Fatalf("status %d: %s", resp.status, resp.body)
			}
			ids := resp.header.Values("X-Request-Id")
			if len(ids) != 1 {
				t.Fatalf("client got X-Request-Id %q, want exactly one", ids)
			}
			id := ids[0]
			if tt.honour && id != tt.sent[0] {
				t.Errorf("id = %q, want the client's %q", id, tt.sent[0])
			}
			if !tt.honour && (slices.Contains(tt.sent, id) || id == "") {
				t.Errorf("id = %q, want a generated one", id)
			}
			if seen[id] {
				t.Errorf("id %q was used before", id)
			}
			seen[id] = true
			got, _ := model.Last()
			if v := got.Header.Values("X-Request-Id"); len(v) != 1 || v[0] != id {
				t.Errorf("upstream X-Request-Id = %q, want [%q]", v, id)
			}
			// The line is written once the answer is complete, which may be
			// just after the client has read it.
			waitFor(t, 2*time.Second, "a log line with request_id "+id, func() bool {
				for _, l := range g.Logs.RequestLines(t) {
					if l["request_id"] == id {
						return true
					}
				}
				return false
			})
		})
	}
}

// TestPublicRouteNeverForwardsClientCredentials checks a public route to
// an upstream with auth none: whatever credential the client sends, the
// upstream receives no Authorization at all.
func TestPublicRouteNeverForwardsClientCredentials(t *testing.T) {
	model := upstream.New(t) // accepts anything
	g := startGateway(t, newConfig().Upstream("open", model.URL+"/docs", "{ type: none }").PublicRoute("docs", "/docs", "open"))
	tests := []struct {
		name   string
		header http.Header
	}{
		{name: "no credential", header: http.Header{}},
		{name: "a key", header: bearer(partnerKey)},
		{name: "a token", header: bearer(jwtCanary)},
		{name: "basic", header: http.Header{"Authorization": {"Basic " + partnerKey}}},
		{name: "connection names authorization", header: http.Header{"Authorization": {"Bearer " + partnerKey}, "Connection": {"Authorization"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := rawRequest(t, g.Addr, "GET /docs/index.html HTTP/1.1", tt.header)
			if resp.status != 200 {
				t.Fatalf("status %d: %s", resp.status, resp.body)
			}
			got, _ := model.Last()
			if v, ok := got.Header["Authorization"]; ok {
				t.Errorf("upstream received Authorization %q", v)
			}
			for k, vs := range got.Header {
				assertNoSecrets(t, "upstream header "+k, strings.Join(vs, ","))
			}
		})
	}
	waitFor(t, 2*time.Second, "a log line per request", func() bool { return len(g.Logs.RequestLines(t)) == len(tests) })
	for _, l := range g.Logs.RequestLines(t) {
		if l["identity"] != "public" || l["decision"] != "admit" {
			t.Errorf("log line identity %v decision %v, want public admit", l["identity"], l["decision"])
		}
	}
}
