package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/modelgate/modelgate/credential/credtest"
	"github.com/modelgate/modelgate/gateway"
	"github.com/modelgate/modelgate/policy/idp"
	"github.com/modelgate/modelgate/test/fakeaad"
	"github.com/modelgate/modelgate/test/upstream"
)

// These tests run the real gateway against the fake Azure AD (package
// fakeaad) over HTTPS with its own test CA: the gateway fetches v1 and v2
// metadata and key sets, validates the access tokens clients present, and
// applies the routes' claim rules (issue 3, "Tests").

// Object ids the token routes name.
const (
	// adminsGroup is the group the groups route admits.
	adminsGroup = "6c1f0e2d-3b4a-4c5d-8e9f-0a1b2c3d4e5f"
	// allowedUser is the only oid the users route admits.
	allowedUser = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
)

// tokenConfig fronts one recording upstream with a route per kind of
// claim rule. contoso accepts both token versions (v1 tokens carry the App
// ID URI as aud, v2 tokens the client id); contoso-v2 accepts only the
// client id, which only v2 tokens carry.
const tokenConfig = `
server:
  listen: "{{.Listen}}"
  shutdown_timeout: 2s
admin:
  listen: "{{.Admin}}"
key_sets:
  partners:
    - id: acme
      key: ${PARTNER_KEY}
identity_providers:
  contoso:
    type: azure_ad
    tenant_id: "{{.Tenant}}"
    authority_host: "{{.Authority}}"
    audiences: ["api://modelgate", "{{.APIClientID}}"]
  contoso-v2:
    type: azure_ad
    tenant_id: "{{.Tenant}}"
    authority_host: "{{.Authority}}"
    audiences: ["{{.APIClientID}}"]
upstreams:
  model:
    url: "{{.Model}}/score"
    identity_headers: { oid: X-Caller-Oid, tid: X-Caller-Tid, appid: X-Caller-App, key_id: X-Caller-Key }
    auth: { type: key, key: "${UPSTREAM_KEY}" }
routes:
  - name: tokens
    path: /tokens
    upstream: model
    allow: [{ identity_provider: contoso }]
  - name: v2only
    path: /v2only
    upstream: model
    allow: [{ identity_provider: contoso-v2 }]
  - name: admins
    path: /admins
    upstream: model
    allow: [{ identity_provider: contoso, roles: [Score.Admin] }]
  - name: groups
    path: /groups
    upstream: model
    allow: [{ identity_provider: contoso, groups: ["{{.Group}}"] }]
  - name: alice
    path: /alice
    upstream: model
    allow: [{ identity_provider: contoso, users: ["{{.User}}"] }]
  - name: mixed
    path: /mixed
    upstream: model
    allow:
      - key_set: partners
      - identity_provider: contoso
        scopes: [Score.Invoke]
`

// tokenWorld is a gateway in front of one recording upstream, validating
// tokens from a fake Azure AD, with a fake clock for token times (the
// gateway's Deps.Now and the fake's minting clock).
type tokenWorld struct {
	t     *testing.T
	aad   *fakeaad.Server
	clock *credtest.Clock
	model *upstream.Server
	g     *testGateway

	mu     sync.Mutex
	minted []string // every token presented, for the leak checks
	bodies []string // every answer body
}

// newTokenWorld starts the fake Azure AD (setup runs before the gateway
// starts) and the gateway.
func newTokenWorld(t *testing.T, setup func(*fakeaad.Server)) *tokenWorld {
	t.Helper()
	aad := fakeaad.New(t)
	clock := credtest.NewClock(time.Now().Truncate(time.Second))
	aad.SetNow(clock.Now)
	if setup != nil {
		setup(aad)
	}
	model := upstream.New(t, upstreamKey)
	hc, _ := trustingClient(t, aad.CACertPEM())
	g := startGatewayWith(t, tokenConfig, vars{
		"Tenant": fakeaad.TenantID, "Authority": aad.URL(), "APIClientID": fakeaad.APIClientID,
		"Model": model.URL, "Group": adminsGroup, "User": allowedUser,
	}, nil, gateway.Deps{HTTPClient: hc, Now: clock.Now})
	w := &tokenWorld{t: t, aad: aad, clock: clock, model: model, g: g}
	t.Cleanup(w.assertNoLeaks)
	return w
}

// waitReady waits until both providers have their v1 and v2 keys.
func (w *tokenWorld) waitReady() {
	w.t.Helper()
	waitFor(w.t, 5*time.Second, "the identity providers' keys", func() bool {
		st, _, _ := readyz(w.t, w.g)
		return st == http.StatusOK
	})
}

// v1 and v2 return fresh claims of a valid v1 token (aud: the App ID URI)
// and v2 token (aud: the client id) for the configured tenant.
func (w *tokenWorld) v1() jwt.MapClaims { return w.aad.V1Claims("", fakeaad.APIAppIDURI) }
func (w *tokenWorld) v2() jwt.MapClaims { return w.aad.V2Claims("", fakeaad.APIClientID) }

// mint signs claims with the fake (see fakeaad.Mint) and records the token.
func (w *tokenWorld) mint(c jwt.MapClaims, opts ...fakeaad.MintOption) string {
	tok := w.aad.Mint(c, opts...)
	w.record(tok)
	return tok
}

func (w *tokenWorld) record(tok string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.minted = append(w.minted, tok)
	if parts := strings.Split(tok, "."); len(parts) == 3 && len(parts[2]) >= 16 {
		w.minted = append(w.minted, parts[2]) // the signature alone
	}
}

// send calls path with Authorization: authz (none when empty) and extra
// headers.
func (w *tokenWorld) send(path, authz string, extra http.Header) response {
	w.t.Helper()
	h := http.Header{}
	for k, v := range extra {
		h[k] = v
	}
	if authz != "" {
		h.Set("Authorization", authz)
	}
	resp := do(w.t, client(), w.g.URL, request{method: http.MethodPost, path: path + "/score", header: h, body: strings.NewReader(`{"x":1}`)})
	w.mu.Lock()
	w.bodies = append(w.bodies, string(resp.body))
	w.mu.Unlock()
	return resp
}

// assertNoLeaks checks that no presented token (nor its signature) reached
// a log line, an answer or the upstream, and that the client's key never
// reached the upstream.
func (w *tokenWorld) assertNoLeaks() {
	w.mu.Lock()
	secrets := append([]string{partnerKey}, w.minted...)
	bodies := strings.Join(w.bodies, "\n")
	w.mu.Unlock()
	assertNotIn(w.t, "the gateway's logs", w.g.Logs.String(), secrets)
	assertNotIn(w.t, "the answers", bodies, secrets)
	for _, r := range w.model.Requests() {
		var b strings.Builder
		for k, vs := range r.Header {
			b.WriteString(k + ": " + strings.Join(vs, ",") + "\n")
		}
		b.WriteString(r.RequestURI + "\n" + string(r.Body))
		assertNotIn(w.t, "a request the upstream received", b.String(), secrets)
	}
}

// encodeSegment base64url-encodes v as JSON, as a JWT header or payload.
func encodeSegment(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// tamper decodes segment i (0 header, 1 payload) of tok, lets edit change
// it and puts it back, keeping the other segments (and the signature) as
// they were.
func tamper(t testing.TB, tok string, i int, edit func(map[string]any)) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	parts[i] = encodeSegment(t, m)
	return strings.Join(parts, ".")
}

// TestTokenAttacksThroughGateway is the attack and edge table of issue 3,
// end to end: each token is presented to the gateway, which fetched the
// fake Azure AD's metadata and keys over HTTPS. Every attack is refused
// with 401, WWW-Authenticate error="invalid_token" and the JSON code
// invalid_credential; the audit line carries the reason; the upstream
// never hears of it. Valid v1 and v2 tokens are admitted.
func TestTokenAttacksThroughGateway(t *testing.T) {
	t.Parallel()
	w := newTokenWorld(t, nil)
	w.waitReady()
	kid := w.aad.CurrentKID()
	otherRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(w.aad.PublicKey(kid))
	if err != nil {
		t.Fatal(err)
	}
	publicPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	now := w.clock.Now()
	edit := func(c jwt.MapClaims, f func(jwt.MapClaims)) jwt.MapClaims { f(c); return c }
	algNone := func(alg string) func() string {
		return func() string {
			return fakeaad.RawToken(map[string]any{"alg": alg, "typ": "JWT", "kid": kid}, w.v1(), nil)
		}
	}

	tests := []struct {
		name  string
		path  string        // default /tokens
		token func() string // the bearer value
		// admit means 200; otherwise 401 with the audit reason and the
		// JSON error code (default invalid_credential).
		admit  bool
		reason string
		code   string
	}{
		{name: "v1 token admitted", token: func() string { return w.mint(w.v1()) }, admit: true},
		{name: "v2 token admitted", token: func() string { return w.mint(w.v2()) }, admit: true},
		{name: "v2 token admitted on the v2-only audience", path: "/v2only", token: func() string { return w.mint(w.v2()) }, admit: true},
		{name: "key with an unparsable x5c certificate admitted (n/e used)", token: func() string {
			return w.mint(w.v1(), fakeaad.WithKID(w.aad.LegacyKID()))
		}, admit: true},

		{name: "alg none", token: algNone("none"), reason: "alg_not_allowed"},
		{name: "alg None", token: algNone("None"), reason: "alg_not_allowed"},
		{name: "alg NONE", token: algNone("NONE"), reason: "alg_not_allowed"},
		{name: "alg nOnE", token: algNone("nOnE"), reason: "alg_not_allowed"},
		{name: "alg none with a signature", token: func() string {
			return fakeaad.RawToken(map[string]any{"alg": "none", "kid": kid}, w.v1(), []byte("signature-of-nothing"))
		}, reason: "alg_not_allowed"},
		{name: "HS256 signed with the RSA public key", token: func() string {
			return w.mint(w.v1(), fakeaad.WithKey(jwt.SigningMethodHS256, publicPEM, kid))
		}, reason: "alg_not_allowed"},
		{name: "HS256 signed with the public key's DER", token: func() string {
			return w.mint(w.v1(), fakeaad.WithKey(jwt.SigningMethodHS256, der, kid))
		}, reason: "alg_not_allowed"},
		{name: "RS256 header over an HS256 signature", token: func() string {
			return w.mint(w.v1(), fakeaad.WithKey(jwt.SigningMethodHS256, publicPEM, kid), fakeaad.WithHeader("alg", "RS256"))
		}, reason: "bad_signature"},
		{name: "tampered header", token: func() string {
			return tamper(t, w.mint(w.v1()), 0, func(h map[string]any) { h["typ"] = "at+jwt" })
		}, reason: "bad_signature"},
		{name: "tampered payload grants itself a role", path: "/admins", token: func() string {
			return tamper(t, w.mint(w.v1()), 1, func(c map[string]any) { c["roles"] = []string{"Score.Admin"} })
		}, reason: "bad_signature"},
		{name: "tampered payload moves exp", token: func() string {
			return tamper(t, w.mint(w.v1()), 1, func(c map[string]any) { c["exp"] = now.Add(48 * time.Hour).Unix() })
		}, reason: "bad_signature"},
		{name: "tampered signature", token: func() string {
			tok := w.mint(w.v1())
			i := strings.LastIndexByte(tok, '.') + 20
			c := byte('A')
			if tok[i] == 'A' {
				c = 'B'
			}
			return tok[:i] + string(c) + tok[i+1:]
		}, reason: "bad_signature"},
		{name: "missing signature", token: func() string {
			tok := w.mint(w.v1())
			return tok[:strings.LastIndexByte(tok, '.')+1]
		}, reason: "bad_signature"},
		{name: "signature of another token", token: func() string {
			a, b := w.mint(w.v1()), w.mint(w.v2())
			return a[:strings.LastIndexByte(a, '.')] + b[strings.LastIndexByte(b, '.'):]
		}, reason: "bad_signature"},
		{name: "unknown kid", token: func() string {
			return w.mint(w.v1(), fakeaad.WithKey(jwt.SigningMethodRS256, otherRSA, "unknown-kid-2b7e151628aed2a6"))
		}, reason: "unknown_key"},
		{name: "no kid", token: func() string {
			return w.mint(w.v1(), fakeaad.WithHeader("kid", nil))
		}, reason: "unknown_key"},
		{name: "right kid, wrong key", token: func() string {
			return w.mint(w.v1(), fakeaad.WithKey(jwt.SigningMethodRS256, otherRSA, kid))
		}, reason: "bad_signature"},
		{name: "ES256", token: func() string {
			return w.mint(w.v1(), fakeaad.WithKey(jwt.SigningMethodES256, ecKey, kid))
		}, reason: "alg_not_allowed"},
		{name: "PS256 with the fake's own key", token: func() string {
			return w.mint(w.v1(), fakeaad.WithKey(jwt.SigningMethodPS256, otherRSA, kid))
		}, reason: "alg_not_allowed"},
		{name: "jku header pointing elsewhere", token: func() string {
			return w.mint(w.v1(), fakeaad.WithHeader("jku", "https://attacker.example/keys"))
		}, reason: "header_not_allowed"},
		{name: "embedded jwk header", token: func() string {
			return w.mint(w.v1(), fakeaad.WithHeader("jwk", map[string]any{"kty": "RSA", "n": "AQAB", "e": "AQAB"}))
		}, reason: "header_not_allowed"},
		{name: "empty bearer", token: func() string { return "" }, reason: "no_credential", code: "missing_credential"},
		{name: "extra segments", token: func() string {
			tok := w.mint(w.v1())
			return tok + "." + tok[strings.LastIndexByte(tok, '.')+1:]
		}, reason: "token_malformed"},
		{name: "non-base64 payload", token: func() string {
			return encodeSegment(t, map[string]any{"alg": "RS256", "kid": kid}) + ".eyJ!!not*base64~~.c2lnbmF0dXJl"
		}, reason: "token_malformed"},
		{name: "payload not JSON", token: func() string {
			return encodeSegment(t, map[string]any{"alg": "RS256", "kid": kid}) + "." +
				base64.RawURLEncoding.EncodeToString([]byte("not json")) + ".c2lnbmF0dXJl"
		}, reason: "token_malformed"},
		{name: "oversized", token: func() string {
			return w.mint(edit(w.v1(), func(c jwt.MapClaims) { c["pad"] = strings.Repeat("x", idp.MaxTokenSize) }))
		}, reason: "token_too_large"},
		{name: "exp missing", token: func() string {
			return w.mint(edit(w.v1(), func(c jwt.MapClaims) { delete(c, "exp") }))
		}, reason: "missing_exp"},
		{name: "exp a string", token: func() string {
			return w.mint(edit(w.v1(), func(c jwt.MapClaims) { c["exp"] = "4102444800" }))
		}, reason: "token_malformed"},
		{name: "expired", token: func() string {
			return w.mint(edit(w.v1(), func(c jwt.MapClaims) {
				c["iat"], c["nbf"], c["exp"] = now.Add(-3*time.Hour).Unix(), now.Add(-3*time.Hour).Unix(), now.Add(-2*time.Hour).Unix()
			}))
		}, reason: "token_expired"},
		{name: "expired beyond the leeway by seconds", token: func() string {
			return w.mint(edit(w.v1(), func(c jwt.MapClaims) { c["exp"] = now.Add(-idp.DefaultLeeway - 5*time.Second).Unix() }))
		}, reason: "token_expired"},
		{name: "future nbf", token: func() string {
			return w.mint(edit(w.v1(), func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() }))
		}, reason: "token_not_yet_valid"},
		{name: "future iat", token: func() string {
			return w.mint(edit(w.v1(), func(c jwt.MapClaims) { c["iat"] = now.Add(time.Hour).Unix() }))
		}, reason: "token_used_before_issued"},
		{name: "wrong iss", token: func() string {
			return w.mint(edit(w.v1(), func(c jwt.MapClaims) { c["iss"] = "https://sts.windows.net/" + fakeaad.OtherTenantID + "/" }))
		}, reason: "wrong_issuer"},
		{name: "v2 issuer on a v1 token", token: func() string {
			return w.mint(edit(w.v1(), func(c jwt.MapClaims) { c["iss"] = fakeaad.IssuerV2(fakeaad.TenantID) }))
		}, reason: "wrong_issuer"},
		{name: "wrong aud", token: func() string {
			return w.mint(w.aad.V1Claims("", "api://someone-else"))
		}, reason: "wrong_audience"},
		{name: "other tenant", token: func() string {
			return w.mint(w.aad.V1Claims(fakeaad.OtherTenantID, fakeaad.APIAppIDURI))
		}, reason: "tenant_not_allowed"},
		{name: "v1 token against a v2-only audience", path: "/v2only", token: func() string {
			return w.mint(w.v1())
		}, reason: "wrong_audience"},
		{name: "ID token (no appid)", token: func() string {
			return w.mint(edit(w.v1(), func(c jwt.MapClaims) { delete(c, "appid") }))
		}, reason: "not_access_token"},
		{name: "unknown token version", token: func() string {
			return w.mint(edit(w.v1(), func(c jwt.MapClaims) { c["ver"] = "3.0" }))
		}, reason: "unsupported_token_version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path
			if path == "" {
				path = "/tokens"
			}
			tok := tt.token()
			w.record(tok)
			before := w.model.Count()
			resp := w.send(path, "Bearer "+tok, nil)
			if tt.admit {
				if resp.status != http.StatusOK {
					t.Fatalf("status = %d, want 200: %s", resp.status, resp.body)
				}
				last, _ := w.model.Last()
				if got := last.Header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+upstreamKey {
					t.Error("the upstream did not receive exactly its own key")
				}
				line := w.g.requestLine(t, resp.header.Get("X-Request-Id"))
				if line["decision"] != "admit" || line["auth"] != "token" {
					t.Errorf("audit line %v, want an admitted token", line)
				}
				return
			}
			code := tt.code
			if code == "" {
				code = "invalid_credential"
			}
			assertRefused(t, w.g, resp, http.StatusUnauthorized, code, "invalid_token", tt.reason)
			if n := w.model.Count() - before; n != 0 {
				t.Errorf("the upstream received %d requests for a refused token", n)
			}
		})
	}
}
