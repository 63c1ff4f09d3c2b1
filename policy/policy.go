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
	"cmp"
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/modelgate/modelgate/idp"
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
		return "token:" + id.Provider + "/" + id.TenantID + "/" + cmp.Or(id.ObjectID, id.AppID, id.Subject)
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
		r := rule{keySet: s.KeySet, token: s.Token, name: "allow[" + strconv.Itoa(i) + "] key_set=" + s.KeySet}
		if s.Token != nil {
			r.name = "allow[" + strconv.Itoa(i) + "] identity_provider=" + s.Token.ProviderName
		}
		p.rules = append(p.rules, r)
	}
	return p
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
	c := credential{raw: bearer, token: LooksLikeJWT(bearer)}
	// The credential's own standing (an expired or unknown key) outranks
	// anything a rule says about it; with no refusal from a rule either,
	// the route simply takes the other kind of credential.
	worst := c.open(p.keys, now)
	for _, r := range p.rules {
		o := c.judge(ctx, r)
		if trace != nil {
			*trace = append(*trace, c.step(r, o))
		}
		if o.verdict == admitted {
			return Decision{Identity: c.identity(r, o), Rule: r.name}
		}
		if o.verdict > worst.verdict {
			worst = o // the first refusal of the strongest kind
		}
	}
	return Decision{Denial: c.denial(worst)}
}

// A verdict is what one rule says about a credential. The refusals are
// ordered weakest first: when no rule admits, the denial is the strongest
// refusal, so a key valid elsewhere is forbidden (403) rather than
// misdirected, and a token some provider accepted is forbidden rather than
// blamed on a provider that could not check it.
type verdict uint8

const (
	admitted       verdict = iota
	wrongKind              // the rule takes the other kind of credential
	tokenInvalid           // a provider refused the token (401)
	providerDown           // a provider could not check the token (503)
	tokenForbidden         // the token's claims do not satisfy the rule (403)
	keyOtherSet            // the key is valid, but of another key set (403)
	keyUnknown             // no key set holds the key (401)
	keyExpired             // the key passed its not_after (401)
)

// An outcome is a verdict with its audit reason, a client-safe detail and,
// for an admitted token, the verified claims. Details that name the key or
// claims are built only when tracing (see step), so the hot path does not
// allocate.
type outcome struct {
	verdict verdict
	reason  string
	detail  string
	claims  *idp.Claims
}

// credential is the presented bearer value and what is known about it so
// far: the key's index entry, or each provider's verification result.
type credential struct {
	raw   string
	token bool

	key          keyEntry
	keyOK        bool
	keyIsExpired bool

	results [maxVerifiers]verifyResult
	n       int
}

// open looks a key up and returns the credential's own standing, the
// weakest refusal the route can give.
func (c *credential) open(keys *KeyIndex, now time.Time) outcome {
	if c.token {
		return outcome{verdict: wrongKind, reason: ReasonTokenNotAllowed}
	}
	c.key, c.keyOK, c.keyIsExpired = keys.lookup(c.raw, now)
	switch {
	case c.keyIsExpired:
		return outcome{verdict: keyExpired, reason: ReasonKeyExpired}
	case !c.keyOK:
		return outcome{verdict: keyUnknown, reason: ReasonUnknownKey}
	}
	return outcome{verdict: wrongKind, reason: ReasonKeyNotAllowed}
}

// judge asks rule r about the credential.
func (c *credential) judge(ctx context.Context, r rule) outcome {
	if c.token {
		return c.judgeToken(ctx, r)
	}
	switch {
	case r.token != nil:
		return outcome{verdict: wrongKind, reason: ReasonTokenRuleNeedJWT, detail: "the credential is an API key, not a token"}
	case c.keyIsExpired:
		// Whatever set the rule names, the key itself is the reason: the
		// trace says what the decision says.
		return outcome{verdict: keyExpired, reason: ReasonKeyExpired}
	case !c.keyOK:
		return outcome{verdict: keyUnknown, reason: ReasonUnknownKey, detail: "no key set holds this key"}
	case c.key.set != r.keySet:
		return outcome{verdict: keyOtherSet, reason: ReasonKeyNotAllowed}
	}
	return outcome{verdict: admitted, reason: "admitted"}
}

// step describes an outcome for gateway explain, building the details the
// hot path leaves out.
func (c *credential) step(r rule, o outcome) Step {
	s := Step{Rule: r.name, Admitted: o.verdict == admitted, Reason: o.reason, Detail: o.detail}
	switch {
	case o.verdict == admitted && c.token:
		s.Detail = describeClaims(o.claims)
	case o.verdict == admitted:
		s.Detail = "key " + c.key.id + " of key set " + c.key.set
	case o.verdict == keyExpired:
		s.Detail = "key " + c.key.id + " passed its not_after"
	case o.verdict == keyOtherSet:
		s.Detail = "the key belongs to key set " + c.key.set
	}
	return s
}

// identity is the caller a rule admitted.
func (c *credential) identity(r rule, o outcome) *Identity {
	if !c.token {
		return c.key.ident
	}
	id := &Identity{Method: MethodToken, Provider: r.token.ProviderName, TenantID: o.claims.TenantID, ObjectID: o.claims.ObjectID, AppID: o.claims.AppID, Subject: o.claims.Subject}
	id.key = id.computeKey()
	return id
}

// denial is the refusal the client gets when o is the strongest refusal.
func (c *credential) denial(o outcome) *Denial {
	switch o.verdict {
	case keyExpired:
		return &Denial{
			Status: http.StatusUnauthorized, Code: CodeInvalidCredential, Reason: ReasonKeyExpired,
			Message:   "the API key has expired: ask the gateway's operators for a new key",
			Challenge: realm + `, error="invalid_token", error_description="the API key has expired"`,
		}
	case keyUnknown:
		return &Denial{
			Status: http.StatusUnauthorized, Code: CodeInvalidCredential, Reason: ReasonUnknownKey,
			Message:   "the API key is not valid: check that you send the whole key, exactly as issued",
			Challenge: realm + `, error="invalid_token", error_description="the API key is not valid"`,
		}
	case keyOtherSet:
		return &Denial{
			Status: http.StatusForbidden, Code: CodeForbidden, Reason: ReasonKeyNotAllowed,
			Message:   "this API key is valid but not allowed on this route: ask for access to it",
			Challenge: realm + `, error="insufficient_scope", error_description="the key is not allowed on this route"`,
		}
	case wrongKind:
		if !c.token {
			// The route takes tokens only; say so rather than "forbidden".
			return &Denial{
				Status: http.StatusUnauthorized, Code: CodeInvalidCredential, Reason: ReasonKeyNotAllowed,
				Message:   "this route does not accept API keys: send an access token (Authorization: Bearer <token>)",
				Challenge: realm + `, error="invalid_token", error_description="this route needs an access token"`,
			}
		}
	}
	return tokenDenial(o)
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
