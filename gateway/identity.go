package gateway

import (
	"context"
	"fmt"
	"reflect"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/policy"
	"github.com/modelgate/modelgate/idp"
)

// buildProviders starts one identity provider per configured entry. Keys are
// fetched in the background; a provider that cannot reach its issuer yet
// answers 503 for its rules and keeps /readyz not ready, but never stops the
// gateway from starting.
// Providers whose settings are unchanged from prev are carried over.
func buildProviders(ctx context.Context, cfg *config.Config, deps Deps, prev, snap *Snapshot) error {
	for _, name := range sortedNames(cfg.IdentityProviders) {
		ip := cfg.IdentityProviders[name]
		if prev != nil && prev.providers[name] != nil && reflect.DeepEqual(prev.Config.IdentityProviders[name], ip) {
			snap.providers[name] = prev.providers[name]
			snap.reused.providers[name] = true
			continue
		}
		o := idp.Options{
			Name:            name,
			Type:            ip.Type,
			TenantID:        ip.TenantID,
			AllowedTenants:  ip.AllowedTenants,
			Cloud:           ip.Cloud,
			AuthorityHost:   ip.AuthorityHost,
			Issuer:          ip.Issuer,
			DiscoveryURL:    ip.DiscoveryURL,
			JWKSURI:         ip.JWKSURI,
			Audiences:       ip.Audiences,
			RefreshInterval: ip.RefreshInterval.D(),
			HTTPClient:      deps.HTTPClient,
			Logger:          deps.Logger,
			Now:             deps.Now,
		}
		if ip.Leeway != nil {
			o.Leeway = ip.Leeway.D()
		}
		if jwks, ok := deps.StaticJWKS[name]; ok {
			o.StaticJWKS = jwks
		} else if jwks, ok := deps.StaticJWKS["*"]; ok {
			o.StaticJWKS = jwks
		}
		p, err := idp.New(o)
		if err != nil {
			return fmt.Errorf("identity provider %s: %w", name, err)
		}
		p.Start(ctx)
		snap.providers[name] = p
		snap.owned.providers[name] = true
	}
	return nil
}

// tokenRule compiles an allow entry's claim conditions.
func tokenRule(a *config.AllowRule, providers map[string]*idp.Provider) (*policy.TokenRule, error) {
	m := func(x config.Match) idp.Match { return idp.Match{AnyOf: x.AnyOf, AllOf: x.AllOf} }
	spec := idp.RuleSpec{Roles: m(a.Roles), Scopes: m(a.Scopes), Groups: m(a.Groups), Users: m(a.Users), Apps: m(a.Apps), Tenants: m(a.Tenants)}
	rule, err := idp.CompileRule(spec)
	if err != nil {
		return nil, err
	}
	return &policy.TokenRule{ProviderName: a.IdentityProvider, Verifier: providers[a.IdentityProvider], Claims: rule}, nil
}
