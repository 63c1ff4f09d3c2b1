package proxy

import (
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Early refusals at the edge: requests the gateway answers itself, before
// routing and before any policy decision.

// CodeMethodNotAllowed answers TRACE, TRACK and CONNECT (405).
const CodeMethodNotAllowed = "method_not_allowed"

// allowedMethods is the Allow header of a 405: every method the gateway
// forwards that clients commonly use (any other token method is forwarded
// too; RFC 9110 §15.5.6 asks only for the ones the target supports).
const allowedMethods = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"

// refusedMethod reports whether method is one the gateway never forwards.
// TRACE (and TRACK, IIS's alias) asks the upstream to echo the request it
// received, which would reflect the credential the gateway injected back to
// the caller. CONNECT asks for a tunnel: a raw connection to the upstream
// outside the route's path, the body limit and the request log. Compared
// without case: methods are case-sensitive (RFC 9110 §9.1), but some
// upstream servers are not.
func refusedMethod(method string) bool {
	return strings.EqualFold(method, "TRACE") || strings.EqualFold(method, "TRACK") || strings.EqualFold(method, "CONNECT")
}

// setPeer records the connection's peer address and whether it is a
// trusted proxy (Options.TrustedProxies).
func (h *Handler) setPeer(r *http.Request, st *reqState) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return
	}
	st.peer = ap.Addr().Unmap()
	st.trusted = h.isTrusted(st.peer)
}

// clientBucket is the rate-limit key of a caller without a credential:
// "ip:" and its address (clientAddr).
func (h *Handler) clientBucket(r *http.Request, st *reqState) string {
	if a := h.clientAddr(r, st); a.IsValid() {
		return "ip:" + a.String()
	}
	return "ip:" + remoteHost(r.RemoteAddr)
}

// clientAddr is the address of the client, as far as the trusted chain
// tells. From an untrusted peer it is the peer: anything the client wrote
// in X-Forwarded-For is its own claim. From a trusted proxy it is the
// rightmost X-Forwarded-For entry that is not itself a trusted proxy
// (entries to its left were written by the client and may be anything);
// when every entry is trusted, the leftmost. An entry that is not an
// address ends the walk at the last trusted hop before it.
func (h *Handler) clientAddr(r *http.Request, st *reqState) netip.Addr {
	if !st.trusted {
		return st.peer
	}
	client := st.peer
	vals := r.Header["X-Forwarded-For"]
	for i := len(vals) - 1; i >= 0; i-- {
		v := vals[i]
		for v != "" {
			entry := v
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				entry, v = v[j+1:], v[:j]
			} else {
				v = ""
			}
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			a, err := netip.ParseAddr(entry)
			if err != nil {
				ap, err2 := netip.ParseAddrPort(entry)
				if err2 != nil {
					return client
				}
				a = ap.Addr()
			}
			client = a.Unmap()
			if !h.isTrusted(client) {
				return client
			}
		}
	}
	return client
}

func (h *Handler) isTrusted(a netip.Addr) bool {
	return slices.ContainsFunc(h.trusted, func(p netip.Prefix) bool { return p.Contains(a) })
}

// CodeCORSOriginNotAllowed answers a preflight from an origin the route's
// CORS settings do not list (403).
const CodeCORSOriginNotAllowed = "cors_origin_not_allowed"

// CORS lets browser pages on other origins call a route (the Fetch
// standard's CORS protocol). The gateway answers preflights itself,
// without a credential and without the upstream; the actual request still
// needs its credential. It never sends Access-Control-Allow-Credentials:
// credentials travel only in the credential headers, never in cookies.
type CORS struct {
	// AllowOrigins are exact origins (lower case, scheme://host[:port]), or
	// "*" alone for any.
	AllowOrigins []string
	// AllowHeaders are request headers a page may send; the credential
	// headers (Options.CredentialHeaders) are always added.
	AllowHeaders []string
	// ExposeHeaders are answer headers a page's script may read.
	ExposeHeaders []string
	// MaxAge is how long a browser may cache a preflight; 0 sends none.
	MaxAge time.Duration
}

// corsPolicy is a CORS compiled once: header values ready to set.
type corsPolicy struct {
	any          bool
	origins      map[string]struct{}
	allowHeaders []string
	expose       []string
	maxAge       []string
}

// corsMethods is a preflight's Access-Control-Allow-Methods: what the
// gateway forwards (TRACE, TRACK and CONNECT never; browsers refuse them
// anyway).
var corsMethods = []string{"GET, HEAD, POST, PUT, PATCH, DELETE"}

var varyOrigin = []string{"Origin"}

func compileCORS(c *CORS, credHeaders []string) *corsPolicy {
	if c == nil {
		return nil
	}
	p := &corsPolicy{origins: map[string]struct{}{}}
	for _, o := range c.AllowOrigins {
		if o == "*" {
			p.any = true
		}
		p.origins[o] = struct{}{}
	}
	allow := slices.Clone(credHeaders)
	for _, h := range c.AllowHeaders {
		if !slices.ContainsFunc(allow, func(s string) bool { return strings.EqualFold(s, h) }) {
			allow = append(allow, h)
		}
	}
	p.allowHeaders = []string{strings.Join(allow, ", ")}
	if len(c.ExposeHeaders) > 0 {
		p.expose = []string{strings.Join(c.ExposeHeaders, ", ")}
	}
	if s := int64(c.MaxAge / time.Second); s > 0 {
		p.maxAge = []string{strconv.FormatInt(s, 10)}
	}
	return p
}

// allowOrigin returns the Access-Control-Allow-Origin value for origin, or
// "" when origin may not call the route.
func (p *corsPolicy) allowOrigin(origin string) string {
	if p.any {
		return "*"
	}
	if _, ok := p.origins[origin]; ok {
		return origin
	}
	return ""
}

// cors applies route's CORS settings. It reports whether it answered the
// request (a preflight). For any other request from an allowed origin it
// labels the answer — the gateway's own refusals too, so a page can read
// why it was refused.
func (h *Handler) cors(w http.ResponseWriter, r *http.Request, st *reqState, p *corsPolicy) bool {
	origin := r.Header["Origin"]
	if len(origin) == 0 {
		return false
	}
	allowed := p.allowOrigin(origin[0])
	preflight := r.Method == http.MethodOptions && len(r.Header["Access-Control-Request-Method"]) > 0
	hdr := w.Header()
	if !p.any {
		hdr["Vary"] = varyOrigin
	}
	if allowed == "" {
		if !preflight {
			return false // no CORS headers: the browser withholds the answer
		}
		st.errCode = CodeCORSOriginNotAllowed
		WriteError(w, http.StatusForbidden, CodeCORSOriginNotAllowed,
			"this origin may not call this route from a browser: ask the operators to add it to the route's cors.allow_origins")
		return true
	}
	hdr["Access-Control-Allow-Origin"] = []string{allowed}
	if !preflight {
		if p.expose != nil {
			hdr["Access-Control-Expose-Headers"] = p.expose
		}
		return false
	}
	st.rule = "cors_preflight"
	hdr["Access-Control-Allow-Methods"] = corsMethods
	hdr["Access-Control-Allow-Headers"] = p.allowHeaders
	if p.maxAge != nil {
		hdr["Access-Control-Max-Age"] = p.maxAge
	}
	w.WriteHeader(http.StatusNoContent)
	return true
}

// corsResponseHeaders are the upstream's own CORS answer headers, dropped
// on routes where the gateway sets them (two Access-Control-Allow-Origin
// values make a browser refuse the answer).
var corsResponseHeaders = []string{
	"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Expose-Headers",
	"Access-Control-Allow-Methods", "Access-Control-Allow-Headers", "Access-Control-Max-Age",
}

// modifyResponse is the ReverseProxy's ModifyResponse.
func modifyResponse(res *http.Response) error {
	if st := stateFrom(res.Request.Context()); st != nil && st.tok != nil {
		watchUsage(res, st)
	}
	if st := stateFrom(res.Request.Context()); st != nil && st.route != nil && st.route.cors != nil {
		for _, k := range corsResponseHeaders {
			delete(res.Header, k)
		}
	}
	return dropRequestID(res)
}

// defaultCredentialHeaders is Options.CredentialHeaders' default.
var defaultCredentialHeaders = []string{"Authorization"}

// credential returns the caller's credential as an Authorization value
// for the policy: the first of the credential headers present, in order.
// A value from any header but Authorization is the raw key or token
// (api-key: <key>), so it is presented as "Bearer <value>"; "Bearer x"
// sent there becomes "Bearer Bearer x", which the policy refuses as
// malformed.
func (h *Handler) credential(r *http.Request) string {
	for _, k := range h.credHeaders {
		v := r.Header[k]
		if len(v) == 0 || v[0] == "" {
			continue
		}
		if k == "Authorization" {
			return v[0]
		}
		return "Bearer " + v[0]
	}
	return ""
}
