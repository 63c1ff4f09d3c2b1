package proxy

import "strings"

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
