package policy

import (
	"context"
	"net/http"
	"time"
)

// TokenRule is an identity-provider rule. (Filled in with the Azure AD work.)
type TokenRule struct {
	ProviderName string
}

func (p *Policy) evaluateToken(_ context.Context, _ string, _ time.Time, trace *[]Step) Decision {
	if trace != nil {
		for _, r := range p.rules {
			*trace = append(*trace, Step{Rule: r.name, Reason: ReasonKeyRuleNeedsKey, Detail: "the credential is a token, not an API key"})
		}
	}
	return Decision{Denial: &Denial{
		Status: http.StatusUnauthorized, Code: CodeInvalidCredential, Reason: ReasonTokenNotAllowed,
		Message:   "this route does not accept access tokens: send an API key (Authorization: Bearer <key>)",
		Challenge: realm + `, error="invalid_token", error_description="this route needs an API key"`,
	}}
}
