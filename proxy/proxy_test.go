package proxy

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/modelgate/modelgate/internal/jsonline"
)

// TestNewDoesNotMutate: New works on copies, so the caller's routes,
// upstreams and trusted prefixes are left as passed, and changing them
// afterwards does not change the Handler.
func TestNewDoesNotMutate(t *testing.T) {
	up := &Upstream{
		Name: "model", URL: mustURL(t, "http://up/api"), Auth: &twoKeys{keys: []string{"k1"}},
		Headers:         map[string]string{"azureml-model-deployment": "blue"},
		IdentityHeaders: map[string]string{"key_id": "x-caller-id"},
	}
	route := &Route{Name: "r", Prefix: "/fraud", Upstream: up, Policy: keyPolicy()}
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	wantUp, wantRoute := *up, *route
	wantURL := *up.URL
	rt := &recordingRT{}
	h := New(Options{Routes: []*Route{route}, Transport: rt, MaxBodyBytes: 1 << 20, TrustedProxies: trusted})
	if !reflect.DeepEqual(*up, wantUp) || *up.URL != wantURL || !reflect.DeepEqual(*route, wantRoute) {
		t.Fatalf("New modified its input:\nupstream %+v\nroute %+v", *up, *route)
	}

	up.URL.Path, up.Headers["azureml-model-deployment"], route.Prefix = "/elsewhere", "green", "/other"
	trusted[0] = netip.MustParsePrefix("192.0.2.0/24")
	r := httptest.NewRequest("GET", "http://gw.example/fraud/x", nil)
	r.Header.Set("Authorization", "Bearer "+testKey)
	r.RemoteAddr = "192.0.2.1:1"
	if w := serve(h, r); w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	out, _ := rt.last(t)
	if out.URL.Path != "/api/x" || out.Header.Get("Azureml-Model-Deployment") != "blue" || out.Header.Get("X-Forwarded-For") != "192.0.2.1" {
		t.Errorf("later changes reached the Handler: %s, deployment %q, X-Forwarded-For %q",
			out.URL.Path, out.Header.Get("Azureml-Model-Deployment"), out.Header.Get("X-Forwarded-For"))
	}
}

// TestAuditSink: the audit line goes to Options.Audit when set, and
// otherwise to Logger in Logger's format; either way it is one line with
// the audit schema, and only the audit sink gets it.
func TestAuditSink(t *testing.T) {
	tests := []struct {
		name  string
		opts  func(main, audit *bytes.Buffer) Options
		check func(t *testing.T, main, audit string)
	}{
		{
			name: "audit sink",
			opts: func(main, audit *bytes.Buffer) Options {
				return Options{Logger: slog.New(slog.NewJSONHandler(main, nil)), Audit: jsonline.New(audit, slog.LevelInfo)}
			},
			check: func(t *testing.T, main, audit string) {
				if main != "" {
					t.Errorf("main log got %q, want nothing", main)
				}
				var rec map[string]any
				if err := json.Unmarshal([]byte(audit), &rec); err != nil || rec["msg"] != "request" || rec["route"] != "r/fraud" || rec["status"] != 200.0 {
					t.Errorf("audit line %q (%v)", audit, err)
				}
			},
		},
		{
			name: "main log, json",
			opts: func(main, _ *bytes.Buffer) Options {
				return Options{Logger: slog.New(slog.NewJSONHandler(main, nil))}
			},
			check: func(t *testing.T, main, _ string) {
				var rec map[string]any
				if err := json.Unmarshal([]byte(main), &rec); err != nil || rec["msg"] != "request" || rec["identity"] != "key:partners/acme" {
					t.Errorf("main log %q (%v)", main, err)
				}
			},
		},
		{
			name: "main log, text",
			opts: func(main, _ *bytes.Buffer) Options {
				return Options{Logger: slog.New(slog.NewTextHandler(main, nil))}
			},
			check: func(t *testing.T, main, _ string) {
				if !strings.Contains(main, " level=INFO msg=request request_id=") || !strings.Contains(main, " route=r/fraud ") || strings.Count(main, "\n") != 1 {
					t.Errorf("main log %q", main)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var main, audit bytes.Buffer
			o := tt.opts(&main, &audit)
			o.Routes = []*Route{{Name: "r/fraud", Prefix: "/fraud", Upstream: &Upstream{Name: "model", URL: mustURL(t, "http://up/api")}, Policy: keyPolicy()}}
			o.Transport, o.MaxBodyBytes = &recordingRT{}, 1<<20
			r := httptest.NewRequest("GET", "http://gw.example/fraud/x", nil)
			r.Header.Set("Authorization", "Bearer "+testKey)
			if w := serve(New(o), r); w.Code != 200 {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			tt.check(t, main.String(), audit.String())
		})
	}
}
