package idp

import (
	"cmp"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/modelgate/modelgate/internal/azcloud"
	"github.com/modelgate/modelgate/internal/guid"
	"github.com/modelgate/modelgate/internal/httpx"
	"github.com/modelgate/modelgate/internal/problem"
)

// Limits and defaults. They are constants, not knobs, where a different value
// would only ever be a mistake.
const (
	// MaxTokenSize is the largest bearer token Verify parses. Azure AD access
	// tokens are 1-4 KiB (group claims are capped at 200 entries before
	// overage), so anything larger is refused before any decoding.
	MaxTokenSize = 16 << 10

	// DefaultLeeway is the clock skew allowed on exp, nbf and iat when
	// Options.Leeway is zero.
	DefaultLeeway = 60 * time.Second

	// DefaultRefreshInterval is how often keys and metadata are refetched when
	// Options.RefreshInterval is zero. Azure AD publishes new keys well ahead
	// of using them and recommends refreshing about daily.
	DefaultRefreshInterval = 24 * time.Hour

	// DefaultCacheSize is the number of verified tokens remembered when
	// Options.CacheSize is zero.
	DefaultCacheSize = 10000

	// UnknownKIDRefreshInterval is the minimum spacing of refetches triggered
	// by a token whose kid is not in the key set (burst 1). Azure AD signals
	// an emergency rollover only through new kids, so such refetches must
	// exist, but garbage kids must not turn into a request flood against the
	// identity provider.
	UnknownKIDRefreshInterval = 5 * time.Minute

	// UnknownKIDWait bounds how long Verify waits for a refetch triggered by
	// an unknown kid. The fetch continues in the background after that, so
	// the next request sees its keys; a request never stalls longer.
	// (keyfunc's own RateLimitWaitMax of 0 would mean one minute.)
	UnknownKIDWait = time.Second

	maxLeeway          = 5 * time.Minute
	defaultRetryMin    = time.Second
	retryMax           = time.Minute
	fetchTimeout       = 15 * time.Second
	maxDocumentBytes   = 1 << 20
	minRSABits         = 2048
	maxRSABits         = 8192
	maxKIDLen          = 256
	maxRedirects       = 5
	evictionSampleSize = 8
)

// Provider types.
const (
	TypeAzureAD = "azure_ad"
	TypeOIDC    = "oidc"
)

// Options configures a Provider. The config loader fills it from YAML; New
// validates it and compiles it into immutable runtime values, reporting every
// problem at once as *problem.Error values whose paths are the YAML field
// names ("tenant_id", "allowed_tenants[1]", "audiences"), relative to the
// provider's section: the caller places them with problem.Under.
type Options struct {
	// Name is the provider's name in the configuration; it appears in logs,
	// status and errors. Required.
	Name string

	// Type is TypeAzureAD ("azure_ad") or TypeOIDC ("oidc"). Required.
	Type string

	// TenantID (azure_ad) is the tenant's GUID, or "common" or
	// "organizations" for a multi-tenant API, which then requires
	// AllowedTenants. Tenant domain names are not accepted: the tenant id
	// is compared with the token's tid claim.
	TenantID string

	// AllowedTenants (azure_ad, multi-tenant only) lists the GUIDs of the
	// tenants whose tokens are accepted. The token's tid must be one of them,
	// and its issuer must equal the metadata's issuer template with tid
	// substituted.
	AllowedTenants []string

	// Cloud (azure_ad) selects the authority host: "public" (default,
	// login.microsoftonline.com), "usgovernment" (login.microsoftonline.us)
	// or "china" (login.chinacloudapi.cn).
	Cloud string

	// AuthorityHost (azure_ad) overrides the cloud's authority, e.g.
	// "https://127.0.0.1:8443" for a fake. Metadata is read from
	// {AuthorityHost}/{TenantID}/.well-known/openid-configuration (v1) and
	// {AuthorityHost}/{TenantID}/v2.0/.well-known/openid-configuration (v2).
	AuthorityHost string

	// Issuer (oidc) is the exact issuer that tokens must carry and that the
	// discovery document must declare. Required for oidc.
	Issuer string

	// DiscoveryURL (oidc) is the OpenID configuration URL. Default:
	// Issuer + "/.well-known/openid-configuration".
	DiscoveryURL string

	// JWKSURI (oidc) is the key set URL; when set, discovery is skipped.
	JWKSURI string

	// StaticJWKS is a saved JSON Web Key Set (for offline use such as
	// `gateway explain -jwks FILE`). When set, nothing is ever fetched: the
	// keys are these, and azure_ad issuers are the cloud's well-known ones
	// (https://sts.windows.net/{tid}/, or https://sts.chinacloudapi.cn/{tid}/
	// for china, and {authority}/{tid}/v2.0 with the cloud's authority, not
	// AuthorityHost). New fails if it holds no usable key.
	StaticJWKS []byte

	// Audiences is the set of accepted aud values: the API's App ID URI
	// and/or client id. A token is accepted when any of its audiences is in
	// the set. Values containing "://" match with and without one trailing
	// slash ("api://x" and "api://x/" are equivalent), because Azure AD v1
	// tokens carry the App ID URI as the client requested it. Required.
	Audiences []string

	// Leeway is the clock skew allowed on exp, nbf and iat. Default
	// DefaultLeeway (60s); at most 5m.
	Leeway time.Duration

	// RefreshInterval is how often metadata and keys are refetched. Default
	// DefaultRefreshInterval (24h). A failed refresh keeps the last good
	// keys and is retried with exponential backoff (RetryMin doubling up to
	// one minute, with jitter).
	RefreshInterval time.Duration

	// RetryMin is the first retry delay after a failed fetch. Default 1s;
	// at most 1m. Tests set it small.
	RetryMin time.Duration

	// HTTPClient fetches metadata and keys. Default: a client with a 15s
	// timeout. Its CheckRedirect is wrapped (on a copy) so that redirects
	// obey the same scheme rules as configured URLs.
	HTTPClient *http.Client

	// Logger receives refresh outcomes (never tokens). Default: discard.
	Logger *slog.Logger

	// Now is the clock for exp/nbf/iat checks, the token cache and the
	// unknown-kid rate limit. Default time.Now. `gateway explain -at TIME`
	// sets a fixed instant.
	Now func() time.Time

	// Tracer, when not nil, records each metadata and key set fetch as a
	// span (provider, source, outcome, key count).
	Tracer trace.Tracer

	// CacheSize bounds the verified-token cache. Default DefaultCacheSize
	// (10000 entries); negative disables the cache.
	CacheSize int
}

// config is Options compiled: validated, defaulted, normalized. The
// embedded Options hold the defaults applied.
type config struct {
	Options

	// azure_ad
	tenant    string // lower-case GUID, "common" or "organizations"
	multi     bool
	allowed   map[string]struct{}
	authority string // scheme://host[:port], no trailing slash
	cloud     azcloud.Cloud

	audiences map[string]struct{}
}

// compile validates o and applies defaults. Every problem is reported, each
// a *problem.Error at the option's YAML field path relative to the
// provider's section, so that the config loader can place it in the file.
func (o *Options) compile() (*config, error) {
	var probs problem.List
	c := &config{Options: *o, audiences: make(map[string]struct{})}
	if c.Name == "" {
		probs.Add("", "the identity provider has no name")
	}
	switch o.Type {
	case TypeAzureAD:
		for _, f := range []struct{ field, v string }{{"issuer", o.Issuer}, {"discovery_url", o.DiscoveryURL}, {"jwks_uri", o.JWKSURI}} {
			if f.v != "" {
				probs.Add(f.field, "is not used by identity provider type azure_ad, which derives it from tenant_id and cloud: remove it")
			}
		}
		cl, ok := azcloud.Lookup(o.Cloud)
		if !ok {
			probs.Add("cloud", "%q is not a cloud: write %s", o.Cloud, azcloud.Names)
		}
		c.cloud = cl
		c.authority = cl.Authority
		if o.AuthorityHost != "" {
			a, err := parseAuthority(o.AuthorityHost)
			if err != nil {
				probs.Add("authority_host", "%v", err)
			}
			c.authority = a
		}
		t := strings.ToLower(o.TenantID)
		switch {
		case t == "":
			probs.Add("tenant_id", "missing: the directory (tenant) id GUID, or organizations/common with allowed_tenants")
		case t == "common" || t == "organizations":
			c.multi = true
		case t == "consumers":
			probs.Add("tenant_id", "consumers (personal Microsoft accounts) is not supported: use common with allowed_tenants")
		case !guid.Valid(t):
			probs.Add("tenant_id", "%q is not a tenant id GUID, common or organizations (use the tenant id, not a domain name; find it with az account show --query tenantId)", o.TenantID)
		}
		c.tenant = t
		if c.multi {
			if len(o.AllowedTenants) == 0 {
				probs.Add("allowed_tenants", "tenant_id %s accepts tokens from any tenant: list the tenant id GUIDs to admit", t)
			}
			c.allowed = make(map[string]struct{}, len(o.AllowedTenants))
		} else if len(o.AllowedTenants) > 0 {
			probs.Add("allowed_tenants", "only applies to tenant_id organizations or common: remove it, or use one of those")
		}
		for i, a := range o.AllowedTenants {
			if !guid.Valid(a) {
				probs.Add(fmt.Sprintf("allowed_tenants[%d]", i), "%q is not a tenant id GUID", a)
				continue
			}
			if c.multi {
				c.allowed[strings.ToLower(a)] = struct{}{}
			}
		}
	case TypeOIDC:
		for _, f := range []struct {
			field string
			set   bool
		}{{"tenant_id", o.TenantID != ""}, {"allowed_tenants", len(o.AllowedTenants) > 0}, {"cloud", o.Cloud != ""}, {"authority_host", o.AuthorityHost != ""}} {
			if f.set {
				probs.Add(f.field, "is not used by identity provider type oidc: remove it")
			}
		}
		for _, f := range []struct{ field, v string }{{"discovery_url", o.DiscoveryURL}, {"jwks_uri", o.JWKSURI}} {
			if f.v != "" {
				if _, err := httpx.SecureURL(f.v); err != nil {
					probs.Add(f.field, "%v", err)
				}
			}
		}
		switch u, err := url.Parse(o.Issuer); {
		case o.Issuer == "":
			probs.Add("issuer", "missing: the exact issuer (iss) of the tokens to accept")
		case err != nil || u.Scheme == "" || u.Host == "":
			probs.Add("issuer", "%q is not an absolute URL", o.Issuer)
		default:
			if _, err := httpx.SecureURL(o.Issuer); err != nil {
				if o.DiscoveryURL == "" && o.JWKSURI == "" {
					probs.Add("issuer", "keys would be discovered from the issuer, but %v; set jwks_uri or discovery_url", err)
				} else {
					probs.Add("issuer", "%v", err)
				}
			}
			if c.DiscoveryURL == "" {
				c.DiscoveryURL = strings.TrimSuffix(o.Issuer, "/") + "/.well-known/openid-configuration"
			}
		}
	case "":
		probs.Add("type", "missing: write azure_ad or oidc")
	default:
		probs.Add("type", "%q is not an identity provider type: write azure_ad or oidc", o.Type)
	}

	if len(o.Audiences) == 0 {
		probs.Add("audiences", "missing: list the aud values to accept (the App ID URI and/or client id)")
	}
	for i, a := range o.Audiences {
		switch {
		case strings.TrimSpace(a) == "":
			probs.Add(fmt.Sprintf("audiences[%d]", i), "empty audience")
			continue
		case strings.TrimSpace(a) != a:
			probs.Add(fmt.Sprintf("audiences[%d]", i), "%q has surrounding spaces: remove them", a)
			continue
		}
		c.audiences[a] = struct{}{}
		if strings.Contains(a, "://") {
			// App ID URIs: accept with and without one trailing slash.
			base := strings.TrimSuffix(a, "/")
			c.audiences[base] = struct{}{}
			c.audiences[base+"/"] = struct{}{}
		}
	}

	switch {
	case c.Leeway == 0:
		c.Leeway = DefaultLeeway
	case c.Leeway < 0 || c.Leeway > maxLeeway:
		probs.Add("leeway", "%v is outside 0..%v", c.Leeway, maxLeeway)
	}
	switch {
	case c.RefreshInterval == 0:
		c.RefreshInterval = DefaultRefreshInterval
	case c.RefreshInterval < time.Second:
		probs.Add("refresh_interval", "%v is less than 1s", c.RefreshInterval)
	}
	switch {
	case c.RetryMin == 0:
		c.RetryMin = defaultRetryMin
	case c.RetryMin < 0 || c.RetryMin > retryMax:
		probs.Add("retry_min", "%v is outside 0..%v", c.RetryMin, retryMax)
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	c.HTTPClient = guardRedirects(cmp.Or(c.HTTPClient, &http.Client{Timeout: fetchTimeout}))
	c.Logger = cmp.Or(c.Logger, slog.New(slog.DiscardHandler))
	if c.Now == nil {
		c.Now = time.Now
	}
	if err := probs.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

// parseAuthority accepts scheme://host[:port] with an optional trailing
// slash, https or loopback http (httpx.SecureURL).
func parseAuthority(s string) (string, error) {
	u, err := httpx.SecureURL(s)
	if err != nil {
		return "", err
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%q must be scheme://host[:port] without a path", s)
	}
	return u.Scheme + "://" + u.Host, nil
}

// guardRedirects returns a copy of c whose redirects obey httpx.SecureURL and stop
// after maxRedirects, chaining to c's own policy.
func guardRedirects(c *http.Client) *http.Client {
	cc := *c
	prev := c.CheckRedirect
	cc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		if _, err := httpx.SecureURL(req.URL.String()); err != nil {
			return fmt.Errorf("redirect refused: %w", err)
		}
		if prev != nil {
			return prev(req, via)
		}
		return nil
	}
	return &cc
}

// canonicalID lower-cases s if it is a GUID (GUIDs compare
// case-insensitively) and returns other identifiers unchanged. It does not
// allocate when s is already lower case.
func canonicalID(s string) string {
	if guid.Valid(s) {
		return strings.ToLower(s)
	}
	return s
}
