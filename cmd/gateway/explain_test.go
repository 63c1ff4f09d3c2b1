package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelgate/modelgate/test/fakeaad"
)

// TestExplainOffline: a token from "last Tuesday" is judged as of then, with
// a saved key set and no network: admitted then, refused (expired) now, and
// refused for a missing role with the rule and reason named.
func TestExplainOffline(t *testing.T) {
	aad := fakeaad.New(t)
	tuesday := time.Date(2026, 11, 17, 9, 0, 0, 0, time.UTC)
	aad.SetNow(func() time.Time { return tuesday })
	dir := t.TempDir()
	jwks := filepath.Join(dir, "keys.json")
	if err := aad.WriteJWKS(jwks); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "gw.yaml")
	if err := os.WriteFile(cfg, []byte(`
identity_providers:
  contoso:
    type: azure_ad
    tenant_id: `+fakeaad.TenantID+`
    audiences: ["`+fakeaad.APIAppIDURI+`"]
upstreams:
  fraud: { url: "http://127.0.0.1:1", auth: { type: none } }
routes:
  - name: fraud
    path: /fraud
    upstream: fraud
    allow:
      - identity_provider: contoso
        roles: [Score.Invoke]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	withRole := aad.V1Claims("", fakeaad.APIAppIDURI)
	withRole["roles"] = []string{"Score.Invoke"}
	good := aad.Mint(withRole)
	noRole := aad.Mint(aad.V1Claims("", fakeaad.APIAppIDURI))
	tokenFile := filepath.Join(dir, "token.txt")
	if err := os.WriteFile(tokenFile, []byte(good+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		args     []string
		wantExit int
		want     []string
	}{
		{"admitted as of then", []string{"-token", good, "-at", "2026-11-17T09:30:00Z"}, 0,
			[]string{"route:      fraud", "ADMITTED (admitted)", "decision:   ADMITTED by allow[0] identity_provider=contoso as token:contoso/" + fakeaad.TenantID}},
		{"token from a file", []string{"-token", "@" + tokenFile, "-at", "2026-11-17T09:30:00Z"}, 0, []string{"decision:   ADMITTED"}},
		{"expired now", []string{"-token", good}, 1, []string{"refused (token_expired)", "REFUSED 401 invalid_credential, reason token_expired"}},
		{"before it was valid", []string{"-token", good, "-at", "2026-11-17T08:00:00Z"}, 1, []string{"token_not_yet_valid"}},
		{"missing role", []string{"-token", noRole, "-at", "2026-11-17T09:30:00Z"}, 1,
			[]string{"refused (missing_role)", "Score.Invoke", "REFUSED 403 forbidden"}},
		{"a key on a token route", []string{"-key", "mgk_not-a-token-0123456789"}, 1, []string{"credential: API key", "REFUSED 401"}},
		{"no route", []string{"-token", good, "-path", "/nowhere"}, 1, []string{"route: none serves"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"explain", "-config", cfg, "-path", "/fraud/score", "-jwks", jwks}, tt.args...)
			var out, errb bytes.Buffer
			err := run(context.Background(), args, &out, &errb)
			exit := 0
			var ee exitError
			if errors.As(err, &ee) {
				exit = int(ee)
			} else if err != nil {
				t.Fatalf("run: %v", err)
			}
			if exit != tt.wantExit {
				t.Errorf("exit %d, want %d\n%s%s", exit, tt.wantExit, out.String(), errb.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if aad.TotalRequests() != 0 {
				t.Errorf("explain -jwks fetched from the identity provider (%d requests)", aad.TotalRequests())
			}
		})
	}
}

// TestExplainKeyOffline: explaining a key decision on a configuration whose
// upstreams take Azure-fetched credentials and whose identity provider
// fetches keys makes no network call at all (every Azure and issuer URL
// points at a listener that counts connections), and needs none of those
// credentials' secrets: only the key sets'.
func TestExplainKeyOffline(t *testing.T) {
	spy, conns := connectionSpy(t)
	key := "mgk_explain-offline-key-0123456789"
	t.Setenv("EXPLAIN_PARTNER_KEY", key)
	// EXPLAIN_SP_SECRET and EXPLAIN_UPSTREAM_KEY are deliberately not set,
	// and the shell's OTEL_* settings (here a wrong one) do not matter.
	t.Setenv("OTEL_TRACES_EXPORTER", "zipkin")
	cfg := filepath.Join(t.TempDir(), "gw.yaml")
	if err := os.WriteFile(cfg, []byte(`
identity_providers:
  corp:
    type: oidc
    issuer: `+spy+`/corp
    audiences: [api://scoring]
credentials:
  sp:
    type: client_secret
    tenant_id: 72f988bf-86f1-41af-91ab-2d7cd011db47
    client_id: 11111111-2222-3333-4444-555555555555
    client_secret: ${EXPLAIN_SP_SECRET}
    authority_host: `+strings.Replace(spy, "http:", "https:", 1)+`
key_sets:
  partners:
    - id: acme
      key: ${EXPLAIN_PARTNER_KEY}
upstreams:
  churn:
    url: `+spy+`/churn
    auth:
      type: aml_service_token
      credential: sp
      service: churn
      workspace: { subscription_id: sub, resource_group: rg, name: ws, api_host: "`+spy+`" }
  fraud:
    url: `+spy+`/fraud
    auth: { type: key, key: "${EXPLAIN_UPSTREAM_KEY}" }
routes:
  - name: churn
    path: /churn
    upstream: churn
    allow:
      - key_set: partners
      - identity_provider: corp
  - name: fraud
    path: /fraud
    upstream: fraud
    allow:
      - key_set: partners
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/churn/score", "/fraud/score"} {
		var out, errb bytes.Buffer
		err := run(context.Background(), []string{"explain", "-config", cfg, "-path", path, "-key", key}, &out, &errb)
		if err != nil {
			t.Fatalf("explain %s: %v\n%s%s", path, err, out.String(), errb.String())
		}
		if !strings.Contains(out.String(), "decision:   ADMITTED by allow[0] key_set=partners as key:partners/acme") {
			t.Errorf("explain %s:\n%s", path, out.String())
		}
	}
	// Anything started in the background would have dialled by now.
	time.Sleep(100 * time.Millisecond)
	if n := conns.Load(); n != 0 {
		t.Errorf("explain -key made %d network connections, want 0", n)
	}
}

// TestExplainEscapesTokenFields: explain prints fields of a token it has not
// verified; a kid that clears the terminal or an issuer with a newline must
// not reach the terminal raw (issue 10, item 14).
func TestExplainEscapesTokenFields(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gw.yaml")
	if err := os.WriteFile(cfg, []byte(`
identity_providers:
  corp:
    type: oidc
    issuer: https://issuer.example.com/
    jwks_uri: https://issuer.example.com/keys
    audiences: [api://scoring]
upstreams:
  fraud: { url: "http://127.0.0.1:1", auth: { type: none } }
routes:
  - name: fraud
    path: /fraud
    upstream: fraud
    allow:
      - identity_provider: corp
`), 0o600); err != nil {
		t.Fatal(err)
	}
	jwks := filepath.Join(dir, "keys.json")
	if err := fakeaad.New(t).WriteJWKS(jwks); err != nil {
		t.Fatal(err)
	}
	enc := func(v string) string { return base64.RawURLEncoding.EncodeToString([]byte(v)) }
	tok := enc(`{"alg":"RS256","kid":"\u001b[2J\u001b[H"}`) + "." +
		enc(`{"iss":"https://evil.example/\ndecision:   ADMITTED by allow[0]","aud":"api://scoring","exp":4102444800,"roles":["a\u0007b"]}`) + "." + enc("sig")
	var out, errb bytes.Buffer
	_ = run(context.Background(), []string{"explain", "-config", cfg, "-path", "/fraud/x", "-jwks", jwks, "-token", tok}, &out, &errb)
	got := out.String() + errb.String()
	for _, r := range got {
		if r < 0x20 && r != '\n' || r == 0x7f {
			t.Fatalf("explain printed control character %q:\n%q", r, got)
		}
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "decision:   ADMITTED") {
			t.Errorf("a token field forged a line: %q", line)
		}
	}
	if !strings.Contains(got, `\x1b[2J`) || !strings.Contains(got, `\ndecision:`) {
		t.Errorf("escaped fields should still be readable:\n%s", got)
	}
}

// TestExplainHostWithPort: a Host header with a port matches the route as
// serve matches it (issue 10, item 20).
func TestExplainHostWithPort(t *testing.T) {
	key := "mgk_explain-host-key-0123456789abc"
	t.Setenv("EXPLAIN_HOST_KEY", key)
	cfg := filepath.Join(t.TempDir(), "gw.yaml")
	if err := os.WriteFile(cfg, []byte(`
key_sets:
  partners: [{ id: acme, key: "${EXPLAIN_HOST_KEY}" }]
upstreams:
  fraud: { url: "http://127.0.0.1:1", auth: { type: none } }
routes:
  - name: fraud
    host: models.example.com
    path: /fraud
    upstream: fraud
    allow: [{ key_set: partners }]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"models.example.com", "Models.Example.com:443", "models.example.com."} {
		var out, errb bytes.Buffer
		if err := run(context.Background(), []string{"explain", "-config", cfg, "-host", host, "-path", "/fraud/x", "-key", key}, &out, &errb); err != nil {
			t.Errorf("host %q: %v\n%s%s", host, err, out.String(), errb.String())
		}
	}
}

// TestExplainPoolBackends: on a route whose upstream is a pool, explain
// names the backends selection would use, by priority with their weights,
// the weight-0 standbys and the mirror; it still makes no network call (the
// backends' URLs, token service and health check all point at a listener
// that counts connections) and needs none of the backends' secrets.
func TestExplainPoolBackends(t *testing.T) {
	spy, conns := connectionSpy(t)
	key := "mgk_explain-pool-key-0123456789abc"
	t.Setenv("EXPLAIN_POOL_PARTNER_KEY", key)
	// EXPLAIN_POOL_SP_SECRET and EXPLAIN_POOL_KEY are deliberately not set.
	cfg := filepath.Join(t.TempDir(), "gw.yaml")
	ws := `{ subscription_id: sub, resource_group: rg, name: ws, api_host: "` + spy + `" }`
	if err := os.WriteFile(cfg, []byte(`
credentials:
  sp:
    type: client_secret
    tenant_id: 72f988bf-86f1-41af-91ab-2d7cd011db47
    client_id: 11111111-2222-3333-4444-555555555555
    client_secret: ${EXPLAIN_POOL_SP_SECRET}
    authority_host: `+strings.Replace(spy, "http:", "https:", 1)+`
key_sets:
  partners:
    - id: acme
      key: ${EXPLAIN_POOL_PARTNER_KEY}
upstreams:
  churn:
    backends:
      - { name: neu, url: "`+spy+`/neu", priority: 2, auth: { type: aml_service_token, credential: sp, service: churn, workspace: `+ws+` } }
      - { name: weu, url: "`+spy+`/weu", weight: 3, auth: { type: aml_service_token, credential: sp, service: churn, workspace: `+ws+` } }
      - { name: moe-canary, url: "`+spy+`/moe", weight: 0, auth: { type: key, key: "${EXPLAIN_POOL_KEY}" } }
      - { name: cold, url: "`+spy+`/cold", weight: 0, priority: 3, auth: { type: none } }
      - { name: weu2, url: "`+spy+`/weu2", auth: { type: none } }
    health_check: { path: /, interval: 1s }
    mirror: { backend: moe-canary, percent: 10 }
  fraud:
    url: `+spy+`/fraud
    auth: { type: none }
routes:
  - { name: churn, path: /churn, upstream: churn, allow: [{ key_set: partners }] }
  - { name: fraud, path: /fraud, upstream: fraud, allow: [{ key_set: partners }] }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		want       string // the backends line; "" for none
	}{
		{"pool", "/churn/score", "backends:   weu (priority 1, weight 3), weu2 (priority 1, weight 1), neu (priority 2, weight 1); standby (weight 0): cold; mirror moe-canary 10%\n"},
		{"single upstream", "/fraud/score", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := run(context.Background(), []string{"explain", "-config", cfg, "-path", tt.path, "-key", key}, &out, &errb)
			if err != nil {
				t.Fatalf("explain: %v\n%s%s", err, out.String(), errb.String())
			}
			got := out.String()
			if tt.want == "" && strings.Contains(got, "backends:") {
				t.Errorf("a single upstream has a backends line:\n%s", got)
			}
			if tt.want != "" && !strings.Contains(got, "\n"+tt.want) {
				t.Errorf("output lacks %q:\n%s", tt.want, got)
			}
			if !strings.Contains(got, "decision:   ADMITTED by allow[0] key_set=partners as key:partners/acme") {
				t.Errorf("decision:\n%s", got)
			}
		})
	}
	// A health check or credential fetch started in the background would
	// have dialled by now.
	time.Sleep(100 * time.Millisecond)
	if n := conns.Load(); n != 0 {
		t.Errorf("explain made %d network connections, want 0", n)
	}
}

// connectionSpy listens on loopback and counts the connections made to it;
// it returns its http:// base URL. Point every URL a command could fetch at
// it to prove the command fetches nothing.
func connectionSpy(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := new(atomic.Int32)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return "http://" + ln.Addr().String(), conns
}
