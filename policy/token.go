package policy

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/modelgate/modelgate/policy/idp"
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

// evaluateToken tries each identity-provider rule in order. A token is
// verified at most once per provider per request. If no rule admits, the
// answer is 403 when some provider accepted the token (a valid identity the
// route does not admit), else 503 when a provider could not check it (it has
// no keys yet), else 401.
func (p *Policy) evaluateToken(ctx context.Context, raw string, _ time.Time, trace *[]Step) Decision {
	var (
		results     [maxVerifiers]verifyResult
		n           int
		forbidden   *Denial
		unavailable *Denial
		invalid     *Denial
	)
	for _, r := range p.rules {
		if r.token == nil {
			if trace != nil {
				*trace = append(*trace, Step{Rule: r.name, Reason: ReasonKeyRuleNeedsKey, Detail: "the credential is a token, not an API key"})
			}
			continue
		}
		var res *verifyResult
		for i := range n {
			if results[i].v == r.token.Verifier {
				res = &results[i]
				break
			}
		}
		if res == nil {
			c, err := r.token.Verifier.Verify(ctx, raw)
			tmp := verifyResult{v: r.token.Verifier, claims: c, err: err}
			if n < maxVerifiers {
				results[n] = tmp
				res = &results[n]
				n++
			} else {
				res = &tmp
			}
		}
		if res.err != nil {
			reason, detail, status := tokenError(res.err)
			if trace != nil {
				*trace = append(*trace, Step{Rule: r.name, Reason: reason, Detail: detail})
			}
			if status == http.StatusServiceUnavailable {
				if unavailable == nil {
					unavailable = &Denial{
						Status: status, Code: CodeProviderUnavailable, Reason: reason,
						Message: "the gateway cannot validate access tokens right now (its identity provider's signing keys are not available yet): try again later",
					}
				}
			} else if invalid == nil {
				invalid = &Denial{
					Status: http.StatusUnauthorized, Code: CodeInvalidCredential, Reason: reason,
					Message:   "the access token was refused: " + detail,
					Challenge: realm + `, error="invalid_token", error_description="` + challengeText(detail) + `"`,
				}
			}
			continue
		}
		ok, reason, detail := true, idp.Reason(""), ""
		if r.token.Claims != nil {
			ok, reason, detail = r.token.Claims.Evaluate(res.claims)
		}
		if ok {
			if trace != nil {
				*trace = append(*trace, Step{Rule: r.name, Admitted: true, Reason: "admitted", Detail: describeClaims(res.claims)})
			}
			c := res.claims
			id := &Identity{Method: MethodToken, Provider: r.token.ProviderName, TenantID: c.TenantID, ObjectID: c.ObjectID, AppID: c.AppID, Subject: c.Subject}
			id.key = id.computeKey()
			return Decision{Identity: id, Rule: r.name}
		}
		if trace != nil {
			*trace = append(*trace, Step{Rule: r.name, Reason: string(reason), Detail: detail})
		}
		if forbidden == nil {
			forbidden = &Denial{
				Status: http.StatusForbidden, Code: CodeForbidden, Reason: string(reason),
				Message:   "the access token is valid but not allowed on this route: " + detail,
				Challenge: realm + `, error="insufficient_scope", error_description="` + challengeText(detail) + `"`,
			}
		}
	}
	switch {
	case forbidden != nil:
		return Decision{Denial: forbidden}
	case unavailable != nil:
		return Decision{Denial: unavailable}
	case invalid != nil:
		return Decision{Denial: invalid}
	}
	return Decision{Denial: &Denial{
		Status: http.StatusUnauthorized, Code: CodeInvalidCredential, Reason: ReasonTokenNotAllowed,
		Message:   "this route does not accept access tokens: send an API key (Authorization: Bearer <key>)",
		Challenge: realm + `, error="invalid_token", error_description="this route needs an API key"`,
	}}
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
