package credential

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/modelgate/modelgate/internal/problem"
)

// AMLServiceTokenOptions configures NewAMLServiceToken.
type AMLServiceTokenOptions struct {
	// Name is the upstream's name.
	Name string
	// Credential is the gateway's own Azure identity (see credential/azcred).
	Credential azcore.TokenCredential
	// Workspace holds the web service; Region or APIHost is required.
	Workspace Workspace
	// Service is the web service's name.
	Service string
	// Scope of the ARM token sent to the workspace API.
	// Default: ScopeWorkspaceAPI.
	Scope string
	// HTTPClient reaches the workspace API. Default: a client with a 30s
	// timeout over http.DefaultTransport.
	HTTPClient *http.Client
	// Clock defaults to SystemClock().
	Clock Clock
	// Logger receives one line per refresh; nil discards.
	Logger *slog.Logger
	// Refresh tunes backoff, timeouts and rate limits.
	Refresh RefreshPolicy
}

// serviceTokenResponse is POST {base}/token's answer.
type serviceTokenResponse struct {
	AccessToken  string   `json:"accessToken"`
	TokenType    string   `json:"tokenType"`
	RefreshAfter unixTime `json:"refreshAfter"`
	ExpiryOn     unixTime `json:"expiryOn"`
}

// NewAMLServiceToken returns the aml_service_token source: AKS web service
// token auth, as the Azure ML SDK's service.get_token(). It POSTs
// {api_host}/modelmanagement/v1.0/.../services/{name}/token with the
// gateway's ARM token, refreshes at refreshAfter and never serves a token
// past expiryOn.
func NewAMLServiceToken(o AMLServiceTokenOptions) (*TokenSource, error) {
	var probs problem.List
	needCredential(o.Credential, &probs)
	if o.Service == "" {
		probs.Add("service", "missing: the AKS web service name")
	}
	base := o.Workspace.serviceBase(o.Service, &probs)
	if err := probs.Err(); err != nil {
		return nil, err
	}
	cp := &controlPlane{
		cred:      o.Credential,
		scope:     orDefault(o.Scope, ScopeWorkspaceAPI),
		http:      newHTTPClient(o.HTTPClient),
		workspace: o.Workspace.Name,
		name:      o.Name,
	}
	op := operation{
		name:   "get aml service token",
		target: fmt.Sprintf("service %q", o.Service),
		action: "get web service tokens (Microsoft.MachineLearningServices/workspaces/services/*)",
	}
	u := base + "/token"
	return NewTokenSource(TokenSourceOptions{
		Name:  o.Name,
		Type:  "aml_service_token",
		Label: "aml service token",
		Fetch: func(ctx context.Context) (Token, error) {
			var r serviceTokenResponse
			if err := cp.post(ctx, op, u, &r); err != nil {
				return Token{}, err
			}
			return tokenFrom(op, r.AccessToken, r.RefreshAfter, r.ExpiryOn, "expiryOn")
		},
		Clock:   o.Clock,
		Logger:  o.Logger,
		Refresh: o.Refresh,
	})
}

// AMLEndpointTokenOptions configures NewAMLEndpointToken.
type AMLEndpointTokenOptions struct {
	// Name is the upstream's name.
	Name string
	// Credential is the gateway's own Azure identity.
	Credential azcore.TokenCredential
	// Workspace holds the online endpoint.
	Workspace Workspace
	// Endpoint is the online endpoint's name.
	Endpoint string
	// APIVersion is the ARM api-version. Default: DefaultAPIVersion.
	APIVersion string
	// Scope of the ARM token. Default: ScopeARM.
	Scope string
	// HTTPClient reaches ARM. Default: a client with a 30s timeout.
	HTTPClient *http.Client
	// Clock defaults to SystemClock().
	Clock Clock
	// Logger receives one line per refresh; nil discards.
	Logger *slog.Logger
	// Refresh tunes backoff, timeouts and rate limits.
	Refresh RefreshPolicy
}

// endpointTokenResponse is ARM onlineEndpoints/{name}/token's answer.
type endpointTokenResponse struct {
	AccessToken         string   `json:"accessToken"`
	TokenType           string   `json:"tokenType"`
	ExpiryTimeUTC       unixTime `json:"expiryTimeUtc"`
	RefreshAfterTimeUTC unixTime `json:"refreshAfterTimeUtc"`
}

// NewAMLEndpointToken returns the aml_endpoint_token source: an online
// endpoint in aml_token mode. It POSTs ARM's
// .../onlineEndpoints/{name}/token, refreshes at refreshAfterTimeUtc and
// never serves a token past expiryTimeUtc.
func NewAMLEndpointToken(o AMLEndpointTokenOptions) (*TokenSource, error) {
	var probs problem.List
	needCredential(o.Credential, &probs)
	if o.Endpoint == "" {
		probs.Add("endpoint", "missing: the online endpoint name")
	}
	u := o.Workspace.endpointURL(o.Endpoint, "token", o.APIVersion, &probs)
	if err := probs.Err(); err != nil {
		return nil, err
	}
	cp := &controlPlane{
		cred:      o.Credential,
		scope:     orDefault(o.Scope, ScopeARM),
		http:      newHTTPClient(o.HTTPClient),
		workspace: o.Workspace.Name,
		name:      o.Name,
	}
	op := operation{
		name:   "get aml endpoint token",
		target: fmt.Sprintf("online endpoint %q", o.Endpoint),
		action: "get online endpoint tokens (Microsoft.MachineLearningServices/workspaces/onlineEndpoints/token/action)",
	}
	return NewTokenSource(TokenSourceOptions{
		Name:  o.Name,
		Type:  "aml_endpoint_token",
		Label: "aml endpoint token",
		Fetch: func(ctx context.Context) (Token, error) {
			var r endpointTokenResponse
			if err := cp.post(ctx, op, u, &r); err != nil {
				return Token{}, err
			}
			return tokenFrom(op, r.AccessToken, r.RefreshAfterTimeUTC, r.ExpiryTimeUTC, "expiryTimeUtc")
		},
		Clock:   o.Clock,
		Logger:  o.Logger,
		Refresh: o.Refresh,
	})
}

func tokenFrom(op operation, value string, refreshAfter, expiry unixTime, expiryField string) (Token, error) {
	if value == "" {
		return Token{}, fmt.Errorf("credential: %s: response has no accessToken", op.name)
	}
	if expiry.time().IsZero() {
		return Token{}, fmt.Errorf("credential: %s: response has no %s", op.name, expiryField)
	}
	return Token{Value: Secret(value), RefreshAt: refreshAfter.time(), ExpiresAt: expiry.time()}, nil
}

// AADTokenOptions configures NewAADToken.
type AADTokenOptions struct {
	// Name is the upstream's name.
	Name string
	// Credential is the gateway's own Azure identity.
	Credential azcore.TokenCredential
	// Scope of the token presented upstream. Default: ScopeAzureML.
	Scope string
	// Clock defaults to SystemClock().
	Clock Clock
	// Logger receives one line per refresh; nil discards.
	Logger *slog.Logger
	// Refresh tunes backoff, timeouts and rate limits.
	Refresh RefreshPolicy
}

// NewAADToken returns the aad_token source: an Azure AD token for Scope
// obtained with the gateway's identity. It refreshes at the token's
// RefreshOn when azidentity sets one, otherwise RefreshPolicy.RefreshAhead
// before ExpiresOn. azidentity caches tokens itself, so a Rejected refetch
// usually gets the same token back and reports false.
func NewAADToken(o AADTokenOptions) (*TokenSource, error) {
	var probs problem.List
	needCredential(o.Credential, &probs)
	if err := probs.Err(); err != nil {
		return nil, err
	}
	scope := orDefault(o.Scope, ScopeAzureML)
	cred := o.Credential
	return NewTokenSource(TokenSourceOptions{
		Name:  o.Name,
		Type:  "aad_token",
		Label: "aad token",
		Fetch: func(ctx context.Context) (Token, error) {
			at, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
			if err != nil {
				return Token{}, fmt.Errorf("credential: get Azure AD token for %s: %w", scope, err)
			}
			return Token{Value: Secret(at.Token), RefreshAt: at.RefreshOn, ExpiresAt: at.ExpiresOn}, nil
		},
		Clock:   o.Clock,
		Logger:  o.Logger,
		Refresh: o.Refresh,
	})
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
