package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/internal/redistest"
)

// limitsConfig is a route limited to 2 per minute per identity, counted in
// the store at url with on_error.
func limitsConfig(upURL, storeURL, onError string) string {
	return `
key_sets:
  s:
    - { id: a, sha256: "` + sha(keyA) + `" }
upstreams:
  u: { url: "` + upURL + `", auth: { type: none } }
limits:
  store: { type: redis, url: "` + storeURL + `", timeout: 50ms, on_error: ` + onError + ` }
routes:
  - name: r
    path: /
    upstream: u
    allow: [{ key_set: s }]
    rate_limit: { per_identity: 2/m, burst: 2 }
`
}

const keyA = "mgk_caller-a-0123456789abcdef"

func callKey(h http.Handler, key string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("POST", "/score", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+key)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestLimitsStoreSharedAcrossSnapshots: two gateways (replicas) with one
// store admit the limit once between them, with the OpenAI-named headers,
// and /readyz names the store's state.
func TestLimitsStoreSharedAcrossSnapshots(t *testing.T) {
	srv := redistest.Start(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(up.Close)
	var replicas []*Snapshot
	for range 2 {
		snap, err := Build(context.Background(), parse(t, limitsConfig(up.URL, srv.URL(), "deny")), Deps{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(snap.Close)
		replicas = append(replicas, snap)
	}
	var codes []int
	for i := range 4 {
		rec := callKey(replicas[i%2].Handler, keyA)
		codes = append(codes, rec.Code)
		if i == 0 {
			if l, r := rec.Header().Get("X-Ratelimit-Limit-Requests"), rec.Header().Get("X-Ratelimit-Remaining-Requests"); l != "2" || r != "1" {
				t.Errorf("first answer: limit %q remaining %q, want 2 and 1", l, r)
			}
		}
		if i == 2 && rec.Header().Get("Retry-After") != "30" {
			t.Errorf("429 Retry-After = %q, want 30", rec.Header().Get("Retry-After"))
		}
	}
	if want := []int{200, 200, 429, 429}; !equalInts(codes, want) {
		t.Errorf("codes across two replicas = %v, want %v (one shared budget of 2)", codes, want)
	}
	rep := replicas[0].Readiness()
	if rep.LimitsStore == nil || rep.LimitsStore.State != "ok" || !rep.Ready {
		t.Errorf("readiness = %+v", rep)
	}

	srv.Kill()
	rec := callKey(replicas[1].Handler, keyA)
	if rec.Code != http.StatusServiceUnavailable || decodeCode(t, rec) != "limits_unavailable" || rec.Header().Get("Retry-After") == "" {
		t.Errorf("with Redis down and on_error deny: %d %s", rec.Code, rec.Body)
	}
	rep = replicas[1].Readiness()
	if rep.LimitsStore == nil || rep.LimitsStore.State != "degraded" || !rep.Ready {
		t.Errorf("readiness with the store down = %+v, want ready with limits_store degraded", rep)
	}
	b, _ := json.Marshal(rep)
	if !strings.Contains(string(b), `"limits_store":{"state":"degraded"`) {
		t.Errorf("/readyz body lacks limits_store: %s", b)
	}
}

// TestLimitsStoreConfigErrors: limits.store problems are located at their
// line with their field path, and the password never shows.
func TestLimitsStoreConfigErrors(t *testing.T) {
	t.Setenv("MG_TEST_REDIS_URL", "redis://:hunter2-secret@cache:6380/notadb")
	y := strings.Replace(limitsConfig("http://127.0.0.1:1", "${MG_TEST_REDIS_URL}", "retry"), "timeout: 50ms", "timeout: 1m", 1)
	cfg, err := config.Parse("gw.yaml", []byte(y), os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Compile(cfg, Deps{}, CompileOptions{})
	if err == nil {
		t.Fatal("compiled")
	}
	for _, want := range []string{"limits.store.on_error:", "limits.store.timeout:", "limits.store.url: redis://:xxxxx@cache:6380/notadb", "gw.yaml:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error shows the password:\n%v", err)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func decodeCode(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var body struct{ Error struct{ Code string } }
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	return body.Error.Code
}

// TestRateLimitHeadersInMemory: without a store, answers on a limited
// route carry the same x-ratelimit-*-requests headers.
func TestRateLimitHeadersInMemory(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(up.Close)
	y := strings.Replace(limitsConfig(up.URL, "", "local"), "limits:\n  store: { type: redis, url: \"\", timeout: 50ms, on_error: local }\n", "", 1)
	snap, err := Build(context.Background(), parse(t, y), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(snap.Close)
	var got []string
	for range 3 {
		rec := callKey(snap.Handler, keyA)
		got = append(got, fmt.Sprintf("%d %s/%s", rec.Code, rec.Header().Get("X-Ratelimit-Remaining-Requests"), rec.Header().Get("X-Ratelimit-Limit-Requests")))
	}
	if want := "[200 1/2 200 0/2 429 0/2]"; fmt.Sprint(got) != want {
		t.Errorf("answers %v, want %s", got, want)
	}
	if snap.Readiness().LimitsStore != nil {
		t.Error("readiness reports a limits store without one")
	}
}
