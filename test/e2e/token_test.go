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
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/credential/credtest"
	"github.com/modelgate/modelgate/gateway"
	"github.com/modelgate/modelgate/idp"
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
// client id, which only v2 tokens carry. partner-orgs is multi-tenant
// (organizations) and admits only the other tenant.
func tokenConfig(authority, model string) *cfgBuilder {
	azureAD := func(tenant string, audiences ...string) []string {
		return []string{"type: azure_ad", "tenant_id: " + strconv.Quote(tenant), "authority_host: " + strconv.Quote(authority), "audiences: " + yamlList(audiences...)}
	}
	contoso := "identity_provider: contoso"
	return newConfig().Server("shutdown_timeout: 2s").Partners().
		IdentityProvider("contoso", azureAD(fakeaad.TenantID, "api://modelgate", fakeaad.APIClientID)...).
		IdentityProvider("contoso-v2", azureAD(fakeaad.TenantID, fakeaad.APIClientID)...).
		IdentityProvider("partner-orgs", append(azureAD("organizations", "api://modelgate", fakeaad.APIClientID),
			"allowed_tenants: "+yamlList(fakeaad.OtherTenantID))...).
		Upstream("model", model+"/score", upstreamKeyAuth,
			"identity_headers: { oid: X-Caller-Oid, tid: X-Caller-Tid, appid: X-Caller-App, key_id: X-Caller-Key }").
		Route("tokens", "/tokens", "model", contoso).
		Route("v2only", "/v2only", "model", "identity_provider: contoso-v2").
		Route("admins", "/admins", "model", contoso+", roles: [Score.Admin]").
		Route("groups", "/groups", "model", contoso+", groups: "+yamlList(adminsGroup)).
		Route("alice", "/alice", "model", contoso+", users: "+yamlList(allowedUser)).
		Route("multi", "/multi", "model", "identity_provider: partner-orgs").
		Route("mixed", "/mixed", "model", allowPartners, contoso+", scopes: [Score.Invoke]")
}

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
	g := startGatewayWith(t, tokenConfig(aad.URL(), model.URL), nil, gateway.Deps{HTTPClient: hc, Now: clock.Now})
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
		{name: "multi-tenant: allowed tenant's v1 token admitted", path: "/multi", token: func() string {
			return w.mint(w.aad.V1Claims(fakeaad.OtherTenantID, fakeaad.APIAppIDURI))
		}, admit: true},
		{name: "multi-tenant: allowed tenant's v2 token admitted", path: "/multi", token: func() string {
			return w.mint(w.aad.V2Claims(fakeaad.OtherTenantID, fakeaad.APIClientID))
		}, admit: true},
		{name: "multi-tenant: tenant not allowed", path: "/multi", token: func() string {
			return w.mint(w.v2())
		}, reason: "tenant_not_allowed"},
		{name: "multi-tenant: iss names another tenant than tid", path: "/multi", token: func() string {
			return w.mint(edit(w.aad.V1Claims(fakeaad.OtherTenantID, fakeaad.APIAppIDURI), func(c jwt.MapClaims) {
				c["iss"] = fakeaad.IssuerV1(fakeaad.TenantID)
			}))
		}, reason: "wrong_issuer"},
		{name: "multi-tenant: iss is the unsubstituted template", path: "/multi", token: func() string {
			return w.mint(edit(w.aad.V2Claims(fakeaad.OtherTenantID, fakeaad.APIClientID), func(c jwt.MapClaims) {
				c["iss"] = fakeaad.IssuerV2("{tenantid}")
			}))
		}, reason: "wrong_issuer"},
		{name: "multi-tenant: tid not a GUID", path: "/multi", token: func() string {
			return w.mint(w.aad.V1Claims("contoso.onmicrosoft.com", fakeaad.APIAppIDURI))
		}, reason: "invalid_tenant_id"},
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

// TestTokenClaimRulesThroughGateway: a valid token that a route's claim
// rule does not admit is refused with 403, error="insufficient_scope" and
// the rule's reason; a token with a groups overage has unknown groups and
// is refused by a groups rule with reason groups_unknown (never read as
// "no groups"); users are matched on oid only, never on upn or
// preferred_username.
func TestTokenClaimRulesThroughGateway(t *testing.T) {
	t.Parallel()
	w := newTokenWorld(t, nil)
	w.waitReady()
	edit := func(c jwt.MapClaims, f func(jwt.MapClaims)) jwt.MapClaims { f(c); return c }
	overage := func(c jwt.MapClaims) {
		delete(c, "groups")
		c["_claim_names"] = map[string]any{"groups": "src1"}
		c["_claim_sources"] = map[string]any{"src1": map[string]any{
			"endpoint": "https://graph.windows.net/" + fakeaad.TenantID + "/users/" + fakeaad.UserObjectID + "/getMemberObjects"}}
	}
	tests := []struct {
		name   string
		path   string
		claims jwt.MapClaims
		reason string // "" admits
	}{
		{"role present", "/admins", edit(w.v1(), func(c jwt.MapClaims) { c["roles"] = []string{"Score.Admin"} }), ""},
		{"role missing", "/admins", w.v1(), "missing_role"},
		{"other role only", "/admins", edit(w.v2(), func(c jwt.MapClaims) { c["roles"] = []string{"Score.Invoke"} }), "missing_role"},
		{"member of the group", "/groups", edit(w.v1(), func(c jwt.MapClaims) { c["groups"] = []string{adminsGroup} }), ""},
		{"not in the group", "/groups", edit(w.v1(), func(c jwt.MapClaims) { c["groups"] = []string{allowedUser} }), "not_in_group"},
		{"groups overage (v1)", "/groups", edit(w.v1(), overage), "groups_unknown"},
		{"groups overage (v2)", "/groups", edit(w.v2(), overage), "groups_unknown"},
		{"hasgroups overage", "/groups", edit(w.v1(), func(c jwt.MapClaims) { c["hasgroups"] = true }), "groups_unknown"},
		{"admitted oid", "/alice", edit(w.v1(), func(c jwt.MapClaims) { c["oid"] = allowedUser }), ""},
		{"upn holds the admitted oid", "/alice", edit(w.v1(), func(c jwt.MapClaims) {
			c["upn"], c["unique_name"] = allowedUser, allowedUser
		}), "user_not_allowed"},
		{"preferred_username holds the admitted oid", "/alice", edit(w.v2(), func(c jwt.MapClaims) { c["preferred_username"] = allowedUser }), "user_not_allowed"},
		{"scope present (mixed route)", "/mixed", w.v1(), ""},
		{"scope missing (mixed route)", "/mixed", edit(w.v1(), func(c jwt.MapClaims) { c["scp"] = "User.Read" }), "missing_scope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := w.send(tt.path, "Bearer "+w.mint(tt.claims), nil)
			if tt.reason == "" {
				if resp.status != http.StatusOK {
					t.Fatalf("status = %d, want 200: %s", resp.status, resp.body)
				}
				return
			}
			assertRefused(t, w.g, resp, http.StatusForbidden, "forbidden", "insufficient_scope", tt.reason)
		})
	}

	// The configuration refuses to match users by name at all.
	t.Run("users rule naming a upn is a config error", func(t *testing.T) {
		const cfg = `
identity_providers:
  contoso: { type: azure_ad, tenant_id: "` + fakeaad.TenantID + `", audiences: [api://modelgate] }
upstreams:
  m: { url: "http://127.0.0.1:1", auth: { type: none } }
routes:
  - name: r
    path: /r
    upstream: m
    allow: [{ identity_provider: contoso, users: ["` + fakeaad.UserPrincipalName + `"] }]
`
		_, err := config.Parse("users.yaml", []byte(cfg), func(string) (string, bool) { return "", false })
		if err == nil || !strings.Contains(err.Error(), "users") {
			t.Fatalf("config.Parse = %v, want an error about users naming a upn", err)
		}
	})
}

// TestTokenAndKeyOnOneRoute: one route admits a key set and tokens; a key
// and a token are each admitted, and the audit line names the identity
// (the key's id, or the token's provider, tenant and oid) and the rule that
// admitted it.
func TestTokenAndKeyOnOneRoute(t *testing.T) {
	t.Parallel()
	w := newTokenWorld(t, nil)
	w.waitReady()
	tests := []struct {
		name, authz          string
		auth, identity, rule string
	}{
		{"key", "Bearer " + partnerKey, "key", "key:partners/acme", "allow[0] key_set=partners"},
		{"v1 token", "Bearer " + w.mint(w.v1()), "token",
			"token:contoso/" + fakeaad.TenantID + "/" + fakeaad.UserObjectID, "allow[1] identity_provider=contoso"},
		{"v2 token", "Bearer " + w.mint(w.v2()), "token",
			"token:contoso/" + fakeaad.TenantID + "/" + fakeaad.UserObjectID, "allow[1] identity_provider=contoso"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := w.send("/mixed", tt.authz, nil)
			if resp.status != http.StatusOK {
				t.Fatalf("status = %d: %s", resp.status, resp.body)
			}
			line := w.g.requestLine(t, resp.header.Get("X-Request-Id"))
			if line["decision"] != "admit" || line["auth"] != tt.auth || line["identity"] != tt.identity || line["rule"] != tt.rule {
				t.Errorf("audit line decision=%v auth=%v identity=%v rule=%v, want admit %s %s %s",
					line["decision"], line["auth"], line["identity"], line["rule"], tt.auth, tt.identity, tt.rule)
			}
		})
	}
	// An unknown key on the same route is still a 401 for a key.
	resp := w.send("/mixed", "Bearer mgk_not-a-key-0123456789abcdef", nil)
	assertRefused(t, w.g, resp, http.StatusUnauthorized, "invalid_credential", "invalid_token", "unknown_key")
}

// TestTokenIdentityHeaders: an upstream with identity_headers receives the
// caller's oid, tid and client app from the token (or the key id for a
// key), and client-sent headers of those names never pass: a spoofed value
// is replaced, or removed when the identity has no such field.
func TestTokenIdentityHeaders(t *testing.T) {
	t.Parallel()
	w := newTokenWorld(t, nil)
	w.waitReady()
	spoof := http.Header{
		"X-Caller-Oid": {allowedUser},
		"X-Caller-Tid": {fakeaad.OtherTenantID},
		"X-Caller-App": {"spoofed-app"},
		"X-Caller-Key": {"spoofed-key"},
	}
	tests := []struct {
		name  string
		authz string
		spoof http.Header
		want  map[string]string // header → value; "" means absent
	}{
		{"v1 token", "Bearer " + w.mint(w.v1()), nil, map[string]string{
			"X-Caller-Oid": fakeaad.UserObjectID, "X-Caller-Tid": fakeaad.TenantID, "X-Caller-App": fakeaad.ClientAppID, "X-Caller-Key": ""}},
		{"v2 token (azp)", "Bearer " + w.mint(w.v2()), nil, map[string]string{
			"X-Caller-Oid": fakeaad.UserObjectID, "X-Caller-Tid": fakeaad.TenantID, "X-Caller-App": fakeaad.ClientAppID, "X-Caller-Key": ""}},
		{"token with spoofed headers", "Bearer " + w.mint(w.v1()), spoof, map[string]string{
			"X-Caller-Oid": fakeaad.UserObjectID, "X-Caller-Tid": fakeaad.TenantID, "X-Caller-App": fakeaad.ClientAppID, "X-Caller-Key": ""}},
		{"key with spoofed headers", "Bearer " + partnerKey, spoof, map[string]string{
			"X-Caller-Oid": "", "X-Caller-Tid": "", "X-Caller-App": "", "X-Caller-Key": "acme"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := w.send("/mixed", tt.authz, tt.spoof)
			if resp.status != http.StatusOK {
				t.Fatalf("status = %d: %s", resp.status, resp.body)
			}
			got, _ := w.model.Last()
			for h, want := range tt.want {
				vs := got.Header.Values(h)
				switch {
				case want == "" && len(vs) != 0:
					t.Errorf("upstream %s = %q, want none (a client-sent value must not pass)", h, vs)
				case want != "" && (len(vs) != 1 || vs[0] != want):
					t.Errorf("upstream %s = %q, want exactly %q", h, vs, want)
				}
			}
			if a := got.Header.Values("Authorization"); len(a) != 1 || a[0] != "Bearer "+upstreamKey {
				t.Error("the upstream did not receive exactly its own key")
			}
		})
	}
}

// TestTokenProviderUnavailableAtStart: the fake Azure AD is down when the
// gateway starts, so the provider never had keys. The gateway starts
// anyway; token rules answer 503 identity_provider_unavailable (the
// gateway, not the token, is at fault), keys still work, and /readyz is
// 503 naming the provider. When Azure AD comes back the provider gets its
// keys without a restart: /readyz 200 and tokens admitted.
func TestTokenProviderUnavailableAtStart(t *testing.T) {
	t.Parallel()
	w := newTokenWorld(t, func(aad *fakeaad.Server) { aad.SetDown(true) })
	waitFor(t, 5*time.Second, "the first key fetch of every source to fail", func() bool {
		// Every source (v1 and v2) must have tried: until then the
		// provider is still starting and /readyz is 503 for that reason.
		_, rep, _ := readyz(t, w.g)
		for _, p := range rep.IdentityProviders {
			if p.Name == "contoso" {
				for _, src := range p.Sources {
					if src.Failures == 0 {
						return false
					}
				}
				return p.LastError != ""
			}
		}
		return false
	})
	tok := w.mint(w.v1())
	resp := w.send("/tokens", "Bearer "+tok, nil)
	assertRefused(t, w.g, resp, http.StatusServiceUnavailable, "identity_provider_unavailable", "", "provider_unavailable")
	if resp := w.send("/mixed", "Bearer "+partnerKey, nil); resp.status != http.StatusOK {
		t.Errorf("key on a route that also takes tokens: %d while the provider is down, want 200", resp.status)
	}
	// Routes that take keys still serve: /readyz stays 200; the token-only
	// routes are down and the mixed one degraded, each with the reason.
	st, rep, raw := readyz(t, w.g)
	if st != http.StatusOK || !rep.Ready {
		t.Fatalf("/readyz = %d while key routes can serve, want 200:\n%s", st, raw)
	}
	if rs := rep.Routes["tokens"]; rs.State != gateway.RouteDown || !strings.Contains(strings.Join(rs.Reasons, " "), "identity provider contoso") {
		t.Errorf("route tokens: %+v, want down naming the provider", rs)
	}
	if rs := rep.Routes["mixed"]; rs.State != gateway.RouteDegraded {
		t.Errorf("route mixed: %+v, want degraded", rs)
	}
	if code := do(t, client(), w.g.Admin, request{path: "/readyz?route=tokens"}).status; code != http.StatusServiceUnavailable {
		t.Errorf("/readyz?route=tokens = %d while its provider has no keys, want 503", code)
	}
	named := false
	for _, p := range rep.IdentityProviders {
		if p.Name == "contoso" {
			named = true
			if p.Ready || p.Keys != 0 || p.LastError == "" {
				t.Errorf("/readyz provider %+v, want not ready, no keys, the last error", p)
			}
		}
	}
	if !named {
		t.Errorf("/readyz does not name the provider:\n%s", raw)
	}

	w.aad.SetDown(false)
	// The provider retries on its own schedule (1s, then doubling).
	waitFor(t, 10*time.Second, "/readyz?route=tokens to recover", func() bool {
		return do(t, client(), w.g.Admin, request{path: "/readyz?route=tokens"}).status == http.StatusOK
	})
	if resp := w.send("/tokens", "Bearer "+tok, nil); resp.status != http.StatusOK {
		t.Fatalf("after recovery: %d %s, want 200", resp.status, resp.body)
	}
}

// TestTokenKeyRotation: Azure AD rolls its signing key. A token signed with
// the new kid is admitted at once (an unknown kid makes the gateway refetch
// the key set). During a later outage of the key endpoints the gateway
// keeps verifying with the keys it has, even after a refetch attempt fails.
func TestTokenKeyRotation(t *testing.T) {
	t.Parallel()
	w := newTokenWorld(t, nil)
	w.waitReady()
	oldKID := w.aad.CurrentKID()
	if resp := w.send("/tokens", "Bearer "+w.mint(w.v1()), nil); resp.status != http.StatusOK {
		t.Fatalf("before rotation: %d", resp.status)
	}

	keysBefore := w.aad.KeyRequests()
	newKID := w.aad.RotateKey()
	for _, claims := range []jwt.MapClaims{w.v1(), w.v2()} {
		if resp := w.send("/tokens", "Bearer "+w.mint(claims), nil); resp.status != http.StatusOK {
			t.Fatalf("token with the new kid: %d %s, want 200", resp.status, resp.body)
		}
	}
	if w.aad.KeyRequests() == keysBefore {
		t.Fatal("the new kid was accepted without a key set refetch")
	}

	w.aad.SetDown(true)
	tests := []struct {
		name string
		kid  string
	}{{"new key", newKID}, {"old key, still published at the last fetch", oldKID}}
	for _, tt := range tests {
		t.Run("outage: "+tt.name, func(t *testing.T) {
			for _, claims := range []jwt.MapClaims{w.v1(), w.v2()} {
				claims["uti"] = "fresh-" + tt.kid[:8] // not a cached verification
				if resp := w.send("/tokens", "Bearer "+w.mint(claims, fakeaad.WithKID(tt.kid)), nil); resp.status != http.StatusOK {
					t.Fatalf("%d %s, want 200 from the cached keys", resp.status, resp.body)
				}
			}
		})
	}
	// Past the unknown-kid rate limit, an unknown kid makes the gateway try
	// to refetch during the outage; the attempt fails and the keys stay.
	w.clock.Advance(idp.UnknownKIDRefreshInterval + time.Minute)
	total := w.aad.TotalRequests()
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	resp := w.send("/tokens", "Bearer "+w.mint(w.v1(), fakeaad.WithKey(jwt.SigningMethodRS256, other, "kid-of-nobody")), nil)
	assertRefused(t, w.g, resp, http.StatusUnauthorized, "invalid_credential", "invalid_token", "unknown_key")
	if w.aad.TotalRequests() == total {
		t.Error("no refetch was attempted for the unknown kid")
	}
	for _, kid := range []string{newKID, oldKID} {
		c := w.v1()
		c["uti"] = "after-failed-refresh-" + kid[:8]
		if resp := w.send("/tokens", "Bearer "+w.mint(c, fakeaad.WithKID(kid)), nil); resp.status != http.StatusOK {
			t.Errorf("kid %s after a failed refresh: %d, want 200 (last good keys kept)", kid, resp.status)
		}
	}
	st, rep, _ := readyz(t, w.g)
	if st != http.StatusOK {
		t.Errorf("/readyz = %d during a key endpoint outage with keys in hand, want 200", st)
	}
	for _, p := range rep.IdentityProviders {
		if p.Name == "contoso" && p.LastError == "" {
			t.Error("/readyz does not report the failed refresh")
		}
	}
}

// TestTokenCacheThroughGateway: verified tokens are cached, but a cached
// result never outlives the token (the gateway's clock passes exp: refused
// token_expired) nor the key that signed it (the key is retired and the
// key set refetched: refused).
func TestTokenCacheThroughGateway(t *testing.T) {
	t.Parallel()
	t.Run("expiry", func(t *testing.T) {
		t.Parallel()
		w := newTokenWorld(t, nil)
		w.waitReady()
		tok := w.mint(w.v1())
		for i := range 2 { // the second is a cache hit
			if resp := w.send("/tokens", "Bearer "+tok, nil); resp.status != http.StatusOK {
				t.Fatalf("request %d: %d", i, resp.status)
			}
		}
		w.clock.Advance(time.Hour + idp.DefaultLeeway) // exp is an hour after minting
		resp := w.send("/tokens", "Bearer "+tok, nil)
		assertRefused(t, w.g, resp, http.StatusUnauthorized, "invalid_credential", "invalid_token", "token_expired")
	})
	t.Run("key retired", func(t *testing.T) {
		t.Parallel()
		w := newTokenWorld(t, nil)
		w.waitReady()
		tok := w.mint(w.v1())
		for i := range 2 {
			if resp := w.send("/tokens", "Bearer "+tok, nil); resp.status != http.StatusOK {
				t.Fatalf("request %d: %d", i, resp.status)
			}
		}
		w.aad.RotateKey()
		w.aad.DropRetiredKeys()
		// A token with the new kid makes the gateway refetch the key set,
		// which no longer holds the old key.
		if resp := w.send("/tokens", "Bearer "+w.mint(w.v1()), nil); resp.status != http.StatusOK {
			t.Fatalf("token with the new kid: %d", resp.status)
		}
		resp := w.send("/tokens", "Bearer "+tok, nil)
		assertRefused(t, w.g, resp, http.StatusUnauthorized, "invalid_credential", "invalid_token", "unknown_key")
	})
}

// TestTokenUnknownKIDFlood: tokens with ever new, unknown kids cannot turn
// into a flood of key set fetches: the first makes the gateway refetch,
// the rest within the rate limit are refused at once without a fetch, and
// none waits long.
func TestTokenUnknownKIDFlood(t *testing.T) {
	t.Parallel()
	w := newTokenWorld(t, nil)
	w.waitReady()
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	before := w.aad.KeyRequests()
	const n = 20
	start := time.Now()
	for i := range n {
		tok := w.mint(w.v1(), fakeaad.WithKey(jwt.SigningMethodRS256, other, "garbage-kid-"+strings.Repeat("x", i)))
		resp := w.send("/tokens", "Bearer "+tok, nil)
		assertRefused(t, w.g, resp, http.StatusUnauthorized, "invalid_credential", "invalid_token", "unknown_key")
	}
	if got := w.aad.KeyRequests() - before; got > 1 {
		t.Errorf("%d unknown kids caused %d key set fetches, want at most 1 (rate-limited)", n, got)
	}
	if d := time.Since(start); d > time.Duration(n)*idp.UnknownKIDWait/2 {
		t.Errorf("%d refusals took %v: unknown kids stall requests", n, d)
	}
}
