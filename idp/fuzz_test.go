package idp_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/modelgate/modelgate/idp"
	"github.com/modelgate/modelgate/test/fakeaad"
)

// staticProvider returns a provider over the fake's saved key set (no
// network), evaluating time as of now, plus valid v1 and v2 tokens.
func staticProvider(tb testing.TB, cacheSize int) (*idp.Provider, *fakeaad.Server, []string) {
	tb.Helper()
	aad := fakeaad.New(tb)
	now := time.Unix(1_800_000_000, 0)
	aad.SetNow(func() time.Time { return now })
	p := newProvider(tb, idp.Options{
		Name:       "contoso",
		Type:       idp.TypeAzureAD,
		TenantID:   fakeaad.TenantID,
		Audiences:  []string{fakeaad.APIAppIDURI, fakeaad.APIClientID},
		StaticJWKS: aad.JWKS(),
		Now:        func() time.Time { return now },
		CacheSize:  cacheSize,
	})
	v1 := aad.V1Claims("", fakeaad.APIAppIDURI)
	v1["roles"] = []string{"Score.Invoke"}
	v1["groups"] = []string{"11111111-1111-4111-8111-111111111111"}
	valid := []string{
		aad.Mint(v1),
		aad.Mint(aad.V2Claims("", fakeaad.APIClientID)),
		aad.Mint(aad.V2Claims("", fakeaad.APIClientID), fakeaad.WithKID(aad.LegacyKID())),
	}
	return p, aad, valid
}

// FuzzVerify feeds arbitrary bearer values to Verify. Properties: it never
// panics; every refusal is an *idp.Error with a known reason, 401 and a
// non-empty detail; and nothing but the exact valid tokens is ever accepted
// (strict base64 and deterministic RSA signatures leave no malleability).
func FuzzVerify(f *testing.F) {
	p, aad, valid := staticProvider(f, -1)
	isValid := map[string]bool{}
	for _, v := range valid {
		isValid[v] = true
		f.Add(v)
	}
	v2 := aad.V2Claims("", fakeaad.APIClientID)
	hdr := map[string]any{"alg": "none", "typ": "JWT", "kid": aad.CurrentKID()}
	seg := strings.Split(valid[1], ".")
	for _, s := range []string{
		"",
		"a.b.c",
		"e30.e30.",
		"e30.e30.e30.e30",
		fakeaad.RawToken(hdr, v2, nil),
		fakeaad.RawToken(map[string]any{"alg": "RS256", "kid": 1}, v2, []byte{1}),
		aad.Mint(v2, fakeaad.WithKey(jwt.SigningMethodHS256, []byte("secret"), aad.CurrentKID())),
		aad.Mint(v2, fakeaad.WithHeader("jku", "https://evil.example/keys")),
		aad.Mint(jwt.MapClaims{"exp": "1"}),
		aad.Mint(jwt.MapClaims{"exp": 1e308, "ver": "2.0"}),
		seg[0] + "." + seg[1],
		seg[0] + "." + seg[1] + ".",
		seg[0] + ".." + seg[2],
		strings.ToUpper(valid[1]),
	} {
		f.Add(s)
	}
	known := map[idp.Reason]bool{}
	for _, r := range []idp.Reason{
		idp.ReasonTokenMalformed, idp.ReasonTokenTooLarge, idp.ReasonAlgNotAllowed, idp.ReasonHeaderNotAllowed,
		idp.ReasonUnknownKey, idp.ReasonBadSignature, idp.ReasonTokenExpired, idp.ReasonTokenNotYetValid,
		idp.ReasonTokenUsedBeforeIssued, idp.ReasonMissingExp, idp.ReasonWrongIssuer, idp.ReasonWrongAudience,
		idp.ReasonInvalidTenantID, idp.ReasonUnsupportedTokenVersion, idp.ReasonTenantNotAllowed,
		idp.ReasonNotAccessToken,
	} {
		known[r] = true
	}
	f.Fuzz(func(t *testing.T, raw string) {
		c, err := p.Verify(context.Background(), raw)
		if err == nil {
			if c == nil {
				t.Fatal("nil claims without an error")
			}
			if !isValid[raw] {
				t.Fatalf("accepted a token that was never minted: %q", raw)
			}
			return
		}
		var e *idp.Error
		if !errors.As(err, &e) {
			t.Fatalf("error %T is not *idp.Error", err)
		}
		if !known[e.Reason] || e.Detail == "" || e.Status() != 401 {
			t.Fatalf("refusal %q / %q / %d", e.Reason, e.Detail, e.Status())
		}
	})
}
