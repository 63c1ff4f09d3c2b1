package idp

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"golang.org/x/time/rate"

	"github.com/modelgate/modelgate/internal/httpx"
)

// source is one metadata document and the key set it names: Azure AD's v1
// or v2 endpoints, or an OIDC issuer. Tokens are verified against exactly
// one source, chosen before their signature is checked.
type source struct {
	p           *Provider
	label       string // "v1", "v2", "oidc": for logs and status
	metadataURL string // "" when the key set URL is fixed (p.cfg.JWKSURI) or keys are static
	limiter     *rate.Limiter

	state atomic.Pointer[keyState] // nil until the first successful fetch

	mu          sync.Mutex // guards the fields below
	inflight    *fetchCall
	lastAttempt time.Time
	lastSuccess time.Time
	lastErr     error
	refreshes   uint64 // successful fetches, for metrics
	failures    uint64 // failed fetches, for metrics
}

// keyState is an immutable snapshot of a source: the issuer tokens must
// carry, and the keys that verify them. A refresh swaps the whole snapshot.
type keyState struct {
	issuer    string // exact issuer, when not templated
	issPrefix string // templated issuer: prefix + tid + issSuffix
	issSuffix string
	templated bool
	jwksURI   string
	keys      int
	kids      []string // the usable keys' ids, sorted; public key set data
	store     *jwkset.MemoryJWKSet
	kf        keyfunc.Keyfunc
	print     [sha256.Size]byte // identifies issuer + keys, to detect changes
}

// issuerOK reports whether iss is the source's issuer for tenant tid.
func (st *keyState) issuerOK(iss, tid string) bool {
	if !st.templated {
		return iss == st.issuer
	}
	return tid != "" &&
		len(iss) == len(st.issPrefix)+len(tid)+len(st.issSuffix) &&
		strings.HasPrefix(iss, st.issPrefix) &&
		strings.HasSuffix(iss, st.issSuffix) &&
		iss[len(st.issPrefix):len(iss)-len(st.issSuffix)] == tid
}

type fetchCall struct {
	done chan struct{}
	err  error // set before done is closed
}

// errClosed is returned by fetches attempted after Close.
var errClosed = errors.New("identity provider is closed")

// kidStorage is the jwkset.Storage behind a source's keyfunc: a snapshot's
// keys, plus a rate-limited, briefly awaited refetch when a kid is unknown.
//
// keyfunc.NewDefaultOverrideCtx and jwkset's HTTP storage are not used
// because jwkset rejects a whole key set when one entry's x5c certificate
// fails to parse, blocks its constructor on the first fetch, reads
// unbounded response bodies and cannot tell callers that keys changed.
// Fetching and sanitizing here, then handing keyfunc a plain storage, keeps
// keyfunc as the producer of the jwt.Keyfunc.
type kidStorage struct {
	*jwkset.MemoryJWKSet
	src *source
}

func (k kidStorage) KeyRead(ctx context.Context, kid string) (jwkset.JWK, error) {
	j, err := k.MemoryJWKSet.KeyRead(ctx, kid)
	if !errors.Is(err, jwkset.ErrKeyNotFound) || !k.src.refreshForUnknownKID(ctx) {
		return j, err
	}
	return k.src.state.Load().store.KeyRead(ctx, kid)
}

// start returns the fetch in flight, or starts one. With limited, a new
// fetch is started only if the unknown-kid rate limit allows it.
func (s *source) start(limited bool) (*fetchCall, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight != nil {
		return s.inflight, true
	}
	if limited && !s.limiter.AllowN(s.p.cfg.Now(), 1) {
		return nil, false
	}
	if !s.p.goStart() {
		return nil, false
	}
	c := &fetchCall{done: make(chan struct{})}
	s.inflight = c
	go s.run(c)
	return c, true
}

// refresh fetches now, or joins the fetch in flight, and waits for it.
func (s *source) refresh(ctx context.Context) error {
	if s.p.cfg.StaticJWKS != nil {
		return nil
	}
	c, ok := s.start(false)
	if !ok {
		return errClosed
	}
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// refreshForUnknownKID joins or (rate limit permitting) starts a fetch and
// waits at most UnknownKIDWait for it. It reports whether a fetch succeeded
// in that time; a slower fetch carries on in the background.
func (s *source) refreshForUnknownKID(ctx context.Context) bool {
	if s.p.cfg.StaticJWKS != nil {
		return false
	}
	c, ok := s.start(true)
	if !ok {
		return false
	}
	t := time.NewTimer(UnknownKIDWait)
	defer t.Stop()
	select {
	case <-c.done:
		return c.err == nil
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

func (s *source) run(c *fetchCall) {
	defer s.p.wg.Done()
	bg, stop := s.p.fetchContext()
	defer stop()
	ctx, cancel := context.WithTimeout(bg, fetchTimeout)
	defer cancel()
	var span trace.Span
	if s.p.cfg.Tracer != nil {
		ctx, span = s.p.cfg.Tracer.Start(ctx, "identity provider keys refresh", trace.WithAttributes(
			attribute.String("modelgate.identity_provider", s.p.cfg.Name), attribute.String("modelgate.key_source", s.label)))
	}
	st, dropped, err := s.fetch(ctx)
	changed := false
	if err == nil {
		changed = s.apply(st)
	}
	if span != nil {
		if err != nil {
			span.SetAttributes(attribute.String("modelgate.outcome", "failed"))
			span.SetStatus(codes.Error, err.Error())
		} else {
			span.SetAttributes(attribute.Bool("modelgate.keys_changed", changed), attribute.Int("modelgate.keys", st.keys),
				attribute.String("modelgate.jwks_uri", withoutQuery(st.jwksURI)), attribute.String("modelgate.outcome", "ok"))
		}
		span.End()
	}
	now := s.p.cfg.Now()
	s.mu.Lock()
	s.inflight = nil
	s.lastAttempt = now
	if err == nil {
		s.lastSuccess, s.lastErr = now, nil
		s.refreshes++
	} else {
		s.lastErr = err
		s.failures++
	}
	s.mu.Unlock()
	s.log(ctx, st, changed, dropped, err)
	c.err = err
	close(c.done)
}

func (s *source) log(ctx context.Context, st *keyState, changed bool, dropped []string, err error) {
	l := s.p.cfg.Logger
	attrs := []slog.Attr{slog.String("provider", s.p.cfg.Name), slog.String("source", s.label)}
	if err != nil {
		have := s.state.Load()
		n := 0
		if have != nil {
			n = have.keys
		}
		// Say what is true (issue item 20): with no keys there is nothing to
		// keep, and tokens this source should verify are refused with 503.
		msg := "identity provider key refresh failed; keeping the last good keys"
		if n == 0 {
			msg = "identity provider key refresh failed; no keys yet: requests for its rules get 503 until a fetch succeeds"
		}
		l.LogAttrs(ctx, slog.LevelWarn, msg,
			append(attrs, slog.String("outcome", "failed"), slog.Int("keys", n), slog.Any("error", err))...)
		return
	}
	for _, d := range dropped {
		l.LogAttrs(ctx, slog.LevelWarn, "identity provider key set entry ignored",
			append(attrs, slog.String("entry", d))...)
	}
	outcome, level := "unchanged", slog.LevelDebug
	if changed {
		outcome, level = "changed", slog.LevelInfo
	}
	l.LogAttrs(ctx, level, "identity provider keys refreshed",
		append(attrs, slog.String("outcome", outcome), slog.Int("keys", st.keys), slog.String("jwks_uri", st.jwksURI))...)
}

// apply installs a new snapshot and reports whether it differs from the
// previous one; a difference bumps the provider's key generation, which
// invalidates every cached verification.
func (s *source) apply(st *keyState) bool {
	old := s.state.Swap(st)
	changed := old == nil || old.print != st.print
	if changed {
		s.p.gen.Add(1)
	}
	s.p.checkReady()
	return changed
}

// fetch reads the metadata (if any) and the key set, and builds a snapshot.
func (s *source) fetch(ctx context.Context) (*keyState, []string, error) {
	st := &keyState{issuer: s.p.cfg.Issuer, jwksURI: s.p.cfg.JWKSURI}
	if s.metadataURL != "" {
		var md struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		body, err := s.p.get(ctx, s.metadataURL)
		if err == nil {
			err = json.Unmarshal(body, &md)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s metadata: %w", s.label, err)
		}
		if err := s.checkMetadata(st, md.Issuer, md.JWKSURI); err != nil {
			return nil, nil, fmt.Errorf("%s metadata %s: %w", s.label, s.metadataURL, err)
		}
	}
	body, err := s.p.get(ctx, st.jwksURI)
	if err != nil {
		return nil, nil, fmt.Errorf("%s keys: %w", s.label, err)
	}
	dropped, err := st.setKeys(s, body)
	if err != nil {
		return nil, dropped, fmt.Errorf("%s keys %s: %w", s.label, st.jwksURI, err)
	}
	return st, dropped, nil
}

// checkMetadata validates a discovery document and records its issuer and
// key set URL in st.
func (s *source) checkMetadata(st *keyState, issuer, jwksURI string) error {
	if jwksURI == "" {
		return errors.New("no jwks_uri")
	}
	u, err := httpx.SecureURL(jwksURI)
	if err != nil {
		return fmt.Errorf("jwks_uri: %w", err)
	}
	if st.jwksURI == "" {
		st.jwksURI = jwksURI
	}
	if s.p.cfg.Type != TypeAzureAD {
		// OpenID Connect Discovery 1.0 §4.3: the document's issuer MUST be
		// identical to the issuer it was requested for.
		if issuer != s.p.cfg.Issuer {
			return fmt.Errorf("issuer %q is not the configured issuer %q", issuer, s.p.cfg.Issuer)
		}
		return nil
	}
	// Azure AD serves keys from the authority itself; a jwks_uri elsewhere
	// means the metadata is not what it claims to be.
	a, _ := url.Parse(s.p.cfg.authority)
	if !strings.EqualFold(u.Host, a.Host) {
		return fmt.Errorf("jwks_uri host %q is not the authority host %q", u.Host, a.Host)
	}
	return s.p.cfg.setAzureIssuer(st, issuer)
}

const tenantTemplate = "{tenantid}"

// setAzureIssuer records an Azure AD metadata issuer. Multi-tenant metadata
// must be a template with one {tenantid}; single-tenant metadata must name
// the configured tenant.
func (c *config) setAzureIssuer(st *keyState, issuer string) error {
	if _, err := url.Parse(issuer); err != nil || issuer == "" {
		return fmt.Errorf("issuer %q is not a URL", issuer)
	}
	n := strings.Count(issuer, tenantTemplate)
	switch {
	case n > 1:
		return fmt.Errorf("issuer %q has more than one %s", issuer, tenantTemplate)
	case c.multi && n == 0:
		return fmt.Errorf("issuer %q has no %s template although tenant_id is %s", issuer, tenantTemplate, c.tenant)
	case c.multi:
		i := strings.Index(issuer, tenantTemplate)
		st.templated = true
		st.issPrefix, st.issSuffix = issuer[:i], issuer[i+len(tenantTemplate):]
		st.issuer = ""
		return nil
	case n == 1:
		issuer = strings.Replace(issuer, tenantTemplate, c.tenant, 1)
	}
	if !strings.Contains(strings.ToLower(issuer), c.tenant) {
		return fmt.Errorf("issuer %q does not name tenant %s", issuer, c.tenant)
	}
	st.issuer = issuer
	return nil
}

// setKeys parses and sanitizes a JSON Web Key Set into st. Entries that are
// not RS256 signing keys are skipped, and entries that are broken are
// dropped and reported, so one bad entry never makes the set unusable; a
// set without any usable key is an error.
func (st *keyState) setKeys(s *source, raw []byte) ([]string, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	type parsed struct {
		kid string
		pub *rsa.PublicKey
	}
	var keys []parsed
	var dropped []string
	seen := make(map[string]bool)
	for i, rk := range set.Keys {
		kid, pub, err := parseKey(rk)
		switch {
		case errors.Is(err, errSkipKey):
			continue
		case err != nil:
			dropped = append(dropped, fmt.Sprintf("keys[%d] kid %q: %v", i, kid, err))
			continue
		case seen[kid]:
			dropped = append(dropped, fmt.Sprintf("keys[%d] kid %q: duplicate kid; the first entry is used", i, kid))
			continue
		}
		seen[kid] = true
		keys = append(keys, parsed{kid, pub})
	}
	if len(keys) == 0 {
		return dropped, fmt.Errorf("no usable RS256 signing key among %d entries", len(set.Keys))
	}
	slices.SortFunc(keys, func(a, b parsed) int { return strings.Compare(a.kid, b.kid) })
	h := sha256.New()
	fmt.Fprintf(h, "%q %q %q %q %t\n", st.issuer, st.issPrefix, st.issSuffix, st.jwksURI, st.templated)
	jwks := make([]jwkset.JWK, 0, len(keys))
	for _, k := range keys {
		j, err := jwkset.NewJWKFromKey(k.pub, jwkset.JWKOptions{
			Metadata: jwkset.JWKMetadataOptions{KID: k.kid, USE: jwkset.UseSig, ALG: jwkset.AlgRS256},
		})
		if err != nil {
			dropped = append(dropped, fmt.Sprintf("kid %q: %v", k.kid, err))
			continue
		}
		jwks = append(jwks, j)
		st.kids = append(st.kids, k.kid)
		fmt.Fprintf(h, "%q %x %d\n", k.kid, k.pub.N.Bytes(), k.pub.E)
	}
	if len(jwks) == 0 {
		return dropped, errors.New("no usable RS256 signing key")
	}
	st.store = jwkset.NewMemoryStorage()
	if err := st.store.KeyReplaceAll(context.Background(), jwks); err != nil {
		return dropped, err
	}
	kf, err := keyfunc.New(keyfunc.Options{Storage: kidStorage{st.store, s}})
	if err != nil {
		return dropped, err
	}
	st.kf = kf
	st.keys = len(jwks)
	h.Sum(st.print[:0])
	return dropped, nil
}

// jsonWebKey holds the members of a key set entry that parseKey reads.
type jsonWebKey struct {
	Kty    string   `json:"kty"`
	Use    string   `json:"use"`
	Kid    string   `json:"kid"`
	Alg    string   `json:"alg"`
	N      string   `json:"n"`
	E      string   `json:"e"`
	X5c    []string `json:"x5c"`
	KeyOps []string `json:"key_ops"`
}

// errSkipKey marks key set entries that are valid but not for us (other key
// types, encryption keys, other algorithms): skipped silently.
var errSkipKey = errors.New("not an RS256 signing key")

// parseKey extracts the RSA public key of one key set entry from n and e.
// An x5c certificate is never required: if it parses, it must hold the same
// key; if it does not parse (Azure AD still publishes certificates with
// negative serial numbers, which crypto/x509 refuses), it is ignored.
func parseKey(raw json.RawMessage) (string, *rsa.PublicKey, error) {
	var k jsonWebKey
	if err := json.Unmarshal(raw, &k); err != nil {
		return "", nil, fmt.Errorf("not a JSON Web Key: %w", err)
	}
	if k.Kty != "RSA" || (k.Use != "" && k.Use != "sig") || (k.Alg != "" && k.Alg != "RS256") ||
		(len(k.KeyOps) > 0 && !slices.Contains(k.KeyOps, "verify")) {
		return k.Kid, nil, errSkipKey
	}
	if k.Kid == "" {
		return "", nil, errors.New("no kid")
	}
	if len(k.Kid) > maxKIDLen {
		return k.Kid[:32] + "...", nil, errors.New("kid too long")
	}
	n, err := decodeInt(k.N)
	if err != nil {
		return k.Kid, nil, fmt.Errorf("n: %w", err)
	}
	e, err := decodeInt(k.E)
	if err != nil {
		return k.Kid, nil, fmt.Errorf("e: %w", err)
	}
	if bits := n.BitLen(); bits < minRSABits || bits > maxRSABits || n.Bit(0) == 0 {
		return k.Kid, nil, fmt.Errorf("modulus of %d bits is not an odd number of %d..%d bits", bits, minRSABits, maxRSABits)
	}
	if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
		return k.Kid, nil, errors.New("public exponent is not an odd number in 3..2^31-1")
	}
	pub := &rsa.PublicKey{N: n, E: int(e.Int64())}
	if len(k.X5c) > 0 {
		if der, err := base64.StdEncoding.DecodeString(k.X5c[0]); err == nil {
			if cert, err := x509.ParseCertificate(der); err == nil {
				if cp, ok := cert.PublicKey.(*rsa.PublicKey); !ok || !cp.Equal(pub) {
					return k.Kid, nil, errors.New("x5c certificate holds a different key than n and e")
				}
			}
		}
	}
	return k.Kid, pub, nil
}

// decodeInt decodes an unsigned big-endian base64url integer (RFC 7518
// §2, Base64urlUInt), tolerating the trailing padding some issuers add.
func decodeInt(s string) (*big.Int, error) {
	if s == "" {
		return nil, errors.New("missing")
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, errors.New("not base64url")
	}
	return new(big.Int).SetBytes(b), nil
}

// get fetches a document over HTTPS (or loopback HTTP), bounded in size.
func (p *Provider) get(ctx context.Context, rawURL string) ([]byte, error) {
	if _, err := httpx.SecureURL(rawURL); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := p.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, fmt.Errorf("GET %s: HTTP %d", rawURL, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentBytes+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", rawURL, err)
	}
	if len(body) > maxDocumentBytes {
		return nil, fmt.Errorf("GET %s: response is larger than %d bytes", rawURL, maxDocumentBytes)
	}
	return body, nil
}

// withoutQuery is a URL without its query and fragment, for span
// attributes (Azure AD B2C key set URLs carry ?p=policy).
func withoutQuery(raw string) string {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		return raw[:i]
	}
	return raw
}
