package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/modelgate/modelgate/policy"
)

const testKey = "mgk_unit-test-client-key-0123456789"

// twoKeys is an UpstreamAuth with a primary and an optional secondary key
// that switches on rejection, like the key credential source.
type twoKeys struct {
	mu   sync.Mutex
	keys []string
	cur  int
	gen  uint64
}

func (a *twoKeys) Authorization(context.Context) (string, uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return "Bearer " + a.keys[a.cur], a.gen, nil
}

func (a *twoKeys) Rejected(_ context.Context, gen uint64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.keys) < 2 {
		return false
	}
	if gen == a.gen {
		a.cur, a.gen = 1-a.cur, a.gen+1
	}
	return true
}

// failingAuth never has a credential.
type failingAuth struct{}

func (failingAuth) Authorization(context.Context) (string, uint64, error) {
	return "", 0, errors.New("token service down")
}
func (failingAuth) Rejected(context.Context, uint64) bool { return false }

// recordingRT is an in-memory upstream: it records each outbound request
// (with its body) and answers with the status accept returns.
type recordingRT struct {
	mu     sync.Mutex
	reqs   []*http.Request
	bodies [][]byte
	accept func(r *http.Request) int
}

func (rt *recordingRT) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(r.Body)
		r.Body.Close()
	}
	rt.mu.Lock()
	rt.reqs = append(rt.reqs, r)
	rt.bodies = append(rt.bodies, body)
	rt.mu.Unlock()
	status := http.StatusOK
	if rt.accept != nil {
		status = rt.accept(r)
	}
	return &http.Response{
		StatusCode: status, ProtoMajor: 1, ProtoMinor: 1,
		Header:  http.Header{"Content-Type": {"application/json"}},
		Body:    io.NopCloser(strings.NewReader(`{"ok":true}`)),
		Request: r, ContentLength: -1,
	}, nil
}

func (rt *recordingRT) last(t *testing.T) (*http.Request, []byte) {
	t.Helper()
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if len(rt.reqs) == 0 {
		t.Fatal("nothing reached the upstream")
	}
	return rt.reqs[len(rt.reqs)-1], rt.bodies[len(rt.bodies)-1]
}

func keyPolicy() *policy.Policy {
	keys := policy.NewKeyIndex([]policy.KeySpec{{Set: "partners", ID: "acme", Hash: sha256.Sum256([]byte(testKey))}})
	return policy.New(keys, []policy.RuleSpec{{KeySet: "partners"}})
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// newTestHandler builds a Handler with one key route per prefix, all to
// one upstream at upstreamURL served by rt.
func newTestHandler(t testing.TB, rt http.RoundTripper, upstreamURL string, auth UpstreamAuth, trusted []netip.Prefix, prefixes ...string) *Handler {
	t.Helper()
	up := &Upstream{
		Name: "model", URL: mustURL(t, upstreamURL), Auth: auth,
		Headers:         map[string]string{"azureml-model-deployment": "blue"},
		IdentityHeaders: map[string]string{"key_id": "X-Caller-Id"},
	}
	var routes []*Route
	for _, p := range prefixes {
		routes = append(routes, &Route{Name: "r" + p, Prefix: p, Upstream: up, Policy: keyPolicy()})
	}
	return New(Options{
		Routes: routes, Transport: rt, MaxBodyBytes: 1 << 20, BufferBodyBytes: 64 << 10, TrustedProxies: trusted,
	})
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

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

// TestAuthTransport checks the upstream credential and the one replay on
// 401: which keys are tried, in what order, with what body, and what the
// client gets.
func TestAuthTransport(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 100)
	big := bytes.Repeat([]byte("x"), 100<<10) // over BufferBodyBytes: not replayable
	tests := []struct {
		name    string
		auth    UpstreamAuth
		accept  string // the key the upstream accepts
		body    []byte
		chunked bool
		status  int
		code    string
		tried   []string
	}{
		{name: "primary works", auth: &twoKeys{keys: []string{"k1", "k2"}}, accept: "k1", body: body, status: 200, tried: []string{"k1"}},
		{name: "secondary after one replay", auth: &twoKeys{keys: []string{"k1", "k2"}}, accept: "k2", body: body, status: 200, tried: []string{"k1", "k2"}},
		{name: "secondary after replay, chunked body", auth: &twoKeys{keys: []string{"k1", "k2"}}, accept: "k2", body: body, chunked: true, status: 200, tried: []string{"k1", "k2"}},
		{name: "secondary after replay, no body", auth: &twoKeys{keys: []string{"k1", "k2"}}, accept: "k2", status: 200, tried: []string{"k1", "k2"}},
		{name: "both refused", auth: &twoKeys{keys: []string{"k1", "k2"}}, accept: "k3", body: body, status: 502, code: CodeUpstreamRejectedCred, tried: []string{"k1", "k2"}},
		{name: "single key refused", auth: &twoKeys{keys: []string{"k1"}}, accept: "k3", body: body, status: 502, code: CodeUpstreamRejectedCred, tried: []string{"k1"}},
		{name: "body too large to replay", auth: &twoKeys{keys: []string{"k1", "k2"}}, accept: "k2", body: big, status: 502, code: CodeUpstreamRejectedCred, tried: []string{"k1"}},
		{name: "no credential", auth: failingAuth{}, body: body, status: 503, code: CodeCredentialUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &recordingRT{accept: func(r *http.Request) int {
				if r.Header.Get("Authorization") == "Bearer "+tt.accept {
					return 200
				}
				return 401
			}}
			h := newTestHandler(t, rt, "http://up/api", tt.auth, nil, "/fraud")
			var rb io.Reader = http.NoBody
			if tt.body != nil {
				rb = bytes.NewReader(tt.body)
			}
			r := httptest.NewRequest("POST", "http://gw.example/fraud/x", rb)
			if tt.chunked {
				r.ContentLength = -1
			}
			r.Header.Set("Authorization", "Bearer "+testKey)
			w := serve(h, r)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			if tt.code != "" && !strings.Contains(w.Body.String(), `"code":"`+tt.code+`"`) {
				t.Errorf("body %s, want code %s", w.Body, tt.code)
			}
			if tt.name == "single key refused" && strings.Contains(w.Body.String(), "too large") {
				t.Errorf("message blames the body size: %s", w.Body)
			}
			rt.mu.Lock()
			defer rt.mu.Unlock()
			var tried []string
			for i, req := range rt.reqs {
				tried = append(tried, strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer "))
				if !bytes.Equal(rt.bodies[i], tt.body) {
					t.Errorf("attempt %d carried %d body bytes, want %d", i, len(rt.bodies[i]), len(tt.body))
				}
			}
			if fmt.Sprint(tried) != fmt.Sprint(tt.tried) {
				t.Errorf("keys tried %v, want %v", tried, tt.tried)
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestClassify(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{name: "refused", err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}, status: 502, code: CodeUpstreamUnavailable},
		{name: "timeout", err: &net.OpError{Op: "read", Err: timeoutErr{}}, status: 504, code: CodeUpstreamTimeout},
		{name: "deadline", err: fmt.Errorf("x: %w", context.DeadlineExceeded), status: 504, code: CodeUpstreamTimeout},
		{name: "client went away", err: context.Canceled, status: StatusClientClosedRequest, code: CodeClientClosedRequest},
		{name: "body too large", err: &http.MaxBytesError{Limit: 10}, status: 413, code: CodeBodyTooLarge},
		{name: "credential unavailable", err: &errCredentialUnavailable{err: errors.New("down")}, status: 503, code: CodeCredentialUnavailable},
		{name: "rejected after replay", err: &errUpstreamRejected{replayed: true}, status: 502, code: CodeUpstreamRejectedCred},
		{name: "rejected, no other key", err: &errUpstreamRejected{}, status: 502, code: CodeUpstreamRejectedCred},
		{name: "rejected, too large", err: &errUpstreamRejected{tooLarge: true}, status: 502, code: CodeUpstreamRejectedCred},
		{name: "anything else", err: io.ErrUnexpectedEOF, status: 502, code: CodeUpstreamUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, code, msg := classify(tt.err)
			if status != tt.status || code != tt.code {
				t.Errorf("classify = %d %s, want %d %s", status, code, tt.status, tt.code)
			}
			if msg == "" || strings.Contains(msg, tt.err.Error()) && tt.code != CodeClientClosedRequest {
				t.Errorf("message %q is empty or repeats the internal error", msg)
			}
		})
	}
}
