package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// TestAuditAndTrace: one JSON audit line per request goes to the audit
// logger (not the main log), carrying the trace id the upstream received:
// the client's when valid (forwarded unchanged with tracestate), otherwise
// a fresh traceparent the gateway made.
func TestAuditAndTrace(t *testing.T) {
	var mu sync.Mutex
	var got []http.Header
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Clone())
		mu.Unlock()
	}))
	t.Cleanup(up.Close)
	y := `
upstreams:
  u: { url: "` + up.URL + `", auth: { type: none } }
routes:
  - { name: r, path: /, upstream: u, public: true }
`
	var mainLog, auditLog bytes.Buffer
	deps := Deps{Logger: slog.New(slog.NewJSONHandler(&mainLog, nil)), AuditLogger: slog.New(slog.NewJSONHandler(&auditLog, nil))}
	snap, err := Build(context.Background(), parse(t, y), deps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(snap.Close)
	const clientTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, tp := range []string{clientTP, "", "00-zzzz-bad"} {
		req := httptest.NewRequest("GET", "/x", nil)
		if tp != "" {
			req.Header.Set("Traceparent", tp)
			req.Header.Set("Tracestate", "vendor=1")
		}
		snap.Handler.ServeHTTP(httptest.NewRecorder(), req)
	}
	if strings.Contains(mainLog.String(), `"msg":"request"`) {
		t.Error("request lines went to the main log although an audit logger is set")
	}
	lines := strings.Split(strings.TrimSpace(auditLog.String()), "\n")
	if len(lines) != 3 || len(got) != 3 {
		t.Fatalf("%d audit lines, %d upstream requests; want 3 each:\n%s", len(lines), len(got), auditLog.String())
	}
	for i, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		tp := got[i].Get("Traceparent")
		traceID, _ := rec["trace_id"].(string)
		if len(tp) != 55 || traceID == "" || tp[3:35] != traceID {
			t.Errorf("request %d: upstream traceparent %q, logged trace_id %q", i, tp, traceID)
		}
		switch i {
		case 0:
			if tp != clientTP || got[i].Get("Tracestate") != "vendor=1" {
				t.Errorf("valid client trace context not forwarded unchanged: %q %q", tp, got[i].Get("Tracestate"))
			}
		default:
			if got[i].Get("Tracestate") != "" {
				t.Errorf("request %d: tracestate forwarded without a valid traceparent", i)
			}
		}
	}
}
