package azcred_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/credential/azcred"
	"github.com/modelgate/modelgate/internal/problem"
	"github.com/modelgate/modelgate/internal/testcert"
	"github.com/modelgate/modelgate/test/fakeazure"
)

const (
	tenant = "72f988bf-0000-0000-0000-000000000001"
	client = "11111111-2222-3333-4444-555555555555"
	// canary is a secret value that must never appear in errors.
	canary = "canary-secret-Zq8v"
)

// fakeOptions points o at aad: its https authority (which implies
// DisableInstanceDiscovery, as the host is not a known Azure AD host), a
// client trusting the fake's CA, and no azcore retries.
func fakeOptions(aad *fakeazure.AAD, o azcred.Options) azcred.Options {
	o.AuthorityHost = aad.URL()
	o.HTTPClient = aad.Client()
	o.Retry = policy.RetryOptions{MaxRetries: -1}
	return o
}

func getToken(t *testing.T, cred azcore.TokenCredential, scope string) (azcore.AccessToken, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
}

func mustValid(t *testing.T, aad *fakeazure.AAD, tok azcore.AccessToken, scope, grant string) {
	t.Helper()
	it, err := aad.Validate(tok.Token, scope)
	if err != nil {
		t.Fatalf("token from azidentity is not one the fake issued for %s: %v", scope, err)
	}
	if it.Grant != grant {
		t.Errorf("grant = %q, want %q", it.Grant, grant)
	}
	if tok.ExpiresOn.IsZero() {
		t.Error("ExpiresOn is zero")
	}
}

func TestClientSecretAgainstFakeAAD(t *testing.T) {
	aad := fakeazure.NewAAD(t, nil) // MSAL caches by the real clock
	aad.AddClientSecret(tenant, client, canary)

	cred, err := azcred.New(fakeOptions(aad, azcred.Options{
		Name: "ml-sp", Type: azcred.ClientSecret, TenantID: tenant, ClientID: client, ClientSecret: canary,
	}))
	if err != nil {
		t.Fatal(err)
	}
	const scope = "https://management.azure.com/.default"
	tok, err := getToken(t, cred, scope)
	if err != nil {
		t.Fatal(err)
	}
	mustValid(t, aad, tok, scope, "client_secret")
	if n := aad.TokenRequests(scope); n != 1 {
		t.Errorf("token requests = %d, want 1", n)
	}

	// A wrong secret fails, and the error does not echo it.
	bad, err := azcred.New(fakeOptions(aad, azcred.Options{
		Name: "bad", Type: azcred.ClientSecret, TenantID: tenant, ClientID: client, ClientSecret: "wrong-" + canary,
	}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = getToken(t, bad, scope)
	if err == nil {
		t.Fatal("wrong secret: got a token")
	}
	if !strings.Contains(err.Error(), "AADSTS7000215") {
		t.Errorf("error does not carry the AAD error: %v", err)
	}
	if strings.Contains(err.Error(), canary) {
		t.Errorf("error leaks the secret: %v", err)
	}
}

// selfSigned returns a certificate and key for a service principal.
func selfSigned(t *testing.T) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return testcert.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "modelgate-test"}}, key, nil, nil), key
}

func TestClientCertificateAgainstFakeAAD(t *testing.T) {
	aad := fakeazure.NewAAD(t, nil)
	dir := t.TempDir()

	cert, key := selfSigned(t)
	certPEM, keyPEM := testcert.PEM(t, cert, key)
	pemPath := filepath.Join(dir, "sp.pem")
	if err := os.WriteFile(pemPath, append(certPEM, keyPEM...), 0o600); err != nil {
		t.Fatal(err)
	}

	// An encrypted PFX made for this test with openssl (legacy PBE-SHA1-3DES, which
	// azidentity.ParseCertificates reads; password "password"; self-signed,
	// CN=modelgate-azcred-test).
	pfxPath := filepath.Join("testdata", "client-cert-encrypted.pfx")
	pfxData, err := os.ReadFile(pfxPath)
	if err != nil {
		t.Fatal(err)
	}
	pfxCerts, _, err := azidentity.ParseCertificates(pfxData, []byte("password"))
	if err != nil {
		t.Fatal(err)
	}

	const pemClient, pfxClient = "cert-pem-client", "cert-pfx-client"
	aad.AddClientCertificate(tenant, pemClient, cert)
	aad.AddClientCertificate(tenant, pfxClient, pfxCerts[0])

	tests := []struct {
		name, client, path, password string
	}{
		{"pem", pemClient, pemPath, ""},
		{"pfx with password", pfxClient, pfxPath, "password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred, err := azcred.New(fakeOptions(aad, azcred.Options{
				Name: tt.name, Type: azcred.ClientCertificate, TenantID: tenant, ClientID: tt.client,
				CertificatePath: tt.path, CertificatePassword: credential.Secret(tt.password),
			}))
			if err != nil {
				t.Fatal(err)
			}
			scope := "https://ml.azure.com/.default"
			tok, err := getToken(t, cred, scope)
			if err != nil {
				t.Fatal(err)
			}
			mustValid(t, aad, tok, scope, "client_certificate")
		})
	}

	t.Run("certificate not registered", func(t *testing.T) {
		cred, err := azcred.New(fakeOptions(aad, azcred.Options{
			Name: "x", Type: azcred.ClientCertificate, TenantID: tenant, ClientID: pfxClient, CertificatePath: pemPath,
		}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := getToken(t, cred, "https://ml.azure.com/.default"); err == nil {
			t.Fatal("an assertion signed by another key was accepted")
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		_, err := azcred.New(azcred.Options{
			Name: "x", Type: azcred.ClientCertificate, TenantID: tenant, ClientID: pfxClient,
			CertificatePath: pfxPath, CertificatePassword: canary,
		})
		if err == nil {
			t.Fatal("wrong password accepted")
		}
		if strings.Contains(err.Error(), canary) {
			t.Errorf("error leaks the password: %v", err)
		}
	})
}

func TestWorkloadIdentityAgainstFakeAAD(t *testing.T) {
	aad := fakeazure.NewAAD(t, nil)
	const assertion = "eyJhbGciOi.fake-projected-service-account-token.sig"
	aad.AddFederatedToken(tenant, client, assertion)
	file := filepath.Join(t.TempDir(), "azure-identity-token")
	if err := os.WriteFile(file, []byte(assertion), 0o600); err != nil {
		t.Fatal(err)
	}
	cred, err := azcred.New(fakeOptions(aad, azcred.Options{
		Name: "wi", Type: azcred.WorkloadIdentity, TenantID: tenant, ClientID: client, TokenFilePath: file,
	}))
	if err != nil {
		t.Fatal(err)
	}
	scope := "https://management.core.windows.net//.default"
	tok, err := getToken(t, cred, scope)
	if err != nil {
		t.Fatal(err)
	}
	mustValid(t, aad, tok, scope, "federated")
}

// TestManagedIdentityViaIdentityEndpoint drives azidentity's real managed
// identity code path (App Service: IDENTITY_ENDPOINT + IDENTITY_HEADER)
// against the fake. It sets environment variables, so it is not parallel.
// MSAL caches managed identity tokens process-wide by resource, so each case
// asks for its own resource.
func TestManagedIdentityViaIdentityEndpoint(t *testing.T) {
	aad := fakeazure.NewAAD(t, nil)
	mi := fakeazure.NewManagedIdentity(t, aad)
	mi.AddUserAssigned("ua-client-id", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/gw")
	mi.Setenv(t)

	tests := []struct {
		name       string
		opts       azcred.Options
		wantClient string
		wantQuery  string
		wantErr    bool
	}{
		{"system assigned", azcred.Options{}, fakeazure.SystemAssignedClientID, "", false},
		{"user assigned by client id", azcred.Options{ClientID: "ua-client-id"}, "ua-client-id", "client_id=ua-client-id", false},
		{"user assigned by resource id", azcred.Options{ResourceID: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/gw"}, "ua-client-id", "mi_res_id=", false},
		{"unknown user assigned", azcred.Options{ClientID: "nope"}, "", "", true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.opts
			o.Name, o.Type = "mi", azcred.ManagedIdentity
			o.Retry = policy.RetryOptions{MaxRetries: -1}
			cred, err := azcred.New(o)
			if err != nil {
				t.Fatal(err)
			}
			// Unique per run: MSAL's cache outlives this test's fakes.
			scope := fmt.Sprintf("https://mi-test-%d-%d.example/.default", i, time.Now().UnixNano())
			tok, err := getToken(t, cred, scope)
			if tt.wantErr {
				if err == nil {
					t.Fatal("got a token for an identity that is not assigned")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			it, err := aad.Validate(tok.Token, scope)
			if err != nil {
				t.Fatalf("token not issued by the fake for %s: %v", scope, err)
			}
			if it.ClientID != tt.wantClient || it.Grant != "managed_identity" {
				t.Errorf("issued to %q via %q, want %q via managed_identity", it.ClientID, it.Grant, tt.wantClient)
			}
			if !strings.Contains(mi.LastQuery(), tt.wantQuery) {
				t.Errorf("query %q lacks %q", mi.LastQuery(), tt.wantQuery)
			}
			if mi.Requests(scope) != 1 {
				t.Errorf("requests = %d, want 1", mi.Requests(scope))
			}
		})
	}
}

// TestDefaultChainUsesEnvironment checks that the default type passes the
// authority and transport through to DefaultAzureCredential's environment
// credential.
func TestDefaultChainUsesEnvironment(t *testing.T) {
	aad := fakeazure.NewAAD(t, nil)
	aad.AddClientSecret(tenant, client, canary)
	t.Setenv("AZURE_TENANT_ID", tenant)
	t.Setenv("AZURE_CLIENT_ID", client)
	t.Setenv("AZURE_CLIENT_SECRET", canary)
	cred, err := azcred.New(fakeOptions(aad, azcred.Options{Name: "dac", Type: azcred.Default}))
	if err != nil {
		t.Fatal(err)
	}
	scope := fmt.Sprintf("https://default-chain-%d.example/.default", time.Now().UnixNano())
	tok, err := getToken(t, cred, scope)
	if err != nil {
		t.Fatal(err)
	}
	mustValid(t, aad, tok, scope, "client_secret")
}

func TestOptionsValidation(t *testing.T) {
	tests := []struct {
		name string
		o    azcred.Options
		want []string // "path: substring" per problem, in order; none means success
	}{
		{"client secret ok", azcred.Options{Type: azcred.ClientSecret, TenantID: tenant, ClientID: client, ClientSecret: canary}, nil},
		{"client secret missing fields", azcred.Options{Type: azcred.ClientSecret}, []string{
			"tenant_id: missing: the service principal's tenant", "client_id: missing", "client_secret: missing",
		}},
		{"secret on a managed identity", azcred.Options{Type: azcred.ManagedIdentity, ClientSecret: canary},
			[]string{"client_secret: is not used by credential type managed_identity: remove it"}},
		{"authority on a managed identity", azcred.Options{Type: azcred.ManagedIdentity, AuthorityHost: "https://login.example"},
			[]string{"authority_host: is not used by credential type managed_identity"}},
		{"both managed identity ids", azcred.Options{Type: azcred.ManagedIdentity, ClientID: "a", ResourceID: "b"}, []string{": not both"}},
		{"http authority", azcred.Options{Type: azcred.ClientSecret, TenantID: tenant, ClientID: client, ClientSecret: canary, AuthorityHost: "http://127.0.0.1:1"},
			[]string{"authority_host: azidentity accepts only https"}},
		{"authority with credentials", azcred.Options{Type: azcred.AzureCLI, AuthorityHost: "https://u:" + string(canary) + "@login.example"},
			[]string{"authority_host: must not carry credentials"}},
		{"unknown cloud", azcred.Options{Type: azcred.AzureCLI, Cloud: "mars"}, []string{`cloud: "mars" is not a cloud: write public, usgovernment or china`}},
		{"certificate missing path", azcred.Options{Type: azcred.ClientCertificate, TenantID: tenant, ClientID: client}, []string{"certificate_path: missing"}},
		{"certificate file absent", azcred.Options{Type: azcred.ClientCertificate, TenantID: tenant, ClientID: client, CertificatePath: "/nonexistent.pem"},
			[]string{"certificate_path: cannot read the certificate"}},
		{"workload identity without environment", azcred.Options{Type: azcred.WorkloadIdentity, ClientSecret: canary}, []string{
			"tenant_id: AZURE_TENANT_ID", "client_id: AZURE_CLIENT_ID", "token_file_path: AZURE_FEDERATED_TOKEN_FILE", "client_secret: remove it",
		}},
		{"unknown type", azcred.Options{Type: "kerberos"}, []string{`type: "kerberos" is not a credential type`}},
		{"missing type", azcred.Options{}, []string{"type: missing: write client_secret"}},
		{"azure cli", azcred.Options{Type: azcred.AzureCLI}, nil},
		{"managed identity system", azcred.Options{Type: azcred.ManagedIdentity}, nil},
		{"sovereign cloud", azcred.Options{Type: azcred.ClientSecret, Cloud: "usgovernment", TenantID: tenant, ClientID: client, ClientSecret: canary}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE"} {
				t.Setenv(k, "")
			}
			tt.o.Name = "c"
			_, err := azcred.New(tt.o)
			if err != nil && strings.Contains(err.Error(), canary) {
				t.Errorf("error leaks the secret: %v", err)
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
