package idp_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/modelgate/modelgate/idp"
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
		want []string
	}{
		{"no name", azure(func(o *idp.Options) { o.Name = "" }), []string{"name: is required"}},
		{"no type", azure(func(o *idp.Options) { o.Type = "" }), []string{"type: is required"}},
		{"unknown type", azure(func(o *idp.Options) { o.Type = "saml" }), []string{`type: "saml"`}},
		{"no tenant", azure(func(o *idp.Options) { o.TenantID = "" }), []string{"tenant_id: is required"}},
		{"tenant domain", azure(func(o *idp.Options) { o.TenantID = "contoso.onmicrosoft.com" }), []string{"tenant_id", "not a GUID"}},
		{"consumers", azure(func(o *idp.Options) { o.TenantID = "consumers" }), []string{"tenant_id: consumers"}},
		{"common without allowed tenants", azure(func(o *idp.Options) { o.TenantID = "common" }), []string{"allowed_tenants: is required"}},
		{"allowed tenant not a GUID", azure(func(o *idp.Options) {
			o.TenantID, o.AllowedTenants = "organizations", []string{"contoso"}
		}), []string{"allowed_tenants[0]"}},
		{"allowed tenants on a single tenant", azure(func(o *idp.Options) { o.AllowedTenants = []string{fakeaad.OtherTenantID} }),
			[]string{"allowed_tenants: applies only"}},
		{"unknown cloud", azure(func(o *idp.Options) { o.Cloud = "germany" }), []string{"cloud"}},
		{"authority over plain http", azure(func(o *idp.Options) { o.AuthorityHost = "http://login.example" }), []string{"authority_host", "https"}},
		{"authority with a path", azure(func(o *idp.Options) { o.AuthorityHost = "https://login.example/tenant" }), []string{"authority_host", "without a path"}},
		{"issuer on azure_ad", azure(func(o *idp.Options) { o.Issuer = "https://x" }), []string{"issuer: applies only to type oidc"}},
		{"no audiences", azure(func(o *idp.Options) { o.Audiences = nil }), []string{"audiences: is required"}},
		{"empty audience", azure(func(o *idp.Options) { o.Audiences = []string{""} }), []string{"audiences[0]"}},
		{"negative leeway", azure(func(o *idp.Options) { o.Leeway = -time.Second }), []string{"leeway"}},
		{"huge leeway", azure(func(o *idp.Options) { o.Leeway = time.Hour }), []string{"leeway"}},
		{"tiny refresh", azure(func(o *idp.Options) { o.RefreshInterval = time.Millisecond }), []string{"refresh_interval"}},
		{"huge retry", azure(func(o *idp.Options) { o.RetryMin = time.Hour }), []string{"retry_min"}},
		{"oidc without issuer", oidc(func(o *idp.Options) { o.Issuer = "" }), []string{"issuer: is required"}},
		{"oidc plain http issuer", oidc(func(o *idp.Options) { o.Issuer = "http://issuer.example" }), []string{"issuer", "https"}},
		{"oidc plain http jwks", oidc(func(o *idp.Options) { o.JWKSURI = "http://issuer.example/keys" }), []string{"jwks_uri"}},
		{"oidc with tenant", oidc(func(o *idp.Options) { o.TenantID = fakeaad.TenantID }), []string{"tenant_id: applies only to type azure_ad"}},
		{"every problem at once", azure(func(o *idp.Options) { o.TenantID, o.Audiences, o.Cloud = "", nil, "mars" }),
			[]string{"tenant_id", "audiences", "cloud", `identity provider "contoso"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := idp.New(tt.o)
			if err == nil {
				p.Close()
				t.Fatal("New accepted the options")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
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
