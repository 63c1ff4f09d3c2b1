package policy

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/modelgate/modelgate/idp"
)

// TokenVerifier validates an access token; *idp.Provider implements it.
type TokenVerifier interface {
	Verify(ctx context.Context, raw string) (*idp.Claims, error)
}

// TokenRule is an identity-provider allow entry: a token the provider
// validates, whose claims satisfy Claims (nil: any valid token).
type TokenRule struct {
	ProviderName string
	Verifier     TokenVerifier
	Claims       *idp.Rule
}

// maxVerifiers is how many distinct providers one evaluation remembers
// results for; a route naming more simply verifies again.
const maxVerifiers = 4

type verifyResult struct {
	v      TokenVerifier
	claims *idp.Claims
	err    error
}

// verify checks the token with v, at most once per provider per request.
func (c *credential) verify(ctx context.Context, v TokenVerifier) verifyResult {
	for i := range c.n {
		if c.results[i].v == v {
			return c.results[i]
		}
	}
	cl, err := v.Verify(ctx, c.raw)
	res := verifyResult{v: v, claims: cl, err: err}
	if c.n < maxVerifiers {
		c.results[c.n] = res
		c.n++
	}
	return res
}

// judgeToken asks rule r about the token: its provider must accept the
// token, and the claims must satisfy the rule's constraints.
func (c *credential) judgeToken(ctx context.Context, r rule) outcome {
	if r.token == nil {
		return outcome{verdict: wrongKind, reason: ReasonKeyRuleNeedsKey, detail: "the credential is a token, not an API key"}
	}
	res := c.verify(ctx, r.token.Verifier)
	if res.err != nil {
		reason, detail, status := tokenError(res.err)
		if status == http.StatusServiceUnavailable {
			return outcome{verdict: providerDown, reason: reason, detail: detail}
		}
		return outcome{verdict: tokenInvalid, reason: reason, detail: detail}
	}
	if r.token.Claims != nil {
		if ok, reason, detail := r.token.Claims.Evaluate(res.claims); !ok {
			return outcome{verdict: tokenForbidden, reason: string(reason), detail: detail}
		}
	}
	return outcome{verdict: admitted, reason: "admitted", claims: res.claims}
}

// tokenDenial is the refusal of a token whose strongest refusal is o: 403
// when some provider accepted the token (a valid identity the route does
// not admit), else 503 when a provider could not check it (it has no keys
// yet), else 401.
func tokenDenial(o outcome) *Denial {
	switch o.verdict {
	case tokenForbidden:
		return &Denial{
			Status: http.StatusForbidden, Code: CodeForbidden, Reason: o.reason,
			Message:   "the access token is valid but not allowed on this route: " + o.detail,
			Challenge: realm + `, error="insufficient_scope", error_description="` + challengeText(o.detail) + `"`,
		}
	case providerDown:
		return &Denial{
			Status: http.StatusServiceUnavailable, Code: CodeProviderUnavailable, Reason: o.reason,
			Message: "the gateway cannot validate access tokens right now (its identity provider's signing keys are not available yet): try again later",
		}
	case tokenInvalid:
		return &Denial{
			Status: http.StatusUnauthorized, Code: CodeInvalidCredential, Reason: o.reason,
			Message:   "the access token was refused: " + o.detail,
			Challenge: realm + `, error="invalid_token", error_description="` + challengeText(o.detail) + `"`,
		}
	}
	return &Denial{
		Status: http.StatusUnauthorized, Code: CodeInvalidCredential, Reason: ReasonTokenNotAllowed,
		Message:   "this route does not accept access tokens: send an API key (Authorization: Bearer <key>)",
		Challenge: realm + `, error="invalid_token", error_description="this route needs an API key"`,
	}
}

// tokenError turns a verification error into an audit reason, a
// client-safe detail and a status.
func tokenError(err error) (reason, detail string, status int) {
	var ie *idp.Error
	if errors.As(err, &ie) {
		return string(ie.Reason), ie.Detail, ie.Status()
	}
	// Not an idp error (should not happen): refuse without details.
	return "token_invalid", "the token could not be validated", http.StatusUnauthorized
}

// challengeText makes a detail safe inside a quoted WWW-Authenticate
// parameter (RFC 6750 §3: no '"' or '\').
func challengeText(s string) string {
	if !strings.ContainsAny(s, "\"\\") {
		return s
	}
	return strings.NewReplacer(`"`, "'", `\`, "/").Replace(s)
}

func describeClaims(c *idp.Claims) string {
	var b strings.Builder
	b.WriteString("tid=" + c.TenantID)
	if c.ObjectID != "" {
		b.WriteString(" oid=" + c.ObjectID)
	}
	if c.AppID != "" {
		b.WriteString(" app=" + c.AppID)
	}
	if len(c.Roles) > 0 {
		b.WriteString(" roles=" + strings.Join(c.Roles, ","))
	}
	if len(c.Scopes) > 0 {
		b.WriteString(" scp=" + strings.Join(c.Scopes, ","))
	}
	return b.String()
}
