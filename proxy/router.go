package proxy

import (
	"strings"
)

// Router maps a request's host and path to a route: the longest path prefix
// that matches on a segment boundary, among the routes for that exact host
// first and the routes for any host second. It is built once per
// configuration and is immutable, so lookups need no locks and do not
// allocate.
type Router struct {
	byHost map[string]map[string]*Route // host ("" = any) → path prefix → route
}

// NewRouter builds a router. Routes with the same host and path keep the
// first (the config loader refuses duplicates).
func NewRouter(routes []*Route) *Router {
	rt := &Router{byHost: map[string]map[string]*Route{}}
	for _, r := range routes {
		m := rt.byHost[r.Host]
		if m == nil {
			m = map[string]*Route{}
			rt.byHost[r.Host] = m
		}
		if _, dup := m[r.Prefix]; !dup {
			m[r.Prefix] = r
		}
	}
	return rt
}

// Match returns the route for host (lower case, without port) and a
// cleaned request path, or nil.
func (rt *Router) Match(host, path string) *Route {
	if host != "" {
		if m := rt.byHost[host]; m != nil {
			if r := longestPrefix(m, path); r != nil {
				return r
			}
		}
	}
	if m := rt.byHost[""]; m != nil {
		return longestPrefix(m, path)
	}
	return nil
}

// MatchHost is Match for a Host header as sent (any case, maybe a port or
// a trailing dot), normalized exactly as the gateway does for requests.
func (rt *Router) MatchHost(hostHeader, path string) *Route {
	return rt.Match(hostOnly(hostHeader), path)
}

// longestPrefix tries path, then each shorter prefix ending at a '/', then
// "/": one map lookup per segment, so /fraud matches /fraud and
// /fraud/score but never /fraudster.
func longestPrefix(m map[string]*Route, path string) *Route {
	p := path
	for len(p) > 1 {
		if r := m[p]; r != nil {
			return r
		}
		i := strings.LastIndexByte(p, '/')
		if i <= 0 {
			break
		}
		p = p[:i]
	}
	return m["/"]
}

// hostOnly lower-cases a Host header and strips its port.
func hostOnly(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// badPath reports why a request path cannot be routed safely, or "".
// Dot segments are refused rather than resolved: a path the gateway and the
// upstream could read differently must never reach the upstream, and
// "/fraud/../admin" (also sent as %2e%2e or with %2f) would otherwise leave
// the route's prefix. Backslashes are refused for the same reason (some
// servers treat them as slashes).
func badPath(path string) string {
	if path == "" || path[0] != '/' {
		return "the request path must start with /"
	}
	for i := 0; i < len(path); i++ {
		c := path[i]
		if c == '\\' {
			return "the request path must not contain a backslash"
		}
		if c < 0x20 || c == 0x7f {
			return "the request path must not contain control characters"
		}
		if c != '/' {
			continue
		}
		seg := path[i+1:]
		if j := strings.IndexByte(seg, '/'); j >= 0 {
			seg = seg[:j]
		}
		if seg == "." || seg == ".." {
			return "the request path must not contain . or .. segments"
		}
	}
	return ""
}
