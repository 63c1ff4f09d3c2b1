package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/modelgate/modelgate/internal/logtest"
	"github.com/modelgate/modelgate/internal/otlptest"
)

// TestServeExportsTraces: `gateway serve` with a telemetry section sends
// its spans to the collector it names, with the configured service name
// and export header, and flushes what is queued when it stops. The
// header's value (a collector's API key) is never logged.
func TestServeExportsTraces(t *testing.T) {
	const collectorKey = "collector-api-key-canary-71c2"
	t.Setenv("COLLECTOR_KEY", collectorKey)
	rcv := otlptest.StartHTTP(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer up.Close()
	pub := freeAddr(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gw.yaml")
	if err := os.WriteFile(cfg, []byte(`
server: { listen: "`+pub+`" }
admin: { listen: "127.0.0.1:0" }
upstreams:
  m: { url: "`+up.URL+`", auth: { type: none } }
routes:
  - { name: m, path: /m, upstream: m, public: true }
telemetry:
  traces:
    endpoint: "`+rcv.URL+`"
    service_name: scoring-gateway
    headers: { x-collector-key: "${COLLECTOR_KEY}" }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs logtest.Buffer
	go func() { done <- run(ctx, []string{"serve", "-config", cfg}, &logs, &logs) }()
	var resp *http.Response
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if resp, err = http.Get("http://" + pub + "/m/score"); err == nil {
			resp.Body.Close()
			break
		}
	}
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /m/score: %v %v\n%s", resp, err, logs.String())
	}
	// Stopping flushes the batch (the SDK's default delay is 5 s).
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	// No waiting: serve has returned, so its shutdown has sent the spans
	// (the batch processor's own timer would take 5 s).
	spans := rcv.Spans()
	if len(spans) < 2 {
		t.Fatalf("%d spans received when serve returned, want the request's 2: the export was not flushed at stop", len(spans))
	}
	var server *otlptest.Span
	for i, s := range spans {
		if s.Kind == tracepb.Span_SPAN_KIND_SERVER {
			server = &spans[i]
		}
	}
	if server == nil || server.Attrs["modelgate.route"] != "m" || server.Resource["service.name"] != "scoring-gateway" {
		t.Fatalf("server span %+v", server)
	}
	if !strings.HasPrefix(server.Resource["service.version"].(string), "modelgate ") {
		t.Errorf("service.version = %v", server.Resource["service.version"])
	}
	h := rcv.Headers()
	if len(h) == 0 || h[0].Get("X-Collector-Key") != collectorKey {
		t.Errorf("the export did not carry the configured header")
	}
	if !strings.Contains(logs.String(), `"telemetry on"`) || strings.Contains(logs.String(), collectorKey) {
		t.Errorf("want a 'telemetry on' line and never the header's value:\n%s", logs.String())
	}
}
