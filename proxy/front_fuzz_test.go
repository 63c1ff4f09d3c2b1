package proxy

import (
	"bufio"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/modelgate/modelgate/policy"
)

// FuzzFront drives an arbitrary request line path and header block through
// the real handler (key route with api-key as a credential header, a
// public route, a CORS route) to a recording in-memory upstream, from an
// untrusted peer or a trusted proxy, and checks what the upstream got:
// no client credential in any credential header, no client Authorization,
// no parent segment in any decoding of the path, no client-sent
// forwarding, rewrite or identity header, and no trailers.
func FuzzFront(f *testing.F) {
	seeds := []struct{ path, hdr string }{
		{"/fraud/x", "Authorization: Bearer " + testKey},
		{"/fraud/x", "Api-Key: " + testKey},
		{"/fraud/x", "api-key: " + testKey + "\r\nOcp-Apim-Subscription-Key: " + testKey},
		{"/open/..;/fraud/x", ""},
		{"/open/%2e%2e;/fraud", ""},
		{"/open/%252e%252e/fraud", ""},
		{"/open/%c0%ae%c0%ae/fraud", ""},
		{"/open/%u002e%u002e/fraud", ""},
		{"/open/%ef%bc%8e%ef%bc%8e/x", ""},
		{"/open/..%5cfraud", ""},
		{"/open/...", ""},
		{"/open/x", "X-Original-URL: /fraud\r\nX-Rewrite-URL: /fraud\r\nX-HTTP-Method-Override: DELETE"},
		{"/open/x", "X-Forwarded-Prefix: /a\r\nX-Forwarded-Port: 1\r\nX-Forwarded-Server: s\r\nX-Real-IP: 1.2.3.4\r\nTrue-Client-IP: 1.2.3.4\r\nX-Client-IP: 1.2.3.4"},
		{"/open/x", "X_Forwarded_For: 1.2.3.4\r\nx_real_ip: 1.2.3.4"},
		{"/open/x", "X-Ms-Client-Principal-Id: admin\r\nX-Forwarded-User: admin\r\nX-Auth-Request-User: admin"},
		{"/open/x", "Connection: X-Forwarded-For, Authorization\r\nX-Forwarded-For: 9.9.9.9"},
		{"/open/x", "Transfer-Encoding: chunked\r\nTrailer: Authorization"},
		{"/cors/x", "Origin: https://app.example\r\nAccess-Control-Request-Method: POST"},
		{"/cors/x", "Origin: https://app.example\r\nApi-Key: " + testKey},
	}
	for _, s := range seeds {
		f.Add(s.path, s.hdr, false)
		f.Add(s.path, s.hdr, true)
	}
	rt := &recordingRT{}
	up := &Upstream{Name: "model", URL: mustURL(f, "http://upstream.test/score"), Auth: &twoKeys{keys: []string{"upstream-secret"}}}
	routes := []*Route{
		{Name: "fraud", Prefix: "/fraud", Upstream: up, Policy: keyPolicy()},
		{Name: "open", Prefix: "/open", Upstream: up, Policy: policy.Public()},
		{Name: "cors", Prefix: "/cors", Upstream: up, Policy: keyPolicy(), CORS: &CORS{AllowOrigins: []string{"https://app.example"}}},
	}
	h := New(Options{
		Routes: routes, Transport: rt, MaxBodyBytes: 1 << 20, BufferBodyBytes: 64 << 10,
		TrustedProxies:    []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		CredentialHeaders: []string{"Authorization", "Api-Key"},
	})
	f.Fuzz(func(t *testing.T, path, hdr string, trusted bool) {
		raw := "POST " + path + " HTTP/1.1\r\nHost: gw.test\r\n" + hdr + "\r\nContent-Length: 0\r\n\r\n"
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return // net/http refuses it before any handler
		}
		req.RemoteAddr = "203.0.113.5:1234"
		if trusted {
			req.RemoteAddr = "10.0.0.1:1234"
		}
		rt.mu.Lock()
		rt.reqs, rt.bodies = nil, nil
		rt.mu.Unlock()
		serve(h, req)
		rt.mu.Lock()
		defer rt.mu.Unlock()
		if len(rt.reqs) == 0 {
			return
		}
		out := rt.reqs[0]
		// The key itself may still travel in a header of the client's own
		// invention ("0: <key>"): the gateway cannot know it is one. What
		// it must do is strip every header a credential is read from.
		for k, vs := range out.Header {
			if forbiddenUpstream(k) {
				t.Errorf("upstream received client header %s: %q", k, vs)
			}
		}
		if a := out.Header.Values("Authorization"); len(a) != 1 || a[0] != "Bearer upstream-secret" {
			t.Errorf("upstream Authorization = %q", a)
		}
		if len(out.Trailer) != 0 {
			t.Errorf("upstream trailers %q", out.Trailer)
		}
		if !trusted {
			if v := out.Header.Values("X-Forwarded-For"); len(v) != 1 || v[0] != "203.0.113.5" {
				t.Errorf("X-Forwarded-For = %q from an untrusted peer", v)
			}
		}
		if p := parentInAnyDecoding(out.URL.EscapedPath()); p != "" {
			t.Errorf("upstream path %q has a parent segment after decoding to %q", out.URL.EscapedPath(), p)
		}
	})
}

// forbiddenUpstream is the fuzz oracle's own list (written apart from
// isSpoofable): headers a client may set that must never reach upstream.
// The gateway's own X-Forwarded-For/-Host/-Proto and Forwarded are allowed.
func forbiddenUpstream(k string) bool {
	n := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
	switch n {
	case "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto":
		return k != http.CanonicalHeaderKey(n) // only the gateway's spelling
	case "api-key", "x-api-key", "ocp-apim-subscription-key", "cookie", "proxy-authorization",
		"x-original-url", "x-rewrite-url", "x-http-method-override", "x-http-method", "x-method-override",
		"x-real-ip", "x-client-ip", "true-client-ip", "x-cluster-client-ip", "cf-connecting-ip", "fastly-client-ip",
		"x-remote-user", "remote-user", "x-modelgate-identity", "trailer", "te", "upgrade", "connection":
		return true
	}
	for _, p := range []string{"x-forwarded-", "x-original-", "x-ms-client-principal", "x-ms-token-", "x-auth-request-"} {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	return false
}

// parentInAnyDecoding decodes p up to five times (%XX and %uXXXX, any
// case) and returns the first decoding that has a segment some server
// reads as "." or "..", or "".
func parentInAnyDecoding(p string) string {
	for range 5 {
		for _, seg := range strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '\\' || r == '\uff0f' || r == '\uff3c' }) {
			if i := strings.IndexByte(seg, ';'); i >= 0 {
				seg = seg[:i]
			}
			seg = strings.ReplaceAll(seg, "\uff0e", ".")
			seg = strings.ReplaceAll(seg, "\xc0\xae", ".")
			if t := strings.Trim(seg, ". "); t == "" && strings.Contains(seg, ".") {
				return p
			}
		}
		d, changed := decodeLenient(p)
		if !changed {
			break
		}
		p = d
	}
	return ""
}
