package fakeaad

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// V1Claims returns the claims of a realistic Azure AD v1 access token for
// audience (the App ID URI or client id of the API) issued by tenant tid
// (TenantID when empty): iss https://sts.windows.net/{tid}/, ver "1.0",
// appid, oid, scp, upn, issued one minute ago and valid for an hour by the
// fake's clock. Modify the map to build edge cases.
func (s *Server) V1Claims(tid, audience string) jwt.MapClaims {
	if tid == "" {
		tid = TenantID
	}
	now := s.Now()
	return jwt.MapClaims{
		"aud":         audience,
		"iss":         IssuerV1(tid),
		"iat":         now.Add(-time.Minute).Unix(),
		"nbf":         now.Add(-time.Minute).Unix(),
		"exp":         now.Add(time.Hour).Unix(),
		"acr":         "1",
		"aio":         "E2ZgYFjXfake",
		"amr":         []string{"pwd", "mfa"},
		"appid":       ClientAppID,
		"appidacr":    "0",
		"family_name": "Example",
		"given_name":  "Alice",
		"ipaddr":      "192.0.2.10",
		"name":        "Alice Example",
		"oid":         UserObjectID,
		"rh":          "0.fake.",
		"scp":         "Score.Invoke",
		"sub":         "l3J4c2V0LXN1YmplY3QtZm9yLWFsaWNl",
		"tid":         tid,
		"unique_name": UserPrincipalName,
		"upn":         UserPrincipalName,
		"uti":         "fakeUTIv1",
		"ver":         "1.0",
	}
}

// V2Claims returns the claims of a realistic Azure AD v2 access token for
// audience (v2 tokens carry the API's client id) issued by tenant tid
// (TenantID when empty): iss https://login.microsoftonline.com/{tid}/v2.0,
// ver "2.0", azp, oid, scp, preferred_username, issued one minute ago and
// valid for an hour by the fake's clock.
func (s *Server) V2Claims(tid, audience string) jwt.MapClaims {
	if tid == "" {
		tid = TenantID
	}
	now := s.Now()
	return jwt.MapClaims{
		"aud":                audience,
		"iss":                IssuerV2(tid),
		"iat":                now.Add(-time.Minute).Unix(),
		"nbf":                now.Add(-time.Minute).Unix(),
		"exp":                now.Add(time.Hour).Unix(),
		"aio":                "AWQAm/8fake",
		"azp":                ClientAppID,
		"azpacr":             "0",
		"name":               "Alice Example",
		"oid":                UserObjectID,
		"preferred_username": UserPrincipalName,
		"rh":                 "0.fake.",
		"scp":                "Score.Invoke",
		"sub":                "l3J4c2V0LXN1YmplY3QtZm9yLWFsaWNl",
		"tid":                tid,
		"uti":                "fakeUTIv2",
		"ver":                "2.0",
	}
}

// MintOption changes how Mint builds a token.
type MintOption func(*mintConfig)

type mintConfig struct {
	method  jwt.SigningMethod
	key     any
	kid     string
	ownKID  string
	headers map[string]any
}

// WithKID signs with the fake's own key named kid: the current key, a
// retired or dropped one, or LegacyKID. Mint panics if the fake never had
// such a key.
func WithKID(kid string) MintOption {
	return func(c *mintConfig) { c.ownKID = kid }
}

// WithKey signs with an arbitrary method and key (for attack tests: another
// RSA key, an HMAC secret, an ECDSA key) and sets the "kid" header to kid
// (omitted when empty). It takes precedence over WithKID.
func WithKey(method jwt.SigningMethod, key any, kid string) MintOption {
	return func(c *mintConfig) {
		c.method, c.key, c.kid = method, key, kid
	}
}

// WithHeader sets a JOSE header field after the defaults ("alg", "typ",
// "kid", "x5t"), e.g. "jku" or "x5u" for attack tests. A nil value removes
// the field. Overriding "alg" changes the header only: the signature is
// still made with the signing method (RS256 or WithKey's).
func WithHeader(name string, value any) MintOption {
	return func(c *mintConfig) {
		if c.headers == nil {
			c.headers = make(map[string]any)
		}
		c.headers[name] = value
	}
}

// Mint signs claims as a compact JWS. By default it uses RS256 and the
// current key, with the header fields Azure AD writes ("typ", "alg", "x5t",
// "kid"). It panics if signing fails, which only a bad option can cause.
func (s *Server) Mint(claims jwt.MapClaims, opts ...MintOption) string {
	var c mintConfig
	for _, o := range opts {
		o(&c)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	switch {
	case c.method != nil:
		tok = jwt.NewWithClaims(c.method, claims)
		delete(tok.Header, "kid")
		if c.kid != "" {
			tok.Header["kid"] = c.kid
		}
	default:
		s.mu.Lock()
		k := s.current
		if c.ownKID != "" {
			k = s.keyLocked(c.ownKID)
		}
		s.mu.Unlock()
		if k == nil {
			panic(fmt.Sprintf("fakeaad: Mint: no key with kid %q", c.ownKID))
		}
		tok.Header["x5t"] = k.x5t
		tok.Header["kid"] = k.kid
		c.key = k.priv
	}
	for name, v := range c.headers {
		if v == nil {
			delete(tok.Header, name)
		} else {
			tok.Header[name] = v
		}
	}
	out, err := tok.SignedString(c.key)
	if err != nil {
		panic(fmt.Sprintf("fakeaad: Mint: %v", err))
	}
	return out
}

// RawToken assembles a compact JWS from arbitrary parts without signing:
// base64url(JSON(header)) "." base64url(JSON(claims)) "." base64url(sig).
// It is for attack tests that need headers or algorithms no library signs
// ("alg": "None", a missing signature).
func RawToken(header, claims map[string]any, sig []byte) string {
	h, err := json.Marshal(header)
	if err != nil {
		panic(fmt.Sprintf("fakeaad: RawToken: %v", err))
	}
	c, err := json.Marshal(claims)
	if err != nil {
		panic(fmt.Sprintf("fakeaad: RawToken: %v", err))
	}
	var b strings.Builder
	b.WriteString(base64.RawURLEncoding.EncodeToString(h))
	b.WriteByte('.')
	b.WriteString(base64.RawURLEncoding.EncodeToString(c))
	b.WriteByte('.')
	b.WriteString(base64.RawURLEncoding.EncodeToString(sig))
	return b.String()
}
