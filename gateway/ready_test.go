package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	azpolicy "github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// readyBase has one healthy route (fraud: a static key upstream), one whose
// upstream credential cannot be had (churn: the workspace token API refuses
// connections), one whose only identity provider has no keys (reports), and
// one that admits by key set or by that provider (mixed).
const readyBase = `
admin: { readiness: MODE }
identity_providers:
  corp:
    type: oidc
    issuer: http://127.0.0.1:1/corp
    jwks_uri: http://127.0.0.1:1/corp/keys
    audiences: [api://scoring]
    refresh_interval: 1h
credentials:
  sp:
    type: client_secret
    tenant_id: 72f988bf-86f1-41af-91ab-2d7cd011db47
    client_id: 11111111-2222-3333-4444-555555555555
    client_secret: ${K2}
    authority_host: https://127.0.0.1:1/
key_sets:
  partners: [{ id: acme, sha256: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae" }]
upstreams:
  fraud: { url: "http://127.0.0.1:1", auth: { type: key, key: "${K1}" } }
  churn:
    url: http://127.0.0.1:1/churn
    auth:
      type: aml_service_token
      credential: sp
      service: churn
      workspace: { subscription_id: sub, resource_group: rg, name: ws, api_host: "http://127.0.0.1:1" }
  unused:
    url: http://127.0.0.1:1/unused
    auth: { type: aad_token, credential: sp }
routes:
  - { name: fraud, path: /fraud, upstream: fraud, allow: [{ key_set: partners }] }
  - { name: churn, path: /churn, upstream: churn, allow: [{ key_set: partners }] }
  - { name: reports, path: /reports, upstream: fraud, allow: [{ identity_provider: corp }] }
  - { name: mixed, path: /mixed, upstream: fraud, allow: [{ key_set: partners }, { identity_provider: corp }] }
`

type readyReport struct {
	Ready  bool `json:"ready"`
	Routes map[string]struct {
		State   string   `json:"state"`
		Reasons []string `json:"reasons"`
	} `json:"routes"`
}

// TestReadinessPerRoute: one broken upstream (or identity provider, or a
// declared but unused upstream) never takes the healthy routes out of
// service: /readyz is 200 once every component has made its first attempt
// and a route can serve, names each route's state with reasons, and
// /readyz?route=NAME is 503 only for a route that is down. Strict mode keeps
// all-or-nothing (DESIGN.md, "Readiness that does not amplify an outage").
func TestReadinessPerRoute(t *testing.T) {
	deps := Deps{AzureRetry: azpolicy.RetryOptions{MaxRetries: -1}}
	snap, err := Build(context.Background(), parse(t, strings.Replace(readyBase, "MODE", "routes", 1)), deps)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(snap, nil, deps)
	t.Cleanup(snap.Close)
	get := func(target string) (int, readyReport, string) {
		rec := httptest.NewRecorder()
		srv.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
		var rep readyReport
		if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
			t.Fatalf("%s: %v\n%s", target, err, rec.Body)
		}
		return rec.Code, rep, rec.Body.String()
	}
	var code int
	var rep readyReport
	var raw string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if code, rep, raw = get("/readyz"); code == http.StatusOK {
			break
		}
	}
	if code != http.StatusOK || !rep.Ready {
		t.Fatalf("/readyz = %d, want 200 once every first attempt is done:\n%s", code, raw)
	}
	want := map[string]string{"fraud": "ok", "churn": "down", "reports": "down", "mixed": "degraded"}
	for route, state := range want {
		got := rep.Routes[route]
		if got.State != state {
			t.Errorf("route %s: state %q, want %q (%s)", route, got.State, state, raw)
		}
		if state != "ok" && len(got.Reasons) == 0 {
			t.Errorf("route %s is %s without a reason", route, state)
		}
	}
	if r := strings.Join(rep.Routes["churn"].Reasons, " "); !strings.Contains(r, "upstream churn") || !strings.Contains(r, "credential") {
		t.Errorf("churn's reasons do not name its upstream credential: %q", r)
	}
	if r := strings.Join(rep.Routes["reports"].Reasons, " "); !strings.Contains(r, "identity provider corp") {
		t.Errorf("reports' reasons do not name its identity provider: %q", r)
	}
	for route, wantCode := range map[string]int{"fraud": 200, "mixed": 200, "churn": 503, "reports": 503, "nosuch": 404} {
		rec := httptest.NewRecorder()
		srv.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz?route="+route, nil))
		if rec.Code != wantCode {
			t.Errorf("/readyz?route=%s = %d, want %d: %s", route, rec.Code, wantCode, rec.Body)
		}
	}

	strict, err := Build(context.Background(), parse(t, strings.Replace(readyBase, "MODE", "strict", 1)), deps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(strict.Close)
	ssrv := NewServer(strict, nil, deps)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && len(strict.Readiness().Starting) > 0; time.Sleep(20 * time.Millisecond) {
	}
	rec := httptest.NewRecorder()
	ssrv.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"ready": false`) {
		t.Errorf("strict /readyz = %d, want 503 while a component is not ready: %s", rec.Code, rec.Body)
	}
}

// TestReadinessWaitsForFirstAttempts: before the components have tried
// once, /readyz does not claim readiness.
func TestReadinessWaitsForFirstAttempts(t *testing.T) {
	snap, err := Compile(parse(t, strings.Replace(readyBase, "MODE", "routes", 1)), Deps{}, CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(snap.Close)
	rec := httptest.NewRecorder()
	NewServer(snap, nil, Deps{}).AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "starting") {
		t.Errorf("/readyz before any attempt = %d %s, want 503 starting", rec.Code, rec.Body)
	}
}
