package proxy

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/modelgate/modelgate/pool"
)

var (
	benchRequestBody  = []byte(`{"data":[[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8]],"amount":120.5,"currency":"EUR"}`)
	benchResponseBody = []byte(`{"fraud_score":0.07,"model":"fraud-v1"}`)
)

// memUpstream answers every request in memory, after reading its body, as
// a scoring endpoint that checks nothing would.
type memUpstream struct{}

func (memUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	return &http.Response{
		StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(benchResponseBody)),
		ContentLength: int64(len(benchResponseBody)),
		Request:       r,
	}, nil
}

// sinkWriter is a ResponseWriter that keeps nothing, so the benchmark
// measures the pipeline rather than a recorder.
type sinkWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *sinkWriter) Header() http.Header  { return w.h }
func (w *sinkWriter) WriteHeader(code int) { w.status = code }
func (w *sinkWriter) Write(p []byte) (int, error) {
	w.n += len(p)
	return len(p), nil
}
func (w *sinkWriter) Flush() {}

func benchHandler(b *testing.B, rt http.RoundTripper, upstreamURL string) *Handler {
	b.Helper()
	up := &Upstream{
		Name: "model", URL: mustURL(b, upstreamURL), Auth: &twoKeys{keys: []string{"upstream-key-0123456789", "upstream-key-2"}},
		Headers:         map[string]string{"azureml-model-deployment": "blue"},
		IdentityHeaders: map[string]string{"key_id": "X-Caller-Id"},
	}
	return New(Options{
		Routes:    []*Route{{Name: "fraud", Prefix: "/fraud", Upstream: up, Policy: keyPolicy()}},
		Transport: rt, MaxBodyBytes: 10 << 20, BufferBodyBytes: 1 << 20,
		// The per-request line is part of the pipeline: encode it, as in
		// production, and throw it away.
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
}

// BenchmarkPipelineKeyRoute runs one request through the whole Handler —
// route, key policy, body buffering, header hygiene, credential injection,
// ReverseProxy, log line — against an upstream transport in memory.
func BenchmarkPipelineKeyRoute(b *testing.B) {
	runPipeline(b, benchHandler(b, memUpstream{}, "http://fraud.internal:8080/api/v1/service/fraud"))
}

// runPipeline sends the benchmark's scoring request through h, with a key,
// once per iteration, and checks each answer.
func runPipeline(b *testing.B, h http.Handler) {
	body := bytes.NewReader(benchRequestBody)
	r := httptest.NewRequest(http.MethodPost, "http://gw.example/fraud/score?version=2", nil)
	r.Header.Set("Authorization", "Bearer "+testKey)
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("User-Agent", "bench/1")
	r.RemoteAddr = "192.0.2.10:41234"
	w := &sinkWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		body.Reset(benchRequestBody)
		r.Body, r.ContentLength = io.NopCloser(body), int64(len(benchRequestBody))
		clear(w.h)
		w.status, w.n = 0, 0
		h.ServeHTTP(w, r)
		if w.status != 200 || w.n != len(benchResponseBody) {
			b.Fatalf("status %d, %d bytes", w.status, w.n)
		}
	}
}

// BenchmarkLoopbackKeyRoute sends requests over real TCP on loopback:
// client → gateway Handler (http.Server) → upstream (http.Server), with
// keep-alive connections on both legs, one request at a time.
func BenchmarkLoopbackKeyRoute(b *testing.B) {
	upstream := newBenchUpstream(b)
	tr := &http.Transport{MaxIdleConnsPerHost: 16, ResponseHeaderTimeout: 10 * time.Second}
	defer tr.CloseIdleConnections()
	gw := httptest.NewServer(benchHandler(b, tr, upstream.URL+"/api/v1/service/fraud"))
	defer gw.Close()
	runLoopback(b, gw.URL+"/fraud/score?version=2", "Bearer "+testKey)
}

// BenchmarkLoopbackDirect is the same client and upstream without the
// gateway: the baseline BenchmarkLoopbackKeyRoute adds to.
func BenchmarkLoopbackDirect(b *testing.B) {
	upstream := newBenchUpstream(b)
	runLoopback(b, upstream.URL+"/api/v1/service/fraud/score?version=2", "Bearer upstream-key-0123456789")
}

func newBenchUpstream(b *testing.B) *httptest.Server {
	b.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Header.Get("Authorization") != "Bearer upstream-key-0123456789" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(benchResponseBody)
	}))
	b.Cleanup(s.Close)
	return s
}

func runLoopback(b *testing.B, url, authz string) {
	b.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer c.CloseIdleConnections()
	b.ReportAllocs()
	for b.Loop() {
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(benchRequestBody))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Authorization", authz)
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != int64(len(benchResponseBody)) {
			b.Fatalf("status %d, %d bytes", resp.StatusCode, n)
		}
	}
}

// BenchmarkPipelinePoolRoute is BenchmarkPipelineKeyRoute through a pool of
// two backends of one priority (weights 3 and 1): the difference is what
// selection, breaker bookkeeping and per-try targeting cost.
func BenchmarkPipelinePoolRoute(b *testing.B) {
	weight := func(n int) *int { return &n }
	pl, err := pool.New(pool.Options{Backends: []pool.BackendOptions{
		{Name: "weu", URL: "http://weu.internal:8080/api/v1/service/fraud", Weight: weight(3)},
		{Name: "neu", URL: "http://neu.internal:8080/api/v1/service/fraud", Weight: weight(1)},
	}})
	if err != nil {
		b.Fatal(err)
	}
	auth := &twoKeys{keys: []string{"upstream-key-0123456789", "upstream-key-2"}}
	up := &Upstream{Name: "model", Pool: pl, Backends: []*Backend{
		{Name: "weu", URL: mustURL(b, "http://weu.internal:8080/api/v1/service/fraud"), Auth: auth,
			Headers: map[string]string{"azureml-model-deployment": "blue"}, IdentityHeaders: map[string]string{"key_id": "X-Caller-Id"}},
		{Name: "neu", URL: mustURL(b, "http://neu.internal:8080/api/v1/service/fraud"), Auth: auth,
			Headers: map[string]string{"azureml-model-deployment": "blue"}, IdentityHeaders: map[string]string{"key_id": "X-Caller-Id"}},
	}}
	h := New(Options{
		Routes:    []*Route{{Name: "fraud", Prefix: "/fraud", Upstream: up, Policy: keyPolicy()}},
		Transport: memUpstream{}, MaxBodyBytes: 10 << 20, BufferBodyBytes: 1 << 20,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	runPipeline(b, h)
}
