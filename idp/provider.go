package idp

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"github.com/modelgate/modelgate/internal/guid"
	"github.com/modelgate/modelgate/internal/strhash"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// Provider verifies access tokens from one identity provider. Create it with
// New and launch its key refreshes with Start; it is safe for concurrent use.
// Keys are fetched in the background; Ready reports when they are usable.
type Provider struct {
	cfg     *config
	sources []*source // azure_ad: v1, v2; oidc: one
	parser  *jwt.Parser
	cache   *cache // nil when disabled

	gen atomic.Uint64 // bumped whenever any source's keys or issuer change

	readyOnce sync.Once
	ready     chan struct{} // closed once every source has had keys

	bg      context.Context // cancelled by Close
	stop    context.CancelFunc
	values  atomic.Pointer[context.Context] // Start's ctx, for its values
	started atomic.Bool
	closeMu sync.RWMutex // guards closed and wg.Add against Close
	closed  bool
	wg      sync.WaitGroup
}

// New validates o and returns a Provider without starting anything: it does
// no network I/O and launches no goroutine (a StaticJWKS is loaded, which is
// local). Only invalid options, or a StaticJWKS without usable keys, are
// errors; every problem is reported at once, each a *problem.Error at the
// option's YAML field path ("tenant_id", "audiences[0]").
//
// Until Start, the provider is not ready unless its keys are static: Verify
// answers ReasonProviderUnavailable and Refresh fetches on demand.
func New(o Options) (*Provider, error) {
	cfg, err := o.compile()
	if err != nil {
		return nil, err
	}
	p := &Provider{
		cfg:   cfg,
		ready: make(chan struct{}),
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{"RS256"}), // pinned; never from the token
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(cfg.Leeway),
			jwt.WithTimeFunc(cfg.Now),
			jwt.WithStrictDecoding(), // no non-canonical base64 variants of a signed token
		),
	}
	if cfg.CacheSize > 0 {
		p.cache = newCache(cfg.CacheSize)
	}
	p.bg, p.stop = context.WithCancel(context.Background())

	newSource := func(label, metadataURL string) *source {
		return &source{p: p, label: label, metadataURL: metadataURL, limiter: rate.NewLimiter(rate.Every(UnknownKIDRefreshInterval), 1)}
	}
	switch cfg.Type {
	case TypeAzureAD:
		base := cfg.authority + "/" + cfg.tenant
		p.sources = []*source{
			newSource("v1", base+"/.well-known/openid-configuration"),
			newSource("v2", base+"/v2.0/.well-known/openid-configuration"),
		}
	default:
		md := cfg.DiscoveryURL
		if cfg.JWKSURI != "" {
			md = ""
		}
		p.sources = []*source{newSource("oidc", md)}
	}

	if cfg.StaticJWKS != nil {
		if err := p.loadStatic(); err != nil {
			p.stop()
			return nil, fmt.Errorf("identity provider %q: static key set: %w", cfg.Name, err)
		}
	}
	return p, nil
}

// Start launches the background refresh: a fetch of metadata and keys now,
// then every RefreshInterval, with backoff after failures. It does not wait
// for keys, so an identity provider that is down delays readiness (see
// Ready, WaitReady) but never blocks Start.
//
// The background work keeps ctx's values (for the logger's handler) but not
// its cancellation; it stops at Close. Start does nothing with StaticJWKS,
// after Close, or when called again.
func (p *Provider) Start(ctx context.Context) {
	if p.cfg.StaticJWKS != nil || !p.started.CompareAndSwap(false, true) {
		return
	}
	vals := context.WithoutCancel(ctx)
	p.values.Store(&vals)
	if p.goStart() {
		go p.loop()
	}
}

// fetchContext returns a context for background work: Start's values, p.bg's
// cancellation.
func (p *Provider) fetchContext() (context.Context, context.CancelFunc) {
	vals := context.Background()
	if v := p.values.Load(); v != nil {
		vals = *v
	}
	ctx, cancel := context.WithCancel(vals)
	stop := context.AfterFunc(p.bg, cancel)
	return ctx, func() { stop(); cancel() }
}

// loadStatic installs StaticJWKS in every source, with the issuers a fetch
// would have found.
func (p *Provider) loadStatic() error {
	for _, s := range p.sources {
		st := &keyState{issuer: p.cfg.Issuer, jwksURI: "static"}
		if p.cfg.Type == TypeAzureAD {
			tid := p.cfg.tenant
			if p.cfg.multi {
				tid = tenantTemplate
			}
			iss := p.cfg.cloud.V1Issuer + tid + "/"
			if s.label == "v2" {
				iss = p.cfg.cloud.Authority + "/" + tid + "/v2.0"
			}
			if err := p.cfg.setAzureIssuer(st, iss); err != nil {
				return err
			}
		}
		dropped, err := st.setKeys(s, p.cfg.StaticJWKS)
		if err != nil {
			return err
		}
		s.log(context.Background(), st, true, dropped, nil)
		now := p.cfg.Now()
		s.mu.Lock()
		s.lastAttempt, s.lastSuccess = now, now
		s.mu.Unlock()
		s.apply(st)
	}
	return nil
}

// goStart registers a background goroutine unless the provider is closed.
func (p *Provider) goStart() bool {
	p.closeMu.RLock()
	defer p.closeMu.RUnlock()
	if p.closed {
		return false
	}
	p.wg.Add(1)
	return true
}

// loop refreshes every source at start, then every RefreshInterval; after a
// failure it retries with exponential backoff from RetryMin up to a minute.
func (p *Provider) loop() {
	defer p.wg.Done()
	ctx, cancel := p.fetchContext()
	defer cancel()
	t := time.NewTimer(0)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		next := p.cfg.RefreshInterval
		if err := p.Refresh(ctx); err != nil {
			failures++
			next = min(p.cfg.RetryMin<<min(failures-1, 20), retryMax, p.cfg.RefreshInterval)
		} else {
			failures = 0
		}
		// ±10% jitter, so that gateways restarted together do not refresh
		// together.
		t.Reset(next + time.Duration((rand.Float64()-0.5)*0.2*float64(next)))
	}
}

// Refresh fetches metadata and keys now (joining a fetch in flight), without
// the unknown-kid rate limit, and returns when every source is done or ctx
// ends. A failure keeps the last good keys. It is for operators and tests;
// normal operation needs no calls. With StaticJWKS it does nothing.
func (p *Provider) Refresh(ctx context.Context) error {
	errs := make([]error, len(p.sources))
	var wg sync.WaitGroup
	for i, s := range p.sources {
		wg.Go(func() { errs[i] = s.refresh(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (p *Provider) checkReady() {
	for _, s := range p.sources {
		if s.state.Load() == nil {
			return
		}
	}
	p.readyOnce.Do(func() { close(p.ready) })
}

// Ready reports whether every source of the provider has usable keys (for
// Azure AD: both the v1 and the v2 key sets). It stays true once true: a
// failed refresh keeps the last good keys.
func (p *Provider) Ready() bool {
	select {
	case <-p.ready:
		return true
	default:
		return false
	}
}

// WaitReady waits until Ready or ctx ends, and returns ctx's error then.
func (p *Provider) WaitReady(ctx context.Context) error {
	select {
	case <-p.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Name is the provider's configured name.
func (p *Provider) Name() string { return p.cfg.Name }

// Close stops background fetching and waits for fetches in flight. Verify
// keeps working with the keys already fetched, without refetching. Close is
// idempotent.
func (p *Provider) Close() {
	p.closeMu.Lock()
	p.closed = true
	p.closeMu.Unlock()
	p.stop()
	p.wg.Wait()
}

// Status describes a provider for /readyz and operators. It holds no secrets:
// URLs, counts, times and fetch errors only.
type Status struct {
	Name        string         `json:"name"`
	Type        string         `json:"type"`
	Ready       bool           `json:"ready"`
	Keys        int            `json:"keys"`                  // usable keys, summed over sources
	LastRefresh time.Time      `json:"last_refresh,omitzero"` // latest attempt of any source
	LastSuccess time.Time      `json:"last_success,omitzero"` // oldest latest success among sources
	LastError   string         `json:"last_error,omitempty"`  // of the latest failed attempts, if still failing
	Sources     []SourceStatus `json:"sources"`
}

// SourceStatus describes one metadata document and key set of a provider.
type SourceStatus struct {
	Name        string    `json:"name"` // "v1", "v2" or "oidc"
	Ready       bool      `json:"ready"`
	Keys        int       `json:"keys"`
	KeyIDs      []string  `json:"key_ids,omitempty"` // usable keys' kids, sorted (public key set data)
	JWKSURI     string    `json:"jwks_uri,omitempty"`
	LastRefresh time.Time `json:"last_refresh,omitzero"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	Refreshes   uint64    `json:"refreshes"` // successful metadata+key fetches
	Failures    uint64    `json:"failures"`  // failed fetches
}

// Status returns a snapshot of the provider's state.
func (p *Provider) Status() Status {
	st := Status{Name: p.cfg.Name, Type: p.cfg.Type, Ready: p.Ready()}
	var errs []string
	for i, s := range p.sources {
		ss := SourceStatus{Name: s.label}
		if ks := s.state.Load(); ks != nil {
			ss.Ready, ss.Keys, ss.KeyIDs, ss.JWKSURI = true, ks.keys, slices.Clone(ks.kids), ks.jwksURI
		}
		s.mu.Lock()
		ss.LastRefresh, ss.LastSuccess = s.lastAttempt, s.lastSuccess
		ss.Refreshes, ss.Failures = s.refreshes, s.failures
		if s.lastErr != nil {
			ss.LastError = s.lastErr.Error()
			errs = append(errs, ss.LastError)
		}
		s.mu.Unlock()
		st.Keys += ss.Keys
		if ss.LastRefresh.After(st.LastRefresh) {
			st.LastRefresh = ss.LastRefresh
		}
		if i == 0 || ss.LastSuccess.Before(st.LastSuccess) {
			st.LastSuccess = ss.LastSuccess
		}
		st.Sources = append(st.Sources, ss)
	}
	st.LastError = strings.Join(errs, "; ")
	return st
}

// Verify checks a bearer token and returns its claims. The error is always
// an *Error whose Reason says why; Error.Status gives the HTTP status.
//
// Checks, in order: size (MaxTokenSize) and shape; header: alg must be
// RS256, jku/x5u/jwk/crit are refused (keys come only from the provider's
// own key set), kid is required; version (Azure AD ver 1.0 or 2.0 selects
// the v1 or v2 metadata and keys); RS256 signature with the kid's key
// (an unknown kid triggers a rate-limited refetch, awaited at most
// UnknownKIDWait); exp required, exp/nbf/iat within Leeway of Now; for Azure
// AD, tid (a GUID in AllowedTenants, or the configured tenant), iss exactly
// the metadata's issuer (with tid substituted for multi-tenant), and appid
// (v1) or azp (v2) present, which access tokens have and ID tokens lack; for
// OIDC, iss exactly Issuer; then aud in Audiences.
//
// Successful results are cached (see Options.CacheSize) until the token
// expires or the provider's keys change; a cached result is re-checked
// against exp, nbf and iat on every hit.
func (p *Provider) Verify(ctx context.Context, raw string) (*Claims, error) {
	switch {
	case raw == "":
		return nil, p.fail(ReasonTokenMalformed, detailEmpty, nil)
	case len(raw) > MaxTokenSize:
		return nil, p.fail(ReasonTokenTooLarge, detailTooLarge, nil)
	case strings.Count(raw, ".") != 2:
		return nil, p.fail(ReasonTokenMalformed, detailMalformed, nil)
	}
	var key [sha256.Size]byte
	gen := p.gen.Load()
	if p.cache != nil {
		key = strhash.SHA256(raw)
		if c, ok := p.cache.get(key, gen); ok {
			if err := p.checkTimes(c); err != nil {
				p.cache.remove(key)
				return nil, err
			}
			return c, nil
		}
	}
	c, err := p.verify(ctx, raw)
	if err != nil {
		return nil, err
	}
	if p.cache != nil {
		// gen was read before verification: if the keys changed meanwhile,
		// the entry is stale from the start.
		p.cache.put(key, cacheEntry{claims: c, gen: gen, until: c.ExpiresAt.Add(p.cfg.Leeway)}, p.cfg.Now())
	}
	return c, nil
}

// checkTimes re-applies the time-based checks to a cached result, exactly as
// jwt's validator does them.
func (p *Provider) checkTimes(c *Claims) *Error {
	now := p.cfg.Now()
	if !now.Before(c.ExpiresAt.Add(p.cfg.Leeway)) {
		return p.fail(ReasonTokenExpired, detailExpired, jwt.ErrTokenExpired)
	}
	if !c.NotBefore.IsZero() && now.Before(c.NotBefore.Add(-p.cfg.Leeway)) {
		return p.fail(ReasonTokenNotYetValid, detailNotYetValid, jwt.ErrTokenNotValidYet)
	}
	if !c.IssuedAt.IsZero() && now.Before(c.IssuedAt.Add(-p.cfg.Leeway)) {
		return p.fail(ReasonTokenUsedBeforeIssued, detailUsedBefore, jwt.ErrTokenUsedBeforeIssued)
	}
	return nil
}

// Sentinels passed through jwt from the key function, to classify failures.
var (
	errHeader      = errors.New("token header names its own key (jku, x5u, jwk) or a critical extension (crit)")
	errNoKID       = errors.New("token header has no usable kid")
	errVersion     = errors.New("token ver claim is neither 1.0 nor 2.0")
	errUnavailable = errors.New("identity provider has no keys yet")
)

func (p *Provider) verify(ctx context.Context, raw string) (*Claims, error) {
	tc := new(tokenClaims)
	tok, err := p.parser.ParseWithClaims(raw, tc, func(t *jwt.Token) (any, error) {
		return p.key(ctx, t, tc)
	})
	if err != nil {
		return nil, p.classify(tok, err)
	}
	st := tc.src.state.Load()
	if p.cfg.Type == TypeAzureAD {
		tid := canonicalID(tc.Tid)
		switch {
		case tid == "":
			return nil, p.fail(ReasonTenantNotAllowed, detailNoTenant, nil)
		case p.cfg.multi && !guid.Valid(tid):
			return nil, p.fail(ReasonInvalidTenantID, detailInvalidTenant, nil)
		case p.cfg.multi:
			if _, ok := p.cfg.allowed[tid]; !ok {
				return nil, p.fail(ReasonTenantNotAllowed, detailTenant, nil)
			}
		case tid != p.cfg.tenant:
			return nil, p.fail(ReasonTenantNotAllowed, detailTenant, nil)
		}
		// tid is compared as the token carries it: Azure AD writes the
		// same lower-case GUID in tid and iss.
		if !st.issuerOK(tc.Iss, tc.Tid) {
			return nil, p.fail(ReasonWrongIssuer, detailWrongIssuer, nil)
		}
		// Azure AD access tokens always name their client (appid in v1,
		// azp in v2); ID tokens never do. Without this check an ID token
		// issued to an app sharing the API's client id (its aud) would
		// pass for an access token.
		if (tc.Ver == "1.0" && tc.AppID == "") || (tc.Ver == "2.0" && tc.Azp == "") {
			return nil, p.fail(ReasonNotAccessToken, detailNotAccessToken, nil)
		}
	} else if !st.issuerOK(tc.Iss, "") {
		return nil, p.fail(ReasonWrongIssuer, detailWrongIssuer, nil)
	}
	if !p.audienceOK(tc.Aud) {
		return nil, p.fail(ReasonWrongAudience, detailWrongAudience, nil)
	}
	return tc.claims(p.cfg.Name), nil
}

func (p *Provider) audienceOK(aud []string) bool {
	for _, a := range aud {
		if _, ok := p.cfg.audiences[a]; ok {
			return true
		}
	}
	return false
}

// key is the jwt.Keyfunc: it checks the header, picks the source for the
// token's version and asks that source's keyfunc (keyfunc/v3 over jwkset
// storage) for the kid's key. The algorithm was already pinned by the
// parser (WithValidMethods) before this runs.
func (p *Provider) key(ctx context.Context, t *jwt.Token, tc *tokenClaims) (any, error) {
	for _, h := range [...]string{"jku", "x5u", "jwk", "crit"} {
		if _, ok := t.Header[h]; ok {
			return nil, errHeader
		}
	}
	kid, _ := t.Header["kid"].(string)
	if kid == "" || len(kid) > maxKIDLen {
		return nil, errNoKID
	}
	s := p.sources[0]
	if p.cfg.Type == TypeAzureAD {
		switch tc.Ver {
		case "1.0":
		case "2.0":
			s = p.sources[1]
		default:
			return nil, errVersion
		}
	}
	st := s.state.Load()
	if st == nil {
		return nil, errUnavailable
	}
	tc.src = s
	return st.kf.KeyfuncCtx(ctx)(t)
}

// classify turns a jwt/keyfunc error into an *Error.
func (p *Provider) classify(tok *jwt.Token, err error) *Error {
	if tok != nil && tok.Header != nil {
		if alg, _ := tok.Header["alg"].(string); alg != "RS256" {
			return p.fail(ReasonAlgNotAllowed, detailAlg, err)
		}
	}
	switch {
	case errors.Is(err, errNumericDate), errors.Is(err, jwt.ErrInvalidType):
		return p.fail(ReasonTokenMalformed, detailClaimTypes, err)
	case tok == nil || tok.Header == nil || errors.Is(err, jwt.ErrTokenMalformed):
		return p.fail(ReasonTokenMalformed, detailMalformed, err)
	case errors.Is(err, errHeader):
		return p.fail(ReasonHeaderNotAllowed, detailHeader, err)
	case errors.Is(err, errNoKID):
		return p.fail(ReasonUnknownKey, detailNoKID, err)
	case errors.Is(err, errVersion):
		return p.fail(ReasonUnsupportedTokenVersion, detailVersion, err)
	case errors.Is(err, errUnavailable):
		return p.fail(ReasonProviderUnavailable, detailUnavailable, err)
	case errors.Is(err, jwkset.ErrKeyNotFound):
		return p.fail(ReasonUnknownKey, detailUnknownKey, err)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return p.fail(ReasonBadSignature, detailBadSignature, err)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return p.fail(ReasonMissingExp, detailMissingExp, err)
	case errors.Is(err, jwt.ErrTokenExpired):
		return p.fail(ReasonTokenExpired, detailExpired, err)
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return p.fail(ReasonTokenNotYetValid, detailNotYetValid, err)
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return p.fail(ReasonTokenUsedBeforeIssued, detailUsedBefore, err)
	}
	// Anything else (a keyfunc error we do not expect) refuses the token.
	return p.fail(ReasonUnknownKey, detailUnknownKey, err)
}

func (p *Provider) fail(r Reason, detail string, err error) *Error {
	return &Error{Provider: p.cfg.Name, Reason: r, Detail: detail, Err: err}
}
