package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestCheckPrintsPools: `gateway check` prints each pool with its backends'
// priorities, weights, URLs and auth types, and the retry, breaker, health
// check and mirror settings in force, defaults applied; the route table
// still has one row per route, and no secret is printed.
func TestCheckPrintsPools(t *testing.T) {
	t.Setenv("POOL_NEU_KEY", "neu-key-0123456789abcdef")
	p := filepath.Join(t.TempDir(), "gw.yaml")
	if err := os.WriteFile(p, []byte(`
upstreams:
  churn:
    backends:
      - { name: weu, url: "http://10.0.0.4/api/v1/service/churn", auth: { type: none }, weight: 3 }
      - { name: neu, url: "https://10.1.0.4/api/v1/service/churn", auth: { type: key, key: "${POOL_NEU_KEY}" }, priority: 2 }
      - { name: canary, url: "http://10.2.0.4/score", auth: { type: none }, weight: 0 }
      - { name: parked, url: "http://10.3.0.4/score", auth: { type: none }, weight: 0, priority: 3 }
    retry: { attempts: 3, on: [connect_error, 502], per_try_timeout: 20s }
    circuit_breaker: { consecutive_failures: 2, max_open_for: 2h }
    health_check: { path: /healthz, interval: 1s }
    mirror: { backend: canary, percent: 5 }
  solo:
    backends:
      - { name: only, url: "http://10.9.0.1", auth: { type: none } }
  unused:
    backends:
      - { name: a, url: "http://10.8.0.1", auth: { type: none } }
routes:
  - { name: churn, path: /churn, upstream: churn, public: true }
  - { name: solo, path: /solo, upstream: solo, public: true }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"check", "-config", p}, &out, &errb); err != nil {
		t.Fatalf("check: %v\n%s", err, errb.String())
	}
	got := out.String()
	for _, want := range []string{
		// The route table names the pool and its backends' auth types.
		`(?m)^churn +\* +/churn +churn \(pool of 4, see POOLS\) +none,key +everyone`,
		`(?m)^POOL churn$`,
		`(?m)^  BACKEND +PRIORITY +WEIGHT +URL +AUTH$`,
		`(?m)^  weu +1 +3 +http://10\.0\.0\.4/api/v1/service/churn +none$`,
		`(?m)^  neu +2 +1 +https://10\.1\.0\.4/api/v1/service/churn +key$`,
		`(?m)^  canary +1 +0 \(no normal traffic\) +http://10\.2\.0\.4/score +none$`,
		`(?m)^  parked +3 +0 \(no normal traffic\) +http://10\.3\.0\.4/score +none$`,
		`(?m)^  retry: +up to 3 tries per request, retried on connect_error, 502, per try 20s$`,
		`(?m)^  circuit breaker: open after 2 consecutive failures for 30s; a backend's Retry-After kept at most 2h$`,
		`(?m)^  health check: +GET /healthz every 1s, timeout 1s, healthy \[200\]$`,
		`(?m)^  mirror: +5% of buffered requests to canary, at most 16 in flight$`,
		// Defaults: one weighted backend gets one try; no health check, no mirror.
		`(?m)^POOL solo$`,
		`(?m)^  only +1 +1 +http://10\.9\.0\.1 +none$`,
		`(?m)^  retry: +1 try per request \(no retry\)$`,
		`(?m)^  circuit breaker: open after 5 consecutive failures for 30s; a backend's Retry-After kept at most 10m$`,
		`(?m)^  health check: +none \(the breaker learns from requests only\)$`,
		`(?m)^  mirror: +none$`,
		`(?m)^POOL unused: not used by any route$`,
	} {
		if !regexp.MustCompile(want).MatchString(got) {
			t.Errorf("output lacks %s:\n%s", want, got)
		}
	}
	if strings.Contains(got+errb.String(), "neu-key-0123456789abcdef") {
		t.Error("check printed a backend's key")
	}
}
