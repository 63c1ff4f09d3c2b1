package credential

import (
	"cmp"
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
	cp := &controlPlane{o.Credential, cmp.Or(o.Scope, ScopeWorkspaceAPI), newHTTPClient(o.HTTPClient), o.Workspace.Name, o.Name}
	op := operation{
		name:   "get aml service token",
		target: fmt.Sprintf("service %q", o.Service),
		action: "get web service tokens (Microsoft.MachineLearningServices/workspaces/services/*)",
	}
	return controlPlaneToken(cp, TokenSourceOptions{Name: o.Name, Type: "aml_service_token", Label: "aml service token", Clock: o.Clock, Logger: o.Logger, Refresh: o.Refresh},
		op, base+"/token", "expiryOn", func(r serviceTokenResponse) (string, unixTime, unixTime) {
			return r.AccessToken, r.RefreshAfter, r.ExpiryOn
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
	cp := &controlPlane{o.Credential, cmp.Or(o.Scope, ScopeARM), newHTTPClient(o.HTTPClient), o.Workspace.Name, o.Name}
	op := operation{
		name:   "get aml endpoint token",
		target: fmt.Sprintf("online endpoint %q", o.Endpoint),
		action: "get online endpoint tokens (Microsoft.MachineLearningServices/workspaces/onlineEndpoints/token/action)",
	}
	return controlPlaneToken(cp, TokenSourceOptions{Name: o.Name, Type: "aml_endpoint_token", Label: "aml endpoint token", Clock: o.Clock, Logger: o.Logger, Refresh: o.Refresh},
		op, u, "expiryTimeUtc", func(r endpointTokenResponse) (string, unixTime, unixTime) {
			return r.AccessToken, r.RefreshAfterTimeUTC, r.ExpiryTimeUTC
		})
}

// serviceTokenResponse is POST {base}/token's answer.
type serviceTokenResponse struct {
	AccessToken  string   `json:"accessToken"`
	RefreshAfter unixTime `json:"refreshAfter"`
	ExpiryOn     unixTime `json:"expiryOn"`
}

// endpointTokenResponse is ARM onlineEndpoints/{name}/token's answer.
type endpointTokenResponse struct {
	AccessToken         string   `json:"accessToken"`
	ExpiryTimeUTC       unixTime `json:"expiryTimeUtc"`
	RefreshAfterTimeUTC unixTime `json:"refreshAfterTimeUtc"`
}

// controlPlaneToken returns a TokenSource for o whose fetch posts to u and
// reads the token, its refresh hint and its expiry from the answer, of
// type R, with fields.
func controlPlaneToken[R any](cp *controlPlane, o TokenSourceOptions, op operation, u, expiryField string, fields func(R) (token string, refreshAfter, expiry unixTime)) (*TokenSource, error) {
	o.Fetch = func(ctx context.Context) (Token, error) {
		var r R
		if err := cp.post(ctx, op, u, &r); err != nil {
			return Token{}, err
		}
		value, refreshAfter, expiry := fields(r)
		if value == "" {
			return Token{}, fmt.Errorf("credential: %s: response has no accessToken", op.name)
		}
		if expiry.time().IsZero() {
			return Token{}, fmt.Errorf("credential: %s: response has no %s", op.name, expiryField)
		}
		return Token{Value: Secret(value), RefreshAt: refreshAfter.time(), ExpiresAt: expiry.time()}, nil
	}
	return NewTokenSource(o)
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
	scope := cmp.Or(o.Scope, ScopeAzureML)
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
