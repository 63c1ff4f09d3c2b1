// Package demoidp is a minimal OpenID Connect issuer for `gateway demo`: it
// serves a discovery document and a JSON Web Key Set on loopback and mints
// RS256 access tokens shaped like Azure AD v2 tokens. It is for the demo
// only; it has no login, and anyone who can reach it can read its keys.
package demoidp

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TenantID is the tid of every demo token.
const TenantID = "9a7b3c1d-0000-4000-8000-00000000de70"

// Issuer mints demo tokens. Create it with New.
type Issuer struct {
	url string
	key *rsa.PrivateKey
	kid string
}

// New makes an issuer whose issuer URL (and discovery base) is url.
func New(url string) (*Issuer, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(k.N.Bytes())
	return &Issuer{url: url, key: k, kid: base64.RawURLEncoding.EncodeToString(sum[:8])}, nil
}

// URL is the issuer (iss) of the tokens.
func (i *Issuer) URL() string { return i.url }

// Handler serves /.well-known/openid-configuration and /keys.
func (i *Issuer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                i.url,
			"jwks_uri":                              i.url + "/keys",
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "RSA", "use": "sig", "alg": "RS256", "kid": i.kid,
			"n": base64.RawURLEncoding.EncodeToString(i.key.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(i.key.E)).Bytes()),
		}}})
	})
	return mux
}

// Token mints an access token for audience aud carrying the given app
// roles, valid for ttl.
func (i *Issuer) Token(aud, oid, appID string, roles []string, ttl time.Duration) (string, error) {
	now := time.Now()
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": i.url, "aud": aud, "ver": "2.0",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(ttl).Unix(),
		"tid": TenantID,
		"oid": oid, "sub": oid, "azp": appID, "roles": roles,
	})
	t.Header["kid"] = i.kid
	return t.SignedString(i.key)
}
