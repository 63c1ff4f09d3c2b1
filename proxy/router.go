package proxy

import (
	"strings"
	"unicode/utf8"
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
	// strings.ToLower returns h itself, unallocated, when it has no upper case.
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// badPath reports why a request path cannot be routed safely, or "".
// path is the decoded path (url.URL.Path).
//
// Segments that any common server resolves to the current or parent
// directory are refused rather than resolved: a path the gateway and the
// upstream could read differently must never reach the upstream, and
// "/fraud/../admin" would otherwise leave the route's prefix. Refused, in
// any case and in any number of percent-encodings (%2e, %252e, IIS's
// %u002e):
//   - "." and ".." segments, also with path parameters ("..;x", which
//     Tomcat, Jetty and Spring read as ".."), and any segment made only of
//     dots and spaces ("...", ".. ", which Windows trims to "..");
//   - backslashes, which IIS and Windows servers treat as slashes;
//   - control characters, once decoded or decoded again;
//   - bytes that are not UTF-8, so no overlong form (%c0%ae) can reach a
//     decoder that would read it as '.';
//   - characters that Unicode normalization (NFKC) turns into '.', '/' or
//     '\' (U+FF0E, U+2024, U+FF0F, U+FF3C and the like).
//
// Ordinary paths (ASCII, no '%' left after decoding) take one pass over
// the bytes and do not allocate.
func badPath(path string) string {
	if path == "" || path[0] != '/' {
		return "the request path must start with /"
	}
	return badPathBytes(path, 0)
}

// maxPathDecodings bounds how many further percent-decodings badPath
// follows. A path still holding an escape after that many is refused: no
// scoring API needs a path encoded four times.
const maxPathDecodings = 3

const msgDotSegment = "the request path must not contain . or .. segments, in any encoding or with ;parameters"

func badPathBytes(path string, depth int) string {
	pct, high := false, false
	segStart := 0
	for i := 0; i <= len(path); i++ {
		if i < len(path) {
			c := path[i]
			switch {
			case c == '\\':
				return "the request path must not contain a backslash, in any encoding"
			case c < 0x20 || c == 0x7f:
				return "the request path must not contain control characters, in any encoding"
			case c == '%':
				pct = true
			case c >= 0x80:
				high = true
			}
			if c != '/' {
				continue
			}
		}
		if dotSegment(path[segStart:i]) {
			return msgDotSegment
		}
		segStart = i + 1
	}
	if high {
		if !utf8.ValidString(path) {
			return "the request path must be UTF-8 (no overlong or invalid byte sequences)"
		}
		for _, r := range path {
			if normalizesToSeparator(r) {
				return "the request path must not contain characters that normalize to '.', '/' or '\\' (such as U+FF0E)"
			}
		}
	}
	if !pct {
		return ""
	}
	dec, changed := decodeLenient(path)
	if !changed {
		return ""
	}
	if depth == maxPathDecodings {
		return "the request path is percent-encoded too many times: send it encoded once"
	}
	return badPathBytes(dec, depth+1)
}

// dotSegment reports whether seg (one path segment) names the current or
// parent directory for some server: after cutting path parameters (";x"),
// it is made only of dots and spaces and has a dot.
func dotSegment(seg string) bool {
	seg, _, _ = strings.Cut(seg, ";")
	return strings.Trim(seg, ". ") == "" && strings.Contains(seg, ".")
}

// normalizesToSeparator reports whether NFKC normalization (or a server's
// best-fit mapping) turns r into '.', '/' or '\\', or a run of them.
func normalizesToSeparator(r rune) bool {
	switch r {
	case '\uff0e', '\ufe52', '\u2024', '\u2025', '\u2026', // fullwidth and small full stop, one/two-dot leader, ellipsis
		'\uff0f', '\u2215', '\u2044', '\u29f8', // fullwidth solidus, division slash, fraction slash, big solidus
		'\uff3c', '\ufe68', '\u2216', '\u29f9': // fullwidth and small reverse solidus, set minus, big reverse solidus
		return true
	}
	return false
}

// decodeLenient percent-decodes s once more, the way a lenient server
// would: %XX in either case, IIS's %uXXXX as UTF-8, and anything else left
// as it is. It reports whether anything was decoded.
func decodeLenient(s string) (string, bool) {
	var b []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			if b != nil {
				b = append(b, c)
			}
			continue
		}
		n, r := 0, rune(-1)
		switch {
		case i+2 < len(s) && ishex(s[i+1]) && ishex(s[i+2]):
			n, r = 3, rune(unhex(s[i+1])<<4|unhex(s[i+2]))
		case i+5 < len(s) && (s[i+1] == 'u' || s[i+1] == 'U') && ishex(s[i+2]) && ishex(s[i+3]) && ishex(s[i+4]) && ishex(s[i+5]):
			n = 6
			r = rune(unhex(s[i+2]))<<12 | rune(unhex(s[i+3]))<<8 | rune(unhex(s[i+4]))<<4 | rune(unhex(s[i+5]))
		}
		if n == 0 {
			if b != nil {
				b = append(b, c)
			}
			continue
		}
		if b == nil {
			b = make([]byte, 0, len(s))
			b = append(b, s[:i]...)
		}
		if n == 3 {
			b = append(b, byte(r))
		} else {
			b = utf8.AppendRune(b, r)
		}
		i += n - 1
	}
	if b == nil {
		return s, false
	}
	return string(b), true
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
