package gateway

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/internal/jsonline"
	"github.com/modelgate/modelgate/telemetry"

	"github.com/modelgate/modelgate/test/fakeaad"
)

var benchBody = []byte(`{"data":[[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8]],"amount":120.5,"currency":"EUR"}`)

type memTransport struct{}

func (memTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	return &http.Response{StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(`{"score":0.07}`)), ContentLength: 14, Request: r}, nil
}

type sink struct {
	h      http.Header
	status int
}

func (w *sink) Header() http.Header         { return w.h }
func (w *sink) WriteHeader(c int)           { w.status = c }
func (w *sink) Write(p []byte) (int, error) { return len(p), nil }
func (w *sink) Flush()                      {}

// benchKeyRoute is the bench harness's key route; KEYSHA is the client
// key's hash, and more allow rules or route fields may follow.
const benchKeyRoute = `key_sets:
  bench: [{ id: bench-client, sha256: "KEYSHA" }]
upstreams:
  scorer: { url: "http://scorer.internal/score", auth: { type: key, key: "${K1}" } }
routes:
  - name: score
    path: /score
    upstream: scorer
    allow:
      - key_set: bench`

// benchGateway builds the bench harness's configuration (one route admitting
// a key and Azure AD tokens with a role) against an in-memory upstream.
func benchGateway(b *testing.B) (*Snapshot, string, string) {
	return benchGatewayWith(b, nil)
}

// benchGatewayWith is benchGateway with the trace export given (nil: off).
func benchGatewayWith(b *testing.B, tracing *telemetry.Tracing) (*Snapshot, string, string) {
	aad := fakeaad.New(b)
	const key = "mgk_bench-client-0123456789abcdef"
	y := strings.NewReplacer("TENANT", fakeaad.TenantID, "AUTHORITY", aad.URL(), "KEYSHA", sha(key)).Replace(`
identity_providers:
  aad:
    type: azure_ad
    tenant_id: TENANT
    authority_host: AUTHORITY
    audiences: [api://modelgate]
` + benchKeyRoute + `
      - identity_provider: aad
        roles: [Score.Invoke]
`)
	snap, err := Build(context.Background(), parse(b, y), Deps{
		Transport: memTransport{}, HTTPClient: aad.Client(),
		Audit: jsonline.New(io.Discard, slog.LevelInfo), Tracing: tracing,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(snap.Close)
	if err := snap.WaitIdentityProviders(context.Background()); err != nil {
		b.Fatal(err)
	}
	claims := aad.V2Claims("", fakeaad.APIAppIDURI)
	claims["roles"] = []string{"Score.Invoke"}
	return snap, key, aad.Mint(claims)
}

func benchRoute(b *testing.B, h http.Handler, authz string) {
	b.ReportAllocs()
	send := benchSender(h, authz)
	for b.Loop() {
		if st := send(); st != 200 {
			b.Fatalf("status %d", st)
		}
	}
}

// benchSender returns a function that sends the benchmark's scoring request
// with authz through h and returns the status; one sender per goroutine.
func benchSender(h http.Handler, authz string) func() int {
	body := bytes.NewReader(benchBody)
	r := httptest.NewRequest("POST", "http://gw.example/score", nil)
	r.Header.Set("Authorization", authz)
	r.Header.Set("Content-Type", "application/json")
	r.RemoteAddr = "192.0.2.10:41234"
	w := &sink{h: http.Header{}}
	return func() int {
		body.Reset(benchBody)
		r.Body, r.ContentLength = io.NopCloser(body), int64(len(benchBody))
		clear(w.h)
		w.status = 0
		h.ServeHTTP(w, r)
		return w.status
	}
}

// BenchmarkGatewayKeyRoute and BenchmarkGatewayTokenRoute run the whole
// pipeline built from a configuration (policy, credential injection, log
// line) against an in-memory upstream; the token route's verification is
// served from the verified-token cache after the first request.
func BenchmarkGatewayKeyRoute(b *testing.B) {
	snap, key, _ := benchGateway(b)
	benchRoute(b, snap.Handler, "Bearer "+key)
}

func BenchmarkGatewayTokenRoute(b *testing.B) {
	snap, _, token := benchGateway(b)
	benchRoute(b, snap.Handler, "Bearer "+token)
}

// BenchmarkGatewayKeyRouteTraced is the key route with traces exported
// over OTLP/HTTP to a receiver on loopback that reads and drops them (a
// collector's decoding would run in another process), recording every
// request (ratio=1) or one in ten (ratio=0.1); spans the exporter cannot
// keep up with are dropped, as in production. So this measures what
// tracing costs the gateway process.
func BenchmarkGatewayKeyRouteTraced(b *testing.B) {
	for _, ratio := range []string{"1", "0.1"} {
		b.Run("ratio="+ratio, func(b *testing.B) {
			collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/x-protobuf")
			}))
			b.Cleanup(collector.Close)
			env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
				"OTEL_TRACES_SAMPLER_ARG": ratio}
			s, err := telemetry.Resolve(config.Telemetry{}, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
			if err != nil {
				b.Fatal(err)
			}
			tr, err := telemetry.Start(context.Background(), s, telemetry.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
			snap, key, _ := benchGatewayWith(b, tr)
			benchRoute(b, snap.Handler, "Bearer "+key)
		})
	}
}
