package idp_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/modelgate/modelgate/idp"
	"github.com/modelgate/modelgate/internal/problem"
	"github.com/modelgate/modelgate/test/fakeaad"
)

func TestNewRejectsBadOptions(t *testing.T) {
	azure := func(m func(*idp.Options)) idp.Options {
		o := idp.Options{Name: "contoso", Type: idp.TypeAzureAD, TenantID: fakeaad.TenantID, Audiences: []string{"api://x"}}
		m(&o)
		return o
	}
	oidc := func(m func(*idp.Options)) idp.Options {
		o := idp.Options{Name: "other", Type: idp.TypeOIDC, Issuer: "https://issuer.example", Audiences: []string{"x"}}
		m(&o)
		return o
	}
	tests := []struct {
		name string
		o    idp.Options
		want []string // "path: substring", one per problem, in order
	}{
		{"no name", azure(func(o *idp.Options) { o.Name = "" }), []string{": has no name"}},
		{"no type", azure(func(o *idp.Options) { o.Type = "" }), []string{"type: missing: write azure_ad or oidc"}},
		{"unknown type", azure(func(o *idp.Options) { o.Type = "saml" }), []string{`type: "saml" is not an identity provider type`}},
		{"no tenant", azure(func(o *idp.Options) { o.TenantID = "" }), []string{"tenant_id: missing"}},
		{"tenant domain", azure(func(o *idp.Options) { o.TenantID = "contoso.onmicrosoft.com" }), []string{"tenant_id: not a domain name"}},
		{"consumers", azure(func(o *idp.Options) { o.TenantID = "consumers" }), []string{"tenant_id: consumers"}},
		{"common without allowed tenants", azure(func(o *idp.Options) { o.TenantID = "common" }), []string{"allowed_tenants: list the tenant id"}},
		{"allowed tenant not a GUID", azure(func(o *idp.Options) {
			o.TenantID, o.AllowedTenants = "organizations", []string{fakeaad.TenantID, "contoso"}
		}), []string{`allowed_tenants[1]: "contoso" is not a tenant id GUID`}},
		{"allowed tenants on a single tenant", azure(func(o *idp.Options) { o.AllowedTenants = []string{fakeaad.OtherTenantID} }),
			[]string{"allowed_tenants: only applies to tenant_id organizations or common"}},
		{"unknown cloud", azure(func(o *idp.Options) { o.Cloud = "germany" }), []string{"cloud: write public, usgovernment or china"}},
		{"authority over plain http", azure(func(o *idp.Options) { o.AuthorityHost = "http://login.example" }), []string{"authority_host: must use https"}},
		{"authority with a path", azure(func(o *idp.Options) { o.AuthorityHost = "https://login.example/tenant" }), []string{"authority_host: without a path"}},
		{"issuer on azure_ad", azure(func(o *idp.Options) { o.Issuer = "https://x" }), []string{"issuer: derives it from tenant_id and cloud: remove it"}},
		{"jwks_uri on azure_ad", azure(func(o *idp.Options) { o.JWKSURI = "https://x/keys" }), []string{"jwks_uri: not used by identity provider type azure_ad"}},
		{"no audiences", azure(func(o *idp.Options) { o.Audiences = nil }), []string{"audiences: missing"}},
		{"empty audience", azure(func(o *idp.Options) { o.Audiences = []string{" "} }), []string{"audiences[0]: empty audience"}},
		{"spaced audience", azure(func(o *idp.Options) { o.Audiences = []string{"x", " api://x"} }), []string{"audiences[1]: surrounding spaces"}},
		{"negative leeway", azure(func(o *idp.Options) { o.Leeway = -time.Second }), []string{"leeway: outside"}},
		{"huge leeway", azure(func(o *idp.Options) { o.Leeway = time.Hour }), []string{"leeway: outside"}},
		{"tiny refresh", azure(func(o *idp.Options) { o.RefreshInterval = time.Millisecond }), []string{"refresh_interval: less than 1s"}},
		{"huge retry", azure(func(o *idp.Options) { o.RetryMin = time.Hour }), []string{"retry_min: outside"}},
		{"oidc without issuer", oidc(func(o *idp.Options) { o.Issuer = "" }), []string{"issuer: missing"}},
		{"oidc relative issuer", oidc(func(o *idp.Options) { o.Issuer = "issuer.example" }), []string{"issuer: not an absolute URL"}},
		{"oidc plain http issuer", oidc(func(o *idp.Options) { o.Issuer = "http://issuer.example" }),
			[]string{"issuer: keys would be discovered from the issuer, but"}},
		{"oidc plain http jwks", oidc(func(o *idp.Options) { o.JWKSURI = "http://issuer.example/keys" }), []string{"jwks_uri: must use https"}},
		{"oidc plain http discovery", oidc(func(o *idp.Options) { o.DiscoveryURL = "http://issuer.example/d" }), []string{"discovery_url: must use https"}},
		{"oidc with azure_ad fields", oidc(func(o *idp.Options) {
			o.TenantID, o.AllowedTenants, o.Cloud, o.AuthorityHost = fakeaad.TenantID, []string{fakeaad.TenantID}, "china", "https://x"
		}), []string{
			"tenant_id: not used by identity provider type oidc", "allowed_tenants: remove it",
			"cloud: remove it", "authority_host: remove it",
		}},
		{"every problem at once", azure(func(o *idp.Options) { o.TenantID, o.Audiences, o.Cloud = "", nil, "mars" }),
			[]string{"cloud: mars", "tenant_id: missing", "audiences: missing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := idp.New(tt.o)
			if err == nil {
				p.Close()
				t.Fatal("New accepted the options")
			}
			got := problem.Flatten(err)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d problems, want %d: %v", len(got), len(tt.want), err)
			}
			for i, w := range tt.want {
				path, sub, _ := strings.Cut(w, ": ")
				var pe *problem.Error
				if !errors.As(got[i], &pe) {
					t.Fatalf("problem %d is %T, want *problem.Error", i, got[i])
				}
				if pe.Path != path || !strings.Contains(pe.Msg, sub) {
					t.Errorf("problem %d = %q at %q, want %q at %q", i, pe.Msg, pe.Path, sub, path)
				}
			}
		})
	}
}

func TestNewAcceptsLoopbackHTTP(t *testing.T) {
	// Plain http is allowed to loopback (tests and benchmarks); the provider
	// starts and simply is not ready while nothing listens.
	for _, o := range []idp.Options{
		{Name: "a", Type: idp.TypeOIDC, Issuer: "http://127.0.0.1:1", Audiences: []string{"x"}},
		{Name: "b", Type: idp.TypeOIDC, Issuer: "https://issuer.example", JWKSURI: "http://localhost:1/keys", Audiences: []string{"x"}},
		{Name: "c", Type: idp.TypeAzureAD, TenantID: "organizations", AllowedTenants: []string{fakeaad.TenantID},
			AuthorityHost: "http://[::1]:1/", Cloud: "china", Audiences: []string{"x"}},
	} {
		p, err := idp.New(o)
		if err != nil {
			t.Errorf("%s: %v", o.Name, err)
			continue
		}
		p.Close()
	}
}

func TestNewDoesNoIOUntilStart(t *testing.T) {
	e := newEnv(t)
	p := newUnstarted(t, e.options(t))
	if n := e.aad.TotalRequests(); n != 0 || p.Ready() {
		t.Fatalf("after New: %d requests, ready %v; want none and not ready", n, p.Ready())
	}
	tok := e.aad.Mint(e.aad.V1Claims("", fakeaad.APIAppIDURI))
	_, err := p.Verify(context.Background(), tok)
	wantReason(t, err, idp.ReasonProviderUnavailable, 503, tok)
	p.Start(context.Background())
	p.Start(context.Background()) // harmless
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
	p.Close()
	p.Start(context.Background()) // after Close: nothing
}
