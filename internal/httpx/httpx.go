// Package httpx holds small HTTP helpers shared by the config loader and the
// proxy: header name checks, the hop-by-hop list and loopback detection.
package httpx

import (
	"net"
	"net/http"
	"net/netip"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// ValidHeaderName reports whether s is a legal HTTP header field name.
func ValidHeaderName(s string) bool { return httpguts.ValidHeaderFieldName(s) }

// ValidHeaderValue reports whether s is a legal HTTP header field value (no
// CR, LF or other control characters).
func ValidHeaderValue(s string) bool { return httpguts.ValidHeaderFieldValue(s) }

// hopByHop lists the headers that apply to one connection only (RFC 9110
// §7.6.1, and the legacy names httputil.ReverseProxy also removes).
var hopByHop = map[string]bool{
	"Connection":          true,
	"Proxy-Connection":    true,
	"Keep-Alive":          true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
	"Te":                  true,
	"Trailer":             true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
}

// IsHopByHop reports whether the header name is hop-by-hop.
func IsHopByHop(name string) bool { return hopByHop[http.CanonicalHeaderKey(name)] }

// IsLoopbackHost reports whether host (no port) is localhost or a loopback
// IP address.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return a.IsLoopback()
	}
	return false
}

// IsLoopbackAddr reports whether a host:port address is on loopback.
func IsLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	return host != "" && IsLoopbackHost(host)
}
