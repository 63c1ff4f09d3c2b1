// Package gateway assembles a running gateway from a loaded configuration:
// it compiles the key index, the route policies and the upstream credentials
// into an immutable Snapshot, serves the public and admin listeners, and
// swaps snapshots atomically on reload.
package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"sort"
	"sync"
	"time"

	azpolicy "github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/internal/jsonline"
	"github.com/modelgate/modelgate/metrics"
	"github.com/modelgate/modelgate/policy"
	"github.com/modelgate/modelgate/policy/idp"
	"github.com/modelgate/modelgate/proxy"
	"github.com/modelgate/modelgate/ratelimit"
)

// Deps are the process-wide dependencies a Snapshot is built with. They are
// injected, never global, so tests can build many gateways in one process.
type Deps struct {
	// Logger receives operational logs and the per-request lines.
	Logger *slog.Logger
	// Transport is the one shared upstream transport.
	Transport http.RoundTripper
	// Now is the clock; nil means time.Now. Identity providers judge token
	// times by it too (gateway explain -at sets a fixed instant).
	Now func() time.Time
	// HTTPClient fetches identity provider metadata and keys and talks to
	// the Azure control plane; nil means a default client trusting the
	// system roots.
	HTTPClient *http.Client
	// Clock drives upstream credential refreshes; nil means the system
	// clock.
	Clock credential.Clock
	// Refresh tunes the credential sources' backoff and rate limits; zero
	// means their defaults.
	Refresh credential.RefreshPolicy
	// AzureRetry tunes azidentity's own retries; zero means azcore's
	// defaults.
	AzureRetry azpolicy.RetryOptions
	// AuditLogger, when not nil, receives the per-request audit lines
	// instead of Logger.
	AuditLogger *slog.Logger
	// RequestLines, when not nil, writes the per-request JSON lines (the
	// fast path; it takes precedence over AuditLogger).
	RequestLines *jsonline.Logger
	// Metrics, when not nil, records requests and serves /metrics.
	Metrics *metrics.Metrics
	// StaticJWKS supplies saved key sets by provider name ("*" for all), so
	// nothing is fetched (gateway explain -jwks).
	StaticJWKS map[string][]byte
}

// Snapshot is one compiled configuration: immutable once built, served until
// a reload replaces it.
type Snapshot struct {
	Config  *config.Config
	Handler *proxy.Handler
	Routes  []*proxy.Route

	providers map[string]*idp.Provider                     // by provider name
	sources   map[string]credential.ManagedSource          // by upstream name
	reused    struct{ providers, sources map[string]bool } // taken over from the previous snapshot

	mu     sync.Mutex
	owned  struct{ providers, sources map[string]bool } // what Close stops
	closed bool
}

// Close stops the background work (key and credential refreshes) of the
// components this snapshot owns. Components a newer snapshot took over are
// left running.
func (s *Snapshot) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for name := range s.owned.providers {
		s.providers[name].Close()
	}
	for name := range s.owned.sources {
		_ = s.sources[name].Close()
	}
}

// takeOver moves ownership of the components next reuses from s to next.
// Call it once next is the snapshot being served.
func (s *Snapshot) takeOver(next *Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next.mu.Lock()
	defer next.mu.Unlock()
	for name := range next.reused.providers {
		delete(s.owned.providers, name)
		next.owned.providers[name] = true
	}
	for name := range next.reused.sources {
		delete(s.owned.sources, name)
		next.owned.sources[name] = true
	}
}

// Build compiles cfg into a Snapshot. It does no network I/O itself;
// credential sources and identity providers it starts fetch in the
// background, so an Azure outage never stops the gateway from starting.
func Build(ctx context.Context, cfg *config.Config, deps Deps) (*Snapshot, error) {
	return BuildFrom(ctx, cfg, deps, nil)
}

// BuildFrom is Build for a reload: identity providers and upstream
// credential sources whose settings did not change are carried over from
// prev (no refetch storm, no lost token) instead of being started again.
// prev is not modified; the server hands the carried-over components to the
// new snapshot once it serves (see Server.Reload).
func BuildFrom(ctx context.Context, cfg *config.Config, deps Deps, prev *Snapshot) (*Snapshot, error) {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Transport == nil {
		deps.Transport = NewTransport(cfg.Server.Upstream)
	}
	snap := &Snapshot{Config: cfg, providers: map[string]*idp.Provider{}, sources: map[string]credential.ManagedSource{}}
	snap.reused.providers, snap.reused.sources = map[string]bool{}, map[string]bool{}
	snap.owned.providers, snap.owned.sources = map[string]bool{}, map[string]bool{}

	var specs []policy.KeySpec
	for _, name := range sortedNames(cfg.KeySets) {
		for _, k := range cfg.KeySets[name] {
			ks := policy.KeySpec{Set: name, ID: k.ID, Hash: k.Hash}
			if k.NotAfter != nil {
				ks.NotAfter = k.NotAfter.Time
			}
			specs = append(specs, ks)
		}
	}
	keys := policy.NewKeyIndex(specs)

	if err := buildProviders(ctx, cfg, deps, prev, snap); err != nil {
		snap.Close()
		return nil, err
	}
	providers := snap.providers

	azure := &azureCredentials{cfg: cfg.Credentials, deps: deps}
	upstreams := map[string]*proxy.Upstream{}
	for _, name := range sortedNames(cfg.Upstreams) {
		u := cfg.Upstreams[name]
		var src credential.ManagedSource
		if prev != nil && prev.sources[name] != nil && sameAuth(prev.Config, cfg, name) {
			src = prev.sources[name]
			snap.reused.sources[name] = true
		} else {
			var err error
			src, err = upstreamSource(name, u, azure, deps)
			if err != nil {
				snap.Close()
				return nil, fmt.Errorf("upstream %s: %w", name, err)
			}
			if src != nil {
				src.Start()
				snap.owned.sources[name] = true
			}
		}
		var auth proxy.UpstreamAuth
		if src != nil {
			snap.sources[name] = src
			auth = credential.NewHeaderAuth(src)
		}
		upstreams[name] = &proxy.Upstream{
			Name: name, URL: u.Parsed, Headers: u.Headers, IdentityHeaders: u.IdentityHeaders, Auth: auth,
		}
	}

	for _, r := range cfg.Routes {
		var pol *policy.Policy
		if r.Public {
			pol = policy.Public()
		} else {
			var rules []policy.RuleSpec
			for _, a := range r.Allow {
				if a.KeySet != "" {
					rules = append(rules, policy.RuleSpec{KeySet: a.KeySet})
					continue
				}
				tr, err := tokenRule(a, providers)
				if err != nil {
					snap.Close()
					return nil, fmt.Errorf("route %s: %w", r.Name, err)
				}
				rules = append(rules, policy.RuleSpec{Token: tr})
			}
			pol = policy.New(keys, rules)
		}
		route := &proxy.Route{Name: r.Name, Host: r.Host, Prefix: r.Path, Upstream: upstreams[r.Upstream], Policy: pol}
		if deps.Metrics != nil {
			route.Metrics = deps.Metrics.Route(r.Name)
		}
		if r.RateLimit != nil {
			lim, err := ratelimit.New(r.RateLimit.Options)
			if err != nil {
				snap.Close()
				return nil, fmt.Errorf("route %s: %w", r.Name, err)
			}
			route.Limiter = lim
		}
		snap.Routes = append(snap.Routes, route)
	}
	snap.Handler = proxy.New(proxy.Options{
		Routes:          snap.Routes,
		Transport:       deps.Transport,
		MaxBodyBytes:    int64(cfg.Server.MaxBodyBytes),
		BufferBodyBytes: int64(cfg.Server.BufferBodyBytes),
		TrustedProxies:  cfg.Server.TrustedPrefixes,
		Logger:          deps.Logger,
		AuditLogger:     deps.AuditLogger,
		RequestLines:    deps.RequestLines,
		Now:             deps.Now,
	})
	return snap, nil
}

// sameAuth reports whether upstream name authenticates exactly as before:
// same auth section and, for Azure-backed types, the same credential
// settings (secrets included).
func sameAuth(old, cur *config.Config, name string) bool {
	ou, cu := old.Upstreams[name], cur.Upstreams[name]
	if ou == nil || cu == nil || !reflect.DeepEqual(ou.Auth, cu.Auth) {
		return false
	}
	if c := cu.Auth.Credential; c != "" {
		return reflect.DeepEqual(old.Credentials[c], cur.Credentials[c])
	}
	return true
}

func sortedNames[M ~map[string]V, V any](m M) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// NewTransport builds the one upstream transport the gateway shares across
// all upstreams. Its timeouts bound connecting and waiting for response
// headers, never a response body, so long streams are not cut.
func NewTransport(c config.UpstreamTransport) *http.Transport {
	dialer := &net.Dialer{Timeout: c.DialTimeout.D(), KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            dialer.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           0,
		MaxIdleConnsPerHost:    c.MaxIdleConnsPerHost,
		IdleConnTimeout:        c.IdleConnTimeout.D(),
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  c.ResponseHeaderTimeout.D(),
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 1 << 20,
	}
}
