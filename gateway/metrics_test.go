package gateway

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelgate/modelgate/metrics"
)

// TestMetrics: requests are counted by route, status class and auth method;
// credential and reload state appear at scrape time; no identity, key or
// token reaches a label.
func TestMetrics(t *testing.T) {
	up := emptyUpstream(t)
	const key = "mgk_metrics-canary-0123456789abc"
	y := `
key_sets:
  s:
    - { id: caller-canary, sha256: "` + sha(key) + `" }
upstreams:
  u: { url: "` + up.URL + `", auth: { type: key, key: "${K1}" } }
routes:
  - name: score
    path: /
    upstream: u
    allow: [{ key_set: s }]
`
	m := metrics.New("test")
	deps := Deps{Metrics: m}
	snap, err := Build(context.Background(), parse(t, y), deps)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(snap, nil, deps)
	t.Cleanup(snap.Close)
	for _, authz := range []string{"Bearer " + key, "Bearer " + key, "Bearer wrong-key-0123456789", ""} {
		req := httptest.NewRequest("POST", "/score", strings.NewReader("{}"))
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		srv.ServeHTTP(httptest.NewRecorder(), req)
	}
	rec := httptest.NewRecorder()
	srv.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	text := string(body)
	for _, want := range []string{
		`modelgate_requests_total{auth="key",code="2xx",route="score"} 2`,
		`modelgate_requests_total{auth="none",code="4xx",route="score"} 2`,
		`modelgate_denied_total{route="score",status="401"} 2`,
		`modelgate_upstream_duration_seconds_count{route="score"} 2`,
		`modelgate_gateway_duration_seconds_count{route="score"} 4`,
		`modelgate_upstream_credential_valid{type="key",upstream="u"} 1`,
		`modelgate_config_reloads_total{outcome="failure"} 0`,
		`modelgate_build_info{`,
		`go_goroutines`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	for _, secret := range []string{key, "caller-canary", "upstream-key-0123456789", "wrong-key"} {
		if strings.Contains(text, secret) {
			t.Errorf("metrics contain %q", secret)
		}
	}
	if t.Failed() {
		t.Log(text)
	}
}
