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

	"github.com/modelgate/modelgate/internal/jsonline"
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
	deps := Deps{Logger: slog.New(slog.NewJSONHandler(&mainLog, nil)), Audit: jsonline.New(&auditLog, slog.LevelInfo)}
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

// TestFastRequestLines: the production JSON encoder writes one valid JSON
// line per request with the audit schema and no credential in it.
func TestFastRequestLines(t *testing.T) {
	up := emptyUpstream(t)
	const key = "mgk_canary-client-key-0123456789"
	y := `
key_sets:
  s: [{ id: canary-holder, sha256: "` + sha(key) + `" }]
upstreams:
  u: { url: "` + up.URL + `", auth: { type: key, key: "${K1}" } }
routes:
  - { name: r, path: /, upstream: u, allow: [{ key_set: s }] }
`
	var out syncBuf
	snap, err := Build(context.Background(), parse(t, y), Deps{Audit: jsonline.New(&out, slog.LevelInfo)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(snap.Close)
	for _, authz := range []string{"Bearer " + key, "Bearer mgk_wrong-canary-0123456789", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJjYW5hcnkifQ.", ""} {
		req := httptest.NewRequest("POST", "/score?secret=query-canary", strings.NewReader("{}"))
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		snap.Handler.ServeHTTP(httptest.NewRecorder(), req)
	}
	text := out.String()
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4:\n%s", len(lines), text)
	}
	for i, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i, err, l)
		}
		for _, f := range []string{"time", "level", "msg", "request_id", "trace_id", "route", "decision", "status", "duration_ms"} {
			if _, ok := rec[f]; !ok {
				t.Errorf("line %d lacks %s: %s", i, f, l)
			}
		}
	}
	if !strings.Contains(lines[0], `"identity":"key:s/canary-holder"`) || !strings.Contains(lines[1], `"reason":"unknown_key"`) {
		t.Errorf("unexpected lines:\n%s", text)
	}
	for _, canary := range []string{key, "mgk_wrong-canary", "eyJhbGciOiJub25lIn0", "query-canary", "upstream-key-0123456789"} {
		if strings.Contains(text, canary) {
			t.Errorf("log contains %q", canary)
		}
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
