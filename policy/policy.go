// Package policy decides whether a request may use a route: it reads the
// caller's bearer credential (a static API key or an access token), checks it
// against the route's allow rules, and returns either an Identity or a
// Denial that says, in words safe to send to the client, what to fix.
//
// Deny by default: a route with no rule admits nobody, a credential that
// matches no rule is refused, and every refusal carries a stable reason code
// for the audit log.
package policy

import (
	"context"
	"net/http"
	"strings"
	"time"
)

// Methods by which a caller was admitted.
const (
	MethodKey    = "key"
	MethodToken  = "token"
	MethodPublic = "public"
)

// Identity is an admitted caller. It never holds the credential itself.
// Identities handed out by a Policy are shared and must not be modified.
type Identity struct {
	// Method is key, token or public.
	Method string
	// KeySet and KeyID name the static key (method key).
	KeySet string
	KeyID  string
	// Provider is the identity provider that validated the token (method
	// token); TenantID, ObjectID, AppID and Subject come from its claims.
	Provider string
	TenantID string
	ObjectID string
	AppID    string
	Subject  string

	key string // Key(), computed once
}

// Key returns a stable string that identifies the caller, for rate limits
// and logs: "key:<set>/<id>", "token:<tid>/<oid or appid or sub>", or
// "public".
func (id *Identity) Key() string {
	if id.key != "" {
		return id.key
	}
	return id.computeKey()
}

func (id *Identity) computeKey() string {
	switch id.Method {
	case MethodKey:
		return "key:" + id.KeySet + "/" + id.KeyID
	case MethodToken:
		who := id.ObjectID
		if who == "" {
			who = id.AppID
		}
		if who == "" {
			who = id.Subject
		}
		return "token:" + id.Provider + "/" + id.TenantID + "/" + who
	}
	return MethodPublic
}

// Client-facing error codes of denials.
const (
	CodeMissingCredential   = "missing_credential"
	CodeInvalidCredential   = "invalid_credential"
	CodeForbidden           = "forbidden"
	CodeProviderUnavailable = "identity_provider_unavailable"
)

// Audit reason codes of denials and admissions that come from this package.
// Token reasons come from the identity provider (see package idp).
const (
	ReasonNoCredential     = "no_credential"
	ReasonWrongScheme      = "wrong_auth_scheme"
	ReasonMalformedCred    = "malformed_credential"
	ReasonUnknownKey       = "unknown_key"
	ReasonKeyExpired       = "key_expired"
	ReasonKeyNotAllowed    = "key_not_allowed_on_route"
	ReasonTokenNotAllowed  = "token_not_allowed_on_route"
	ReasonKeyRuleNeedsKey  = "not_a_key"
	ReasonTokenRuleNeedJWT = "not_a_token"
	ReasonPublic           = "public_route"
)

// Denial is a refused request: what the client is told and what the audit
// log records. Message and the WWW-Authenticate value never contain a
// credential or reveal which keys exist.
type Denial struct {
	// Status is 401, 403 or 503.
	Status int
	// Code is the client-facing error code.
	Code string
	// Message tells the caller what to fix.
	Message string
	// Reason is the audit reason code.
	Reason string
	// Challenge is the WWW-Authenticate header value, or "".
	Challenge string
}

// Step records one rule tried while tracing an evaluation (gateway explain).
type Step struct {
	Rule     string // e.g. "allow[0] key_set=partners"
	Admitted bool
	Reason   string
	Detail   string
}

// Decision is the outcome of Evaluate: exactly one of Identity and Denial is
// set. Rule names the rule that admitted.
type Decision struct {
	Identity *Identity
	Rule     string
	Denial   *Denial
}

// Policy is a route's compiled allow list. It is immutable and safe for
// concurrent use.
type Policy struct {
	public bool
	keys   *KeyIndex
	rules  []rule
	// keySets is the set of key set names any rule admits, for the
	// "valid key, not for this route" answer.
	hasKeyRule   bool
	hasTokenRule bool
}

type rule struct {
	name   string // for traces and audit: "allow[0] key_set=partners"
	keySet string
	token  *TokenRule
}

// RuleSpec is one allow entry for New: a key set name, or a token rule.
type RuleSpec struct {
	KeySet string
	Token  *TokenRule
}

// Public returns a policy that admits every caller.
func Public() *Policy { return &Policy{public: true} }

// New compiles an allow list against the key index.
func New(keys *KeyIndex, specs []RuleSpec) *Policy {
	p := &Policy{keys: keys}
	for i, s := range specs {
		r := rule{keySet: s.KeySet, token: s.Token}
		if s.Token != nil {
			r.name = "allow[" + itoa(i) + "] identity_provider=" + s.Token.ProviderName
			p.hasTokenRule = true
		} else {
			r.name = "allow[" + itoa(i) + "] key_set=" + s.KeySet
			p.hasKeyRule = true
		}
		p.rules = append(p.rules, r)
	}
	return p
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

// IsPublic reports whether the policy admits everyone.
func (p *Policy) IsPublic() bool { return p.public }

const realm = `Bearer realm="modelgate"`

var publicIdentity = &Identity{Method: MethodPublic, key: MethodPublic}

// Evaluate decides on a request whose Authorization header value is authz.
// now is the instant key expiry is judged against. If trace is not nil, every
// rule tried is appended to it (gateway explain); pass nil on the hot path.
func (p *Policy) Evaluate(ctx context.Context, authz string, now time.Time, trace *[]Step) Decision {
	if p.public {
		return Decision{Identity: publicIdentity, Rule: ReasonPublic}
	}
	if authz == "" {
		return Decision{Denial: &Denial{
			Status: http.StatusUnauthorized, Code: CodeMissingCredential, Reason: ReasonNoCredential,
			Message:   "this route needs a credential: send Authorization: Bearer <API key or access token>",
			Challenge: realm,
		}}
	}
	bearer, ok := ParseBearer(authz)
	if !ok {
		if emptyBearer(authz) {
			// The right scheme with nothing after it (an unset variable in
			// the client's "Bearer $TOKEN"): a missing token, not a wrong
			// scheme. RFC 6750 §3.1 calls a malformed token invalid_token.
			return Decision{Denial: &Denial{
				Status: http.StatusUnauthorized, Code: CodeMissingCredential, Reason: ReasonNoCredential,
				Message:   "the Authorization header names the Bearer scheme but carries no credential: send Authorization: Bearer <API key or access token>",
				Challenge: realm + `, error="invalid_token", error_description="no bearer credential was presented"`,
			}}
		}
		if len(authz) > len("bearer ") && strings.EqualFold(authz[:len("bearer ")], "bearer ") {
			// The right scheme, but the credential has spaces or control
			// characters in it: no key or token we issue looks like that.
			return Decision{Denial: &Denial{
				Status: http.StatusUnauthorized, Code: CodeInvalidCredential, Reason: ReasonMalformedCred,
				Message:   "the bearer credential contains spaces or control characters: send the API key or token exactly as issued",
				Challenge: realm + `, error="invalid_token", error_description="malformed bearer credential"`,
			}}
		}
		return Decision{Denial: &Denial{
			Status: http.StatusUnauthorized, Code: CodeInvalidCredential, Reason: ReasonWrongScheme,
			Message:   "the Authorization header must use the Bearer scheme: send Authorization: Bearer <API key or access token>",
			Challenge: realm + `, error="invalid_request", error_description="use the Bearer scheme"`,
		}}
	}
	if LooksLikeJWT(bearer) {
		return p.evaluateToken(ctx, bearer, now, trace)
	}
	return p.evaluateKey(bearer, now, trace)
}

func (p *Policy) evaluateKey(key string, now time.Time, trace *[]Step) Decision {
	e, ok, expired := p.keys.lookup(key, now)
	if trace != nil {
		for _, r := range p.rules {
			s := Step{Rule: r.name}
			switch {
			case r.token != nil:
				s.Reason, s.Detail = ReasonTokenRuleNeedJWT, "the credential is an API key, not a token"
			case expired && e.set == r.keySet:
				s.Reason, s.Detail = ReasonKeyExpired, "key "+e.id+" passed its not_after"
			case !ok:
				s.Reason, s.Detail = ReasonUnknownKey, "no key set holds this key"
			case e.set != r.keySet:
				s.Reason, s.Detail = ReasonKeyNotAllowed, "the key belongs to key set "+e.set
			default:
				s.Admitted, s.Reason, s.Detail = true, "admitted", "key "+e.id+" of key set "+e.set
			}
			*trace = append(*trace, s)
			if s.Admitted {
				break
			}
		}
	}
	switch {
	case expired:
		return Decision{Denial: &Denial{
			Status: http.StatusUnauthorized, Code: CodeInvalidCredential, Reason: ReasonKeyExpired,
			Message:   "the API key has expired: ask the gateway's operators for a new key",
			Challenge: realm + `, error="invalid_token", error_description="the API key has expired"`,
		}}
	case !ok:
		return Decision{Denial: invalidKey()}
	}
	for _, r := range p.rules {
		if r.token == nil && r.keySet == e.set {
			return Decision{Identity: e.ident, Rule: r.name}
		}
	}
	if !p.hasKeyRule {
		// The route takes tokens only; say so rather than "forbidden".
		return Decision{Denial: &Denial{
			Status: http.StatusUnauthorized, Code: CodeInvalidCredential, Reason: ReasonKeyNotAllowed,
			Message:   "this route does not accept API keys: send an access token (Authorization: Bearer <token>)",
			Challenge: realm + `, error="invalid_token", error_description="this route needs an access token"`,
		}}
	}
	return Decision{Denial: &Denial{
		Status: http.StatusForbidden, Code: CodeForbidden, Reason: ReasonKeyNotAllowed,
		Message:   "this API key is valid but not allowed on this route: ask for access to it",
		Challenge: realm + `, error="insufficient_scope", error_description="the key is not allowed on this route"`,
	}}
}

func invalidKey() *Denial {
	return &Denial{
		Status: http.StatusUnauthorized, Code: CodeInvalidCredential, Reason: ReasonUnknownKey,
		Message:   "the API key is not valid: check that you send the whole key, exactly as issued",
		Challenge: realm + `, error="invalid_token", error_description="the API key is not valid"`,
	}
}

// ParseBearer extracts the credential from an Authorization header value of
// the form "Bearer <credential>" (scheme case-insensitive, RFC 7235 §2.1).
// It refuses other schemes, empty credentials and values containing
// whitespace or control characters.
func ParseBearer(authz string) (string, bool) {
	const prefix = "bearer "
	if len(authz) <= len(prefix) || !strings.EqualFold(authz[:len(prefix)], prefix) {
		return "", false
	}
	cred := strings.TrimLeft(authz[len(prefix):], " ")
	if cred == "" {
		return "", false
	}
	for i := 0; i < len(cred); i++ {
		if notCredByte[cred[i]] {
			return "", false
		}
	}
	return cred, true
}

// emptyBearer reports whether authz is the Bearer scheme alone, with at most
// blanks after it. (An HTTP server trims the trailing blank of "Bearer ", so
// the gateway sees "Bearer".)
func emptyBearer(authz string) bool {
	return strings.EqualFold(strings.TrimRight(authz, " \t"), "bearer")
}

// notCredByte marks the bytes a bearer credential may not contain: space,
// and ASCII control characters.
var notCredByte = func() (t [256]bool) {
	for c := 0; c <= ' '; c++ {
		t[c] = true
	}
	t[0x7f] = true
	return t
}()

// LooksLikeJWT reports whether a bearer value has a JWT's shape: it starts
// with "eyJ" (the base64url encoding of `{"`) and has at least two dots.
// Anything else is treated as an API key. The rest of the JWT syntax is the
// token verifier's to judge, so that a malformed token is refused as a
// token (with a reason) rather than looked up as a key.
func LooksLikeJWT(s string) bool {
	return len(s) >= 10 && strings.HasPrefix(s, "eyJ") && strings.Count(s, ".") >= 2
}
