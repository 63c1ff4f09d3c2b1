// Package azcred builds the gateway's own Azure identities (the
// configuration's credentials: section) as azcore.TokenCredentials, through
// azidentity. The credential package's aml_* and aad_token sources use them
// to obtain upstream credentials.
//
// It is named azcred so as not to clash with the SDK's azidentity in imports.
//
// Security: secrets (client secrets, certificate passwords) arrive as
// credential.Secret and are never logged. Authorities must be https (an
// azidentity rule); point them at a fake with AuthorityHost,
// DisableInstanceDiscovery and an HTTPClient that trusts the fake's CA.
package azcred

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/internal/azcloud"
	"github.com/modelgate/modelgate/internal/httpx"
	"github.com/modelgate/modelgate/internal/problem"
)

// Type is the kind of identity, the configuration's credentials.*.type.
type Type string

// Identity types.
const (
	// ClientSecret is a service principal with a client secret. Needs
	// TenantID, ClientID, ClientSecret.
	ClientSecret Type = "client_secret"
	// ClientCertificate is a service principal with a certificate. Needs
	// TenantID, ClientID, CertificatePath (PEM or PKCS#12/PFX with the
	// private key) and CertificatePassword when the file is encrypted.
	ClientCertificate Type = "client_certificate"
	// ManagedIdentity is the system-assigned managed identity, or a
	// user-assigned one named by ClientID or ResourceID.
	ManagedIdentity Type = "managed_identity"
	// WorkloadIdentity is AKS workload identity: a federated service
	// account token file. TenantID, ClientID and TokenFilePath default to
	// AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE, which
	// the AKS webhook injects.
	WorkloadIdentity Type = "workload_identity"
	// AzureCLI uses the signed-in Azure CLI account. For development only.
	AzureCLI Type = "azure_cli"
	// Default is azidentity's DefaultAzureCredential chain (environment,
	// workload identity, managed identity, CLI, ...). Convenient, but which
	// identity it picks depends on the environment; prefer an explicit type
	// in production.
	Default Type = "default"
)

// Options configures New. Fields not used by Type must be empty.
type Options struct {
	// Name is the credential's name in the configuration, used in errors.
	Name string
	// Type selects the kind of identity.
	Type Type
	// TenantID is the directory (tenant) id.
	TenantID string
	// ClientID is the application (client) id. For managed_identity it
	// selects a user-assigned identity by client id.
	ClientID string
	// ClientSecret is the client secret (client_secret).
	ClientSecret credential.Secret
	// CertificatePath is a PEM or PKCS#12 (PFX) file holding the
	// certificate and its private key (client_certificate).
	CertificatePath string
	// CertificatePassword decrypts CertificatePath, if it is encrypted.
	CertificatePassword credential.Secret
	// SendCertificateChain sends the x5c header, needed for subject
	// name/issuer authentication.
	SendCertificateChain bool
	// ResourceID selects a user-assigned managed identity by ARM resource
	// id (managed_identity). At most one of ClientID and ResourceID; neither
	// means the system-assigned identity.
	ResourceID string
	// TokenFilePath is the federated token file (workload_identity).
	TokenFilePath string
	// Cloud is public (default), usgovernment or china.
	Cloud string
	// AuthorityHost overrides Cloud's Azure AD authority, e.g.
	// https://login.microsoftonline.us/ or a fake's https URL in tests. It
	// must be https.
	AuthorityHost string
	// DisableInstanceDiscovery skips Azure AD instance discovery, for
	// private clouds, Azure Stack and fakes. azidentity then fetches
	// {authority}/{tenant}/v2.0/.well-known/openid-configuration. It is
	// implied when AuthorityHost is not a public or sovereign Azure AD host
	// (login.microsoftonline.com, .us, login.chinacloudapi.cn), since
	// instance discovery would reject such an authority anyway.
	DisableInstanceDiscovery bool
	// AdditionallyAllowedTenants lets the credential get tokens for other
	// tenants than TenantID.
	AdditionallyAllowedTenants []string
	// HTTPClient sends azidentity's requests (set it to trust a test CA).
	// Default: azcore's transport.
	HTTPClient *http.Client
	// Retry tunes azcore's retries; zero means azcore's defaults
	// (3 retries with exponential delays). Tests pass MaxRetries: -1 so
	// an outage fails at once and the credential package's backoff takes
	// over.
	Retry policy.RetryOptions
}

// New returns the TokenCredential for o. It validates o, reads certificate
// files, and does no network I/O: tokens are fetched on the first GetToken.
// The credential is safe for concurrent use and caches tokens in memory.
//
// Invalid options are reported all at once, each a *problem.Error at the
// YAML field path relative to the credential's section ("type",
// "tenant_id", "certificate_path"); the caller places them with
// problem.Under. No message contains a secret.
func New(o Options) (azcore.TokenCredential, error) {
	co, err := o.validate()
	if err != nil {
		return nil, err
	}
	return build(o, co)
}

// types lists the identity types, for messages.
const types = "client_secret, client_certificate, managed_identity, workload_identity, azure_cli or default"

// uses lists, per type, the fields of Options it reads; the others must be
// empty, so that a typo in the configuration (a secret on a managed
// identity) is an error rather than silently ignored.
var uses = map[Type][]string{
	ClientSecret:      {"tenant_id", "client_id", "client_secret", "authority_host"},
	ClientCertificate: {"tenant_id", "client_id", "certificate_path", "certificate_password", "authority_host"},
	ManagedIdentity:   {"client_id", "resource_id"},
	WorkloadIdentity:  {"tenant_id", "client_id", "token_file_path", "authority_host"},
	AzureCLI:          {"tenant_id", "authority_host"},
	Default:           {"tenant_id", "authority_host"},
}

// validate checks o against its type and returns the azcore client options
// it implies.
func (o Options) validate() (azcore.ClientOptions, error) {
	var probs problem.List
	set := []struct {
		field string
		set   bool
	}{{"tenant_id", o.TenantID != ""}, {"client_id", o.ClientID != ""}, {"client_secret", !o.ClientSecret.IsZero()},
		{"certificate_path", o.CertificatePath != ""}, {"certificate_password", !o.CertificatePassword.IsZero()},
		{"resource_id", o.ResourceID != ""}, {"token_file_path", o.TokenFilePath != ""}, {"authority_host", o.AuthorityHost != ""}}
	need := func(field, val, what string) {
		if val == "" {
			probs.Add(field, "missing: %s", what)
		}
	}
	switch o.Type {
	case ClientSecret:
		need("tenant_id", o.TenantID, "the service principal's tenant")
		need("client_id", o.ClientID, "the service principal's application (client) id")
		need("client_secret", o.ClientSecret.Reveal(), "the client secret, as ${NAME} from the environment")
	case ClientCertificate:
		need("tenant_id", o.TenantID, "the service principal's tenant")
		need("client_id", o.ClientID, "the service principal's application (client) id")
		need("certificate_path", o.CertificatePath, "a PEM or PFX file with the certificate and private key")
	case ManagedIdentity:
		if o.ClientID != "" && o.ResourceID != "" {
			probs.Add("", "set client_id or resource_id to pick a user-assigned identity, not both")
		}
	case WorkloadIdentity:
		// azidentity falls back to the environment the AKS webhook fills;
		// check here so that the problem names the configuration field.
		const hint = `on AKS, enable workload identity on the pod (label azure.workload.identity/use: "true")`
		need("tenant_id", cmp.Or(o.TenantID, os.Getenv("AZURE_TENANT_ID")), "set it or AZURE_TENANT_ID; "+hint)
		need("client_id", cmp.Or(o.ClientID, os.Getenv("AZURE_CLIENT_ID")), "set it or AZURE_CLIENT_ID; "+hint)
		need("token_file_path", cmp.Or(o.TokenFilePath, os.Getenv("AZURE_FEDERATED_TOKEN_FILE")), "set it or AZURE_FEDERATED_TOKEN_FILE; "+hint)
	case AzureCLI, Default:
	case "":
		probs.Add("type", "missing: write %s", types)
	default:
		probs.Add("type", "%q is not a credential type: write %s", o.Type, types)
	}
	if allowed, ok := uses[o.Type]; ok {
		for _, f := range set {
			if f.set && !slices.Contains(allowed, f.field) {
				probs.Add(f.field, "is not used by credential type %s: remove it", o.Type)
			}
		}
	}

	var co azcore.ClientOptions
	c, ok := azcloud.Lookup(o.Cloud)
	if !ok {
		probs.Add("cloud", "%q is not a cloud: write %s", o.Cloud, azcloud.Names)
	}
	co.Cloud = cloud.Configuration{ActiveDirectoryAuthorityHost: c.Authority + "/"}
	if o.AuthorityHost != "" {
		u, err := httpx.SecureURL(o.AuthorityHost)
		switch {
		case err != nil:
			probs.Add("authority_host", "%v (azidentity accepts only https authorities)", err)
		case u.Scheme != "https":
			probs.Add("authority_host", "%q is not an https URL (azidentity accepts only https authorities)", o.AuthorityHost)
		}
		co.Cloud.ActiveDirectoryAuthorityHost = o.AuthorityHost
	}
	if o.HTTPClient != nil {
		co.Transport = o.HTTPClient
	}
	co.Retry = o.Retry
	return co, probs.Err()
}

// knownAuthorities are the Azure AD hosts instance discovery knows.
var knownAuthorities = map[string]bool{
	"login.microsoftonline.com":        true,
	"login.microsoftonline.us":         true,
	"login.chinacloudapi.cn":           true,
	"login.partner.microsoftonline.cn": true,
	"login.windows.net":                true,
	"login.microsoft.com":              true,
	"sts.windows.net":                  true,
	"login.usgovcloudapi.net":          true,
	"login-us.microsoftonline.com":     true,
}

// build makes the azidentity credential for validated options.
func build(o Options, co azcore.ClientOptions) (azcore.TokenCredential, error) {
	if o.AuthorityHost != "" {
		if u, err := url.Parse(o.AuthorityHost); err == nil && !knownAuthorities[strings.ToLower(u.Hostname())] {
			o.DisableInstanceDiscovery = true
		}
	}
	var cred azcore.TokenCredential
	var err error
	switch o.Type {
	case ClientSecret:
		cred, err = azidentity.NewClientSecretCredential(o.TenantID, o.ClientID, o.ClientSecret.Reveal(), &azidentity.ClientSecretCredentialOptions{
			ClientOptions:              co,
			AdditionallyAllowedTenants: o.AdditionallyAllowedTenants,
			DisableInstanceDiscovery:   o.DisableInstanceDiscovery,
		})

	case ClientCertificate:
		data, rerr := os.ReadFile(o.CertificatePath)
		if rerr != nil {
			return nil, &problem.Error{Path: "certificate_path", Msg: fmt.Sprintf("cannot read the certificate: %v", rerr), Err: rerr}
		}
		var pw []byte
		if !o.CertificatePassword.IsZero() {
			pw = []byte(o.CertificatePassword.Reveal())
		}
		certs, key, perr := azidentity.ParseCertificates(data, pw)
		if perr != nil {
			// ParseCertificates' errors do not include the password.
			return nil, &problem.Error{Path: "certificate_path", Err: perr,
				Msg: fmt.Sprintf("cannot parse certificate %s (PEM with the private key, or PKCS#12; is certificate_password right?): %v", o.CertificatePath, perr)}
		}
		cred, err = azidentity.NewClientCertificateCredential(o.TenantID, o.ClientID, certs, key, &azidentity.ClientCertificateCredentialOptions{
			ClientOptions:              co,
			AdditionallyAllowedTenants: o.AdditionallyAllowedTenants,
			DisableInstanceDiscovery:   o.DisableInstanceDiscovery,
			SendCertificateChain:       o.SendCertificateChain,
		})

	case ManagedIdentity:
		mo := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: co}
		switch {
		case o.ClientID != "":
			mo.ID = azidentity.ClientID(o.ClientID)
		case o.ResourceID != "":
			mo.ID = azidentity.ResourceID(o.ResourceID)
		}
		cred, err = azidentity.NewManagedIdentityCredential(mo)

	case WorkloadIdentity:
		cred, err = azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
			ClientOptions:              co,
			AdditionallyAllowedTenants: o.AdditionallyAllowedTenants,
			DisableInstanceDiscovery:   o.DisableInstanceDiscovery,
			TenantID:                   o.TenantID,
			ClientID:                   o.ClientID,
			TokenFilePath:              o.TokenFilePath,
		})

	case AzureCLI:
		cred, err = azidentity.NewAzureCLICredential(&azidentity.AzureCLICredentialOptions{
			TenantID:                   o.TenantID,
			AdditionallyAllowedTenants: o.AdditionallyAllowedTenants,
		})

	case Default:
		cred, err = azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{
			ClientOptions:              co,
			AdditionallyAllowedTenants: o.AdditionallyAllowedTenants,
			DisableInstanceDiscovery:   o.DisableInstanceDiscovery,
			TenantID:                   o.TenantID,
		})
	}
	if err != nil {
		return nil, &problem.Error{Msg: fmt.Sprintf("azidentity refused the %s credential: %v", o.Type, err), Err: err}
	}
	return cred, nil
}
