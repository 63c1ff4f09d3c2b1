package proxy

import (
	"maps"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/modelgate/modelgate/policy"
)

// Header hygiene: what the gateway removes from, and adds to, the request it
// sends upstream.

type headerKV struct {
	key string
	val []string
}

type identityHeader struct {
	key string                        // canonical header name
	get func(*policy.Identity) string // the identity field it carries
}

// compileUpstream returns New's private copy of u, with its configured
// headers in canonical form. u itself is not modified.
func compileUpstream(u *Upstream) *Upstream {
	c := &Upstream{
		Name: u.Name, Auth: u.Auth,
		Headers: maps.Clone(u.Headers), IdentityHeaders: maps.Clone(u.IdentityHeaders),
		Backends: u.Backends, Pool: u.Pool, Tries: u.Tries, MirrorTo: u.MirrorTo, URL: cloneURL(u.URL),
	}
	c.headers, c.identity = compileHeaders(c.Headers, c.IdentityHeaders)
	return c
}

func cloneURL(u *url.URL) *url.URL {
	if u == nil {
		return nil
	}
	c := *u
	return &c
}

// compileHeaders turns configured headers and identity headers into the
// canonical lists rewrite sets.
func compileHeaders(headers, identityHeaders map[string]string) (hs []headerKV, ids []identityHeader) {
	for k, v := range headers {
		hs = append(hs, headerKV{key: http.CanonicalHeaderKey(k), val: []string{v}})
	}
	for field, name := range identityHeaders {
		get := identityFields[field]
		if get == nil {
			get = func(*policy.Identity) string { return "" }
		}
		ids = append(ids, identityHeader{key: http.CanonicalHeaderKey(name), get: get})
	}
	return hs, ids
}

// retarget points out at base: its scheme and host, and its path before
// the route-relative rest of the request's path.
func retarget(out *http.Request, base *url.URL, st *reqState) {
	out.URL.Scheme = base.Scheme
	out.URL.Host = base.Host
	out.Host = ""
	out.URL.Path = base.Path + st.rest
	out.URL.RawPath = ""
	if st.rawRest != "" {
		out.URL.RawPath = base.EscapedPath() + st.rawRest
	}
	if out.URL.Path == "" {
		out.URL.Path = "/"
	}
}

// setBackendHeaders sets an upstream's (or backend's) configured headers,
// over any client-sent header of the same name, and the caller's identity
// in its identity headers.
func setBackendHeaders(hdr http.Header, headers []headerKV, identity []identityHeader, st *reqState) {
	for _, kv := range headers {
		hdr[kv.key] = kv.val
	}
	if st.ident != nil {
		for _, ih := range identity {
			if v := ih.get(st.ident); v != "" {
				hdr[ih.key] = []string{v}
			}
		}
	}
}

// spoofable lists client-sent headers that claim an identity or carry a
// credential, or that some server or framework behind the gateway reads as
// the real URL, method, path prefix, scheme, port or client address. They
// never reach an upstream: the gateway sets identity headers only where an
// upstream asks for them (identity_headers), and forwarding headers itself
// (setForwarded).
//
// Every header a caller's credential may arrive in (server.credential_headers:
// Authorization, api-key as the Azure OpenAI and AI Foundry clients send it,
// Ocp-Apim-Subscription-Key as API Management clients do) is here whatever
// the configuration says, so a key sent in a header the route does not read
// is still never forwarded.
var spoofable = []string{
	// Credentials.
	"Authorization", "Cookie",
	"Api-Key", "X-Api-Key", "Ocp-Apim-Subscription-Key",
	// Identity claims of authenticating proxies (oauth2-proxy, App Service
	// Easy Auth, Apache/nginx auth modules) and of the gateway itself.
	"X-Forwarded-User", "X-Forwarded-Email", "X-Forwarded-Preferred-Username", "X-Forwarded-Groups", "X-Forwarded-Access-Token",
	"X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Groups", "X-Auth-Request-Access-Token", "X-Auth-Request-Preferred-Username",
	"X-Ms-Client-Principal", "X-Ms-Client-Principal-Id", "X-Ms-Client-Principal-Name", "X-Ms-Client-Principal-Idp",
	"X-Ms-Token-Aad-Access-Token", "X-Ms-Token-Aad-Id-Token",
	"X-Remote-User", "X-Remote-Group", "Remote-User",
	"X-Modelgate-Identity",
	// URL and method rewrites (IIS URL Rewrite, Symfony, Laravel, Spring
	// HiddenHttpMethodFilter and the like): they would let a caller reach a
	// path or method other than the one the route and policy saw.
	"X-Original-Url", "X-Rewrite-Url", "X-Original-Uri", "X-Original-Method",
	"X-Http-Method-Override", "X-Http-Method", "X-Method-Override",
	// Client addresses and hosts that servers prefer over the connection's.
	"X-Real-Ip", "X-Client-Ip", "True-Client-Ip", "X-Cluster-Client-Ip",
	"Cf-Connecting-Ip", "Fastly-Client-Ip", "X-Host", "Front-End-Https", "X-Url-Scheme",
}

// spoofablePrefixes extend spoofable to whole families: every X-Forwarded-*
// (Prefix, Port, Server, Ssl, Scheme, Uri, ... — ReverseProxy itself removes
// only For, Host and Proto, which setForwarded then sets), every X-Original-*,
// and every App Service Easy Auth X-Ms-Client-Principal* / X-Ms-Token-*.
var spoofablePrefixes = []string{"X-Forwarded-", "X-Original-", "X-Ms-Client-Principal", "X-Ms-Token-", "X-Auth-Request-"}

var spoofableSet = func() map[string]struct{} {
	m := make(map[string]struct{}, len(spoofable))
	for _, k := range spoofable {
		m[http.CanonicalHeaderKey(k)] = struct{}{}
	}
	return m
}()

// isSpoofable reports whether the client-sent header k (as Go's server
// keys it) must not reach an upstream. A name with '_' is judged as if it
// had '-' there: CGI, WSGI and Rack servers map X_Forwarded_For and
// X-Forwarded-For to the same HTTP_X_FORWARDED_FOR, so the underscore
// spelling would slip past a by-name filter.
func isSpoofable(k string) bool {
	if strings.IndexByte(k, '_') >= 0 {
		k = http.CanonicalHeaderKey(strings.ReplaceAll(k, "_", "-"))
	}
	if _, ok := spoofableSet[k]; ok {
		return true
	}
	return slices.ContainsFunc(spoofablePrefixes, func(p string) bool { return strings.HasPrefix(k, p) })
}

// rewrite builds the outbound request. ReverseProxy has already removed
// hop-by-hop headers (including any named in Connection) and client-sent
// Forwarded / X-Forwarded-* from pr.Out before this runs; the upstream
// credential is injected later, by the transport, so no client header can
// remove it.
func (h *Handler) rewrite(u *Upstream, pr *httputil.ProxyRequest) {
	st := stateFrom(pr.In.Context())
	out := pr.Out
	hdr := out.Header

	// Target: scheme and host of the upstream; its path replaces the prefix.
	// A pool picks its backend per try (poolTransport.target).
	st.rest, st.rawRest = routeRest(pr.In, st.route.Prefix)
	out.URL.RawQuery = pr.In.URL.RawQuery
	if u.URL != nil {
		retarget(out, u.URL, st)
	}

	for k := range hdr {
		if isSpoofable(k) {
			delete(hdr, k)
		}
	}
	// Client trailers are dropped whole: they arrive after the gateway's
	// own headers, so a trailer named Authorization or X-Forwarded-For
	// would override them at any upstream that merges trailers into the
	// header (RFC 9110 §6.5.1 lets it), and no scoring API needs them.
	out.Trailer = nil
	// ReverseProxy puts back Connection: Upgrade and Upgrade after removing
	// hop-by-hop headers, to tunnel WebSocket and h2c. The gateway does not
	// switch protocols: a tunnel would hand the client a raw connection to
	// the upstream, authenticated with the gateway's credential, outside the
	// body limit and the per-request log. Scoring APIs are plain HTTP.
	delete(hdr, "Connection")
	delete(hdr, "Upgrade")
	// A client-sent header named like any identity header of the upstream
	// (of any of its backends) is never forwarded.
	for _, ih := range u.identity {
		delete(hdr, ih.key)
	}
	h.setForwarded(pr, st)
	hdr[headerRequestID] = []string{st.id}
	switch {
	case st.span != nil && st.span.SpanContext().IsValid():
		// Each try sends its own span's traceparent (otel.go).
		delete(hdr, headerTraceparent)
		delete(hdr, headerTracestate)
	case st.newTrace != "":
		hdr[headerTraceparent] = []string{st.newTrace}
		delete(hdr, headerTracestate)
	}
	if u.URL != nil {
		setBackendHeaders(hdr, u.headers, u.identity, st)
	}
}

// identityFields reads each identity field an identity header may carry.
var identityFields = map[string]func(*policy.Identity) string{
	"key_id": func(id *policy.Identity) string { return id.KeyID },
	"oid":    func(id *policy.Identity) string { return id.ObjectID },
	"tid":    func(id *policy.Identity) string { return id.TenantID },
	"appid":  func(id *policy.Identity) string { return id.AppID },
	"sub":    func(id *policy.Identity) string { return id.Subject },
	"method": func(id *policy.Identity) string { return id.Method },
	"provider": func(id *policy.Identity) string {
		if id.Method == policy.MethodKey {
			return id.KeySet
		}
		return id.Provider
	},
}

// setForwarded sets X-Forwarded-For/Host/Proto and Forwarded (RFC 7239).
// From an untrusted peer the client's own values were dropped and the
// gateway's replace them; from a trusted proxy the chain is extended.
func (h *Handler) setForwarded(pr *httputil.ProxyRequest, st *reqState) {
	in, hdr := pr.In, pr.Out.Header
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	ip := st.peer.String()
	xff, xfh, xfp, fwd := ip, in.Host, proto, ""
	if st.trusted {
		if prior := in.Header.Values("X-Forwarded-For"); len(prior) > 0 {
			xff = strings.Join(prior, ", ") + ", " + ip
		}
		if v := in.Header.Get("X-Forwarded-Host"); v != "" {
			xfh = v
		}
		if v := in.Header.Get("X-Forwarded-Proto"); v != "" {
			xfp = v
		}
		if prior := in.Header.Values("Forwarded"); len(prior) > 0 {
			fwd = strings.Join(prior, ", ") + ", "
		}
	}
	if !st.peer.IsValid() {
		ip = "unknown"
		xff = ""
	}
	node := ip
	if st.peer.Is6() {
		node = `"[` + ip + `]"`
	}
	fwd += "for=" + node + ";host=" + quoteForwarded(in.Host) + ";proto=" + proto
	if xff != "" {
		hdr["X-Forwarded-For"] = []string{xff}
	}
	hdr["X-Forwarded-Host"] = []string{xfh}
	hdr["X-Forwarded-Proto"] = []string{xfp}
	hdr["Forwarded"] = []string{fwd}
}

func quoteForwarded(s string) string {
	if s == "" {
		return `""`
	}
	if !strings.ContainsAny(s, `"\`) {
		return `"` + s + `"`
	}
	return strconv.Quote(s)
}
