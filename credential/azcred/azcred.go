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
	"errors"
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

// Clouds selects well-known authority hosts by name.
var clouds = map[string]cloud.Configuration{
	"":             cloud.AzurePublic,
	"public":       cloud.AzurePublic,
	"usgovernment": cloud.AzureGovernment,
	"china":        cloud.AzureChina,
}

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
func New(o Options) (azcore.TokenCredential, error) {
	cred, err := build(o)
	if err != nil {
		return nil, fmt.Errorf("azcred: credential %q (%s): %w", o.Name, o.Type, err)
	}
	return cred, nil
}

func (o Options) clientOptions() (azcore.ClientOptions, error) {
	var co azcore.ClientOptions
	c, ok := clouds[strings.ToLower(o.Cloud)]
	if !ok {
		return co, fmt.Errorf("cloud %q: want public, usgovernment or china", o.Cloud)
	}
	if o.AuthorityHost != "" {
		u, err := url.Parse(o.AuthorityHost)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return co, fmt.Errorf("authority_host %q: want an https URL such as https://login.microsoftonline.com/", o.AuthorityHost)
		}
		c.ActiveDirectoryAuthorityHost = o.AuthorityHost
	}
	co.Cloud = c
	if o.HTTPClient != nil {
		co.Transport = o.HTTPClient
	}
	co.Retry = o.Retry
	return co, nil
}

// unused reports fields that are set but mean nothing for o.Type, so a typo
// in the configuration (a secret on a managed identity) is an error rather
// than silently ignored.
func (o Options) unused(allowed ...string) error {
	set := map[string]bool{
		"tenant_id":            o.TenantID != "",
		"client_id":            o.ClientID != "",
		"client_secret":        !o.ClientSecret.IsZero(),
		"certificate_path":     o.CertificatePath != "",
		"certificate_password": !o.CertificatePassword.IsZero(),
		"resource_id":          o.ResourceID != "",
		"token_file_path":      o.TokenFilePath != "",
	}
	for _, a := range allowed {
		delete(set, a)
	}
	var bad []string
	for k, v := range set {
		if v {
			bad = append(bad, k)
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return fmt.Errorf("%s not used by type %s", strings.Join(bad, ", "), o.Type)
	}
	return nil
}

func require(pairs ...string) error {
	var missing []string
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			missing = append(missing, pairs[i])
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	return nil
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

func build(o Options) (azcore.TokenCredential, error) {
	co, err := o.clientOptions()
	if err != nil {
		return nil, err
	}
	if o.AuthorityHost != "" {
		if u, err := url.Parse(o.AuthorityHost); err == nil && !knownAuthorities[strings.ToLower(u.Hostname())] {
			o.DisableInstanceDiscovery = true
		}
	}
	switch o.Type {
	case ClientSecret:
		if err := o.unused("tenant_id", "client_id", "client_secret"); err != nil {
			return nil, err
		}
		if err := require("tenant_id", o.TenantID, "client_id", o.ClientID, "client_secret", o.ClientSecret.Reveal()); err != nil {
			return nil, err
		}
		return azidentity.NewClientSecretCredential(o.TenantID, o.ClientID, o.ClientSecret.Reveal(), &azidentity.ClientSecretCredentialOptions{
			ClientOptions:              co,
			AdditionallyAllowedTenants: o.AdditionallyAllowedTenants,
			DisableInstanceDiscovery:   o.DisableInstanceDiscovery,
		})

	case ClientCertificate:
		if err := o.unused("tenant_id", "client_id", "certificate_path", "certificate_password"); err != nil {
			return nil, err
		}
		if err := require("tenant_id", o.TenantID, "client_id", o.ClientID, "certificate_path", o.CertificatePath); err != nil {
			return nil, err
		}
		data, err := os.ReadFile(o.CertificatePath)
		if err != nil {
			return nil, fmt.Errorf("read certificate: %w", err)
		}
		var pw []byte
		if !o.CertificatePassword.IsZero() {
			pw = []byte(o.CertificatePassword.Reveal())
		}
		certs, key, err := azidentity.ParseCertificates(data, pw)
		if err != nil {
			// ParseCertificates' errors do not include the password.
			return nil, fmt.Errorf("parse certificate %s (PEM with the private key, or PKCS#12; is certificate_password right?): %w", o.CertificatePath, err)
		}
		return azidentity.NewClientCertificateCredential(o.TenantID, o.ClientID, certs, key, &azidentity.ClientCertificateCredentialOptions{
			ClientOptions:              co,
			AdditionallyAllowedTenants: o.AdditionallyAllowedTenants,
			DisableInstanceDiscovery:   o.DisableInstanceDiscovery,
			SendCertificateChain:       o.SendCertificateChain,
		})

	case ManagedIdentity:
		if err := o.unused("client_id", "resource_id"); err != nil {
			return nil, err
		}
		mo := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: co}
		switch {
		case o.ClientID != "" && o.ResourceID != "":
			return nil, errors.New("set at most one of client_id and resource_id (a user-assigned identity is named by either)")
		case o.ClientID != "":
			mo.ID = azidentity.ClientID(o.ClientID)
		case o.ResourceID != "":
			mo.ID = azidentity.ResourceID(o.ResourceID)
		}
		return azidentity.NewManagedIdentityCredential(mo)

	case WorkloadIdentity:
		if err := o.unused("tenant_id", "client_id", "token_file_path"); err != nil {
			return nil, err
		}
		wo := &azidentity.WorkloadIdentityCredentialOptions{
			ClientOptions:              co,
			AdditionallyAllowedTenants: o.AdditionallyAllowedTenants,
			DisableInstanceDiscovery:   o.DisableInstanceDiscovery,
			TenantID:                   o.TenantID,
			ClientID:                   o.ClientID,
			TokenFilePath:              o.TokenFilePath,
		}
		// azidentity falls back to the environment; check here so that the
		// error names the configuration fields.
		if err := require(
			"tenant_id (or AZURE_TENANT_ID)", firstOf(o.TenantID, os.Getenv("AZURE_TENANT_ID")),
			"client_id (or AZURE_CLIENT_ID)", firstOf(o.ClientID, os.Getenv("AZURE_CLIENT_ID")),
			"token_file_path (or AZURE_FEDERATED_TOKEN_FILE)", firstOf(o.TokenFilePath, os.Getenv("AZURE_FEDERATED_TOKEN_FILE")),
		); err != nil {
			return nil, fmt.Errorf("%w: on AKS, enable workload identity on the pod (label azure.workload.identity/use: \"true\") or set them", err)
		}
		return azidentity.NewWorkloadIdentityCredential(wo)

	case AzureCLI:
		if err := o.unused("tenant_id"); err != nil {
			return nil, err
		}
		return azidentity.NewAzureCLICredential(&azidentity.AzureCLICredentialOptions{
			TenantID:                   o.TenantID,
			AdditionallyAllowedTenants: o.AdditionallyAllowedTenants,
		})

	case Default:
		if err := o.unused("tenant_id"); err != nil {
			return nil, err
		}
		return azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{
			ClientOptions:              co,
			AdditionallyAllowedTenants: o.AdditionallyAllowedTenants,
			DisableInstanceDiscovery:   o.DisableInstanceDiscovery,
			TenantID:                   o.TenantID,
		})

	case "":
		return nil, errors.New("missing type: want client_secret, client_certificate, managed_identity, workload_identity, azure_cli or default")
	default:
		return nil, errors.New("unknown type: want client_secret, client_certificate, managed_identity, workload_identity, azure_cli or default")
	}
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
