package proxy

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
)

// TestRewritePath checks the outbound URL: the route prefix replaced by
// the upstream URL's path, percent-encoding and the query kept as sent.
func TestRewritePath(t *testing.T) {
	tests := []struct {
		name     string
		prefix   string
		upstream string
		target   string // request target as the client sent it
		want     string // outbound request URI
	}{
		{name: "prefix only", prefix: "/fraud", upstream: "http://up:8080/api/v1/service/fraud", target: "/fraud", want: "/api/v1/service/fraud"},
		{name: "prefix slash", prefix: "/fraud", upstream: "http://up:8080/api", target: "/fraud/", want: "/api/"},
		{name: "below prefix", prefix: "/fraud", upstream: "http://up:8080/api", target: "/fraud/score", want: "/api/score"},
		{name: "upstream without path", prefix: "/fraud", upstream: "http://up:8080", target: "/fraud", want: "/"},
		{name: "upstream without path, below", prefix: "/fraud", upstream: "http://up:8080", target: "/fraud/score", want: "/score"},
		{name: "root prefix", prefix: "/", upstream: "http://up:8080/api", target: "/x/y", want: "/api/x/y"},
		{name: "root prefix, root path", prefix: "/", upstream: "http://up:8080", target: "/", want: "/"},
		{name: "query byte for byte", prefix: "/fraud", upstream: "http://up/api", target: "/fraud/s?b=2&a=%20&c=a+b&d=%zz&e=1;2&f", want: "/api/s?b=2&a=%20&c=a+b&d=%zz&e=1;2&f"},
		{name: "encoded slash", prefix: "/fraud", upstream: "http://up/api", target: "/fraud/a%2Fb", want: "/api/a%2Fb"},
		{name: "encoded slash, root prefix", prefix: "/", upstream: "http://up/api", target: "/a%2Fb", want: "/api/a%2Fb"},
		{name: "encoded space", prefix: "/fraud", upstream: "http://up/api", target: "/fraud/a%20b", want: "/api/a%20b"},
		{name: "needless encoding kept as sent", prefix: "/fraud", upstream: "http://up/api", target: "/fraud/%61bc", want: "/api/%61bc"},
		{name: "encoded prefix letter", prefix: "/fraud", upstream: "http://up/api", target: "/fr%61ud/a%2Fb", want: "/api/a/b"},
		{name: "upstream path with encoding", prefix: "/fraud", upstream: "http://up/my%20api", target: "/fraud/a%2Fb", want: "/my%20api/a%2Fb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &recordingRT{}
			h := newTestHandler(t, rt, tt.upstream, nil, nil, tt.prefix)
			r := httptest.NewRequest("GET", "http://gw.example"+tt.target, nil)
			r.Header.Set("Authorization", "Bearer "+testKey)
			if w := serve(h, r); w.Code != 200 {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			out, _ := rt.last(t)
			if got := out.URL.RequestURI(); got != tt.want {
				t.Errorf("outbound request URI = %q, want %q", got, tt.want)
			}
			u := mustURL(t, tt.upstream)
			if out.URL.Host != u.Host || out.URL.Scheme != u.Scheme || out.Host != "" {
				t.Errorf("outbound target %s://%s (Host %q), want %s://%s", out.URL.Scheme, out.URL.Host, out.Host, u.Scheme, u.Host)
			}
		})
	}
}

// TestForwardedPeers checks the forwarding headers for peers of every
// shape: IPv4, IPv6, IPv4-mapped, unparsable, TLS, trusted and not.
func TestForwardedPeers(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
	tests := []struct {
		name   string
		remote string
		tls    bool
		in     http.Header
		want   map[string]string // "" value = absent
	}{
		{name: "ipv4 untrusted", remote: "192.0.2.1:5555", in: http.Header{"X-Forwarded-For": {"1.2.3.4"}, "Forwarded": {"for=1.2.3.4"}},
			want: map[string]string{"X-Forwarded-For": "192.0.2.1", "Forwarded": `for=192.0.2.1;host="gw.example";proto=http`, "X-Forwarded-Proto": "http", "X-Forwarded-Host": "gw.example"}},
		{name: "ipv6 untrusted", remote: "[2001:db9::1]:443",
			want: map[string]string{"X-Forwarded-For": "2001:db9::1", "Forwarded": `for="[2001:db9::1]";host="gw.example";proto=http`}},
		{name: "ipv6 trusted extends", remote: "[2001:db8::7]:443", in: http.Header{"X-Forwarded-For": {"1.2.3.4"}, "Forwarded": {"for=1.2.3.4"}},
			want: map[string]string{"X-Forwarded-For": "1.2.3.4, 2001:db8::7", "Forwarded": `for=1.2.3.4, for="[2001:db8::7]";host="gw.example";proto=http`}},
		{name: "ipv4-mapped peer is trusted as ipv4", remote: "[::ffff:10.1.2.3]:80", in: http.Header{"X-Forwarded-For": {"1.2.3.4"}, "X-Forwarded-Proto": {"https"}},
			want: map[string]string{"X-Forwarded-For": "1.2.3.4, 10.1.2.3", "X-Forwarded-Proto": "https"}},
		{name: "several client X-Forwarded-For lines from a trusted peer", remote: "10.0.0.1:1", in: http.Header{"X-Forwarded-For": {"1.1.1.1", "2.2.2.2, 3.3.3.3"}},
			want: map[string]string{"X-Forwarded-For": "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1"}},
		{name: "unparsable peer", remote: "@unix",
			want: map[string]string{"X-Forwarded-For": "", "Forwarded": `for=unknown;host="gw.example";proto=http`}},
		{name: "tls", remote: "192.0.2.1:1", tls: true,
			want: map[string]string{"X-Forwarded-Proto": "https", "Forwarded": `for=192.0.2.1;host="gw.example";proto=https`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &recordingRT{}
			h := newTestHandler(t, rt, "http://up/api", nil, trusted, "/fraud")
			r := httptest.NewRequest("GET", "http://gw.example/fraud/x", nil)
			r.RemoteAddr = tt.remote
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			}
			for k, v := range tt.in {
				r.Header[k] = v
			}
			r.Header.Set("Authorization", "Bearer "+testKey)
			if w := serve(h, r); w.Code != 200 {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			out, _ := rt.last(t)
			for k, want := range tt.want {
				got := out.Header.Values(k)
				if want == "" {
					if len(got) != 0 {
						t.Errorf("%s = %q, want none", k, got)
					}
					continue
				}
				if len(got) != 1 || got[0] != want {
					t.Errorf("%s = %q, want [%q]", k, got, want)
				}
			}
		})
	}
}
