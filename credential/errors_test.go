package credential_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/modelgate/modelgate/credential"
)

// TestControlPlaneErrors checks that control plane failures become
// *ControlPlaneError with the Azure code, a fix a person can act on, and no
// token, and that Status reports them.
func TestControlPlaneErrors(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(w *world)
		build    func(w *world) (credential.ManagedSource, error)
		status   int
		code     string
		fixParts []string
	}{
		{
			name:  "403 missing role on endpoint token",
			setup: func(w *world) { w.aml.AddEndpoint(sub, rg, wsName, "e"); w.aml.Deny(clientID, true) },
			build: func(w *world) (credential.ManagedSource, error) {
				return credential.NewAMLEndpointToken(credential.AMLEndpointTokenOptions{Name: "e", Credential: w.cred, Workspace: w.ws, Endpoint: "e", HTTPClient: w.amlClient, Refresh: testPolicy()})
			},
			status: http.StatusForbidden, code: "AuthorizationFailed",
			fixParts: []string{"assign the gateway's identity a role", `workspace "ws-1"`, "onlineEndpoints/token/action"},
		},
		{
			name:  "403 missing role on listKeys",
			setup: func(w *world) { w.aml.AddEndpoint(sub, rg, wsName, "e"); w.aml.Deny(clientID, true) },
			build: func(w *world) (credential.ManagedSource, error) {
				return credential.NewAMLKeys(credential.AMLKeysOptions{Name: "k", Credential: w.cred, Workspace: w.ws, Endpoint: "e", HTTPClient: w.amlClient, Refresh: testPolicy()})
			},
			status: http.StatusForbidden, code: "AuthorizationFailed",
			fixParts: []string{"onlineEndpoints/listKeys/action"},
		},
		{
			name:  "404 unknown service",
			setup: func(w *world) {},
			build: func(w *world) (credential.ManagedSource, error) {
				return credential.NewAMLServiceToken(credential.AMLServiceTokenOptions{Name: "s", Credential: w.cred, Workspace: w.ws, Service: "nope", HTTPClient: w.amlClient, Refresh: testPolicy()})
			},
			status: http.StatusNotFound, code: "ResourceNotFound",
			fixParts: []string{"check the workspace's subscription_id", `service "nope"`},
		},
		{
			name:  "401 token for the wrong scope",
			setup: func(w *world) { w.aml.AddEndpoint(sub, rg, wsName, "e") },
			build: func(w *world) (credential.ManagedSource, error) {
				return credential.NewAMLEndpointToken(credential.AMLEndpointTokenOptions{Name: "e", Credential: w.cred, Workspace: w.ws, Endpoint: "e", Scope: credential.ScopeAzureML, HTTPClient: w.amlClient, Refresh: testPolicy()})
			},
			status: http.StatusUnauthorized, code: "InvalidAuthenticationTokenAudience",
			fixParts: []string{"tenant", credential.ScopeAzureML},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			tt.setup(w)
			src, err := tt.build(w)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			_, err = src.Credential(ctx(t))
			var cpe *credential.ControlPlaneError
			if !errors.As(err, &cpe) {
				t.Fatalf("err = %v, want a *ControlPlaneError", err)
			}
			if cpe.StatusCode != tt.status || cpe.Code != tt.code || cpe.RequestID == "" {
				t.Errorf("got %d %s (request id %q), want %d %s", cpe.StatusCode, cpe.Code, cpe.RequestID, tt.status, tt.code)
			}
			for _, p := range tt.fixParts {
				if !strings.Contains(cpe.Fix, p) {
					t.Errorf("fix %q lacks %q", cpe.Fix, p)
				}
			}
			if cpe.Temporary() {
				t.Error("a 4xx is not temporary")
			}
			msg := err.Error()
			t.Log(msg)
			if strings.Contains(msg, "fakeaad.") || strings.Contains(msg, spSecret) {
				t.Errorf("error leaks a token or secret: %s", msg)
			}
			if st := src.Status(); !strings.Contains(st.LastError, tt.code) || st.Ready {
				t.Errorf("status = %+v, want the error", st)
			}
		})
	}
}

func TestConstructorValidation(t *testing.T) {
	w := newWorld(t)
	ws := w.ws
	noRegion := credential.Workspace{SubscriptionID: sub, ResourceGroup: rg, Name: wsName}
	plainHTTP := ws
	plainHTTP.ManagementHost = "http://management.example.com"
	withPath := ws
	withPath.APIHost = "https://example.com/some/path"
	tests := []struct {
		name  string
		build func() error
		want  string
	}{
		{"service token without credential", func() error {
			_, err := credential.NewAMLServiceToken(credential.AMLServiceTokenOptions{Name: "a", Workspace: ws, Service: "s"})
			return err
		}, "credential: missing: the gateway's Azure credential"},
		{"service token without service", func() error {
			_, err := credential.NewAMLServiceToken(credential.AMLServiceTokenOptions{Name: "a", Credential: w.cred, Workspace: ws})
			return err
		}, "service: missing: the AKS web service name"},
		{"service token without region or api_host", func() error {
			_, err := credential.NewAMLServiceToken(credential.AMLServiceTokenOptions{Name: "a", Credential: w.cred, Workspace: noRegion, Service: "s"})
			return err
		}, "workspace.region: missing: the workspace's region (or api_host)"},
		{"service token with a path in api_host", func() error {
			_, err := credential.NewAMLServiceToken(credential.AMLServiceTokenOptions{Name: "a", Credential: w.cred, Workspace: withPath, Service: "s"})
			return err
		}, "workspace.api_host: \"https://example.com/some/path\": want a scheme and host only"},
		{"endpoint token over plain http", func() error {
			_, err := credential.NewAMLEndpointToken(credential.AMLEndpointTokenOptions{Name: "a", Credential: w.cred, Workspace: plainHTTP, Endpoint: "e"})
			return err
		}, "workspace.management_host: \"http://management.example.com\" must use https"},
		{"endpoint token missing workspace fields", func() error {
			_, err := credential.NewAMLEndpointToken(credential.AMLEndpointTokenOptions{Name: "a", Credential: w.cred, Endpoint: "e"})
			return err
		}, "workspace.subscription_id: missing"},
		{"aml_keys with service and endpoint", func() error {
			_, err := credential.NewAMLKeys(credential.AMLKeysOptions{Name: "a", Credential: w.cred, Workspace: ws, Service: "s", Endpoint: "e"})
			return err
		}, "set service (an ACI/AKS web service) or endpoint"},
		{"aml_keys with neither", func() error {
			_, err := credential.NewAMLKeys(credential.AMLKeysOptions{Name: "a", Credential: w.cred, Workspace: ws})
			return err
		}, "set service (an ACI/AKS web service) or endpoint"},
		{"aad_token without credential", func() error {
			_, err := credential.NewAADToken(credential.AADTokenOptions{Name: "a"})
			return err
		}, "credential: missing"},
		{"bad region and resource names", func() error {
			bad := ws
			bad.Name, bad.Region = "ws/1", "West Europe"
			_, err := credential.NewAMLKeys(credential.AMLKeysOptions{Name: "a", Credential: w.cred, Workspace: bad, Service: "s"})
			return err
		}, "workspace.name: \"ws/1\" contains characters"},
		{"public defaults are fine", func() error {
			_, err := credential.NewAMLServiceToken(credential.AMLServiceTokenOptions{Name: "a", Credential: w.cred, Workspace: credential.Workspace{SubscriptionID: sub, ResourceGroup: rg, Name: wsName, Region: "westeurope"}, Service: "s"})
			return err
		}, ""},
		{"loopback http is allowed", func() error {
			lb := ws
			lb.ManagementHost = "http://127.0.0.1:8080"
			_, err := credential.NewAMLEndpointToken(credential.AMLEndpointTokenOptions{Name: "a", Credential: w.cred, Workspace: lb, Endpoint: "e"})
			return err
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.build()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
