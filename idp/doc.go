// Package idp verifies OAuth 2.0 access tokens from Azure AD (Microsoft Entra
// ID) and other OpenID Connect issuers, and evaluates claim rules on them.
//
// A Provider is built from Options by New, which validates and compiles them
// without touching the network. Start launches the background refresh: it
// fetches the issuer's metadata and JSON Web Key Set (never blocking on the
// network), refreshes them about daily and when a token names an unknown key id
// (rate-limited), and keeps its last good keys when a refresh fails. Verify
// checks one bearer token and returns its Claims or an *Error whose Reason is
// a stable code for audit logs and whose Detail is safe to send to the
// client. A Rule, compiled once by CompileRule, decides whether verified
// Claims satisfy an allow entry of a route.
//
// # Security model
//
//   - The algorithm is pinned to RS256 per provider and never taken from the
//     token; "none", HMAC (including HMAC keyed with the RSA public key) and
//     every other algorithm are refused.
//   - Keys come only from the provider's own key set, selected by the
//     token's kid. Header fields that name other keys (jku, x5u, jwk) or
//     critical extensions (crit) make a token refused outright; nothing a
//     token says is ever fetched.
//   - Metadata and keys are fetched over https only (plain http only to
//     loopback hosts, for tests), with bounded response sizes, and redirects
//     held to the same rule.
//   - RSA keys are taken from n and e. An x5c certificate that parses must
//     hold the same key; one that does not parse (Azure AD still publishes
//     certificates with negative serial numbers, which Go refuses) is
//     ignored, and a broken entry is dropped without making the rest of the
//     key set unusable.
//   - exp is required and must be a JSON number; exp, nbf and iat are checked
//     with Options.Leeway (default 60s) against Options.Now.
//   - Azure AD v1 and v2 tokens are each checked against their own metadata
//     and keys, selected by the ver claim; iss must equal the metadata's
//     issuer exactly (with the token's tid substituted into the {tenantid}
//     template for multi-tenant providers, where tid must be a GUID in
//     AllowedTenants); aud must be one of Options.Audiences.
//   - Tokens larger than MaxTokenSize are refused before decoding.
//   - Successful verifications are cached by SHA-256 of the token, bounded,
//     invalidated by any key change, with time checks repeated on each hit.
//
// # Keys and keyfunc
//
// The jwt.Keyfunc is produced by github.com/MicahParks/keyfunc/v3 over a
// github.com/MicahParks/jwkset storage that this package fills. This package
// does its own fetching rather than using keyfunc's HTTP storage, because
// jwkset v0.11 rejects a whole key set when one x5c certificate fails to
// parse, reads unbounded bodies, blocks its constructor on the first fetch
// and cannot report key changes (which the cache needs). A kid missing from
// the key set triggers a refetch at most once per
// UnknownKIDRefreshInterval, awaited at most UnknownKIDWait.
//
// Nothing in this package has mutable package-level state; time, the HTTP
// client and the logger are injected through Options.
package idp
