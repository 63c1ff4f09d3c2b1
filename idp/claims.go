package idp

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims is the verified identity carried by a token. A *Claims returned by
// Verify may be shared with other callers through the token cache: treat it
// as read-only.
//
// GUID-valued identifiers (TenantID, ObjectID, AppID and GUID-shaped Groups)
// are lower-cased, as Rule expects.
type Claims struct {
	Provider string // name of the provider that verified the token
	Version  string // "1.0" or "2.0" for Azure AD (ver claim); as sent for oidc

	Issuer   string
	Subject  string
	ObjectID string // oid: the principal's object id; what user rules match
	TenantID string // tid
	AppID    string // calling client: appid (v1) or azp (v2)
	Audience []string

	Roles  []string // app roles (roles claim)
	Scopes []string // delegated scopes (scp claim, split on spaces)
	Groups []string // group object ids (groups claim)

	// GroupsOverage is true when the token says its groups were left out
	// (_claim_names.groups, or hasgroups: true). Group membership is then
	// unknown: group rules deny with ReasonGroupsUnknown rather than treating
	// the caller as a member of no groups.
	GroupsOverage bool

	ExpiresAt time.Time
	NotBefore time.Time // zero when the token has no nbf
	IssuedAt  time.Time // zero when the token has no iat

	// Name is the display name, for logs and explain only. Neither it nor
	// upn/preferred_username is ever used to authorize.
	Name string
}

// tokenClaims is what Verify decodes from the payload: only the claims it
// uses, with strict types. It implements jwt.Claims.
type tokenClaims struct {
	Iss   string           `json:"iss"`
	Sub   string           `json:"sub"`
	Aud   jwt.ClaimStrings `json:"aud"`
	Exp   *numericDate     `json:"exp"`
	Nbf   *numericDate     `json:"nbf"`
	Iat   *numericDate     `json:"iat"`
	Ver   string           `json:"ver"`
	Tid   string           `json:"tid"`
	Oid   string           `json:"oid"`
	AppID string           `json:"appid"`
	Azp   string           `json:"azp"`
	Roles []string         `json:"roles"`
	Scp   string           `json:"scp"`
	// Groups overage (Azure AD): the groups claim is replaced by a reference
	// in _claim_names (JWT access tokens), or by hasgroups (implicit flow).
	Groups     []string        `json:"groups"`
	ClaimNames json.RawMessage `json:"_claim_names"`
	HasGroups  bool            `json:"hasgroups"`
	Name       string          `json:"name"`

	groupsOverage bool    // _claim_names names groups, or hasgroups
	src           *source // the key source chosen by the key function
}

func (c *tokenClaims) GetExpirationTime() (*jwt.NumericDate, error) { return c.Exp.jwt(), nil }
func (c *tokenClaims) GetNotBefore() (*jwt.NumericDate, error)      { return c.Nbf.jwt(), nil }
func (c *tokenClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.Iat.jwt(), nil }
func (c *tokenClaims) GetIssuer() (string, error)                   { return c.Iss, nil }
func (c *tokenClaims) GetSubject() (string, error)                  { return c.Sub, nil }
func (c *tokenClaims) GetAudience() (jwt.ClaimStrings, error)       { return c.Aud, nil }

// taggedClaims is tokenClaims without its UnmarshalJSON method.
type taggedClaims tokenClaims

// UnmarshalJSON decodes the claims Verify uses by their exact names.
//
// encoding/json matches struct fields case-insensitively, which would let a
// claim named "OID" or "Roles" stand in for "oid" or "roles"; claim names
// are case-sensitive (RFC 7519 §4). The fast path is an ordinary struct
// decode, used only when no top-level member name could match a field
// inexactly; otherwise every claim is looked up by its exact name. Of
// duplicate names the last counts, as RFC 7519 §4 permits.
func (c *tokenClaims) UnmarshalJSON(b []byte) error {
	err := json.Unmarshal(b, (*taggedClaims)(c))
	if inexactNames(b) {
		*c = tokenClaims{}
		err = c.unmarshalExact(b)
	}
	if err != nil {
		return err
	}
	return c.finish()
}

// finish derives what the decoded claims imply. _claim_names is kept raw
// while decoding so that duplicates replace rather than merge.
func (c *tokenClaims) finish() error {
	c.groupsOverage = c.HasGroups
	if len(c.ClaimNames) > 0 && string(c.ClaimNames) != "null" {
		var names map[string]json.RawMessage
		if err := json.Unmarshal(c.ClaimNames, &names); err != nil {
			return fmt.Errorf("claim _claim_names: %w", err)
		}
		if _, ok := names["groups"]; ok {
			c.groupsOverage = true
		}
	}
	return nil
}

func (c *tokenClaims) unmarshalExact(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	for _, f := range [...]struct {
		name string
		dst  any
	}{
		{"iss", &c.Iss}, {"sub", &c.Sub}, {"aud", &c.Aud},
		{"exp", &c.Exp}, {"nbf", &c.Nbf}, {"iat", &c.Iat},
		{"ver", &c.Ver}, {"tid", &c.Tid}, {"oid", &c.Oid},
		{"appid", &c.AppID}, {"azp", &c.Azp}, {"roles", &c.Roles},
		{"scp", &c.Scp}, {"groups", &c.Groups}, {"_claim_names", &c.ClaimNames},
		{"hasgroups", &c.HasGroups}, {"name", &c.Name},
	} {
		raw, ok := m[f.name]
		if !ok {
			continue
		}
		if err := json.Unmarshal(raw, f.dst); err != nil {
			return fmt.Errorf("claim %s: %w", f.name, err)
		}
	}
	return nil
}

// inexactNames reports whether the top-level object in b has a member name
// that encoding/json might match to a tokenClaims field other than by exact
// bytes: one with an escape or a non-ASCII byte (Unicode case folding), or
// an ASCII case variant of a claim name. It is a conservative scan: when
// unsure, it says yes, which only selects the slower exact decoding.
func inexactNames(b []byte) bool {
	depth := 0
	wantName := false
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			j := i + 1
			suspect := false
			for j < len(b) && b[j] != '"' {
				if b[j] == '\\' || b[j] >= 0x80 {
					suspect = true
					if b[j] == '\\' {
						j++
					}
				}
				j++
			}
			if j > len(b) {
				j = len(b)
			}
			if depth == 1 && wantName {
				if suspect || caseVariant(b[i+1:j]) {
					return true
				}
				wantName = false
			}
			i = j
		case '{', '[':
			depth++
			wantName = depth == 1 && b[i] == '{'
		case '}', ']':
			depth--
		case ',':
			wantName = depth == 1
		}
	}
	return false
}

// claimNames are the JSON names of tokenClaims' fields.
var claimNames = [...]string{"iss", "sub", "aud", "exp", "nbf", "iat", "ver", "tid", "oid",
	"appid", "azp", "roles", "scp", "groups", "_claim_names", "hasgroups", "name"}

// caseVariant reports whether the ASCII name equals a claim name (all lower
// case) ignoring case but not exactly.
func caseVariant(name []byte) bool {
	for _, c := range claimNames {
		if len(name) == len(c) && string(name) != c && strings.EqualFold(string(name), c) {
			return true
		}
	}
	return false
}

// errNumericDate marks exp/nbf/iat values that are not JSON numbers.
var errNumericDate = errors.New("exp, nbf and iat must be JSON numbers of seconds since 1970")

// numericDate is an RFC 7519 NumericDate that, unlike jwt.NumericDate,
// refuses JSON strings: encoding/json will happily decode "exp":"99999999999"
// into a json.Number, and a token whose expiry is a string is not one an
// identity provider issued.
type numericDate struct{ jwt.NumericDate }

// maxNumericDate is 9999-12-31T23:59:59Z; later values are refused rather
// than overflowing time.Time arithmetic.
const maxNumericDate = 253402300799

func (d *numericDate) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || !(b[0] == '-' || '0' <= b[0] && b[0] <= '9') {
		return errNumericDate
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return errNumericDate
	}
	sec, frac := math.Modf(f)
	d.Time = time.Unix(int64(sec), int64(frac*1e9))
	return nil
}

func (d *numericDate) jwt() *jwt.NumericDate {
	if d == nil {
		return nil
	}
	return &d.NumericDate
}

func (d *numericDate) time() time.Time {
	if d == nil {
		return time.Time{}
	}
	return d.Time
}

// claims builds the public Claims from verified token claims.
func (c *tokenClaims) claims(provider string) *Claims {
	// v1 names the client in appid, v2 in azp; other tokens in either.
	appID := c.AppID
	if c.Ver == "2.0" || (c.Ver != "1.0" && c.Azp != "") {
		appID = c.Azp
	}
	out := &Claims{
		Provider:      provider,
		Version:       c.Ver,
		Issuer:        c.Iss,
		Subject:       c.Sub,
		ObjectID:      canonicalID(c.Oid),
		TenantID:      canonicalID(c.Tid),
		AppID:         canonicalID(appID),
		Audience:      c.Aud,
		Roles:         c.Roles,
		Groups:        c.Groups,
		ExpiresAt:     c.Exp.time(),
		NotBefore:     c.Nbf.time(),
		IssuedAt:      c.Iat.time(),
		Name:          c.Name,
		GroupsOverage: c.groupsOverage,
	}
	if c.Scp != "" {
		out.Scopes = strings.Fields(c.Scp)
	}
	for i, g := range out.Groups { // freshly decoded: ours to modify
		out.Groups[i] = canonicalID(g)
	}
	return out
}
