package idp

import (
	"errors"
	"fmt"
	"github.com/modelgate/modelgate/internal/guid"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
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
// problem at once.
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

	// CacheSize bounds the verified-token cache. Default DefaultCacheSize
	// (10000 entries); negative disables the cache.
	CacheSize int
}

// config is Options compiled: validated, defaulted, normalized.
type config struct {
	name, typ string

	// azure_ad
	tenant    string // lower-case GUID, "common" or "organizations"
	multi     bool
	allowed   map[string]struct{}
	authority string // scheme://host[:port], no trailing slash
	cloud     cloud

	// oidc
	issuer       string
	discoveryURL string
	jwksURI      string

	static    []byte
	audiences map[string]struct{}
	leeway    time.Duration
	refresh   time.Duration
	retryMin  time.Duration
	client    *http.Client
	log       *slog.Logger
	now       func() time.Time
	cacheSize int
}

type cloud struct {
	authority string // https://login.microsoftonline.com
	v1Issuer  string // https://sts.windows.net/ ; {tid}/ follows
}

func cloudNamed(name string) (cloud, bool) {
	switch name {
	case "", "public":
		return cloud{"https://login.microsoftonline.com", "https://sts.windows.net/"}, true
	case "usgovernment":
		return cloud{"https://login.microsoftonline.us", "https://sts.windows.net/"}, true
	case "china":
		return cloud{"https://login.chinacloudapi.cn", "https://sts.chinacloudapi.cn/"}, true
	}
	return cloud{}, false
}

func (o *Options) compile() (*config, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	c := &config{
		name:      o.Name,
		typ:       o.Type,
		static:    o.StaticJWKS,
		leeway:    o.Leeway,
		refresh:   o.RefreshInterval,
		retryMin:  o.RetryMin,
		client:    o.HTTPClient,
		log:       o.Logger,
		now:       o.Now,
		cacheSize: o.CacheSize,
		audiences: make(map[string]struct{}),
	}
	if c.name == "" {
		bad("name", "is required")
	}
	switch o.Type {
	case TypeAzureAD:
		for _, f := range []struct{ name, v string }{{"issuer", o.Issuer}, {"discovery_url", o.DiscoveryURL}, {"jwks_uri", o.JWKSURI}} {
			if f.v != "" {
				bad(f.name, "applies only to type oidc: azure_ad derives it from tenant_id and cloud")
			}
		}
		cl, ok := cloudNamed(o.Cloud)
		if !ok {
			bad("cloud", "%q is not one of public, usgovernment, china", o.Cloud)
		}
		c.cloud = cl
		c.authority = cl.authority
		if o.AuthorityHost != "" {
			a, err := parseAuthority(o.AuthorityHost)
			if err != nil {
				bad("authority_host", "%v", err)
			}
			c.authority = a
		}
		t := strings.ToLower(o.TenantID)
		switch {
		case t == "":
			bad("tenant_id", "is required for azure_ad (a tenant GUID, or common/organizations with allowed_tenants)")
		case t == "common" || t == "organizations":
			c.multi = true
		case t == "consumers":
			bad("tenant_id", "consumers (personal Microsoft accounts) is not supported: use common with allowed_tenants")
		case !guid.Valid(t):
			bad("tenant_id", "%q is not a GUID, common or organizations (use the tenant id, not a domain name)", o.TenantID)
		}
		c.tenant = t
		if c.multi {
			if len(o.AllowedTenants) == 0 {
				bad("allowed_tenants", "is required with tenant_id %s: list the tenant GUIDs whose tokens are accepted", t)
			}
			c.allowed = make(map[string]struct{}, len(o.AllowedTenants))
			for i, a := range o.AllowedTenants {
				if !guid.Valid(a) {
					bad(fmt.Sprintf("allowed_tenants[%d]", i), "%q is not a tenant GUID", a)
					continue
				}
				c.allowed[strings.ToLower(a)] = struct{}{}
			}
		} else if len(o.AllowedTenants) > 0 {
			bad("allowed_tenants", "applies only with tenant_id common or organizations")
		}
	case TypeOIDC:
		for _, f := range []struct{ name, v string }{{"tenant_id", o.TenantID}, {"cloud", o.Cloud}, {"authority_host", o.AuthorityHost}} {
			if f.v != "" {
				bad(f.name, "applies only to type azure_ad")
			}
		}
		if len(o.AllowedTenants) > 0 {
			bad("allowed_tenants", "applies only to type azure_ad")
		}
		c.issuer = o.Issuer
		if o.Issuer == "" {
			bad("issuer", "is required for oidc")
		} else if _, err := checkURL(o.Issuer); err != nil {
			bad("issuer", "%v", err)
		}
		c.discoveryURL = o.DiscoveryURL
		if c.discoveryURL == "" && o.Issuer != "" {
			c.discoveryURL = strings.TrimSuffix(o.Issuer, "/") + "/.well-known/openid-configuration"
		} else if c.discoveryURL != "" {
			if _, err := checkURL(c.discoveryURL); err != nil {
				bad("discovery_url", "%v", err)
			}
		}
		c.jwksURI = o.JWKSURI
		if c.jwksURI != "" {
			if _, err := checkURL(c.jwksURI); err != nil {
				bad("jwks_uri", "%v", err)
			}
		}
	case "":
		bad("type", "is required (azure_ad or oidc)")
	default:
		bad("type", "%q is not azure_ad or oidc", o.Type)
	}

	if len(o.Audiences) == 0 {
		bad("audiences", "is required: list the API's App ID URI and/or client id")
	}
	for i, a := range o.Audiences {
		if a == "" || strings.TrimSpace(a) != a {
			bad(fmt.Sprintf("audiences[%d]", i), "%q is empty or has surrounding spaces", a)
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
	case c.leeway == 0:
		c.leeway = DefaultLeeway
	case c.leeway < 0 || c.leeway > maxLeeway:
		bad("leeway", "%v is outside 0..%v", c.leeway, maxLeeway)
	}
	switch {
	case c.refresh == 0:
		c.refresh = DefaultRefreshInterval
	case c.refresh < time.Second:
		bad("refresh_interval", "%v is less than 1s", c.refresh)
	}
	switch {
	case c.retryMin == 0:
		c.retryMin = defaultRetryMin
	case c.retryMin < 0 || c.retryMin > retryMax:
		bad("retry_min", "%v is outside 0..%v", c.retryMin, retryMax)
	}
	if c.cacheSize == 0 {
		c.cacheSize = DefaultCacheSize
	}
	if c.client == nil {
		c.client = &http.Client{Timeout: fetchTimeout}
	}
	c.client = guardRedirects(c.client)
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("identity provider %s: %w", strconv.Quote(o.Name), errors.Join(errs...))
	}
	return c, nil
}

// parseAuthority accepts scheme://host[:port] with an optional trailing slash.
func parseAuthority(s string) (string, error) {
	u, err := checkURL(s)
	if err != nil {
		return "", err
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%q must be scheme://host[:port] without a path", s)
	}
	return u.Scheme + "://" + u.Host, nil
}

// checkURL enforces where metadata and keys may come from: https anywhere,
// plain http only to a loopback host (127.0.0.0/8, ::1, localhost). Key
// material fetched over plain http from any other host could be replaced by
// anyone on the path, which would let them mint accepted tokens; loopback
// traffic never leaves the machine, and tests and benchmarks use it.
func checkURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL: %w", s, err)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%q is not an absolute URL", s)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%q must not carry credentials", u.Redacted())
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("%q must use https (plain http is allowed only to loopback hosts)", s)
		}
	default:
		return nil, fmt.Errorf("%q must use https", s)
	}
	return u, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// guardRedirects returns a copy of c whose redirects obey checkURL and stop
// after maxRedirects, chaining to c's own policy.
func guardRedirects(c *http.Client) *http.Client {
	cc := *c
	prev := c.CheckRedirect
	cc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		if _, err := checkURL(req.URL.String()); err != nil {
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
