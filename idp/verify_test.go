package idp_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/modelgate/modelgate/idp"
	"github.com/modelgate/modelgate/test/fakeaad"
)

// providers are the configurations the tables run against.
type providers struct {
	single  *idp.Provider // azure_ad, the fake's tenant, App ID URI + client id
	v2only  *idp.Provider // azure_ad, audience: client id only (a v2-only API)
	multi   *idp.Provider // azure_ad, organizations, allowed: the fake's tenant
	oidcV2  *idp.Provider // oidc, issuer: the v2 issuer only
	multiV2 *idp.Provider // alias of multi, for readability in rows
}

func newProviders(t *testing.T, e *env) providers {
	ps := providers{
		single: e.provider(t, nil),
		v2only: e.provider(t, func(o *idp.Options) { o.Audiences = []string{fakeaad.APIClientID} }),
		multi: e.provider(t, func(o *idp.Options) {
			o.TenantID = "organizations"
			o.AllowedTenants = []string{fakeaad.TenantID}
		}),
		oidcV2: e.provider(t, func(o *idp.Options) {
			o.Type = idp.TypeOIDC
			o.TenantID, o.AuthorityHost = "", ""
			o.Issuer = fakeaad.IssuerV2(fakeaad.TenantID)
			o.DiscoveryURL = e.aad.MetadataURL(fakeaad.TenantID, true)
		}),
	}
	ps.multiV2 = ps.multi
	return ps
}

func TestVerifyAccepts(t *testing.T) {
	e := newEnv(t)
	ps := newProviders(t, e)
	a := e.aad
	tid := fakeaad.TenantID

	tests := []struct {
		name    string
		p       *idp.Provider
		token   func() string
		version string
	}{
		{"v1 App ID URI", ps.single, func() string { return a.Mint(a.V1Claims(tid, fakeaad.APIAppIDURI)) }, "1.0"},
		{"v1 App ID URI with trailing slash", ps.single, func() string { return a.Mint(a.V1Claims(tid, fakeaad.APIAppIDURI+"/")) }, "1.0"},
		{"v1 client id", ps.single, func() string { return a.Mint(a.V1Claims(tid, fakeaad.APIClientID)) }, "1.0"},
		{"v2 client id", ps.single, func() string { return a.Mint(a.V2Claims(tid, fakeaad.APIClientID)) }, "2.0"},
		{"v2 on v2-only audience", ps.v2only, func() string { return a.Mint(a.V2Claims(tid, fakeaad.APIClientID)) }, "2.0"},
		{"aud array with one accepted", ps.single, func() string {
			c := a.V2Claims(tid, "")
			c["aud"] = []string{"https://graph.microsoft.com", fakeaad.APIClientID}
			return a.Mint(c)
		}, "2.0"},
		{"multi-tenant v1 allowed tid", ps.multi, func() string { return a.Mint(a.V1Claims(tid, fakeaad.APIAppIDURI)) }, "1.0"},
		{"multi-tenant v2 allowed tid", ps.multiV2, func() string { return a.Mint(a.V2Claims(tid, fakeaad.APIClientID)) }, "2.0"},
		{"oidc v2 issuer", ps.oidcV2, func() string { return a.Mint(a.V2Claims(tid, fakeaad.APIClientID)) }, "2.0"},
		{"legacy key with unparsable x5c verifies from n/e", ps.single, func() string {
			return a.Mint(a.V2Claims(tid, fakeaad.APIClientID), fakeaad.WithKID(a.LegacyKID()))
		}, "2.0"},
		{"expired within leeway", ps.single, func() string {
			c := a.V2Claims(tid, fakeaad.APIClientID)
			c["exp"] = time.Now().Add(-30 * time.Second).Unix()
			return a.Mint(c)
		}, "2.0"},
		{"nbf within leeway", ps.single, func() string {
			c := a.V2Claims(tid, fakeaad.APIClientID)
			c["nbf"] = time.Now().Add(30 * time.Second).Unix()
			c["iat"] = time.Now().Add(30 * time.Second).Unix()
			return a.Mint(c)
		}, "2.0"},
		{"fractional exp", ps.single, func() string {
			c := a.V2Claims(tid, fakeaad.APIClientID)
			c["exp"] = float64(time.Now().Add(time.Hour).Unix()) + 0.5
			return a.Mint(c)
		}, "2.0"},
		{"upper-case GUIDs in tid, oid, appid", ps.single, func() string {
			c := a.V1Claims(tid, fakeaad.APIAppIDURI)
			c["tid"] = strings.ToUpper(tid)
			c["oid"] = strings.ToUpper(fakeaad.UserObjectID)
			c["appid"] = strings.ToUpper(fakeaad.ClientAppID)
			return a.Mint(c)
		}, "1.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.p.Verify(context.Background(), tt.token())
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if c.Version != tt.version {
				t.Errorf("Version = %q, want %q", c.Version, tt.version)
			}
			if c.ObjectID != fakeaad.UserObjectID || c.TenantID != tid || c.AppID != fakeaad.ClientAppID {
				t.Errorf("oid/tid/app = %q/%q/%q", c.ObjectID, c.TenantID, c.AppID)
			}
			if !slices.Equal(c.Scopes, []string{"Score.Invoke"}) {
				t.Errorf("Scopes = %q", c.Scopes)
			}
			if c.ExpiresAt.IsZero() || c.Provider != tt.p.Name() {
				t.Errorf("ExpiresAt %v, Provider %q", c.ExpiresAt, c.Provider)
			}
		})
	}
}

func TestVerifyClaims(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, nil)
	c := e.aad.V1Claims("", fakeaad.APIAppIDURI)
	c["roles"] = []string{"Score.Invoke", "Score.Admin"}
	c["groups"] = []string{"0A6E2B5C-1111-4222-8333-944455556666", "on-prem-name"}
	c["scp"] = "Score.Invoke  user_impersonation"
	got, err := p.Verify(context.Background(), e.aad.Mint(c))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Roles, []string{"Score.Invoke", "Score.Admin"}) ||
		!slices.Equal(got.Scopes, []string{"Score.Invoke", "user_impersonation"}) ||
		!slices.Equal(got.Groups, []string{"0a6e2b5c-1111-4222-8333-944455556666", "on-prem-name"}) ||
		got.GroupsOverage || got.Name != "Alice Example" || got.Issuer != fakeaad.IssuerV1(fakeaad.TenantID) ||
		!slices.Equal(got.Audience, []string{fakeaad.APIAppIDURI}) {
		t.Errorf("claims = %+v", got)
	}

	t.Run("claim names are case-sensitive", func(t *testing.T) {
		c := e.aad.V2Claims("", fakeaad.APIClientID)
		c["Roles"] = []string{"Score.Admin"}
		c["OID"] = "99999999-9999-4999-8999-999999999999"
		c["Groups"] = []string{"11111111-1111-4111-8111-111111111111"}
		got, err := p.Verify(context.Background(), e.aad.Mint(c))
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Roles) != 0 || got.ObjectID != fakeaad.UserObjectID || len(got.Groups) != 0 {
			t.Errorf("case variants were read as claims: %+v", got)
		}
	})

	for _, overage := range []struct {
		name  string
		claim string
		value any
	}{
		{"_claim_names", "_claim_names", map[string]any{"groups": "src1"}},
		{"hasgroups", "hasgroups", true},
	} {
		t.Run("overage "+overage.name, func(t *testing.T) {
			c := e.aad.V2Claims("", fakeaad.APIClientID)
			c[overage.claim] = overage.value
			if overage.claim == "_claim_names" {
				c["_claim_sources"] = map[string]any{"src1": map[string]any{"endpoint": "https://graph.microsoft.com/v1.0/users/x/getMemberObjects"}}
			}
			got, err := p.Verify(context.Background(), e.aad.Mint(c))
			if err != nil {
				t.Fatal(err)
			}
			if !got.GroupsOverage || len(got.Groups) != 0 {
				t.Errorf("GroupsOverage = %v, Groups = %q", got.GroupsOverage, got.Groups)
			}
		})
	}
}

// TestVerifyRefuses is the attack and edge table: one row per case, each
// refused with its reason and 401.
func TestVerifyRefuses(t *testing.T) {
	e := newEnv(t)
	ps := newProviders(t, e)
	a := e.aad
	tid := fakeaad.TenantID

	// A second server that no refused token may make us contact.
	var elsewhere atomic.Int64
	evil := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		http.Error(w, "no", http.StatusTeapot)
	}))
	defer evil.Close()

	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := a.PublicKey(a.CurrentKID())
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	pkcs1PEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(pub)})
	otherJWK := map[string]any{
		"kty": "RSA", "kid": "attacker",
		"n": base64.RawURLEncoding.EncodeToString(other.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(other.E)).Bytes()),
	}

	v1 := func() jwt.MapClaims { return a.V1Claims(tid, fakeaad.APIAppIDURI) }
	v2 := func() jwt.MapClaims { return a.V2Claims(tid, fakeaad.APIClientID) }
	with := func(c jwt.MapClaims, kv ...any) jwt.MapClaims {
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(c, kv[i].(string))
			} else {
				c[kv[i].(string)] = kv[i+1]
			}
		}
		return c
	}
	header := func(alg string) map[string]any {
		return map[string]any{"typ": "JWT", "alg": alg, "kid": a.CurrentKID()}
	}
	valid := func() string { return a.Mint(v2()) }
	segs := func(tok string) []string { return strings.Split(tok, ".") }
	b64 := base64.RawURLEncoding.EncodeToString
	now := time.Now()

	tests := []struct {
		name  string
		p     *idp.Provider // default: ps.single
		token func() string
		want  idp.Reason
	}{
		// Algorithms.
		{name: "alg none", token: func() string { return fakeaad.RawToken(header("none"), v2(), nil) }, want: idp.ReasonAlgNotAllowed},
		{name: "alg None", token: func() string { return fakeaad.RawToken(header("None"), v2(), nil) }, want: idp.ReasonAlgNotAllowed},
		{name: "alg NONE", token: func() string { return fakeaad.RawToken(header("NONE"), v2(), nil) }, want: idp.ReasonAlgNotAllowed},
		{name: "alg nOnE", token: func() string { return fakeaad.RawToken(header("nOnE"), v2(), nil) }, want: idp.ReasonAlgNotAllowed},
		{name: "alg none with a signature", token: func() string {
			return fakeaad.RawToken(header("none"), v2(), []byte(segs(valid())[2]))
		}, want: idp.ReasonAlgNotAllowed},
		{name: "alg missing", token: func() string {
			return fakeaad.RawToken(map[string]any{"typ": "JWT", "kid": a.CurrentKID()}, v2(), []byte("sig"))
		}, want: idp.ReasonAlgNotAllowed},
		{name: "alg not a string", token: func() string {
			return fakeaad.RawToken(map[string]any{"alg": 256, "kid": a.CurrentKID()}, v2(), []byte("sig"))
		}, want: idp.ReasonAlgNotAllowed},
		{name: "HS256 keyed with the RSA public key PEM", token: func() string {
			return a.Mint(v2(), fakeaad.WithKey(jwt.SigningMethodHS256, pubPEM, a.CurrentKID()))
		}, want: idp.ReasonAlgNotAllowed},
		{name: "HS256 keyed with the RSA public key PKCS1 PEM", token: func() string {
			return a.Mint(v2(), fakeaad.WithKey(jwt.SigningMethodHS256, pkcs1PEM, a.CurrentKID()))
		}, want: idp.ReasonAlgNotAllowed},
		{name: "HS256 keyed with the RSA modulus bytes", token: func() string {
			return a.Mint(v2(), fakeaad.WithKey(jwt.SigningMethodHS256, pub.N.Bytes(), a.CurrentKID()))
		}, want: idp.ReasonAlgNotAllowed},
		{name: "ES256", token: func() string {
			return a.Mint(v2(), fakeaad.WithKey(jwt.SigningMethodES256, ec, a.CurrentKID()))
		}, want: idp.ReasonAlgNotAllowed},
		{name: "PS256", token: func() string {
			return a.Mint(v2(), fakeaad.WithKey(jwt.SigningMethodPS256, other, a.CurrentKID()))
		}, want: idp.ReasonAlgNotAllowed},
		{name: "RS512", token: func() string {
			return a.Mint(v2(), fakeaad.WithKey(jwt.SigningMethodRS512, other, a.CurrentKID()))
		}, want: idp.ReasonAlgNotAllowed},
		{name: "RS256 header on an RS256 token relabelled rs256", token: func() string {
			return a.Mint(v2(), fakeaad.WithHeader("alg", "rs256"))
		}, want: idp.ReasonAlgNotAllowed},

		// Integrity.
		{name: "tampered header", token: func() string {
			s := segs(valid())
			h, _ := base64.RawURLEncoding.DecodeString(s[0])
			var m map[string]any
			_ = json.Unmarshal(h, &m)
			m["typ"] = "at+jwt"
			nh, _ := json.Marshal(m)
			return b64(nh) + "." + s[1] + "." + s[2]
		}, want: idp.ReasonBadSignature},
		{name: "tampered payload", token: func() string {
			s := segs(valid())
			ns := segs(a.Mint(with(v2(), "roles", []string{"Score.Admin"})))
			return s[0] + "." + ns[1] + "." + s[2]
		}, want: idp.ReasonBadSignature},
		{name: "tampered signature", token: func() string {
			s := segs(valid())
			sig, _ := base64.RawURLEncoding.DecodeString(s[2])
			sig[len(sig)/2] ^= 0x01
			return s[0] + "." + s[1] + "." + b64(sig)
		}, want: idp.ReasonBadSignature},
		{name: "truncated signature", token: func() string {
			s := segs(valid())
			sig, _ := base64.RawURLEncoding.DecodeString(s[2])
			return s[0] + "." + s[1] + "." + b64(sig[:len(sig)-1])
		}, want: idp.ReasonBadSignature},
		{name: "missing signature, trailing dot", token: func() string {
			s := segs(valid())
			return s[0] + "." + s[1] + "."
		}, want: idp.ReasonBadSignature},
		{name: "missing signature, two segments", token: func() string {
			s := segs(valid())
			return s[0] + "." + s[1]
		}, want: idp.ReasonTokenMalformed},
		{name: "signature with base64 padding", token: func() string { return valid() + "==" }, want: idp.ReasonTokenMalformed},
		{name: "non-canonical base64 signature", token: func() string {
			// Flip the unused low bits of the last character: decodes to
			// the same bytes unless decoding is strict.
			tok := valid()
			last := tok[len(tok)-1]
			const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
			i := strings.IndexByte(alphabet, last)
			return tok[:len(tok)-1] + string(alphabet[i^1])
		}, want: idp.ReasonTokenMalformed},

		// Keys.
		{name: "unknown kid", token: func() string {
			return a.Mint(v2(), fakeaad.WithKey(jwt.SigningMethodRS256, other, "not-a-published-kid"))
		}, want: idp.ReasonUnknownKey},
		{name: "right kid, wrong key", token: func() string {
			return a.Mint(v2(), fakeaad.WithKey(jwt.SigningMethodRS256, other, a.CurrentKID()))
		}, want: idp.ReasonBadSignature},
		{name: "legacy kid, wrong key", token: func() string {
			return a.Mint(v2(), fakeaad.WithKey(jwt.SigningMethodRS256, other, a.LegacyKID()))
		}, want: idp.ReasonBadSignature},
		{name: "no kid", token: func() string { return a.Mint(v2(), fakeaad.WithHeader("kid", nil)) }, want: idp.ReasonUnknownKey},
		{name: "kid not a string", token: func() string { return a.Mint(v2(), fakeaad.WithHeader("kid", 7)) }, want: idp.ReasonUnknownKey},
		{name: "jku pointing elsewhere", token: func() string {
			return a.Mint(v2(), fakeaad.WithKey(jwt.SigningMethodRS256, other, "attacker"), fakeaad.WithHeader("jku", evil.URL+"/keys"))
		}, want: idp.ReasonHeaderNotAllowed},
		{name: "jku with our own kid and key", token: func() string {
			return a.Mint(v2(), fakeaad.WithHeader("jku", evil.URL+"/keys"))
		}, want: idp.ReasonHeaderNotAllowed},
		{name: "x5u pointing elsewhere", token: func() string {
			return a.Mint(v2(), fakeaad.WithKey(jwt.SigningMethodRS256, other, "attacker"), fakeaad.WithHeader("x5u", evil.URL+"/cert.pem"))
		}, want: idp.ReasonHeaderNotAllowed},
		{name: "embedded jwk", token: func() string {
			return a.Mint(v2(), fakeaad.WithKey(jwt.SigningMethodRS256, other, "attacker"), fakeaad.WithHeader("jwk", otherJWK))
		}, want: idp.ReasonHeaderNotAllowed},
		{name: "crit extension", token: func() string {
			return a.Mint(v2(), fakeaad.WithHeader("crit", []string{"exp"}), fakeaad.WithHeader("exp", 1))
		}, want: idp.ReasonHeaderNotAllowed},
		{name: "unknown kid on an oidc provider", p: ps.oidcV2, token: func() string {
			return a.Mint(v2(), fakeaad.WithKey(jwt.SigningMethodRS256, other, strings.Repeat("k", 40)))
		}, want: idp.ReasonUnknownKey},
		{name: "kid too long", token: func() string {
			return a.Mint(v2(), fakeaad.WithHeader("kid", strings.Repeat("k", 300)))
		}, want: idp.ReasonUnknownKey},

		// Shape.
		{name: "empty", token: func() string { return "" }, want: idp.ReasonTokenMalformed},
		{name: "one segment", token: func() string { return "abc" }, want: idp.ReasonTokenMalformed},
		{name: "extra segment", token: func() string { return valid() + ".e30" }, want: idp.ReasonTokenMalformed},
		{name: "five segments (JWE)", token: func() string { return "e30.e30.e30.e30.e30" }, want: idp.ReasonTokenMalformed},
		{name: "non-base64", token: func() string { return "!!!.@@@.###" }, want: idp.ReasonTokenMalformed},
		{name: "header not JSON", token: func() string {
			s := segs(valid())
			return b64([]byte("not json")) + "." + s[1] + "." + s[2]
		}, want: idp.ReasonTokenMalformed},
		{name: "payload not JSON", token: func() string {
			s := segs(valid())
			return s[0] + "." + b64([]byte("[1,2")) + "." + s[2]
		}, want: idp.ReasonTokenMalformed},
		{name: "payload a JSON array", token: func() string {
			s := segs(valid())
			return s[0] + "." + b64([]byte("[1,2]")) + "." + s[2]
		}, want: idp.ReasonTokenMalformed},
		{name: "oversized", token: func() string {
			return a.Mint(with(v2(), "pad", strings.Repeat("x", idp.MaxTokenSize)))
		}, want: idp.ReasonTokenTooLarge},
		{name: "oversized garbage", token: func() string { return strings.Repeat("A", idp.MaxTokenSize+1) }, want: idp.ReasonTokenTooLarge},
		{name: "whitespace around token", token: func() string { return " " + valid() }, want: idp.ReasonTokenMalformed},

		// Claim types.
		{name: "exp missing", token: func() string { return a.Mint(with(v2(), "exp", nil)) }, want: idp.ReasonMissingExp},
		{name: "exp null", token: func() string { return a.Mint(with(v2(), "exp", json.RawMessage("null"))) }, want: idp.ReasonMissingExp},
		{name: "exp as a string", token: func() string {
			return a.Mint(with(v2(), "exp", "9999999999"))
		}, want: idp.ReasonTokenMalformed},
		{name: "exp as a boolean", token: func() string { return a.Mint(with(v2(), "exp", true)) }, want: idp.ReasonTokenMalformed},
		{name: "exp beyond year 9999", token: func() string { return a.Mint(with(v2(), "exp", 1e300)) }, want: idp.ReasonTokenMalformed},
		{name: "nbf as a string", token: func() string { return a.Mint(with(v2(), "nbf", "0")) }, want: idp.ReasonTokenMalformed},
		{name: "aud as a number", token: func() string { return a.Mint(with(v2(), "aud", 42)) }, want: idp.ReasonTokenMalformed},
		{name: "roles as a string", token: func() string { return a.Mint(with(v2(), "roles", "Score.Admin")) }, want: idp.ReasonTokenMalformed},

		// Time.
		{name: "expired", token: func() string {
			return a.Mint(with(v2(), "exp", now.Add(-2*time.Minute).Unix()))
		}, want: idp.ReasonTokenExpired},
		{name: "expired exactly at leeway", token: func() string {
			return a.Mint(with(v2(), "exp", now.Add(-idp.DefaultLeeway).Unix()))
		}, want: idp.ReasonTokenExpired},
		{name: "future nbf", token: func() string {
			return a.Mint(with(v2(), "nbf", now.Add(10*time.Minute).Unix()))
		}, want: idp.ReasonTokenNotYetValid},
		{name: "future iat", token: func() string {
			return a.Mint(with(v2(), "iat", now.Add(10*time.Minute).Unix()))
		}, want: idp.ReasonTokenUsedBeforeIssued},

		// Issuer, audience, tenant, version.
		{name: "wrong iss", token: func() string {
			return a.Mint(with(v2(), "iss", "https://login.microsoftonline.com/"+tid+"/v2.0/"))
		}, want: idp.ReasonWrongIssuer},
		{name: "v1 token carrying the v2 issuer", token: func() string {
			return a.Mint(with(v1(), "iss", fakeaad.IssuerV2(tid)))
		}, want: idp.ReasonWrongIssuer},
		{name: "v2 token carrying the v1 issuer", token: func() string {
			return a.Mint(with(v2(), "iss", fakeaad.IssuerV1(tid)))
		}, want: idp.ReasonWrongIssuer},
		{name: "iss missing", token: func() string { return a.Mint(with(v2(), "iss", nil)) }, want: idp.ReasonWrongIssuer},
		{name: "wrong aud", token: func() string {
			return a.Mint(with(v2(), "aud", "https://management.azure.com"))
		}, want: idp.ReasonWrongAudience},
		{name: "aud missing", token: func() string { return a.Mint(with(v2(), "aud", nil)) }, want: idp.ReasonWrongAudience},
		{name: "aud array, none accepted", token: func() string {
			return a.Mint(with(v2(), "aud", []string{"a", "api://modelgate//", "API://MODELGATE"}))
		}, want: idp.ReasonWrongAudience},
		{name: "other tenant", token: func() string {
			return a.Mint(a.V1Claims(fakeaad.OtherTenantID, fakeaad.APIAppIDURI))
		}, want: idp.ReasonTenantNotAllowed},
		{name: "other tenant's tid with our issuer", token: func() string {
			return a.Mint(with(v1(), "tid", fakeaad.OtherTenantID))
		}, want: idp.ReasonTenantNotAllowed},
		{name: "tid missing", token: func() string { return a.Mint(with(v1(), "tid", nil)) }, want: idp.ReasonTenantNotAllowed},
		{name: "v2 ID token (no azp)", token: func() string {
			return a.Mint(with(v2(), "azp", nil, "azpacr", nil, "scp", nil, "nonce", "n-0S6_WzA2Mj"))
		}, want: idp.ReasonNotAccessToken},
		{name: "v1 ID token (no appid)", token: func() string {
			return a.Mint(with(v1(), "appid", nil, "appidacr", nil, "scp", nil))
		}, want: idp.ReasonNotAccessToken},
		{name: "v2 token with appid but no azp", token: func() string {
			return a.Mint(with(v2(), "azp", nil, "appid", fakeaad.ClientAppID))
		}, want: idp.ReasonNotAccessToken},
		{name: "ver missing", token: func() string { return a.Mint(with(v1(), "ver", nil)) }, want: idp.ReasonUnsupportedTokenVersion},
		{name: "ver 3.0", token: func() string { return a.Mint(with(v2(), "ver", "3.0")) }, want: idp.ReasonUnsupportedTokenVersion},
		{name: "v1 token against a v2-only audience", p: ps.v2only, token: func() string {
			return a.Mint(v1())
		}, want: idp.ReasonWrongAudience},
		{name: "v1 token against a v2-only issuer (oidc)", p: ps.oidcV2, token: func() string {
			return a.Mint(a.V1Claims(tid, fakeaad.APIClientID))
		}, want: idp.ReasonWrongIssuer},
		{name: "multi-tenant tid not allowed", p: ps.multi, token: func() string {
			return a.Mint(a.V2Claims(fakeaad.OtherTenantID, fakeaad.APIClientID))
		}, want: idp.ReasonTenantNotAllowed},
		{name: "multi-tenant tid not a GUID", p: ps.multi, token: func() string {
			return a.Mint(with(v2(), "tid", "contoso.onmicrosoft.com", "iss", fakeaad.IssuerV2("contoso.onmicrosoft.com")))
		}, want: idp.ReasonInvalidTenantID},
		{name: "multi-tenant tid smuggling a path", p: ps.multi, token: func() string {
			evilTID := tid + "/v2.0/x"
			return a.Mint(with(v2(), "tid", evilTID, "iss", fakeaad.IssuerV2(evilTID)))
		}, want: idp.ReasonInvalidTenantID},
		{name: "multi-tenant allowed tid, issuer of another tenant", p: ps.multi, token: func() string {
			return a.Mint(with(v2(), "iss", fakeaad.IssuerV2(fakeaad.OtherTenantID)))
		}, want: idp.ReasonWrongIssuer},
		{name: "upper-case issuer", token: func() string {
			return a.Mint(with(v2(), "iss", strings.ToUpper(fakeaad.IssuerV2(tid))))
		}, want: idp.ReasonWrongIssuer},
		{name: "multi-tenant issuer template left in", p: ps.multi, token: func() string {
			return a.Mint(with(v2(), "iss", fakeaad.IssuerV2("{tenantid}")))
		}, want: idp.ReasonWrongIssuer},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		if seen[tt.name] {
			t.Fatalf("duplicate row %q", tt.name)
		}
		seen[tt.name] = true
		t.Run(tt.name, func(t *testing.T) {
			p := tt.p
			if p == nil {
				p = ps.single
			}
			tok := tt.token()
			start := time.Now()
			c, err := p.Verify(context.Background(), tok)
			if err == nil {
				t.Fatalf("Verify accepted it: %+v", c)
			}
			if c != nil {
				t.Errorf("claims returned with an error")
			}
			wantReason(t, err, tt.want, http.StatusUnauthorized, tok)
			if d := time.Since(start); d > 1500*time.Millisecond {
				t.Errorf("Verify took %v", d)
			}
		})
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("a token made the provider contact another server %d times", n)
	}
}
