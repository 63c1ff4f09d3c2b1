// Package httpx holds small HTTP helpers shared by the config loader, the
// proxy and the clients of Azure: header name checks, the hop-by-hop list,
// loopback detection and the one rule for URLs that carry credentials.
package httpx

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
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

// SecureURL parses s as an absolute URL the gateway may send a credential
// to or take key material from: https anywhere, plain http only to a
// loopback host (127.0.0.0/8, ::1, localhost), which never leaves the
// machine and which tests and local fakes use. It refuses user information
// in the URL and a port outside 1-65535. Errors name the value and the fix.
func SecureURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return nil, fmt.Errorf("%q is not an absolute https URL", s)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%q must not carry credentials in the URL", u.Redacted())
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !IsLoopbackHost(u.Hostname()) {
			return nil, fmt.Errorf("%q must use https (plain http is allowed only to loopback hosts)", s)
		}
	default:
		return nil, fmt.Errorf("%q is not an absolute https URL", s)
	}
	if err := checkPort(u.Port()); err != nil {
		return nil, fmt.Errorf("%q: %w", s, err)
	}
	return u, nil
}

// HostPort checks a listen address such as ":8443" or "127.0.0.1:8080":
// host:port with a numeric port from 0 to 65535 (0 picks a free port).
func HostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return fmt.Errorf("%q is not host:port (write \":8443\" or \"127.0.0.1:8080\")", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %s is not a number from 0 to 65535", addr, port)
	}
	return nil
}

// checkPort accepts an empty port (the scheme's default) or 1-65535.
func checkPort(port string) error {
	if port == "" {
		return nil
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %s is not a number from 1 to 65535", port)
	}
	return nil
}

// UpstreamURL parses an upstream's base URL: absolute http or https, a
// valid port, no user information, query or fragment (credentials belong in
// auth). The path loses its trailing slash.
func UpstreamURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return nil, fmt.Errorf("%q is not an absolute http or https URL", s)
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, fmt.Errorf("must not carry credentials, a query or a fragment: put credentials in auth")
	}
	if err := checkPort(u.Port()); err != nil {
		return nil, fmt.Errorf("%q: %w", s, err)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}
