package gateway

import (
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/credential/azcred"
)

// upstreamSource builds the credential source for an upstream's auth
// section; nil for auth type none. The caller starts and closes it.
func upstreamSource(name string, u *config.Upstream, azure *azureCredentials, deps Deps) (credential.ManagedSource, error) {
	a := u.Auth
	var ws credential.Workspace
	if a.Workspace != nil {
		ws = credential.Workspace{
			SubscriptionID: a.Workspace.SubscriptionID, ResourceGroup: a.Workspace.ResourceGroup, Name: a.Workspace.Name,
			Region: a.Workspace.Region, APIHost: a.Workspace.APIHost, ManagementHost: a.Workspace.ManagementHost,
		}
	}
	switch a.Type {
	case config.AuthNone:
		return nil, nil
	case config.AuthKey:
		return credential.NewKey(credential.KeyOptions{
			Name:      name,
			Primary:   credential.Secret(a.Key.Reveal()),
			Secondary: credential.Secret(a.SecondaryKey.Reveal()),
			Logger:    deps.Logger,
		})
	}
	cred, err := azure.get(a.Credential)
	if err != nil {
		return nil, err
	}
	switch a.Type {
	case config.AuthAMLServiceToken:
		return credential.NewAMLServiceToken(credential.AMLServiceTokenOptions{
			Name: name, Credential: cred, Workspace: ws, Service: a.Service,
			HTTPClient: deps.HTTPClient, Clock: deps.Clock, Logger: deps.Logger, Refresh: deps.Refresh,
		})
	case config.AuthAMLEndpointToken:
		return credential.NewAMLEndpointToken(credential.AMLEndpointTokenOptions{
			Name: name, Credential: cred, Workspace: ws, Endpoint: a.Endpoint,
			HTTPClient: deps.HTTPClient, Clock: deps.Clock, Logger: deps.Logger, Refresh: deps.Refresh,
		})
	case config.AuthAADToken:
		return credential.NewAADToken(credential.AADTokenOptions{
			Name: name, Credential: cred, Scope: a.Scope,
			Clock: deps.Clock, Logger: deps.Logger, Refresh: deps.Refresh,
		})
	case config.AuthAMLKeys:
		return credential.NewAMLKeys(credential.AMLKeysOptions{
			Name: name, Credential: cred, Workspace: ws, Service: a.Service, Endpoint: a.Endpoint,
			Interval:   a.RefreshInterval.D(),
			HTTPClient: deps.HTTPClient, Clock: deps.Clock, Logger: deps.Logger, Refresh: deps.Refresh,
		})
	}
	return nil, fmt.Errorf("auth type %s is not supported", a.Type)
}

// azureCredentials builds each of the gateway's Azure identities once, when
// an upstream first needs it, and shares it between upstreams (azidentity
// caches tokens per credential).
type azureCredentials struct {
	cfg   map[string]*config.Credential
	deps  Deps
	built map[string]azcore.TokenCredential
}

func (a *azureCredentials) get(name string) (azcore.TokenCredential, error) {
	if c, ok := a.built[name]; ok {
		return c, nil
	}
	c := a.cfg[name]
	if c == nil {
		return nil, fmt.Errorf("no credential named %q", name)
	}
	cred, err := azcred.New(azcred.Options{
		Name:                name,
		Type:                azcred.Type(c.Type),
		TenantID:            c.TenantID,
		ClientID:            c.ClientID,
		ClientSecret:        credential.Secret(c.ClientSecret.Reveal()),
		CertificatePath:     c.CertificatePath,
		CertificatePassword: credential.Secret(c.CertificatePassword.Reveal()),
		ResourceID:          c.ResourceID,
		TokenFilePath:       c.TokenFilePath,
		Cloud:               c.Cloud,
		AuthorityHost:       c.AuthorityHost,
		HTTPClient:          a.deps.HTTPClient,
		Retry:               a.deps.AzureRetry,
	})
	if err != nil {
		return nil, err
	}
	if a.built == nil {
		a.built = map[string]azcore.TokenCredential{}
	}
	a.built[name] = cred
	return cred, nil
}
