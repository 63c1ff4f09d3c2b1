package gateway

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"strings"

	"github.com/modelgate/modelgate/pool"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/credential/azcred"
	"github.com/modelgate/modelgate/idp"
	"github.com/modelgate/modelgate/internal/problem"
	"github.com/modelgate/modelgate/policy"
	"github.com/modelgate/modelgate/proxy"
	"github.com/modelgate/modelgate/ratelimit"
	"github.com/modelgate/modelgate/telemetry"
	"github.com/modelgate/modelgate/tlsserve"
	"go.opentelemetry.io/otel/trace"
)

// CompileOptions tunes Compile.
type CompileOptions struct {
	// Prev is the snapshot being served, on a reload: identity providers
	// and upstream credential sources whose settings did not change are
	// shared with it (no refetch storm, no lost token) instead of built
	// again. Prev is not modified.
	Prev *Snapshot
	// DecideOnly builds what deciding on a caller needs (key sets, identity
	// providers, routes and their policies) and leaves out the upstream
	// credentials, so their secrets need not be set. For `gateway explain`.
	DecideOnly bool
}

// Compile turns cfg into a Snapshot: the key index, identity providers,
// upstream credential sources, route policies, limiters, the TLS settings
// and the request handler. It is pure: it reads local files the
// configuration names (certificates) but touches no network and starts no
// goroutine, so `gateway check` and `gateway explain` can run it as `serve`
// does. Every setting is validated here, by the package that uses it, and
// every problem is reported at once with file, line and field path.
//
// Start launches the snapshot's background work; Close stops it.
func Compile(cfg *config.Config, deps Deps, o CompileOptions) (*Snapshot, error) {
	deps = deps.withDefaults(cfg)
	c := &compiler{cfg: cfg, deps: deps, prev: o.Prev, snap: &Snapshot{
		Config:    cfg,
		providers: map[string]*idp.Provider{},
		sources:   map[string]credential.ManagedSource{},
		pools:     map[string]*pool.Pool{},
		parts:     map[string]*part{},
	}}
	keys := c.keyIndex()
	c.identityProviders()
	upstreams := c.upstreams(o.DecideOnly)
	for name, u := range c.cfg.Upstreams {
		// A mirror that names another upstream (not a backend of its own).
		if m := u.Mirror; m != nil && upstreams[name].Pool != nil {
			if _, own := upstreams[name].Pool.Index(m.Backend); !own {
				upstreams[name].MirrorTo = upstreams[m.Backend]
			}
		}
	}
	c.limitsStore(o.DecideOnly)
	if !o.DecideOnly {
		// explain decides offline: a bad OTEL_* variable in the
		// operator's shell must not stop it.
		c.telemetry()
	}
	c.routes(keys, upstreams)
	c.tls()
	if err := errors.Join(c.errs...); err != nil {
		return nil, cfg.Locate(err)
	}
	c.warnings()
	if len(c.warns) > 0 {
		c.snap.Warnings = problem.Flatten(cfg.Locate(errors.Join(c.warns...)))
	}
	c.snap.Handler = proxy.New(proxy.Options{
		Routes:            c.snap.Routes,
		Transport:         deps.Transport,
		MaxBodyBytes:      int64(cfg.Server.MaxBodyBytes),
		BufferBodyBytes:   int64(cfg.Server.BufferBodyBytes),
		ReadBodyTimeout:   cfg.Server.ReadBodyTimeout.D(),
		TrustedProxies:    cfg.Server.TrustedPrefixes,
		CredentialHeaders: cfg.Server.CredentialHeaders,
		Logger:            deps.Logger,
		Audit:             deps.Audit,
		Now:               deps.Now,
		Tracer:            c.tracer("/proxy"),
	})
	return c.snap, nil
}

// compiler holds one Compile call's state.
type compiler struct {
	cfg   *config.Config
	deps  Deps
	prev  *Snapshot
	snap  *Snapshot
	errs  []error
	warns []error
	// azure holds the gateway's Azure identities built so far, shared
	// between the upstreams that name them (azidentity caches tokens per
	// credential).
	azure map[string]azcore.TokenCredential
	// store is limits.store, when configured.
	store *ratelimit.Store
}

// tracer returns the tracer for the gateway's scope plus suffix, or nil
// when traces are off.
func (c *compiler) tracer(suffix string) trace.Tracer {
	if c.deps.Tracing == nil {
		return nil
	}
	return c.deps.Tracing.Provider().Tracer(tracerName + suffix)
}

// telemetry validates the telemetry section (and the OTEL_* variables it
// defaults to). The export itself is the process's (Deps.Tracing).
func (c *compiler) telemetry() {
	s, err := telemetry.Resolve(c.cfg.Telemetry, c.deps.LookupEnv)
	if err != nil {
		c.errs = append(c.errs, err)
		return
	}
	c.snap.Telemetry = s
}

// fail records err's problems below the field path prefix.
func (c *compiler) fail(prefix string, err error) {
	if err != nil {
		c.errs = append(c.errs, problem.Under(prefix, err))
	}
}

func (c *compiler) keyIndex() *policy.KeyIndex {
	var specs []policy.KeySpec
	for _, name := range sortedNames(c.cfg.KeySets) {
		for _, k := range c.cfg.KeySets[name] {
			ks := policy.KeySpec{Set: name, ID: k.ID, Hash: k.Hash}
			if k.NotAfter != nil {
				ks.NotAfter = k.NotAfter.Time
			}
			specs = append(specs, ks)
		}
	}
	return policy.NewKeyIndex(specs)
}

// identityProviders builds one provider per configured entry, or shares an
// unchanged one with the previous snapshot. Keys are fetched once the
// snapshot starts; a provider that cannot reach its issuer answers 503 for
// its rules, but never stops the gateway from starting.
func (c *compiler) identityProviders() {
	for _, name := range sortedNames(c.cfg.IdentityProviders) {
		ip := c.cfg.IdentityProviders[name]
		key := "identity_providers." + name
		if p := c.reuse(key, *ip); p != nil {
			c.snap.providers[name] = p.value.(*idp.Provider)
			continue
		}
		o := idp.Options{
			Name:            name,
			Type:            ip.Type,
			TenantID:        ip.TenantID,
			AllowedTenants:  ip.AllowedTenants,
			Cloud:           ip.Cloud,
			AuthorityHost:   ip.AuthorityHost,
			Issuer:          ip.Issuer,
			DiscoveryURL:    ip.DiscoveryURL,
			JWKSURI:         ip.JWKSURI,
			Audiences:       ip.Audiences,
			RefreshInterval: ip.RefreshInterval.D(),
			HTTPClient:      c.deps.HTTPClient,
			Logger:          c.deps.Logger,
			Now:             c.deps.Now,
			Tracer:          c.tracer("/idp"),
		}
		if ip.Leeway != nil {
			o.Leeway = ip.Leeway.D()
		}
		if jwks, ok := c.deps.StaticJWKS[name]; ok {
			o.StaticJWKS = jwks
		} else if jwks, ok := c.deps.StaticJWKS["*"]; ok {
			o.StaticJWKS = jwks
		}
		p, err := idp.New(o)
		if err != nil {
			c.fail(key, err)
			continue
		}
		c.snap.providers[name] = p
		c.own(key, *ip, p, func(ctx context.Context) { p.Start(ctx) }, p.Close)
	}
}

// upstreamSettings is what an upstream's credential source is built from;
// a reload keeps the source while it is unchanged (secrets included).
type upstreamSettings struct {
	Auth config.Auth
	Cred config.Credential
}

func (c *compiler) upstreams(decideOnly bool) map[string]*proxy.Upstream {
	out := map[string]*proxy.Upstream{}
	for _, name := range sortedNames(c.cfg.Upstreams) {
		u := c.cfg.Upstreams[name]
		if len(u.Backends) > 0 {
			out[name] = c.pool(name, u, decideOnly)
			continue
		}
		up := &proxy.Upstream{Name: name, URL: u.Parsed, Headers: u.Headers, IdentityHeaders: u.IdentityHeaders}
		out[name] = up
		if decideOnly || u.Auth.Type == config.AuthNone {
			continue
		}
		if src := c.source(name, name, "upstreams."+name+".auth", u.Auth); src != nil {
			up.Auth = src
		}
	}
	return out
}

// source builds (or shares with the previous snapshot) the credential
// source of one auth section at path p; key names it across reloads and
// sourceName in /readyz and logs. Nil when it cannot be built (the problem
// is recorded).
func (c *compiler) source(sourceName, key, p string, a config.Auth) credential.ManagedSource {
	settings := upstreamSettings{Auth: a}
	if cr := c.cfg.Credentials[a.Credential]; cr != nil {
		settings.Cred = *cr
	}
	partKey := "source:" + key
	if part := c.reuse(partKey, settings); part != nil {
		src := part.value.(credential.ManagedSource)
		c.snap.sources[sourceName] = src
		return src
	}
	src, err := c.upstreamSource(sourceName, a)
	if err != nil {
		c.fail(p, err)
		return nil
	}
	c.own(partKey, settings, src, func(context.Context) { src.Start() }, func() { _ = src.Close() })
	c.snap.sources[sourceName] = src
	return src
}

// pool compiles an upstream with backends: each backend's credential
// source (named UPSTREAM/BACKEND), the selection, retry, breaker and mirror
// settings (package pool validates them), and the optional health check,
// which runs once the snapshot starts.
func (c *compiler) pool(name string, u *config.Upstream, decideOnly bool) *proxy.Upstream {
	p := "upstreams." + name
	up := &proxy.Upstream{Name: name}
	o := pool.Options{}
	var auths []proxy.UpstreamAuth
	for i, b := range u.Backends {
		o.Backends = append(o.Backends, pool.BackendOptions{Name: b.Name, URL: b.URL, Weight: b.Weight})
		if b.Priority != nil {
			o.Backends[i].Priority = *b.Priority
		}
		pb := &proxy.Backend{Name: b.Name, URL: b.Parsed, Headers: b.Headers, IdentityHeaders: b.IdentityHeaders}
		if !decideOnly && b.Auth.Type != config.AuthNone {
			if src := c.source(name+"/"+b.Name, name+"/"+b.Name, fmt.Sprintf("%s.backends[%d].auth", p, i), b.Auth); src != nil {
				pb.Auth = src
			}
		}
		up.Backends = append(up.Backends, pb)
		auths = append(auths, pb.Auth)
	}
	if r := u.Retry; r != nil {
		o.Retry = pool.RetryOptions{Attempts: r.Attempts, On: r.On, PerTryTimeout: r.PerTryTimeout.D()}
	}
	if cb := u.CircuitBreaker; cb != nil {
		o.CircuitBreaker = pool.BreakerOptions{ConsecutiveFailures: cb.ConsecutiveFailures, OpenFor: cb.OpenFor.D(), MaxOpenFor: cb.MaxOpenFor.D()}
	}
	if hc := u.HealthCheck; hc != nil {
		o.HealthCheck = &pool.HealthCheckOptions{Path: hc.Path, Interval: hc.Interval.D(), Timeout: hc.Timeout.D(), HealthyStatus: hc.HealthyStatus}
	}
	if m := u.Mirror; m != nil {
		o.Mirror = &pool.MirrorOptions{Backend: m.Backend, Percent: m.Percent}
	}
	o.Usable = proxy.BackendUsable(auths)
	pl, err := pool.New(o)
	if err != nil {
		c.fail(p, err)
		return up
	}
	up.Pool = pl
	c.snap.pools[name] = pl
	if c.deps.Metrics != nil {
		names := make([]string, pl.Len())
		for i := range names {
			names[i] = pl.Name(i)
		}
		up.Tries = c.deps.Metrics.Pool(name, names)
	}
	if o.HealthCheck != nil && !decideOnly {
		pr := &pool.Prober{
			Pool:   pl,
			Client: &http.Client{Transport: c.deps.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
			Prepare: func(req *http.Request, i int) error {
				b := up.Backends[i]
				for k, v := range b.Headers {
					req.Header.Set(k, v)
				}
				if b.Auth == nil {
					return nil
				}
				cred, err := b.Auth.Credential(req.Context())
				if err != nil {
					return err
				}
				req.Header.Set("Authorization", cred.Header())
				return nil
			},
			Observe: c.deps.probeObserver(name, pl),
		}
		// A pool's breaker state is its own: a reload builds it anew, and
		// its prober with it.
		c.own("prober:"+name+fmt.Sprintf("#%p", pl), nil, pr, func(ctx context.Context) { _ = pr.Start(ctx) }, pr.Close)
	}
	return up
}

// upstreamSource builds the credential source for an upstream's auth
// section (not auth type none).
func (c *compiler) upstreamSource(name string, a config.Auth) (credential.ManagedSource, error) {
	deps := c.deps
	if a.Type == config.AuthKey {
		return credential.NewKey(credential.KeyOptions{
			Name:      name,
			Primary:   credential.Secret(a.Key.Reveal()),
			Secondary: credential.Secret(a.SecondaryKey.Reveal()),
			Clock:     deps.Clock,
			Logger:    deps.Logger,
		})
	}
	cred, err := c.azureCredential(a.Credential)
	if err != nil {
		return nil, err
	}
	var ws credential.Workspace
	if w := a.Workspace; w != nil {
		ws = credential.Workspace{
			SubscriptionID: w.SubscriptionID, ResourceGroup: w.ResourceGroup, Name: w.Name,
			Region: w.Region, APIHost: w.APIHost, ManagementHost: w.ManagementHost,
		}
	}
	switch a.Type {
	case config.AuthAMLServiceToken:
		return credential.NewAMLServiceToken(credential.AMLServiceTokenOptions{
			Name: name, Credential: cred, Workspace: ws, Service: a.Service,
			HTTPClient: deps.HTTPClient, Clock: deps.Clock, Logger: deps.Logger, Refresh: deps.Refresh,
		})
	case config.AuthAMLEndpointToken:
		return credential.NewAMLEndpointToken(credential.AMLEndpointTokenOptions{
			Name: name, Credential: cred, Workspace: ws, Endpoint: a.Endpoint,
			HTTPClient: deps.HTTPClient, Clock: deps.Clock, Logger: deps.Logger, Refresh: deps.Refresh,
		})
	case config.AuthAADToken:
		return credential.NewAADToken(credential.AADTokenOptions{
			Name: name, Credential: cred, Scope: a.Scope,
			Clock: deps.Clock, Logger: deps.Logger, Refresh: deps.Refresh,
		})
	case config.AuthAMLKeys:
		return credential.NewAMLKeys(credential.AMLKeysOptions{
			Name: name, Credential: cred, Workspace: ws, Service: a.Service, Endpoint: a.Endpoint,
			Interval:   a.RefreshInterval.D(),
			HTTPClient: deps.HTTPClient, Clock: deps.Clock, Logger: deps.Logger, Refresh: deps.Refresh,
		})
	}
	return nil, problem.At("type", "auth type %s is not supported", a.Type)
}

// azureCredential builds the gateway's Azure identity name once and shares
// it between the upstreams that use it. A problem with it is reported at
// credentials.NAME (once), and the upstream is skipped.
func (c *compiler) azureCredential(name string) (azcore.TokenCredential, error) {
	if name == "" {
		return nil, nil // the constructor names what is missing
	}
	if cred, ok := c.azure[name]; ok {
		if cred == nil {
			return nil, errReported
		}
		return cred, nil
	}
	if c.azure == nil {
		c.azure = map[string]azcore.TokenCredential{}
	}
	cr := c.cfg.Credentials[name]
	if cr == nil {
		return nil, problem.At("credential", "no credential named %q in credentials:", name)
	}
	cred, err := azcred.New(azcred.Options{
		Name:                name,
		Type:                azcred.Type(cr.Type),
		TenantID:            cr.TenantID,
		ClientID:            cr.ClientID,
		ClientSecret:        credential.Secret(cr.ClientSecret.Reveal()),
		CertificatePath:     cr.CertificatePath,
		CertificatePassword: credential.Secret(cr.CertificatePassword.Reveal()),
		ResourceID:          cr.ResourceID,
		TokenFilePath:       cr.TokenFilePath,
		Cloud:               cr.Cloud,
		AuthorityHost:       cr.AuthorityHost,
		HTTPClient:          c.deps.HTTPClient,
		Retry:               c.deps.AzureRetry,
	})
	c.azure[name] = cred
	if err != nil {
		c.fail("credentials."+name, err)
		return nil, errReported
	}
	return cred, nil
}

// errReported marks a problem already recorded elsewhere.
var errReported = errors.New("reported")

func (c *compiler) routes(keys *policy.KeyIndex, upstreams map[string]*proxy.Upstream) {
	for i, r := range c.cfg.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		pol := policy.Public()
		if !r.Public {
			var rules []policy.RuleSpec
			for j, a := range r.Allow {
				if a.KeySet != "" {
					rules = append(rules, policy.RuleSpec{KeySet: a.KeySet})
					continue
				}
				tr, err := c.tokenRule(a)
				if err != nil {
					c.fail(fmt.Sprintf("%s.allow[%d]", p, j), err)
					continue
				}
				rules = append(rules, policy.RuleSpec{Token: tr})
			}
			pol = policy.New(keys, rules)
		}
		route := &proxy.Route{Name: r.Name, Host: r.Host, Prefix: r.Path, Upstream: upstreams[r.Upstream], Policy: pol}
		if cc := r.CORS; cc != nil {
			route.CORS = &proxy.CORS{AllowOrigins: cc.AllowOrigins, AllowHeaders: cc.AllowHeaders, ExposeHeaders: cc.ExposeHeaders, MaxAge: cc.MaxAge.D()}
		}
		if c.deps.Metrics != nil {
			route.Metrics = c.deps.Metrics.Route(r.Name)
		}
		if r.RateLimit != nil {
			lim, err := c.limiter(r.RateLimit)
			c.fail(p+".rate_limit", err)
			route.Limiter = lim
			if c.store != nil && lim != nil {
				route.Limiter = ratelimit.NewShared(c.store, r.Name, lim.Options(), lim)
			}
		}
		if tl := r.TokenLimit; tl != nil {
			tokens, err := ratelimit.NewTokens(ratelimit.TokenOptions{PerMinute: tl.PerMinute, PerDay: tl.PerDay}, c.store, r.Name)
			c.fail(p+".token_limit", err)
			if err == nil {
				route.Tokens = tokens
			}
			route.InjectStreamUsage = tl.InjectStreamUsage
		}
		c.snap.Routes = append(c.snap.Routes, route)
	}
}

// limitsStore builds limits.store (package ratelimit validates it), or
// shares an unchanged one with the previous snapshot, so a reload keeps its
// connections and state. Building it connects to nothing; the snapshot's
// Start begins its health check. `gateway explain` (decideOnly) needs no
// store.
func (c *compiler) limitsStore(decideOnly bool) {
	ls := c.cfg.Limits.Store
	if ls == nil || decideOnly {
		return
	}
	const key = "limits.store"
	if p := c.reuse(key, *ls); p != nil {
		c.store = p.value.(*ratelimit.Store)
		c.snap.store = c.store
		return
	}
	o := ratelimit.StoreOptions{Type: ls.Type, URL: ls.URL, Timeout: ls.Timeout.D(), OnError: ls.OnError, Logger: c.deps.Logger}
	if c.deps.Metrics != nil {
		o.OnFailure = c.deps.Metrics.LimitsStoreFailure
	}
	s, err := ratelimit.NewStore(o)
	if err != nil {
		c.fail(key, err)
		return
	}
	c.store, c.snap.store = s, s
	c.own(key, *ls, s, func(context.Context) { s.Start() }, s.Close)
}

// limiter compiles a route's rate_limit section; package ratelimit owns its
// rules.
func (c *compiler) limiter(rl *config.RateLimit) (*ratelimit.Limiter, error) {
	var errs problem.List
	rate := func(field, s string) ratelimit.Rate {
		if s == "" {
			return ratelimit.Rate{}
		}
		r, err := ratelimit.ParseRate(s)
		if err != nil {
			errs.Add(field, "%v", err)
		}
		return r
	}
	o := ratelimit.Options{
		PerIdentity:      rate("per_identity", rl.PerIdentity),
		Overall:          rate("overall", rl.Overall),
		PerIdentityBurst: rl.Burst,
		OverallBurst:     rl.OverallBurst,
		MaxIdentities:    rl.MaxIdentities,
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return ratelimit.New(o)
}

// tokenRule compiles an allow entry's claim conditions.
func (c *compiler) tokenRule(a *config.AllowRule) (*policy.TokenRule, error) {
	m := func(x config.Match) idp.Match { return idp.Match{AnyOf: x.AnyOf, AllOf: x.AllOf} }
	spec := idp.RuleSpec{Roles: m(a.Roles), Scopes: m(a.Scopes), Groups: m(a.Groups), Users: m(a.Users), Apps: m(a.Apps), Tenants: m(a.Tenants)}
	rule, err := idp.CompileRule(spec)
	if err != nil {
		return nil, err
	}
	return &policy.TokenRule{ProviderName: a.IdentityProvider, Verifier: c.snap.providers[a.IdentityProvider], Claims: rule}, nil
}

// tls compiles server.tls into the certificate manager's options; the
// manager itself is started by Server.EnableTLS.
func (c *compiler) tls() {
	t := c.cfg.Server.TLS
	if t == nil {
		return
	}
	o := tlsserve.Options{
		Mode:           t.Mode,
		Domains:        t.Domains,
		Email:          t.Email,
		CA:             t.CA,
		Storage:        t.Storage,
		CertFile:       t.CertFile,
		KeyFile:        t.KeyFile,
		ReloadInterval: t.ReloadInterval.D(),
		Logger:         c.deps.Logger,
	}
	if t.Mode == tlsserve.ModeACME {
		o.DisableHTTPChallenge = (t.HTTPChallenge != nil && !*t.HTTPChallenge) || t.HTTPListen == ""
		o.DisableTLSALPNChallenge = t.TLSALPNChallenge != nil && !*t.TLSALPNChallenge
		o.AltTLSALPNPort = port(c.cfg.Server.Listen)
		o.AltHTTPPort = port(t.HTTPListen)
	}
	if t.CARoot != "" {
		pem, err := os.ReadFile(t.CARoot)
		pool := x509.NewCertPool()
		switch {
		case err != nil:
			c.fail("server.tls.ca_root", err)
		case !pool.AppendCertsFromPEM(pem):
			c.fail("server.tls.ca_root", fmt.Errorf("%s holds no PEM certificate", t.CARoot))
		default:
			o.TrustedRoots = pool
		}
	}
	if err := tlsserve.Validate(o); err != nil {
		c.fail("server.tls", err)
		return
	}
	c.snap.tls = &tlsState{cfg: *t, opts: o}
}

// reuse returns the previous snapshot's part at key when it was built from
// the same settings, and shares it with the snapshot being compiled.
func (c *compiler) reuse(key string, settings any) *part {
	if c.prev == nil {
		return nil
	}
	p := c.prev.parts[key]
	if p == nil || !reflect.DeepEqual(p.settings, settings) {
		return nil
	}
	c.snap.parts[key] = p
	return p
}

// own registers a part this snapshot built: it starts it and, until a
// later snapshot takes it over, stops it.
func (c *compiler) own(key string, settings, value any, start func(context.Context), stop func()) {
	c.snap.parts[key] = &part{settings: settings, value: value, start: start, stop: stop, owner: c.snap}
}

// warnings notes settings that are valid but likely not what was meant:
// `gateway check` prints them and serve logs them; neither fails.
func (c *compiler) warnings() {
	for i, r := range c.cfg.Routes {
		for j, a := range r.Allow {
			if a.IdentityProvider == "" {
				continue
			}
			if !a.Roles.IsSet() && !a.Scopes.IsSet() && !a.Groups.IsSet() && !a.Users.IsSet() && !a.Apps.IsSet() && !a.Tenants.IsSet() {
				c.warns = append(c.warns, problem.At(fmt.Sprintf("routes[%d].allow[%d]", i, j),
					"warning: admits every caller the identity provider %s vouches for (the whole tenant), with no role, scope, group, user or app condition", a.IdentityProvider))
			}
		}
	}
	clearText := func(p string, u *url.URL, a config.Auth) {
		if u == nil || u.Scheme != "http" || a.Type == config.AuthNone || privateHost(u.Hostname()) {
			return
		}
		what := "token"
		if a.Type == config.AuthKey || a.Type == config.AuthAMLKeys {
			what = "key"
		}
		c.warns = append(c.warns, problem.At(p+".url",
			"warning: the upstream's %s is sent over plain http to %s, which is not a private address: anyone on the path can read it; use https", what, u.Hostname()))
	}
	for _, name := range sortedNames(c.cfg.Upstreams) {
		u := c.cfg.Upstreams[name]
		clearText("upstreams."+name, u.Parsed, u.Auth)
		for i, b := range u.Backends {
			clearText(fmt.Sprintf("upstreams.%s.backends[%d]", name, i), b.Parsed, b.Auth)
		}
	}
}

// privateHost reports whether host is loopback, a private or link-local
// address, or a name that only resolves inside a cluster or network
// (a single label, .svc, .cluster.local, .internal, .local).
func privateHost(host string) bool {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast()
	}
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if h == "localhost" || !strings.Contains(h, ".") {
		return true
	}
	for _, suffix := range []string{".svc", ".cluster.local", ".internal", ".local", ".localdomain"} {
		if strings.HasSuffix(h, suffix) {
			return true
		}
	}
	return false
}
