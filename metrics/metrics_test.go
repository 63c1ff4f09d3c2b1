package metrics

import (
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/idp"
)

// These tests drive Metrics as the gateway does (New, Route per configured
// route, Observe per answered request, SetState with a readiness snapshot)
// and read the result the way Prometheus does: a GET of Handler, parsed
// with the text parser.

// scraped is one scrape of the handler: the raw text and its families.
type scraped struct {
	text     string
	families map[string]*dto.MetricFamily
}

// scrape GETs m's handler and parses the answer.
func scrape(t *testing.T, m *Metrics) scraped {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics = %d: %s", rec.Code, rec.Body)
	}
	text := rec.Body.String()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, text)
	}
	return scraped{text: text, families: fams}
}

// labels renders a metric's label set as "k=v,k=v", sorted by name.
func labels(m *dto.Metric) string {
	var kv []string
	for _, l := range m.GetLabel() {
		kv = append(kv, l.GetName()+"="+l.GetValue())
	}
	slices.Sort(kv)
	return strings.Join(kv, ",")
}

// values returns family name's samples by label set (labels). A counter or
// gauge gives its value; a histogram its sample count and sum, under the
// label sets suffixed with "/count" and "/sum".
func (s scraped) values(name string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range s.families[name].GetMetric() {
		l := labels(m)
		switch {
		case m.Counter != nil:
			out[l] = m.Counter.GetValue()
		case m.Gauge != nil:
			out[l] = m.Gauge.GetValue()
		case m.Histogram != nil:
			out[l+"/count"] = float64(m.Histogram.GetSampleCount())
			out[l+"/sum"] = m.Histogram.GetSampleSum()
		}
	}
	return out
}

// nonZero drops the zero samples of vs (Route pre-creates every series).
func nonZero(vs map[string]float64) map[string]float64 {
	maps.DeleteFunc(vs, func(_ string, v float64) bool { return v == 0 })
	return vs
}

// diff reports the differences between got and want as "(-got +want)".
func diff(got, want map[string]float64) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if w, ok := want[k]; !ok || w != got[k] {
			fmt.Fprintf(&b, "- %s = %v\n", k, got[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[k]; !ok || g != want[k] {
			fmt.Fprintf(&b, "+ %s = %v\n", k, want[k])
		}
	}
	return b.String()
}

func TestObserveCountsByStatusClassAndAuth(t *testing.T) {
	tests := []struct {
		name   string
		status int
		auth   string
		want   string // the one requests_total series counted
	}{
		{name: "admitted by key", status: 200, auth: "key", want: "auth=key,code=2xx,route=fraud"},
		{name: "admitted by token", status: 201, auth: "token", want: "auth=token,code=2xx,route=fraud"},
		{name: "public route", status: 204, auth: "public", want: "auth=public,code=2xx,route=fraud"},
		{name: "upgrade", status: 101, auth: "key", want: "auth=key,code=1xx,route=fraud"},
		{name: "redirect from upstream", status: 302, auth: "key", want: "auth=key,code=3xx,route=fraud"},
		{name: "refused without credential", status: 401, auth: "", want: "auth=none,code=4xx,route=fraud"},
		{name: "rate limited", status: 429, auth: "key", want: "auth=key,code=4xx,route=fraud"},
		{name: "client closed request", status: 499, auth: "token", want: "auth=token,code=4xx,route=fraud"},
		{name: "upstream failed", status: 502, auth: "key", want: "auth=key,code=5xx,route=fraud"},
		{name: "provider down", status: 503, auth: "", want: "auth=none,code=5xx,route=fraud"},
		{name: "status beyond 5xx", status: 600, auth: "key", want: "auth=key,code=5xx,route=fraud"},
		{name: "unknown auth method counts as none", status: 200, auth: "basic", want: "auth=none,code=2xx,route=fraud"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New("test")
			m.Route("fraud").Observe(tt.status, tt.auth, 10*time.Millisecond, 0, "")
			got := nonZero(scrape(t, m).values("modelgate_requests_total"))
			if d := diff(got, map[string]float64{tt.want: 1}); d != "" {
				t.Errorf("modelgate_requests_total (-got +want):\n%s", d)
			}
		})
	}
}

func TestObserveDeniedAndRateLimited(t *testing.T) {
	type observation struct {
		status      int
		auth        string
		rateLimited bool
	}
	tests := []struct {
		name        string
		obs         []observation
		wantDenied  map[string]float64 // non-zero denied_total series
		wantLimited float64
	}{
		{name: "policy refusals by status",
			obs: []observation{{401, "", false}, {401, "", false}, {403, "", false}, {503, "", false}},
			wantDenied: map[string]float64{
				"route=fraud,status=401": 2, "route=fraud,status=403": 1, "route=fraud,status=503": 1,
			}},
		{name: "admitted requests answered 401, 403 or 503 by the upstream are not denials",
			obs:        []observation{{401, "key", false}, {403, "token", false}, {503, "key", false}},
			wantDenied: map[string]float64{}},
		{name: "other refusals are not policy denials",
			obs:        []observation{{400, "", false}, {404, "", false}, {413, "", false}, {502, "", false}},
			wantDenied: map[string]float64{}},
		{name: "rate limited is counted apart from denials",
			obs:         []observation{{429, "key", true}, {429, "token", true}, {200, "key", false}, {429, "key", false}}, // the last from the upstream
			wantDenied:  map[string]float64{},
			wantLimited: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New("test")
			r := m.Route("fraud")
			for _, o := range tt.obs {
				r.Observe(o.status, o.auth, time.Millisecond, 0, map[bool]string{true: "rate_limited"}[o.rateLimited])
			}
			s := scrape(t, m)
			if d := diff(nonZero(s.values("modelgate_denied_total")), tt.wantDenied); d != "" {
				t.Errorf("modelgate_denied_total (-got +want):\n%s", d)
			}
			if got := s.values("modelgate_rate_limited_total")["route=fraud"]; got != tt.wantLimited {
				t.Errorf("modelgate_rate_limited_total = %v, want %v", got, tt.wantLimited)
			}
			var total float64
			for _, v := range s.values("modelgate_requests_total") {
				total += v
			}
			if total != float64(len(tt.obs)) {
				t.Errorf("modelgate_requests_total sums to %v, want %d (every request counted once)", total, len(tt.obs))
			}
		})
	}
}

func TestObserveDurations(t *testing.T) {
	tests := []struct {
		name            string
		total, upstream time.Duration
		want            map[string]float64
	}{
		{name: "went upstream", total: 300 * time.Millisecond, upstream: 200 * time.Millisecond, want: map[string]float64{
			"modelgate_upstream_duration_seconds route=fraud/count": 1, "modelgate_upstream_duration_seconds route=fraud/sum": 0.2,
			"modelgate_gateway_duration_seconds route=fraud/count": 1, "modelgate_gateway_duration_seconds route=fraud/sum": 0.1,
		}},
		{name: "answered by the gateway alone", total: 5 * time.Millisecond, want: map[string]float64{
			"modelgate_upstream_duration_seconds route=fraud/count": 0, "modelgate_upstream_duration_seconds route=fraud/sum": 0,
			"modelgate_gateway_duration_seconds route=fraud/count": 1, "modelgate_gateway_duration_seconds route=fraud/sum": 0.005,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New("test")
			m.Route("fraud").Observe(200, "key", tt.total, tt.upstream, "")
			s := scrape(t, m)
			got := map[string]float64{}
			for _, name := range []string{"modelgate_upstream_duration_seconds", "modelgate_gateway_duration_seconds"} {
				for k, v := range s.values(name) {
					got[name+" "+k] = v
				}
			}
			for k, v := range got {
				got[k] = float64(int64(v*1e6+0.5)) / 1e6 // sums of float seconds
			}
			if d := diff(got, tt.want); d != "" {
				t.Errorf("durations (-got +want):\n%s", d)
			}
		})
	}
}

// TestRouteSeriesAreBoundedByConfiguration: Route pre-creates a fixed set
// of series per configured route, and no status or auth value a request
// brings adds one; the same name returns the same counters (a reload
// keeps counting).
func TestRouteSeriesAreBoundedByConfiguration(t *testing.T) {
	m := New("test")
	routes := []string{"fraud", "llm"}
	for _, name := range routes {
		r := m.Route(name)
		for status := 0; status < 1000; status += 7 {
			for _, auth := range []string{"", "key", "token", "public", "Bearer x", "mgk_secret"} {
				r.Observe(status, auth, time.Millisecond, 0, map[bool]string{true: "rate_limited"}[status == 429])
			}
		}
	}
	before := scrape(t, m).values("modelgate_requests_total")["auth=key,code=2xx,route=fraud"]
	m.Route("fraud").Observe(200, "key", time.Millisecond, 0, "") // as after a reload
	s := scrape(t, m)
	if got := s.values("modelgate_requests_total")["auth=key,code=2xx,route=fraud"]; got != before+1 {
		t.Errorf("after Route again, the counter is %v, want %v (continued)", got, before+1)
	}
	want := map[string]int{
		"modelgate_requests_total":            len(routes) * len(statusClasses) * len(authMethods),
		"modelgate_denied_total":              len(routes) * 3,
		"modelgate_rate_limited_total":        len(routes),
		"modelgate_gateway_duration_seconds":  len(routes),
		"modelgate_upstream_duration_seconds": len(routes),
	}
	for name, n := range want {
		if got := len(s.families[name].GetMetric()); got != n {
			t.Errorf("%s has %d series, want %d", name, got, n)
		}
		for _, mt := range s.families[name].GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "route" && !slices.Contains(routes, l.GetValue()) {
					t.Errorf("%s has route %q, which is not a configured route", name, l.GetValue())
				}
			}
		}
	}
}

func TestStateAtScrape(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		state *State // nil: SetState is never called
		want  map[string]float64
	}{
		{name: "no state installed", want: map[string]float64{}},
		{name: "token credential", state: &State{Credentials: []credential.Status{{
			Name: "summarizer", Type: "aml_endpoint_token", Ready: true, ValidUntil: now.Add(90 * time.Second), Refreshes: 3, Failures: 1,
		}}}, want: map[string]float64{
			"modelgate_upstream_credential_valid type=aml_endpoint_token,upstream=summarizer":   1,
			"modelgate_upstream_credential_expiry_seconds upstream=summarizer":                  90,
			"modelgate_upstream_credential_refreshes_total outcome=success,upstream=summarizer": 3,
			"modelgate_upstream_credential_refreshes_total outcome=failure,upstream=summarizer": 1,
			"modelgate_config_reloads_total outcome=success":                                    0,
			"modelgate_config_reloads_total outcome=failure":                                    0,
		}},
		{name: "key credential has no expiry", state: &State{Credentials: []credential.Status{{
			Name: "fraud", Type: "key", Ready: true,
		}}}, want: map[string]float64{
			"modelgate_upstream_credential_valid type=key,upstream=fraud":                  1,
			"modelgate_upstream_credential_refreshes_total outcome=success,upstream=fraud": 0,
			"modelgate_upstream_credential_refreshes_total outcome=failure,upstream=fraud": 0,
			"modelgate_config_reloads_total outcome=success":                               0,
			"modelgate_config_reloads_total outcome=failure":                               0,
		}},
		{name: "expired credential, failing", state: &State{Credentials: []credential.Status{{
			Name: "churn", Type: "aml_service_token", Ready: false, ValidUntil: now.Add(-30 * time.Second), Failures: 4,
		}}}, want: map[string]float64{
			"modelgate_upstream_credential_valid type=aml_service_token,upstream=churn":    0,
			"modelgate_upstream_credential_expiry_seconds upstream=churn":                  -30,
			"modelgate_upstream_credential_refreshes_total outcome=success,upstream=churn": 0,
			"modelgate_upstream_credential_refreshes_total outcome=failure,upstream=churn": 4,
			"modelgate_config_reloads_total outcome=success":                               0,
			"modelgate_config_reloads_total outcome=failure":                               0,
		}},
		{name: "identity providers and reloads", state: &State{
			IdentityProviders: []idp.Status{
				{Name: "contoso", Type: "azure_ad", Ready: true, Keys: 3, LastSuccess: now.Add(-45 * time.Second), Sources: []idp.SourceStatus{
					{Name: "v1", Refreshes: 2, Failures: 1}, {Name: "v2", Refreshes: 3},
				}},
				{Name: "partners", Type: "oidc", Ready: false, Sources: []idp.SourceStatus{{Name: "oidc", Failures: 5}}},
			},
			ReloadsOK: 4, ReloadsFailed: 1,
		}, want: map[string]float64{
			"modelgate_identity_provider_ready provider=contoso":               1,
			"modelgate_identity_provider_keys provider=contoso":                3,
			"modelgate_identity_provider_key_age_seconds provider=contoso":     45,
			"modelgate_jwks_refreshes_total outcome=success,provider=contoso":  5,
			"modelgate_jwks_refreshes_total outcome=failure,provider=contoso":  1,
			"modelgate_identity_provider_ready provider=partners":              0,
			"modelgate_identity_provider_keys provider=partners":               0,
			"modelgate_jwks_refreshes_total outcome=success,provider=partners": 0,
			"modelgate_jwks_refreshes_total outcome=failure,provider=partners": 5,
			"modelgate_config_reloads_total outcome=success":                   4,
			"modelgate_config_reloads_total outcome=failure":                   1,
		}},
	}
	stateFamilies := []string{
		"modelgate_upstream_credential_valid", "modelgate_upstream_credential_expiry_seconds",
		"modelgate_upstream_credential_refreshes_total", "modelgate_identity_provider_ready",
		"modelgate_identity_provider_keys", "modelgate_identity_provider_key_age_seconds",
		"modelgate_jwks_refreshes_total", "modelgate_config_reloads_total",
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New("test")
			m.now = func() time.Time { return now }
			if tt.state != nil {
				st := *tt.state
				m.SetState(func() State { return st })
			}
			s := scrape(t, m)
			got := map[string]float64{}
			for _, name := range stateFamilies {
				for k, v := range s.values(name) {
					got[name+" "+k] = v
				}
			}
			if d := diff(got, tt.want); d != "" {
				t.Errorf("state metrics (-got +want):\n%s", d)
			}
		})
	}
}

// TestNoSecretOrIdentityInLabels fills every input the package takes with
// canaries where a careless collector could copy them (credential labels
// and errors, key set URIs, error texts) and checks that the exposition
// holds none of them, and that every label of the gateway's own metrics
// takes a value from configuration names or the package's fixed sets.
func TestNoSecretOrIdentityInLabels(t *testing.T) {
	const canary = "canary-secret-5e8ff9bf55ba"
	m := New("v1.2.3")
	for _, name := range []string{"fraud", "llm"} {
		r := m.Route(name)
		r.Observe(200, "key", time.Millisecond, time.Millisecond/2, "")
		r.Observe(401, "", time.Millisecond, 0, "")
		r.Observe(200, canary, time.Millisecond, 0, "") // not a method: counted as none
	}
	pl := m.Pool("churn", []string{"weu", "neu"})
	pl.Try(0, true, false)
	pl.Try(1, false, true)
	m.HealthCheck("churn", "weu", "down")
	m.SetState(func() State {
		return State{
			Backends: []BackendState{
				{Upstream: "churn", Backend: "weu", Breaker: "open"},
				{Upstream: "churn", Backend: "neu", Breaker: "closed", Available: true},
			},
			Credentials: []credential.Status{{
				Name: "summarizer", Type: "aml_endpoint_token", Ready: true, Label: "secondary key " + canary,
				ValidUntil: time.Now().Add(time.Minute), LastError: "401 for key " + canary,
			}},
			IdentityProviders: []idp.Status{{
				Name: "contoso", Type: "azure_ad", Ready: true, Keys: 1, LastError: canary, LastSuccess: time.Now(),
				Sources: []idp.SourceStatus{{Name: "v2", JWKSURI: "https://login.example/" + canary, LastError: canary}},
			}},
		}
	})
	s := scrape(t, m)
	if strings.Contains(s.text, canary) {
		t.Fatalf("the exposition contains the canary:\n%s", s.text)
	}
	allowed := map[string][]string{
		"route":     {"fraud", "llm"},
		"upstream":  {"summarizer", "churn"},
		"backend":   {"weu", "neu"},
		"provider":  {"contoso"},
		"type":      {"aml_endpoint_token"},
		"code":      append(append(statusClasses[:], ErrorCodes...), ErrorCodeOther),
		"auth":      authMethods[:],
		"status":    {"401", "403", "503"},
		"outcome":   {"success", "failure", "ok"},
		"state":     {"closed", "open", "half-open"},
		"result":    {"up", "down", "skipped"},
		"kind":      {"prompt", "completion", "total"},
		"version":   {"v1.2.3"},
		"goversion": nil, // the toolchain's; checked below
	}
	for name, f := range s.families {
		if !strings.HasPrefix(name, "modelgate_") {
			continue
		}
		for _, mt := range f.GetMetric() {
			for _, l := range mt.GetLabel() {
				vals, ok := allowed[l.GetName()]
				switch {
				case !ok:
					t.Errorf("%s has label %q, which is not one the package documents", name, l.GetName())
				case l.GetName() == "goversion":
					if !strings.HasPrefix(l.GetValue(), "go") {
						t.Errorf("%s goversion = %q", name, l.GetValue())
					}
				case !slices.Contains(vals, l.GetValue()):
					t.Errorf("%s{%s=%q}: not a configured name or a fixed value", name, l.GetName(), l.GetValue())
				}
			}
		}
	}
	if got := s.values("modelgate_build_info"); len(got) != 1 || got["goversion="+buildGoVersion(s)+",version=v1.2.3"] != 1 {
		t.Errorf("modelgate_build_info = %v, want one series with version v1.2.3 and value 1", got)
	}
}

// buildGoVersion returns the goversion label of build_info.
func buildGoVersion(s scraped) string {
	for _, mt := range s.families["modelgate_build_info"].GetMetric() {
		for _, l := range mt.GetLabel() {
			if l.GetName() == "goversion" {
				return l.GetValue()
			}
		}
	}
	return ""
}

// TestConcurrentObserveAndScrape runs requests, reloads and scrapes at once
// (under -race) and checks that no request is lost.
func TestConcurrentObserveAndScrape(t *testing.T) {
	m := New("test")
	const workers, each = 8, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				m.Route([]string{"fraud", "llm"}[(w+i)%2]).Observe(200+(i%4)*100, "key", time.Millisecond, 0, "")
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 20 {
			m.SetState(func() State { return State{ReloadsOK: uint64(i)} })
			rec := httptest.NewRecorder()
			m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
			if rec.Code != http.StatusOK {
				t.Errorf("GET /metrics = %d: %s", rec.Code, rec.Body)
			}
		}
	}()
	wg.Wait()
	var total float64
	for _, v := range scrape(t, m).values("modelgate_requests_total") {
		total += v
	}
	if total != workers*each {
		t.Errorf("modelgate_requests_total sums to %v, want %d", total, workers*each)
	}
}

// TestPoolTries: Pool pre-creates, per configured backend, an ok and a
// failure series of backend_requests_total and one of
// backend_retries_total; Try counts each try once under its outcome and a
// retry also under the backend it went to. Calling Pool again with the
// same names (a reload) continues the same counters.
func TestPoolTries(t *testing.T) {
	type try struct {
		backend       int
		failed, retry bool
	}
	tests := []struct {
		name         string
		tries        []try
		wantRequests map[string]float64 // non-zero backend_requests_total series
		wantRetries  map[string]float64 // non-zero backend_retries_total series
	}{
		{name: "no tries", wantRequests: map[string]float64{}, wantRetries: map[string]float64{}},
		{name: "first try answers",
			tries:        []try{{0, false, false}},
			wantRequests: map[string]float64{"backend=weu,outcome=ok,upstream=churn": 1},
			wantRetries:  map[string]float64{}},
		{name: "failure on one backend, retry answers on the other",
			tries: []try{{0, true, false}, {1, false, true}},
			wantRequests: map[string]float64{
				"backend=weu,outcome=failure,upstream=churn": 1, "backend=neu,outcome=ok,upstream=churn": 1,
			},
			wantRetries: map[string]float64{"backend=neu,upstream=churn": 1}},
		{name: "every try fails",
			tries: []try{{0, true, false}, {1, true, true}, {2, true, true}},
			wantRequests: map[string]float64{
				"backend=weu,outcome=failure,upstream=churn": 1, "backend=neu,outcome=failure,upstream=churn": 1,
				"backend=moe-canary,outcome=failure,upstream=churn": 1,
			},
			wantRetries: map[string]float64{"backend=neu,upstream=churn": 1, "backend=moe-canary,upstream=churn": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New("test")
			p := m.Pool("churn", []string{"weu", "neu", "moe-canary"})
			for _, tr := range tt.tries {
				p.Try(tr.backend, tr.failed, tr.retry)
			}
			s := scrape(t, m)
			if d := diff(nonZero(s.values("modelgate_backend_requests_total")), tt.wantRequests); d != "" {
				t.Errorf("modelgate_backend_requests_total (-got +want):\n%s", d)
			}
			if d := diff(nonZero(s.values("modelgate_backend_retries_total")), tt.wantRetries); d != "" {
				t.Errorf("modelgate_backend_retries_total (-got +want):\n%s", d)
			}
			if got, want := len(s.families["modelgate_backend_requests_total"].GetMetric()), 3*2; got != want {
				t.Errorf("modelgate_backend_requests_total has %d series, want %d (ok and failure per backend)", got, want)
			}
			if got, want := len(s.families["modelgate_backend_retries_total"].GetMetric()), 3; got != want {
				t.Errorf("modelgate_backend_retries_total has %d series, want %d (one per backend)", got, want)
			}
		})
	}

	t.Run("counters continue across a reload", func(t *testing.T) {
		m := New("test")
		m.Pool("churn", []string{"weu", "neu"}).Try(1, false, true)
		m.Pool("churn", []string{"weu", "neu"}).Try(1, false, true) // as after a reload
		s := scrape(t, m)
		if got := s.values("modelgate_backend_requests_total")["backend=neu,outcome=ok,upstream=churn"]; got != 2 {
			t.Errorf("backend_requests_total{neu, ok} = %v, want 2", got)
		}
		if got := s.values("modelgate_backend_retries_total")["backend=neu,upstream=churn"]; got != 2 {
			t.Errorf("backend_retries_total{neu} = %v, want 2", got)
		}
	})

	t.Run("Try does not allocate", func(t *testing.T) {
		p := New("test").Pool("churn", []string{"weu", "neu"})
		if n := testing.AllocsPerRun(100, func() { p.Try(1, true, true) }); n != 0 {
			t.Errorf("Try allocates %v times per call, want 0", n)
		}
	})
}

// TestHealthCheckCounts: each probe is counted once under its upstream,
// backend and result.
func TestHealthCheckCounts(t *testing.T) {
	m := New("test")
	for _, p := range []struct{ backend, result string }{
		{"weu", "up"}, {"weu", "up"}, {"weu", "down"}, {"neu", "skipped"}, {"neu", "up"},
	} {
		m.HealthCheck("churn", p.backend, p.result)
	}
	want := map[string]float64{
		"backend=weu,result=up,upstream=churn":      2,
		"backend=weu,result=down,upstream=churn":    1,
		"backend=neu,result=skipped,upstream=churn": 1,
		"backend=neu,result=up,upstream=churn":      1,
	}
	if d := diff(scrape(t, m).values("modelgate_backend_health_checks_total"), want); d != "" {
		t.Errorf("modelgate_backend_health_checks_total (-got +want):\n%s", d)
	}
}

// TestBackendStateGauges: at scrape time, every backend State.Backends
// lists gets breaker_state with 1 for its state and 0 for the two others,
// and available 1 or 0; a backend that a reload removed from State is gone
// from the next scrape (the gauges are read, not kept).
func TestBackendStateGauges(t *testing.T) {
	tests := []struct {
		name     string
		backends []BackendState
		want     map[string]float64
	}{
		{name: "no pools", want: map[string]float64{}},
		{name: "closed and available", backends: []BackendState{{Upstream: "churn", Backend: "weu", Breaker: "closed", Available: true}},
			want: map[string]float64{
				"modelgate_backend_breaker_state backend=weu,state=closed,upstream=churn":    1,
				"modelgate_backend_breaker_state backend=weu,state=open,upstream=churn":      0,
				"modelgate_backend_breaker_state backend=weu,state=half-open,upstream=churn": 0,
				"modelgate_backend_available backend=weu,upstream=churn":                     1,
			}},
		{name: "open, half-open, and closed without a credential", backends: []BackendState{
			{Upstream: "churn", Backend: "weu", Breaker: "open"},
			{Upstream: "churn", Backend: "neu", Breaker: "half-open", Available: true},
			{Upstream: "llm", Backend: "moe", Breaker: "closed"},
		}, want: map[string]float64{
			"modelgate_backend_breaker_state backend=weu,state=closed,upstream=churn":    0,
			"modelgate_backend_breaker_state backend=weu,state=open,upstream=churn":      1,
			"modelgate_backend_breaker_state backend=weu,state=half-open,upstream=churn": 0,
			"modelgate_backend_available backend=weu,upstream=churn":                     0,
			"modelgate_backend_breaker_state backend=neu,state=closed,upstream=churn":    0,
			"modelgate_backend_breaker_state backend=neu,state=open,upstream=churn":      0,
			"modelgate_backend_breaker_state backend=neu,state=half-open,upstream=churn": 1,
			"modelgate_backend_available backend=neu,upstream=churn":                     1,
			"modelgate_backend_breaker_state backend=moe,state=closed,upstream=llm":      1,
			"modelgate_backend_breaker_state backend=moe,state=open,upstream=llm":        0,
			"modelgate_backend_breaker_state backend=moe,state=half-open,upstream=llm":   0,
			"modelgate_backend_available backend=moe,upstream=llm":                       0,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New("test")
			m.SetState(func() State { return State{Backends: tt.backends} })
			s := scrape(t, m)
			got := map[string]float64{}
			for _, name := range []string{"modelgate_backend_breaker_state", "modelgate_backend_available"} {
				for k, v := range s.values(name) {
					got[name+" "+k] = v
				}
			}
			if d := diff(got, tt.want); d != "" {
				t.Errorf("backend gauges (-got +want):\n%s", d)
			}
		})
	}

	t.Run("a removed backend disappears", func(t *testing.T) {
		m := New("test")
		backends := []BackendState{{Upstream: "churn", Backend: "weu", Breaker: "closed", Available: true}, {Upstream: "churn", Backend: "neu", Breaker: "closed", Available: true}}
		m.SetState(func() State { return State{Backends: backends} })
		scrape(t, m)
		m.SetState(func() State { return State{Backends: backends[:1]} }) // a reload dropped neu
		if got := scrape(t, m).values("modelgate_backend_available"); len(got) != 1 || got["backend=weu,upstream=churn"] != 1 {
			t.Errorf("modelgate_backend_available after neu was removed = %v, want only weu", got)
		}
	})
}

func TestObserveErrorsByCode(t *testing.T) {
	m := New("test")
	r := m.Route("fraud")
	r.Observe(401, "", time.Millisecond, 0, "missing_credential")
	r.Observe(401, "", time.Millisecond, 0, "missing_credential")
	r.Observe(403, "", time.Millisecond, 0, "forbidden")
	r.Observe(429, "key", time.Millisecond, 0, "rate_limited")
	r.Observe(503, "key", time.Millisecond, 0, "upstream_unavailable")
	r.Observe(200, "key", time.Millisecond, 0, "")
	m.Route("llm").Observe(413, "token", time.Millisecond, 0, "body_too_large")
	s := scrape(t, m)
	want := map[string]float64{
		"code=missing_credential,route=fraud":   2,
		"code=forbidden,route=fraud":            1,
		"code=rate_limited,route=fraud":         1,
		"code=upstream_unavailable,route=fraud": 1,
		"code=body_too_large,route=llm":         1,
	}
	if d := diff(nonZero(s.values("modelgate_request_errors_total")), want); d != "" {
		t.Errorf("modelgate_request_errors_total (-got +want):\n%s", d)
	}
	if d := diff(nonZero(s.values("modelgate_rate_limited_total")), map[string]float64{"route=fraud": 1}); d != "" {
		t.Errorf("modelgate_rate_limited_total (-got +want):\n%s", d)
	}
}

// TestObserveUnknownCodeCountsAsOther: a code the gateway does not define
// is counted under "other", so the code label stays bounded whatever a
// caller passes.
func TestObserveUnknownCodeCountsAsOther(t *testing.T) {
	m := New("test")
	r := m.Route("fraud")
	r.Observe(500, "key", time.Millisecond, 0, "made_up_code")
	r.Observe(500, "key", time.Millisecond, 0, "Bearer mgk_secret")
	r.Observe(403, "", time.Millisecond, 0, "forbidden")
	want := map[string]float64{
		"code=other,route=fraud":     2,
		"code=forbidden,route=fraud": 1,
	}
	if d := diff(nonZero(scrape(t, m).values("modelgate_request_errors_total")), want); d != "" {
		t.Errorf("modelgate_request_errors_total (-got +want):\n%s", d)
	}
}

// TestErrorSeriesExistFromRoute: Route creates every (route, code) series
// of request_errors_total at 0, so Prometheus sees a code's first
// increment (a series born at 1 would hide it from rate and increase).
func TestErrorSeriesExistFromRoute(t *testing.T) {
	m := New("test")
	m.Route("fraud")
	m.Route("llm")
	got := scrape(t, m).values("modelgate_request_errors_total")
	want := map[string]float64{}
	for _, route := range []string{"fraud", "llm"} {
		for _, code := range append(slices.Clone(ErrorCodes), ErrorCodeOther) {
			want["code="+code+",route="+route] = 0
		}
	}
	if d := diff(got, want); d != "" {
		t.Errorf("modelgate_request_errors_total after Route (-got +want):\n%s", d)
	}
	if slices.Contains(ErrorCodes, ErrorCodeOther) || len(ErrorCodes) != len(slices.Compact(slices.Sorted(slices.Values(ErrorCodes)))) {
		t.Errorf("ErrorCodes %q repeats a code or holds %q", ErrorCodes, ErrorCodeOther)
	}
}
