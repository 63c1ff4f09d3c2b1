package idp

import (
	"net/http"
	"strconv"
)

// Reason is a stable, snake_case code for why a token was refused or a rule
// denied it. It appears in audit logs, in `gateway explain` and in the
// gateway's JSON error bodies, so values never change once released.
//
// A Reason is also an error, so errors.Is(err, idp.ReasonTokenExpired)
// reports whether err is an *Error with that reason.
type Reason string

// Reasons returned by Provider.Verify (the token is not acceptable; HTTP 401,
// or 503 for ReasonProviderUnavailable).
const (
	ReasonTokenMalformed          Reason = "token_malformed"
	ReasonTokenTooLarge           Reason = "token_too_large"
	ReasonAlgNotAllowed           Reason = "alg_not_allowed"
	ReasonHeaderNotAllowed        Reason = "header_not_allowed"
	ReasonUnknownKey              Reason = "unknown_key"
	ReasonBadSignature            Reason = "bad_signature"
	ReasonTokenExpired            Reason = "token_expired"
	ReasonTokenNotYetValid        Reason = "token_not_yet_valid"
	ReasonTokenUsedBeforeIssued   Reason = "token_used_before_issued"
	ReasonMissingExp              Reason = "missing_exp"
	ReasonWrongIssuer             Reason = "wrong_issuer"
	ReasonWrongAudience           Reason = "wrong_audience"
	ReasonInvalidTenantID         Reason = "invalid_tenant_id"
	ReasonUnsupportedTokenVersion Reason = "unsupported_token_version"
	ReasonNotAccessToken          Reason = "not_access_token"
	ReasonProviderUnavailable     Reason = "provider_unavailable"
)

// Reasons returned by Rule.Evaluate (the identity is valid but the rule does
// not admit it; HTTP 403). ReasonTenantNotAllowed is also returned by Verify
// when the token's tenant is not one the provider accepts (then 401).
const (
	ReasonTenantNotAllowed Reason = "tenant_not_allowed"
	ReasonMissingRole      Reason = "missing_role"
	ReasonMissingScope     Reason = "missing_scope"
	ReasonNotInGroup       Reason = "not_in_group"
	ReasonGroupsUnknown    Reason = "groups_unknown"
	ReasonUserNotAllowed   Reason = "user_not_allowed"
	ReasonAppNotAllowed    Reason = "app_not_allowed"
)

// Error implements error, so a Reason can be an errors.Is target.
func (r Reason) Error() string { return string(r) }

// Error is a refused token. Reason is the stable code; Detail says what the
// caller can do about it in words safe to send to the client (it never
// contains the token, claim values or key material); Err is the underlying
// cause for server logs, possibly nil.
type Error struct {
	Provider string // name of the identity provider that refused the token
	Reason   Reason
	Detail   string
	Err      error
}

// Error returns a message for server logs: provider, reason, detail and
// cause. Send only Detail (and Reason) to clients.
func (e *Error) Error() string {
	s := "identity provider " + strconv.Quote(e.Provider) + ": " + string(e.Reason) + ": " + e.Detail
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is e's Reason.
func (e *Error) Is(target error) bool {
	r, ok := target.(Reason)
	return ok && r == e.Reason
}

// Status is the HTTP status for the refusal: 503 when the provider has never
// had signing keys (ReasonProviderUnavailable: the gateway, not the token, is
// at fault and the client should retry), 401 otherwise.
func (e *Error) Status() int {
	if e.Reason == ReasonProviderUnavailable {
		return http.StatusServiceUnavailable
	}
	return http.StatusUnauthorized
}

// Client-safe details. They say what to fix without echoing the token,
// claim values or which keys exist.
const (
	detailEmpty          = "no bearer token was presented"
	detailMalformed      = "bearer token is not a well-formed JWT (header.payload.signature, each base64url-encoded JSON)"
	detailClaimTypes     = "token claims have the wrong JSON types (exp, nbf and iat must be numbers; aud a string or array of strings)"
	detailTooLarge       = "bearer token is larger than the gateway accepts (" + maxTokenSizeText + " bytes)"
	detailAlg            = "token signing algorithm is not accepted: tokens must be signed with RS256"
	detailHeader         = "token header carries a key reference (jku, x5u, jwk) or critical extension (crit) that this gateway does not accept"
	detailNoKID          = "token header has no key id (kid): present an access token issued by the identity provider"
	detailUnknownKey     = "token is signed with a key the identity provider does not publish: request a new token"
	detailBadSignature   = "token signature is invalid"
	detailExpired        = "token has expired: request a new token"
	detailNotYetValid    = "token is not valid yet (nbf is in the future): check the client's clock"
	detailUsedBefore     = "token was issued in the future (iat): check the issuer's and the gateway's clocks"
	detailMissingExp     = "token has no expiry (exp claim): present an access token issued by the identity provider"
	detailWrongIssuer    = "token issuer is not accepted by this gateway: request a token from the configured tenant or issuer"
	detailWrongAudience  = "token audience is not accepted by this gateway: request a token for the gateway's App ID URI or client id"
	detailNoTenant       = "token carries no tenant id (tid claim): present an Azure AD access token"
	detailTenant         = "token was issued by a tenant this gateway does not accept"
	detailInvalidTenant  = "token tenant id (tid claim) is not a GUID"
	detailNotAccessToken = "token is not an access token (it has no appid or azp claim, like an ID token): request an access token for the gateway's API"
	detailVersion        = "token version (ver claim) is neither 1.0 nor 2.0: present an Azure AD access token"
	detailUnavailable    = "the identity provider's signing keys are not available yet: retry later"
	maxTokenSizeText     = "16384"
)
