package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestRateLimit429: the per-identity limit answers 429 with Retry-After and
// the JSON error, per caller; other callers are unaffected.
func TestRateLimit429(t *testing.T) {
	up := emptyUpstream(t)
	const a, b = "mgk_caller-a-0123456789abcdef", "mgk_caller-b-0123456789abcdef"
	y := `
key_sets:
  s:
    - { id: a, sha256: "` + sha(a) + `" }
    - { id: b, sha256: "` + sha(b) + `" }
upstreams:
  u: { url: "` + up.URL + `", auth: { type: none } }
routes:
  - name: r
    path: /
    upstream: u
    allow: [{ key_set: s }]
    rate_limit: { per_identity: 2/m, burst: 2 }
`
	now := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	snap, err := Build(context.Background(), parse(t, y), Deps{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(snap.Close)
	call := func(key string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/score", strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer "+key)
		rec := httptest.NewRecorder()
		snap.Handler.ServeHTTP(rec, req)
		return rec
	}
	for i := range 2 {
		if rec := call(a); rec.Code != 200 {
			t.Fatalf("request %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	rec := call(a)
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("third request: %d, want 429", rec.Code)
	}
	if ra := rec.Header().Get("Retry-After"); ra != "30" {
		t.Errorf("Retry-After = %q, want 30 (2/m refills one request every 30 s)", ra)
	}
	var body struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error.Code != "rate_limited" {
		t.Errorf("body = %s", rec.Body)
	}
	if rec := call(b); rec.Code != 200 {
		t.Errorf("another caller was limited: %d", rec.Code)
	}
	now = now.Add(30 * time.Second)
	if rec := call(a); rec.Code != 200 {
		t.Errorf("after Retry-After: %d", rec.Code)
	}
}
