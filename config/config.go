// Package config loads modelgate's YAML configuration into typed, validated
// values.
//
// Loading is strict: unknown fields are errors, ${NAME} references expand
// from the environment (a variable that is not set is an error), and every
// problem in a file is reported at once, each with file, line and field path.
// Loading does no I/O beyond reading the file and looking up the
// environment; turning a Config into running parts is the caller's job.
//
// The structs here are the user-facing contract; config.example.yaml at the
// repository root shows every field with its default.
package config

import (
	"net/netip"
	"net/url"
	"time"

	"github.com/modelgate/modelgate/internal/redact"
)

// Config is one loaded and validated configuration file.
type Config struct {
	// Server is the public listener.
	Server Server `yaml:"server"`
	// Admin is the operations listener (/healthz, /readyz, /metrics).
	Admin Admin `yaml:"admin"`
	// Log sets where and how request and audit lines are written.
	Log Log `yaml:"log"`
	// IdentityProviders validate Azure AD / OIDC access tokens, by name.
	IdentityProviders map[string]*IdentityProvider `yaml:"identity_providers"`
	// KeySets are named lists of static API keys clients may present.
	KeySets map[string][]*KeyEntry `yaml:"key_sets"`
	// Credentials are the gateway's own Azure identities, by name.
	Credentials map[string]*Credential `yaml:"credentials"`
	// Upstreams are the scoring endpoints, by name.
	Upstreams map[string]*Upstream `yaml:"upstreams"`
	// Routes map incoming host and path prefix to an upstream and a policy.
	Routes []*Route `yaml:"routes"`
	// Limits holds what rate limits share across replicas.
	Limits Limits `yaml:"limits"`
	// Telemetry says where traces go (OpenTelemetry, OTLP); package
	// telemetry validates it.
	Telemetry Telemetry `yaml:"telemetry"`

	// File is the path the configuration was loaded from.
	File string `yaml:"-"`

	lines map[string]int    // field path → line, for Locate
	unset map[string]string // field path → unset variable (LoadOptions.AllowUnset)

	secretFiles  []string // files read by ${file:...}
	secretValues []string // values from the environment or files, scrubbed from errors
}

// Server configures the public listener.
type Server struct {
	// Listen is the address to listen on. Default ":8080", or ":8443" with TLS.
	Listen string `yaml:"listen"`
	// TLS turns on HTTPS. Omit it for plain HTTP behind a load balancer.
	TLS *TLS `yaml:"tls"`
	// MaxBodyBytes bounds a request body; larger bodies get 413. Default 10MiB.
	MaxBodyBytes Size `yaml:"max_body_bytes"`
	// BufferBodyBytes: request bodies up to this size are read into memory
	// before they are forwarded, so that a request can be replayed once after
	// an upstream 401 and so that streamed answers are never cut short
	// (golang/go#40747). Larger bodies stream and are not replayed.
	// Default 1MiB; at most max_body_bytes.
	BufferBodyBytes Size `yaml:"buffer_body_bytes"`
	// ReadHeaderTimeout bounds reading a request's headers. Default 10s.
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	// ReadBodyTimeout is the longest the gateway waits for the next piece
	// of a request body: each read of the body must bring data within it
	// (an idle timeout, restarted whenever data arrives, for bodies with a
	// Content-Length and chunked ones alike), so a body that stalls is
	// answered 408 and its connection closed instead of being waited on
	// forever. A body that keeps arriving is never cut, however long it
	// takes in total; max_body_bytes bounds its size. Default 30s.
	ReadBodyTimeout Duration `yaml:"read_body_timeout"`
	// IdleTimeout closes idle client keep-alive connections. Default 120s.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// ShutdownTimeout is how long SIGTERM waits for in-flight requests.
	// Default 30s.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// TrustedProxies are the CIDRs (or single addresses) of load balancers in
	// front of the gateway. Forwarded / X-Forwarded-* headers from these peers
	// are extended; from anyone else they are replaced. Default: none.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Upstream holds the shared upstream transport's settings.
	Upstream UpstreamTransport `yaml:"upstream"`
	// CredentialHeaders are the request headers a caller's credential may
	// arrive in, tried in this order; the first one present is the one
	// checked. Allowed: Authorization ("Bearer <key or token>"), api-key
	// (the raw key or token, as the Azure OpenAI and AI Foundry SDKs send
	// it; "Bearer x" there is refused as malformed) and
	// Ocp-Apim-Subscription-Key (raw, as API Management clients send it).
	// Default [Authorization]. Whatever is listed, all three are removed
	// from every request before it goes upstream.
	CredentialHeaders []string `yaml:"credential_headers"`

	// TrustedPrefixes is TrustedProxies parsed.
	TrustedPrefixes []netip.Prefix `yaml:"-"`
}

// UpstreamTransport tunes the one HTTP transport shared by all upstreams.
// None of these bound a response body, so long streams are never cut.
type UpstreamTransport struct {
	// DialTimeout bounds opening a connection. Default 10s.
	DialTimeout Duration `yaml:"dial_timeout"`
	// ResponseHeaderTimeout bounds the wait for an upstream's response
	// headers after the request was sent. Default 300s (model scoring can be
	// slow; the first byte of a stream counts).
	ResponseHeaderTimeout Duration `yaml:"response_header_timeout"`
	// MaxIdleConnsPerHost is the keep-alive pool size per upstream host.
	// Default 256.
	MaxIdleConnsPerHost int `yaml:"max_idle_conns_per_host"`
	// IdleConnTimeout closes pooled connections unused this long. Default 90s.
	IdleConnTimeout Duration `yaml:"idle_conn_timeout"`
}

// TLS configures HTTPS on the public listener.
type TLS struct {
	// Mode is "acme" (certificates from an ACME CA via certmagic) or "files".
	Mode string `yaml:"mode"`
	// Domains the ACME certificate covers (mode acme).
	Domains []string `yaml:"domains"`
	// Email is the ACME account contact (mode acme).
	Email string `yaml:"email"`
	// CA is the ACME directory URL. Default: Let's Encrypt production.
	CA string `yaml:"ca"`
	// Storage is where ACME accounts and certificates are kept.
	Storage string `yaml:"storage"`
	// CARoot is a PEM file of roots to trust for the ACME directory's own
	// HTTPS certificate (a private ACME CA such as step-ca, or Pebble in
	// tests). Default: the system roots.
	CARoot string `yaml:"ca_root"`
	// HTTPChallenge and TLSALPNChallenge turn the ACME challenge types on or
	// off. Default: both on. HTTP-01 needs http_listen reachable on port 80;
	// TLS-ALPN-01 is answered on the TLS listener (port 443).
	HTTPChallenge    *bool `yaml:"http_challenge"`
	TLSALPNChallenge *bool `yaml:"tls_alpn_challenge"`
	// HTTPListen, when set, is a plain-HTTP listener that answers ACME
	// HTTP-01 challenges and redirects everything else to HTTPS (308).
	HTTPListen string `yaml:"http_listen"`
	// CertFile and KeyFile are PEM files (mode files). They are re-read
	// every reload_interval (and on SIGHUP): a rotated pair is served
	// without a restart, a broken one is logged and the old pair kept.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ReloadInterval is how often cert_file/key_file are checked. Default 30s.
	ReloadInterval Duration `yaml:"reload_interval"`
}

// Admin configures the operations listener.
type Admin struct {
	// Listen is the admin address. Default "127.0.0.1:9090". It must never
	// be the public listener's address.
	Listen string `yaml:"listen"`
	// Pprof serves Go's profiler under /debug/pprof/ on the admin listener.
	// Default false: profiles can reveal request data in memory, so turn it
	// on only while investigating, on an admin address nobody else reaches.
	Pprof bool `yaml:"pprof"`
	// Readiness is how /readyz judges the gateway. "routes" (default): ready
	// once every identity provider and credential source has made its first
	// attempt and at least one route can serve; one broken upstream never
	// takes the healthy routes out of service. "strict": ready only when
	// every identity provider has keys and every credential is valid.
	Readiness string `yaml:"readiness"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info (default), warn or error.
	Level string `yaml:"level"`
	// Format is json (default) or text.
	Format string `yaml:"format"`
	// Audit sends the one audit line per request (see README, "Audit
	// trail") to its own output instead of the main log: stdout, stderr, or
	// a file path (appended to, created 0600). Always JSON. Default: the
	// main log.
	Audit string `yaml:"audit"`
}

// KeyEntry is one static API key in a key set.
type KeyEntry struct {
	// ID names the key's holder; it is the caller's identity in logs.
	ID string `yaml:"id"`
	// SHA256 is the hex SHA-256 of the key (preferred: no plaintext at rest).
	// `gateway keys new` prints it.
	SHA256 string `yaml:"sha256"`
	// Key is the key itself, which must come from the environment (${NAME}).
	Key Secret `yaml:"key"`
	// NotAfter, when set, is the instant the key stops being accepted.
	NotAfter *Time `yaml:"not_after"`

	// Hash is the key's SHA-256, from SHA256 or computed from Key.
	Hash [32]byte `yaml:"-"`
}

// Upstream is one scoring endpoint.
type Upstream struct {
	// URL is the scoring URI's base (scheme, host and optional path prefix).
	URL string `yaml:"url"`
	// Headers are set on every forwarded request, replacing any client-sent
	// header of the same name (for example azureml-model-deployment: blue).
	Headers map[string]string `yaml:"headers"`
	// IdentityHeaders, when set, pass the caller's identity upstream in the
	// named headers. Keys: key_id, oid, tid, appid, sub, provider, method.
	// Any client-sent header of those names is removed first.
	IdentityHeaders map[string]string `yaml:"identity_headers"`
	// Auth is the credential the upstream expects.
	Auth Auth `yaml:"auth"`

	// Backends, instead of url and auth, make the upstream a pool: several
	// deployments of the same model (two regions, an ACI service beside its
	// managed online endpoint), each with its own url, headers, credential,
	// priority and weight. See README, "Several backends behind one route".
	Backends []*Backend `yaml:"backends"`
	// Retry says when a request is tried again on another backend.
	Retry *Retry `yaml:"retry"`
	// CircuitBreaker says when a failing backend is skipped, and for how long.
	CircuitBreaker *CircuitBreaker `yaml:"circuit_breaker"`
	// HealthCheck, when set, probes each backend actively; without it the
	// breaker is passive only.
	HealthCheck *HealthCheck `yaml:"health_check"`
	// Mirror sends a copy of some requests to another backend (shadow
	// traffic); its answers are read and dropped.
	Mirror *Mirror `yaml:"mirror"`

	// Parsed is URL parsed.
	Parsed *url.URL `yaml:"-"`
}

// Backend is one deployment in an upstream's pool.
type Backend struct {
	// Name identifies the backend in logs, audit lines and metrics.
	Name string `yaml:"name"`
	// URL, Headers, IdentityHeaders and Auth are as for a single upstream.
	URL             string            `yaml:"url"`
	Headers         map[string]string `yaml:"headers"`
	IdentityHeaders map[string]string `yaml:"identity_headers"`
	Auth            Auth              `yaml:"auth"`
	// Priority: lower is preferred; a priority is used only while every
	// backend of a lower number is unavailable. Default 1.
	Priority *int `yaml:"priority"`
	// Weight is the backend's share inside its priority (smooth weighted
	// round robin). 0 takes no normal traffic (a mirror target, a cold
	// standby). Default 1.
	Weight *int `yaml:"weight"`

	// Parsed is URL parsed.
	Parsed *url.URL `yaml:"-"`
}

// Retry configures tries on another backend. A request is retried only
// before any byte of the answer reached the client, and only when its body
// was buffered (buffer_body_bytes).
type Retry struct {
	// Attempts is the number of tries in total. Default 2 with more than
	// one backend, 1 otherwise.
	Attempts int `yaml:"attempts"`
	// On lists what is retried: connect_error, credential_unavailable,
	// timeout, 429, 500, 502, 503, 504 (numbers or strings). Default
	// [connect_error, credential_unavailable, 429, 503].
	On []string `yaml:"on"`
	// PerTryTimeout bounds one try; 0 (default) means none (a model may
	// think for minutes).
	PerTryTimeout Duration `yaml:"per_try_timeout"`
}

// CircuitBreaker configures when a backend is skipped.
type CircuitBreaker struct {
	// ConsecutiveFailures (of the retry.on conditions) open a backend.
	// Default 5.
	ConsecutiveFailures int `yaml:"consecutive_failures"`
	// OpenFor is how long an open backend is skipped. Default 30s.
	OpenFor Duration `yaml:"open_for"`
	// MaxOpenFor caps a backend's Retry-After. Default 10m.
	MaxOpenFor Duration `yaml:"max_open_for"`
}

// HealthCheck configures active probes.
type HealthCheck struct {
	// Path is appended to each backend's url for a GET with its credential.
	Path string `yaml:"path"`
	// Interval between probes. Default 10s.
	Interval Duration `yaml:"interval"`
	// Timeout of one probe. Default 2s.
	Timeout Duration `yaml:"timeout"`
	// HealthyStatus lists the statuses that mean up. Default [200].
	HealthyStatus []int `yaml:"healthy_status"`
}

// Mirror configures shadow traffic.
type Mirror struct {
	// Backend is a backend of this pool (usually with weight 0), or the name
	// of another upstream.
	Backend string `yaml:"backend"`
	// Percent of requests copied, 1-100.
	Percent int `yaml:"percent"`
}

// Auth types for upstreams.
const (
	AuthNone             = "none"
	AuthKey              = "key"
	AuthAMLKeys          = "aml_keys"
	AuthAMLServiceToken  = "aml_service_token"
	AuthAMLEndpointToken = "aml_endpoint_token"
	AuthAADToken         = "aad_token"
)

// Auth is how the gateway authenticates to an upstream.
type Auth struct {
	// Type is none, key, aml_keys, aml_service_token, aml_endpoint_token or
	// aad_token.
	Type string `yaml:"type"`
	// Key and SecondaryKey (type key) come from the environment. On an
	// upstream 401 the gateway retries once with the other key and keeps
	// using whichever works.
	Key          Secret `yaml:"key"`
	SecondaryKey Secret `yaml:"secondary_key"`
	// Credential names an entry of credentials: (Azure-backed types).
	Credential string `yaml:"credential"`
	// Workspace locates the Azure ML workspace (aml_* types).
	Workspace *Workspace `yaml:"workspace"`
	// Service is an SDK v1 web service name (aml_service_token, aml_keys).
	Service string `yaml:"service"`
	// Endpoint is an online endpoint name (aml_endpoint_token, aml_keys).
	Endpoint string `yaml:"endpoint"`
	// Scope is the Azure AD scope (aad_token). Default
	// https://ml.azure.com/.default.
	Scope string `yaml:"scope"`
	// RefreshInterval is how often fetched keys are re-read (aml_keys).
	// Default 15m.
	RefreshInterval Duration `yaml:"refresh_interval"`
}

// Workspace identifies an Azure Machine Learning workspace.
type Workspace struct {
	SubscriptionID string `yaml:"subscription_id"`
	ResourceGroup  string `yaml:"resource_group"`
	Name           string `yaml:"name"`
	// Region is the workspace's region (for the default api_host).
	Region string `yaml:"region"`
	// APIHost overrides https://{region}.api.azureml.ms.
	APIHost string `yaml:"api_host"`
	// ManagementHost overrides https://management.azure.com.
	ManagementHost string `yaml:"management_host"`
}

// Credential is one of the gateway's own Azure identities.
type Credential struct {
	// Type is client_secret, client_certificate, managed_identity,
	// workload_identity, azure_cli or default.
	Type     string `yaml:"type"`
	TenantID string `yaml:"tenant_id"`
	ClientID string `yaml:"client_id"`
	// ClientSecret (client_secret) must come from the environment.
	ClientSecret Secret `yaml:"client_secret"`
	// CertificatePath is a PEM or PFX file (client_certificate).
	CertificatePath string `yaml:"certificate_path"`
	// CertificatePassword unlocks a PFX file; from the environment.
	CertificatePassword Secret `yaml:"certificate_password"`
	// ResourceID selects a user-assigned managed identity by resource id
	// (client_id selects it by client id; neither means system-assigned).
	ResourceID string `yaml:"resource_id"`
	// TokenFilePath is the federated token file (workload_identity). Default:
	// $AZURE_FEDERATED_TOKEN_FILE.
	TokenFilePath string `yaml:"token_file_path"`
	// Cloud is public (default), usgovernment or china.
	Cloud string `yaml:"cloud"`
	// AuthorityHost overrides the cloud's Azure AD host (tests, private
	// clouds). It must be https.
	AuthorityHost string `yaml:"authority_host"`
}

// IdentityProvider validates inbound access tokens.
type IdentityProvider struct {
	// Type is azure_ad or oidc.
	Type string `yaml:"type"`
	// TenantID (azure_ad) is a tenant GUID, or "organizations"/"common"
	// together with AllowedTenants.
	TenantID       string   `yaml:"tenant_id"`
	AllowedTenants []string `yaml:"allowed_tenants"`
	// Cloud (azure_ad) is public (default), usgovernment or china.
	Cloud string `yaml:"cloud"`
	// AuthorityHost (azure_ad) overrides the cloud's login host.
	AuthorityHost string `yaml:"authority_host"`
	// Issuer (oidc) is the exact issuer tokens carry.
	Issuer string `yaml:"issuer"`
	// DiscoveryURL (oidc) overrides {issuer}/.well-known/openid-configuration.
	DiscoveryURL string `yaml:"discovery_url"`
	// JWKSURI (oidc) sets the key set URL directly (no discovery for keys).
	JWKSURI string `yaml:"jwks_uri"`
	// Audiences are the accepted aud values (a set).
	Audiences []string `yaml:"audiences"`
	// Leeway is the clock skew allowed on exp, nbf and iat. Default 60s.
	Leeway *Duration `yaml:"leeway"`
	// RefreshInterval is how often keys are re-fetched. Default 24h.
	RefreshInterval Duration `yaml:"refresh_interval"`
}

// Route maps a host and path prefix to an upstream and a policy.
type Route struct {
	// Name identifies the route in logs and metrics.
	Name string `yaml:"name"`
	// Host, when set, restricts the route to that Host header (no port).
	Host string `yaml:"host"`
	// Path is the prefix, matched on segment boundaries: /fraud matches
	// /fraud and /fraud/score but never /fraudster. The prefix is replaced by
	// the upstream URL's path.
	Path string `yaml:"path"`
	// Upstream names an entry of upstreams.
	Upstream string `yaml:"upstream"`
	// Public admits every caller without a credential. A route needs either
	// public: true or an allow list.
	Public bool `yaml:"public"`
	// Allow lists the rules; the first that admits wins. No rule, no entry.
	Allow []*AllowRule `yaml:"allow"`
	// RateLimit bounds request rates on this route.
	RateLimit *RateLimit `yaml:"rate_limit"`
	// TokenLimit bounds the LLM tokens each identity may use on this route.
	TokenLimit *TokenLimit `yaml:"token_limit"`
	// CORS lets browser apps on other origins call this route. Without it,
	// a preflight OPTIONS is treated like any other request (it needs a
	// credential, and is forwarded once admitted).
	CORS *CORS `yaml:"cors"`
}

// CORS answers a route's CORS preflights at the gateway and labels its
// answers for the allowed origins (the Fetch standard's CORS protocol).
//
// A preflight (OPTIONS with Origin and Access-Control-Request-Method) is
// answered by the gateway, 204 for an allowed origin and 403 otherwise,
// without a credential and without reaching the upstream; the actual
// request still needs its credential. The gateway never sends
// Access-Control-Allow-Credentials: a credential travels only in the
// credential headers, which a page's script sets itself, never in a cookie
// (Cookie is removed before forwarding), so no route admits cookies and
// browsers attach none.
type CORS struct {
	// AllowOrigins are exact origins ("https://app.contoso.com", scheme,
	// host and port only, no path), or "*" alone for any origin. "*" is
	// safe here only because no route admits cookies (see above): any
	// page may call the route, but it must hold a key or token to pass.
	AllowOrigins []string `yaml:"allow_origins"`
	// AllowHeaders are the request headers a page may send besides the
	// credential headers (server.credential_headers, always allowed).
	// Default [Content-Type].
	AllowHeaders []string `yaml:"allow_headers"`
	// ExposeHeaders are answer headers a page's script may read besides the
	// CORS-safelisted ones. Default [X-Request-Id, Retry-After].
	ExposeHeaders []string `yaml:"expose_headers"`
	// MaxAge is how long a browser may cache a preflight's answer.
	// Default 0: not sent (browsers then cache it for 5 s); browsers cap it
	// (Chromium at 2h).
	MaxAge Duration `yaml:"max_age"`
}

// AllowRule admits a caller by key set or by identity provider and claims.
// Within a rule every condition must hold; across rules any may admit.
type AllowRule struct {
	// KeySet admits any valid key of the named key set.
	KeySet string `yaml:"key_set"`
	// IdentityProvider admits valid tokens from the named provider that
	// satisfy every claim condition below.
	IdentityProvider string `yaml:"identity_provider"`
	// Roles match the roles claim (app roles).
	Roles Match `yaml:"roles"`
	// Scopes match the space-separated scp claim (delegated permissions).
	Scopes Match `yaml:"scopes"`
	// Groups match the groups claim (object ids). A token with a group
	// overage marker has unknown groups and is refused by a groups condition.
	Groups Match `yaml:"groups"`
	// Users match the oid claim (object ids), never upn.
	Users Match `yaml:"users"`
	// Apps match appid (v1) or azp (v2): the calling client application.
	Apps Match `yaml:"apps"`
	// Tenants match the tid claim.
	Tenants Match `yaml:"tenants"`
}

// RateLimit bounds a route's request rate with token buckets
// (golang.org/x/time/rate), or GCRA in limits.store when one is configured.
// Without a store, limits are per gateway replica: with N replicas behind a
// load balancer a caller may reach up to N times the rate. With a store,
// every replica counts against one budget.
type RateLimit struct {
	// PerIdentity is "N/s", "N/m" or "N/h" per caller identity (key id, or
	// tenant + object id / app id for tokens).
	PerIdentity string `yaml:"per_identity"`
	// Burst is each identity's bucket size. Default: the rate per second,
	// rounded up, at least 1.
	Burst int `yaml:"burst"`
	// Overall is "N/s", "N/m" or "N/h" across all callers of the route.
	Overall string `yaml:"overall"`
	// OverallBurst is the route bucket's size. Default as for burst.
	OverallBurst int `yaml:"overall_burst"`
	// MaxIdentities bounds how many callers' buckets are remembered (memory
	// stays bounded under millions of identities; idle ones are forgotten).
	// Default 100000.
	MaxIdentities int `yaml:"max_identities"`
}

// TokenLimit bounds each identity's LLM tokens on a route (OpenAI-shaped
// usage): a request is admitted while the identity has tokens left in
// every window, and the answer's usage.total_tokens (a JSON answer's, or
// the last server-sent event that carries usage) is charged after it.
// Counted in limits.store when one is configured, else per replica.
type TokenLimit struct {
	// PerMinute is the tokens per identity per UTC minute; 0: no limit.
	PerMinute int64 `yaml:"per_minute"`
	// PerDay is the tokens per identity per UTC day; 0: no limit.
	PerDay int64 `yaml:"per_day"`
	// InjectStreamUsage adds "stream_options": {"include_usage": true} to
	// JSON requests with "stream": true and no stream_options (OpenAI-style
	// chat completions), so a streamed answer reports its usage; the body
	// is otherwise unchanged. Only bodies the gateway buffers (up to
	// server.buffer_body_bytes) are changed. Default false.
	InjectStreamUsage bool `yaml:"inject_stream_usage"`
}

// Limits configures what request limits are counted in.
type Limits struct {
	// Store, when set, counts every route's rate_limit in a shared store,
	// so N replicas admit the configured rate in total, not N times it.
	// Omit it for in-memory limits per replica.
	Store *LimitsStore `yaml:"store"`
}

// Telemetry is the gateway's OpenTelemetry export. Traces are off unless
// this section or the standard OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) environment variable names a
// collector; a setting here wins over its environment variable.
type Telemetry struct {
	// Traces, when set, exports one span per request over OTLP.
	Traces *Traces `yaml:"traces"`
}

// Traces is where and how spans are exported.
type Traces struct {
	// Endpoint is the collector's OTLP URL: http(s)://host:4318 for
	// http/protobuf (/v1/traces is added unless the URL already ends with
	// it), http(s)://host:4317 for grpc. No user, password or query: put
	// credentials in Headers. Default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
	// (used as it is), then OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces).
	Endpoint string `yaml:"endpoint"`
	// Protocol is http/protobuf or grpc. Default:
	// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, then OTEL_EXPORTER_OTLP_PROTOCOL,
	// then http/protobuf.
	Protocol string `yaml:"protocol"`
	// Headers are sent with every export (a vendor's API key, say);
	// values may use ${NAME} or ${file:/path}. When set, they replace
	// OTEL_EXPORTER_OTLP_TRACES_HEADERS / OTEL_EXPORTER_OTLP_HEADERS.
	Headers map[string]Secret `yaml:"headers"`
	// SampleRatio is the share of new traces recorded, 0 to 1; a request
	// whose caller sent a traceparent follows the caller's sampling
	// decision. Default: OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG,
	// then every request.
	SampleRatio *float64 `yaml:"sample_ratio"`
	// ServiceName is service.name on every span. Default: OTEL_SERVICE_NAME,
	// then modelgate.
	ServiceName string `yaml:"service_name"`
}

// LimitsStore is a shared store for request limits (package ratelimit
// validates it).
type LimitsStore struct {
	// Type is redis: Redis 6+ or Valkey, standalone, or Azure Cache for
	// Redis.
	Type string `yaml:"type"`
	// URL is redis://[user:password@]host:6379/0, or rediss:// for TLS.
	// Write the password through ${NAME} or ${file:PATH}; the URL never
	// appears in logs, errors or /readyz with its password.
	URL Secret `yaml:"url"`
	// Timeout bounds every store call on the request path: no request
	// waits longer than this for the store. Default 50ms.
	Timeout Duration `yaml:"timeout"`
	// OnError decides what requests get while the store fails or is
	// slower than timeout: local (count in this replica's memory, as
	// without a store; the default), allow (admit) or deny (503).
	OnError string `yaml:"on_error"`
}

// Secret is a value that never prints itself (see redact.Secret): its
// String, GoString, Format, LogValue and encodings all give "[REDACTED]".
// Use Reveal to get the value.
type Secret = redact.Secret

// Readiness modes (admin.readiness).
const (
	ReadinessRoutes = "routes"
	ReadinessStrict = "strict"
)

// Defaults used when a field is left out.
const (
	DefaultListen            = ":8080"
	DefaultListenTLS         = ":8443"
	DefaultAdminListen       = "127.0.0.1:9090"
	DefaultMaxBodyBytes      = 10 << 20
	DefaultBufferBodyBytes   = 1 << 20
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadBodyTimeout   = 30 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultShutdownTimeout   = 30 * time.Second
	DefaultDialTimeout       = 10 * time.Second
	DefaultResponseHeader    = 300 * time.Second
	DefaultMaxIdlePerHost    = 256
	DefaultIdleConnTimeout   = 90 * time.Second
	DefaultKeysRefresh       = 15 * time.Minute
	DefaultAADScope          = "https://ml.azure.com/.default"
)
