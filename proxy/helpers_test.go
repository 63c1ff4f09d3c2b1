package proxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/policy"
)

const testKey = "mgk_unit-test-client-key-0123456789"

// twoKeys is an UpstreamAuth with a primary and an optional secondary key
// that switches on rejection, like the key credential source. It records
// the keys reported as rejected.
type twoKeys struct {
	mu       sync.Mutex
	keys     []string
	cur      int
	gen      uint64
	rejected []string
}

func (a *twoKeys) Credential(context.Context) (credential.Credential, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return credential.Credential{Value: credential.Secret(a.keys[a.cur]), Generation: a.gen}, nil
}

func (a *twoKeys) Rejected(_ context.Context, c credential.Credential) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rejected = append(a.rejected, c.Value.Reveal())
	if len(a.keys) < 2 {
		return false
	}
	if c.Generation == a.gen {
		a.cur, a.gen = 1-a.cur, a.gen+1
	}
	return true
}

// failingAuth never has a credential.
type failingAuth struct{}

func (failingAuth) Credential(context.Context) (credential.Credential, error) {
	return credential.Credential{}, errors.New("token service down")
}
func (failingAuth) Rejected(context.Context, credential.Credential) bool { return false }

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
