package e2e

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
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
