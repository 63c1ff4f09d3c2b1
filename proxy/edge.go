package proxy

import (
	"net/http"
	"net/netip"
	"strings"
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
	switch len(method) {
	case 5:
		return strings.EqualFold(method, "TRACE") || strings.EqualFold(method, "TRACK")
	case 7:
		return strings.EqualFold(method, "CONNECT")
	}
	return false
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
	for _, p := range h.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
