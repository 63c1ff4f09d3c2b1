package e2e

import (
	"net/http"
	"testing"

	"github.com/modelgate/modelgate/test/upstream"
)

// routingConfig sends every route to one recording upstream, each under its
// own upstream path, so the path the upstream sees names the route taken.
func routingConfig(model string) *cfgBuilder {
	b := newConfig().Partners()
	for _, up := range []struct{ name, path string }{
		{"fraud", "/up/fraud"}, {"fraud2", "/up/fraud2"}, {"host-fraud", "/up/host-fraud/"}, {"host-root", "/api"}, {"bare", ""},
	} {
		b.Upstream(up.name, model+up.path, upstreamKeyAuth)
	}
	return b.Route("fraud", "/fraud", "fraud", allowPartners).
		Route("fraud-v2", "/fraud/v2", "fraud2", allowPartners).
		HostRoute("models.example.com", "host-fraud", "/fraud", "host-fraud", allowPartners).
		HostRoute("root.example.com", "host-root", "/", "host-root", allowPartners).
		Route("bare", "/bare", "bare", allowPartners)
}

// TestRouting covers prefix boundaries, longest prefix, host-specific
// routes, and the path rewrite: the matched prefix is replaced by the
// upstream URL's path, and the query and percent-encoding reach the
// upstream as the client sent them. Each row checks the exact request URI
// the upstream received (or that it received nothing).
func TestRouting(t *testing.T) {
	model := upstream.New(t, upstreamKey)
	g := startGateway(t, routingConfig(model.URL))
	tests := []struct {
		name string
		host string // "" = the gateway's address
		uri  string // request target, sent raw
		want string // request URI at the upstream; "" = 404, never reaches it
	}{
		// Prefix boundaries.
		{name: "prefix itself", uri: "/fraud", want: "/up/fraud"},
		{name: "prefix with slash", uri: "/fraud/", want: "/up/fraud/"},
		{name: "below prefix", uri: "/fraud/score", want: "/up/fraud/score"},
		{name: "not a segment boundary", uri: "/fraudster"},
		{name: "not a segment boundary with dash", uri: "/fraud-x/score"},
		{name: "prefix is case sensitive", uri: "/Fraud/score"},
		{name: "no route for root", uri: "/"},
		{name: "no route elsewhere", uri: "/healthz"},
		// Longest prefix.
		{name: "longer prefix wins", uri: "/fraud/v2", want: "/up/fraud2"},
		{name: "longer prefix wins below", uri: "/fraud/v2/score", want: "/up/fraud2/score"},
		{name: "longer prefix needs its boundary", uri: "/fraud/v22/score", want: "/up/fraud/v22/score"},
		// Hosts.
		{name: "host route", host: "models.example.com", uri: "/fraud/score", want: "/up/host-fraud/score"},
		{name: "host route beats longer any-host prefix", host: "models.example.com", uri: "/fraud/v2/score", want: "/up/host-fraud/v2/score"},
		{name: "host with port and upper case", host: "MODELS.Example.COM:8443", uri: "/fraud/score", want: "/up/host-fraud/score"},
		{name: "host with trailing dot", host: "models.example.com.", uri: "/fraud/score", want: "/up/host-fraud/score"},
		{name: "host route misses, any-host route serves", host: "models.example.com", uri: "/bare/x", want: "/x"},
		{name: "other host gets any-host routes", host: "other.example.com", uri: "/fraud/score", want: "/up/fraud/score"},
		{name: "subdomain is another host", host: "eu.models.example.com", uri: "/fraud/score", want: "/up/fraud/score"},
		{name: "host root route beats any-host prefix", host: "root.example.com", uri: "/fraud/score", want: "/api/fraud/score"},
		{name: "host root route takes everything", host: "root.example.com", uri: "/anything/else", want: "/api/anything/else"},
		{name: "host root route, root path", host: "root.example.com", uri: "/", want: "/api/"},
		// Rewrite: prefix replaced, upstream without a path.
		{name: "bare upstream, prefix only", uri: "/bare", want: "/"},
		{name: "bare upstream, below prefix", uri: "/bare/score", want: "/score"},
		// Query kept byte for byte.
		{name: "query", uri: "/fraud/score?b=2&a=1", want: "/up/fraud/score?b=2&a=1"},
		{name: "query on the prefix itself", uri: "/fraud?x=1", want: "/up/fraud?x=1"},
		{name: "query with encodings and odd bytes", uri: "/fraud/s?q=a%20b&r=%2F&p=a+b&u=%zz&semi=1;2&empty=&flag", want: "/up/fraud/s?q=a%20b&r=%2F&p=a+b&u=%zz&semi=1;2&empty=&flag"},
		{name: "query that looks like a path", uri: "/fraud/s?next=/../../admin", want: "/up/fraud/s?next=/../../admin"},
		// Percent-encoding in the path.
		{name: "encoded space", uri: "/fraud/a%20b", want: "/up/fraud/a%20b"},
		{name: "encoded slash kept encoded", uri: "/fraud/a%2Fb/c", want: "/up/fraud/a%2Fb/c"},
		{name: "encoded slash in lower case", uri: "/fraud/a%2fb", want: "/up/fraud/a%2fb"},
		{name: "utf-8", uri: "/fraud/caf%C3%A9", want: "/up/fraud/caf%C3%A9"},
		{name: "plus sign", uri: "/fraud/a+b", want: "/up/fraud/a+b"},
		{name: "encoded prefix letter is normalised", uri: "/fr%61ud/score", want: "/up/fraud/score"},
		{name: "double slash below prefix", uri: "/fraud//score", want: "/up/fraud//score"},
		{name: "dots inside a segment are fine", uri: "/fraud/v1..2/a.b", want: "/up/fraud/v1..2/a.b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := bearer(partnerKey)
			if tt.host != "" {
				h.Set("Host", tt.host)
			}
			before := model.Count()
			resp := rawRequest(t, g.Addr, "GET "+tt.uri+" HTTP/1.1", h)
			if tt.want == "" {
				if resp.status != http.StatusNotFound {
					t.Fatalf("status = %d, want 404: %s", resp.status, resp.body)
				}
				if e := decodeError(t, resp.body); e.Error.Code != "no_route" {
					t.Errorf("code = %q, want no_route", e.Error.Code)
				}
				if n := model.Count() - before; n != 0 {
					t.Errorf("upstream received %d requests, want none", n)
				}
				return
			}
			if resp.status != 200 {
				t.Fatalf("status = %d: %s", resp.status, resp.body)
			}
			got, _ := model.Last()
			if got.RequestURI != tt.want {
				t.Errorf("upstream request URI = %q, want %q", got.RequestURI, tt.want)
			}
		})
	}
}

// TestTraversalRefused sends paths that try to climb out of a route's
// prefix, in every spelling, raw. Each must be refused with 400 and never
// reach the upstream, whatever the credential.
func TestTraversalRefused(t *testing.T) {
	model := upstream.New(t, upstreamKey)
	g := startGateway(t, routingConfig(model.URL))
	uris := []string{
		"/fraud/../admin",
		"/fraud/..",
		"/fraud/x/../../admin",
		"/fraud/%2e%2e/admin",
		"/fraud/%2E%2E/admin",
		"/fraud/%2e%2e",
		"/fraud/.%2e/admin",
		"/fraud/%2e./admin",
		"/fraud/%2E%2E%2Fadmin",
		"/fraud/..%2fadmin",
		"/fraud%2f..%2fadmin",
		"/fraud/./x",
		"/fraud/%2e/x",
		"/fraud/.",
		"/./fraud/x",
		"/../fraud/x",
		`/fraud/..\admin`,
		`/fraud\..\admin`,
		"/fraud/..%5cadmin",
		"/fraud/%5c..%5cadmin",
		"/fraud/a%5cb",
		"/fraud/%00",
		"/fraud/a%0d%0aX-Injected:%201",
		"/fraud/a%7f",
		"/fraud/v2/../../admin",
		"*",
	}
	for _, uri := range uris {
		for _, cred := range []string{"", partnerKey} {
			name := uri
			if cred != "" {
				name += " with key"
			}
			t.Run(name, func(t *testing.T) {
				var h http.Header
				if cred != "" {
					h = bearer(cred)
				}
				before := model.Count()
				resp := rawRequest(t, g.Addr, "GET "+uri+" HTTP/1.1", h)
				if resp.status != http.StatusBadRequest {
					t.Fatalf("status = %d, want 400: %s", resp.status, resp.body)
				}
				if e := decodeError(t, resp.body); e.Error.Code != "bad_path" {
					t.Errorf("code = %q, want bad_path", e.Error.Code)
				}
				if n := model.Count() - before; n != 0 {
					t.Errorf("upstream received %d requests, want none", n)
				}
			})
		}
	}
	t.Run("absolute form", func(t *testing.T) {
		resp := rawRequest(t, g.Addr, "GET http://"+g.Addr+"/fraud/%2e%2e/admin HTTP/1.1", bearer(partnerKey))
		if resp.status != http.StatusBadRequest {
			t.Fatalf("status = %d, want 400: %s", resp.status, resp.body)
		}
	})
}
