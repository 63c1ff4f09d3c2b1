package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// backendServer is a fake scoring backend whose answer the test sets.
type backendServer struct {
	*httptest.Server
	hits   atomic.Int64
	status atomic.Int64
	header atomic.Value // http.Header to add
}

func newBackend(t *testing.T, name string) *backendServer {
	b := &backendServer{}
	b.status.Store(200)
	b.header.Store(http.Header{})
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		for k, v := range b.header.Load().(http.Header) {
			w.Header()[k] = v
		}
		w.WriteHeader(int(b.status.Load()))
		_, _ = w.Write([]byte(`{"backend":"` + name + `"}`))
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backendServer) answer(status int, h http.Header) {
	if h == nil {
		h = http.Header{}
	}
	b.header.Store(h)
	b.status.Store(int64(status))
}

// TestPoolSmoke: a 429 from one backend never reaches the caller while the
// other can serve; when both say 429 the caller gets the smallest
// Retry-After; when both are known unavailable, 503 upstream_unavailable
// with the soonest Retry-After, without trying them.
func TestPoolSmoke(t *testing.T) {
	weu, neu := newBackend(t, "weu"), newBackend(t, "neu")
	g := startGateway(t, newConfig().Partners().
		PoolUpstream("churn",
			"backends:",
			"  - { name: weu, url: \""+weu.URL+"\", auth: "+upstreamKeyAuth+" }",
			"  - { name: neu, url: \""+neu.URL+"\", auth: "+upstreamKeyAuth+" }",
		).
		Route("churn", "/churn", "churn", allowPartners))
	call := func() response {
		return do(t, client(), g.URL, request{method: http.MethodPost, path: "/churn/score", header: bearer(partnerKey), body: strings.NewReader(`{}`)})
	}
	for range 4 {
		if r := call(); r.status != 200 {
			t.Fatalf("healthy pool: %d %s", r.status, r.body)
		}
	}
	if weu.hits.Load() != 2 || neu.hits.Load() != 2 {
		t.Errorf("round robin: weu %d, neu %d", weu.hits.Load(), neu.hits.Load())
	}
	weu.answer(429, http.Header{"Retry-After": {"7"}})
	for range 4 {
		if r := call(); r.status != 200 || !strings.Contains(string(r.body), "neu") {
			t.Fatalf("one backend throttled: %d %s", r.status, r.body)
		}
	}
	neu.answer(429, http.Header{"Retry-After": {"3"}})
	// weu is open for 7 s; neu answers 429 and has no one to fail over to.
	r := call()
	if r.status != http.StatusTooManyRequests && r.status != http.StatusServiceUnavailable {
		t.Fatalf("both throttled: %d %s", r.status, r.body)
	}
	r = call()
	if r.status != http.StatusServiceUnavailable || decodeError(t, r.body).Error.Code != "upstream_unavailable" {
		t.Fatalf("every backend open: %d %s, want 503 upstream_unavailable", r.status, r.body)
	}
	if ra := r.header.Get("Retry-After"); ra != "3" && ra != "2" {
		t.Errorf("Retry-After %q, want the soonest backend's (3)", ra)
	}
	lines := g.Logs.RequestLines(t)
	last := lines[len(lines)-3]
	if last["backend"] == nil || last["tries"] == nil {
		t.Errorf("audit line lacks backend and tries: %v", last)
	}
}

// TestPoolRetryCarriesNoOtherBackendsCredential: a retry (and a mirror
// copy) is built from the request as the gateway prepared it, never from
// the try before: the first backend's key and configured headers must not
// reach a backend that has no credential of its own.
func TestPoolRetryCarriesNoOtherBackendsCredential(t *testing.T) {
	var seen sync.Map // backend → received header
	record := func(name string, status int) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			seen.Store(name, r.Header.Clone())
			w.WriteHeader(status)
		}))
		t.Cleanup(s.Close)
		return s
	}
	keyed, open, mirror := record("keyed", 503), record("open", 200), record("mirror", 200)
	g := startGateway(t, newConfig().Partners().
		PoolUpstream("m",
			"backends:",
			"  - { name: keyed, url: \""+keyed.URL+"\", priority: 1, headers: { X-Region: weu }, auth: "+upstreamKeyAuth+" }",
			"  - { name: open, url: \""+open.URL+"\", priority: 2, auth: { type: none } }",
			"  - { name: shadow, url: \""+mirror.URL+"\", weight: 0, auth: { type: none } }",
			"mirror: { backend: shadow, percent: 100 }",
		).
		Route("m", "/m", "m", allowPartners))
	r := do(t, client(), g.URL, request{method: http.MethodPost, path: "/m/x", header: bearer(partnerKey), body: strings.NewReader(`{}`)})
	if r.status != 200 {
		t.Fatalf("status %d %s", r.status, r.body)
	}
	waitFor(t, 5*time.Second, "the mirror copy", func() bool { _, ok := seen.Load("mirror"); return ok })
	if h, _ := seen.Load("keyed"); h == nil || h.(http.Header).Get("Authorization") != "Bearer "+upstreamKey {
		t.Fatalf("the keyed backend did not get its key: %v", h)
	}
	for _, name := range []string{"open", "mirror"} {
		h, _ := seen.Load(name)
		hdr := h.(http.Header)
		if a := hdr.Get("Authorization"); a != "" {
			t.Errorf("%s received Authorization %q: another backend's credential leaked", name, a)
		}
		if v := hdr.Get("X-Region"); v != "" {
			t.Errorf("%s received the keyed backend's header X-Region: %q", name, v)
		}
	}
}

// TestUpstreamErrorLogHasNoQuery: the WARN line for an unreachable upstream
// names the failure, never the request's query string (which may carry a
// signature or code).
func TestUpstreamErrorLogHasNoQuery(t *testing.T) {
	g := startGateway(t, newConfig().Upstream("m", "http://127.0.0.1:1/score", `{ type: none }`).PublicRoute("m", "/m", "m"))
	r := do(t, client(), g.URL, request{path: "/m/x?sig=s3cr3t-query-signature"})
	if r.status != http.StatusBadGateway {
		t.Fatalf("status %d %s", r.status, r.body)
	}
	waitFor(t, 5*time.Second, "the upstream error line", func() bool { return strings.Contains(g.Logs.String(), "upstream error") })
	if strings.Contains(g.Logs.String(), "s3cr3t-query-signature") {
		t.Errorf("a log line carries the request's query string:\n%s", g.Logs.String())
	}
}
