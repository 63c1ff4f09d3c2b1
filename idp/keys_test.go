package idp_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/modelgate/modelgate/idp"
	"github.com/modelgate/modelgate/internal/logtest"
	"github.com/modelgate/modelgate/test/fakeaad"
)

func TestKeyRotationByUnknownKID(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, nil)
	old := e.aad.Mint(e.aad.V2Claims("", fakeaad.APIClientID))
	if _, err := p.Verify(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	e.aad.ResetRequests()

	newKID := e.aad.RotateKey()
	tok := e.aad.Mint(e.aad.V2Claims("", fakeaad.APIClientID))
	c, err := p.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("token with the new kid: %v", err)
	}
	if c.ObjectID != fakeaad.UserObjectID {
		t.Errorf("oid = %q", c.ObjectID)
	}
	if got := e.aad.Requests("/" + fakeaad.TenantID + "/discovery/v2.0/keys"); got != 1 {
		t.Errorf("v2 key set fetched %d times, want 1", got)
	}
	if got := e.aad.Requests("/common/discovery/keys"); got != 0 {
		t.Errorf("v1 key set fetched %d times for a v2 token, want 0", got)
	}
	// The old key is still published: tokens signed with it still verify.
	if _, err := p.Verify(context.Background(), e.aad.Mint(e.aad.V2Claims("", fakeaad.APIClientID), fakeaad.WithKID(newKID))); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Verify(context.Background(), old); err != nil {
		t.Errorf("token signed with the retired (still published) key: %v", err)
	}
}

func TestUnknownKIDRateLimited(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		p := e.provider(t, nil)
		e.aad.ResetRequests()
		other, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}

		// A flood of garbage kids, from many goroutines at once.
		const workers, each = 16, 10
		var wg sync.WaitGroup
		var mu sync.Mutex
		var slowest time.Duration
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					c := e.aad.V2Claims("", fakeaad.APIClientID)
					tok := e.aad.Mint(c, fakeaad.WithKey(jwt.SigningMethodRS256, other, "garbage-"+string(rune('a'+w))+"-"+string(rune('a'+i))))
					start := time.Now()
					_, err := p.Verify(context.Background(), tok)
					d := time.Since(start)
					wantReason(t, err, idp.ReasonUnknownKey, http.StatusUnauthorized, tok)
					mu.Lock()
					slowest = max(slowest, d)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if got := e.aad.KeyRequests(); got > 1 {
			t.Errorf("%d garbage kids caused %d key set fetches, want at most 1", workers*each, got)
		}
		if slowest > 1500*time.Millisecond {
			t.Errorf("slowest Verify took %v", slowest)
		}

		// After the rate interval, one more refetch is allowed.
		time.Sleep(idp.UnknownKIDRefreshInterval)
		tok := e.aad.Mint(e.aad.V2Claims("", fakeaad.APIClientID), fakeaad.WithKey(jwt.SigningMethodRS256, other, "later"))
		_, err = p.Verify(context.Background(), tok)
		wantReason(t, err, idp.ReasonUnknownKey, http.StatusUnauthorized, tok)
		if got := e.aad.KeyRequests(); got != 2 {
			t.Errorf("key set fetches after the interval = %d, want 2", got)
		}
	})
}

func TestUnknownKIDWaitIsBounded(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		p := e.provider(t, nil)
		e.aad.SetDelay(2 * time.Second) // a hanging identity provider
		newKID := e.aad.RotateKey()

		tok := e.aad.Mint(e.aad.V2Claims("", fakeaad.APIClientID))
		start := time.Now()
		_, err := p.Verify(context.Background(), tok)
		if d := time.Since(start); d != idp.UnknownKIDWait {
			t.Errorf("Verify waited %v, want %v", d, idp.UnknownKIDWait)
		}
		wantReason(t, err, idp.ReasonUnknownKey, http.StatusUnauthorized, tok)

		// The fetch carried on in the background; once it lands, the new
		// kid verifies without another fetch.
		e.aad.SetDelay(0)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		requests := e.aad.KeyRequests()
		if _, err := p.Verify(context.Background(), e.aad.Mint(e.aad.V2Claims("", fakeaad.APIClientID), fakeaad.WithKID(newKID))); err != nil {
			t.Fatalf("new kid not usable after the background fetch: %v", err)
		}
		if got := e.aad.KeyRequests(); got != requests {
			t.Errorf("the new kid caused %d more key fetches, want none", got-requests)
		}

		// A caller's own deadline is honoured too.
		e.aad.SetDelay(2 * time.Second)
		time.Sleep(idp.UnknownKIDRefreshInterval)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start = time.Now()
		other := e.aad.Mint(e.aad.V2Claims("", fakeaad.APIClientID), fakeaad.WithHeader("kid", "yet-another"))
		_, err = p.Verify(ctx, other)
		wantReason(t, err, idp.ReasonUnknownKey, http.StatusUnauthorized, other)
		if d := time.Since(start); d != 100*time.Millisecond {
			t.Errorf("Verify waited %v, want its context's 100ms", d)
		}
		e.aad.SetDelay(0)
	})
}

func TestOutageKeepsKeys(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, func(o *idp.Options) { o.CacheSize = -1 })
	ctx := context.Background()
	if _, err := p.Verify(ctx, e.aad.Mint(e.aad.V1Claims("", fakeaad.APIAppIDURI))); err != nil {
		t.Fatal(err)
	}

	for _, outage := range []struct {
		name  string
		start func()
	}{
		{"down", func() { e.aad.SetDown(true) }},
		{"failing", func() { e.aad.FailNext(1000) }},
		{"garbage key set", func() { e.aad.SetKeysOverride([]byte(`{"keys": "nope"}`)) }},
		{"key set without usable keys", func() {
			e.aad.SetKeysOverride([]byte(`{"keys": [{"kty":"EC","crv":"P-256","kid":"x","x":"AA","y":"AA"},{"kty":"RSA","kid":"y","n":"AQAB","e":"AQAB"}]}`))
		}},
		{"oversized key set", func() {
			e.aad.SetKeysOverride([]byte(`{"keys": [], "pad": "` + strings.Repeat("x", 2<<20) + `"}`))
		}},
	} {
		t.Run(outage.name, func(t *testing.T) {
			outage.start()
			defer func() { e.aad.SetDown(false); e.aad.FailNext(0); e.aad.SetKeysOverride(nil) }()
			if err := p.Refresh(ctx); err == nil {
				t.Fatal("Refresh succeeded during the outage")
			}
			st := p.Status()
			if !st.Ready || st.LastError == "" || st.Keys == 0 {
				t.Errorf("status during outage = %+v", st)
			}
			// A fresh (uncached) token still verifies with the kept keys.
			if _, err := p.Verify(ctx, e.aad.Mint(e.aad.V2Claims("", fakeaad.APIClientID))); err != nil {
				t.Errorf("Verify during outage: %v", err)
			}
			if _, err := p.Verify(ctx, e.aad.Mint(e.aad.V1Claims("", fakeaad.APIAppIDURI))); err != nil {
				t.Errorf("Verify during outage: %v", err)
			}
		})
	}
	if err := p.Refresh(ctx); err != nil {
		t.Fatalf("Refresh after the outage: %v", err)
	}
	if st := p.Status(); st.LastError != "" {
		t.Errorf("LastError after recovery = %q", st.LastError)
	}
}

func TestNeverHadKeys(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		e.aad.SetDown(true)
		o := e.options(t)
		start := time.Now()
		p := newProvider(t, o)
		if d := time.Since(start); d != 0 {
			t.Errorf("New and Start blocked for %v while the identity provider was down", d)
		}
		if p.Ready() {
			t.Fatal("Ready with no keys")
		}
		tok := e.aad.Mint(e.aad.V2Claims("", fakeaad.APIClientID))
		_, err := p.Verify(context.Background(), tok)
		wantReason(t, err, idp.ReasonProviderUnavailable, http.StatusServiceUnavailable, tok)
		// A token that cannot be a token is still the client's fault.
		_, err = p.Verify(context.Background(), "garbage")
		wantReason(t, err, idp.ReasonTokenMalformed, http.StatusUnauthorized, "")

		st := p.Status()
		if st.Ready || st.Keys != 0 || len(st.Sources) != 2 {
			t.Errorf("status = %+v", st)
		}
		// Let a few retries fail, then recover.
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if !strings.Contains(p.Status().LastError, "503") {
			t.Errorf("LastError = %q, want the HTTP status", p.Status().LastError)
		}
		e.aad.SetDown(false)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.WaitReady(ctx); err != nil {
			t.Fatalf("no recovery after the identity provider came back: %v", err)
		}
		if _, err := p.Verify(context.Background(), tok); err != nil {
			t.Errorf("Verify after recovery: %v", err)
		}
	})
}

func TestNewDoesNotBlockOnSlowProvider(t *testing.T) {
	e := newEnv(t)
	e.aad.SetDelay(3 * time.Second)
	start := time.Now()
	p := newProvider(t, e.options(t))
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("New took %v", d)
	}
	if p.Ready() {
		t.Error("Ready before any key arrived")
	}
	start = time.Now()
	p.Close() // must not wait for the slow fetch beyond cancelling it
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v", d)
	}
}

func TestCloseStopsFetching(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, nil)
	p.Close()
	p.Close() // idempotent
	e.aad.ResetRequests()
	if _, err := p.Verify(context.Background(), e.aad.Mint(e.aad.V2Claims("", fakeaad.APIClientID))); err != nil {
		t.Errorf("Verify after Close: %v", err)
	}
	e.aad.RotateKey()
	tok := e.aad.Mint(e.aad.V2Claims("", fakeaad.APIClientID))
	_, err := p.Verify(context.Background(), tok)
	wantReason(t, err, idp.ReasonUnknownKey, http.StatusUnauthorized, tok)
	if err := p.Refresh(context.Background()); err == nil {
		t.Error("Refresh after Close succeeded")
	}
	if n := e.aad.TotalRequests(); n != 0 {
		t.Errorf("%d requests after Close", n)
	}
}

// TestKeySetSanitizing serves a key set with one good key among broken and
// foreign entries; the good key must be usable and the rest ignored.
func TestKeySetSanitizing(t *testing.T) {
	e := newEnv(t)
	good := e.aad.PublicKey(e.aad.CurrentKID())
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	rsaJWK := func(kid string, pub *rsa.PublicKey) map[string]any {
		return map[string]any{"kty": "RSA", "use": "sig", "kid": kid, "n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes())}
	}
	var published map[string]any
	if err := json.Unmarshal(e.aad.JWKS(), &published); err != nil {
		t.Fatal(err)
	}
	var legacyEntry, currentEntry map[string]any
	for _, k := range published["keys"].([]any) {
		k := k.(map[string]any)
		switch k["kid"] {
		case e.aad.LegacyKID():
			legacyEntry = k
		case e.aad.CurrentKID():
			currentEntry = k
		}
	}
	mismatch := rsaJWK("mismatched-x5c", other.Public().(*rsa.PublicKey))
	mismatch["x5c"] = currentEntry["x5c"] // a parsable certificate for a different key
	entries := []any{
		map[string]any{"kty": "EC", "crv": "P-256", "kid": "ec", "x": "AA", "y": "AA"},
		map[string]any{"kty": "RSA", "use": "enc", "kid": "enc", "n": b64(other.N.Bytes()), "e": "AQAB"},
		map[string]any{"kty": "RSA", "alg": "RS512", "kid": "rs512", "n": b64(other.N.Bytes()), "e": "AQAB"},
		map[string]any{"kty": "RSA", "kid": "bad-n", "n": "!!!", "e": "AQAB"},
		map[string]any{"kty": "RSA", "kid": "no-e", "n": b64(other.N.Bytes())},
		map[string]any{"kty": "RSA", "kid": "even-e", "n": b64(other.N.Bytes()), "e": "AQAA"},
		map[string]any{"kty": "RSA", "n": b64(other.N.Bytes()), "e": "AQAB"}, // no kid
		map[string]any{"kty": "RSA", "kid": 12, "n": b64(other.N.Bytes()), "e": "AQAB"},
		"not an object",
		rsaJWK("small", &small.PublicKey),
		mismatch,
		legacyEntry, // unparsable x5c, valid n/e
		map[string]any{"kty": "RSA", "kid": "garbage-x5c", "n": b64(other.N.Bytes()), "e": "AQAB", "x5c": []string{"MIIBnotacert"}},
		rsaJWK(e.aad.CurrentKID(), good),
		rsaJWK(e.aad.CurrentKID(), &other.PublicKey), // duplicate kid: first wins
	}
	raw, err := json.Marshal(map[string]any{"keys": entries})
	if err != nil {
		t.Fatal(err)
	}
	e.aad.SetKeysOverride(raw)
	p := e.provider(t, nil)
	if st := p.Status(); st.Sources[0].Keys != 3 {
		t.Errorf("usable keys = %d, want 3 (current, legacy, garbage-x5c): %+v", st.Sources[0].Keys, st)
	}

	ok := []struct {
		name string
		opt  fakeaad.MintOption
	}{
		{"good key", fakeaad.WithKID(e.aad.CurrentKID())},
		{"legacy key with unparsable x5c", fakeaad.WithKID(e.aad.LegacyKID())},
		{"key with undecodable x5c", fakeaad.WithKey(jwt.SigningMethodRS256, other, "garbage-x5c")},
	}
	for _, tt := range ok {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := p.Verify(context.Background(), e.aad.Mint(e.aad.V1Claims("", fakeaad.APIAppIDURI), tt.opt)); err != nil {
				t.Error(err)
			}
		})
	}
	refused := []struct {
		name string
		kid  string
		key  *rsa.PrivateKey
		want idp.Reason
	}{
		{"x5c mismatch entry dropped", "mismatched-x5c", other, idp.ReasonUnknownKey},
		{"encryption key not used", "enc", other, idp.ReasonUnknownKey},
		{"RS512 key not used", "rs512", other, idp.ReasonUnknownKey},
		{"1024-bit key not used", "small", small, idp.ReasonUnknownKey},
		{"duplicate kid: second entry ignored", e.aad.CurrentKID(), other, idp.ReasonBadSignature},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			tok := e.aad.Mint(e.aad.V1Claims("", fakeaad.APIAppIDURI), fakeaad.WithKey(jwt.SigningMethodRS256, tt.key, tt.kid))
			_, err := p.Verify(context.Background(), tok)
			wantReason(t, err, tt.want, http.StatusUnauthorized, tok)
		})
	}
}

// TestHostileMetadata points providers at metadata that must be refused.
func TestHostileMetadata(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	doc := map[string]any{}
	keyFetches := 0
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case strings.HasSuffix(r.URL.Path, "openid-configuration"):
			_ = json.NewEncoder(w).Encode(doc)
		case r.URL.Path == "/redirect":
			http.Redirect(w, r, "http://example.com/keys", http.StatusFound)
		default:
			keyFetches++
			_, _ = w.Write(e.aad.JWKS())
		}
	}))
	defer srv.Close()

	tests := []struct {
		name    string
		typ     string
		doc     map[string]any
		wantErr string
	}{
		{"azure jwks_uri on another host", idp.TypeAzureAD, map[string]any{
			"issuer": "https://sts.windows.net/" + fakeaad.TenantID + "/", "jwks_uri": "https://localhost:1/keys"}, "not the authority host"},
		{"azure jwks_uri over plain http", idp.TypeAzureAD, map[string]any{
			"issuer": "https://sts.windows.net/" + fakeaad.TenantID + "/", "jwks_uri": "http://example.com/keys"}, "https"},
		{"azure issuer of another tenant", idp.TypeAzureAD, map[string]any{
			"issuer": "https://sts.windows.net/" + fakeaad.OtherTenantID + "/", "jwks_uri": srv.URL + "/keys"}, "does not name tenant"},
		{"azure no jwks_uri", idp.TypeAzureAD, map[string]any{
			"issuer": "https://sts.windows.net/" + fakeaad.TenantID + "/"}, "no jwks_uri"},
		{"azure redirect to plain http", idp.TypeAzureAD, map[string]any{
			"issuer": "https://sts.windows.net/" + fakeaad.TenantID + "/", "jwks_uri": srv.URL + "/redirect"}, "redirect refused"},
		{"oidc issuer mismatch", idp.TypeOIDC, map[string]any{
			"issuer": "https://evil.example", "jwks_uri": srv.URL + "/keys"}, "not the configured issuer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			doc, keyFetches = tt.doc, 0
			mu.Unlock()
			o := e.options(t)
			o.HTTPClient = srv.Client()
			if tt.typ == idp.TypeOIDC {
				o.Type, o.TenantID, o.AuthorityHost = idp.TypeOIDC, "", ""
				o.Issuer = "https://issuer.example"
				o.DiscoveryURL = srv.URL + "/.well-known/openid-configuration"
			} else {
				o.AuthorityHost = srv.URL
			}
			p := newProvider(t, o)
			err := p.Refresh(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Refresh error = %v, want it to mention %q", err, tt.wantErr)
			}
			if p.Ready() {
				t.Error("Ready with refused metadata")
			}
			mu.Lock()
			defer mu.Unlock()
			if keyFetches != 0 && tt.name != "azure redirect to plain http" {
				t.Errorf("keys fetched %d times from refused metadata", keyFetches)
			}
		})
	}
}

func TestStaticJWKS(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := e.aad.WriteJWKS(path); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A token from "last Tuesday", checked as of then and as of now.
	then := time.Now().Add(-7 * 24 * time.Hour)
	e.aad.SetNow(func() time.Time { return then })
	v1 := e.aad.Mint(e.aad.V1Claims("", fakeaad.APIAppIDURI))
	v2 := e.aad.Mint(e.aad.V2Claims("", fakeaad.APIClientID))
	e.aad.ResetRequests()

	at := func(ts time.Time) *idp.Provider {
		o := e.options(t)
		o.AuthorityHost = "" // offline: nothing to point at
		o.HTTPClient = nil
		o.StaticJWKS = raw
		o.CacheSize = -1
		o.Now = func() time.Time { return ts }
		p := newProvider(t, o)
		if !p.Ready() {
			t.Fatal("static provider not ready")
		}
		return p
	}
	past := at(then.Add(5 * time.Minute))
	for _, tok := range []string{v1, v2} {
		if _, err := past.Verify(context.Background(), tok); err != nil {
			t.Errorf("as of then: %v", err)
		}
	}
	present := at(time.Now())
	_, err = present.Verify(context.Background(), v2)
	wantReason(t, err, idp.ReasonTokenExpired, http.StatusUnauthorized, v2)
	unknown := e.aad.Mint(e.aad.V2Claims("", fakeaad.APIClientID), fakeaad.WithKID(e.aad.RotateKey()))
	_, err = past.Verify(context.Background(), unknown)
	wantReason(t, err, idp.ReasonUnknownKey, http.StatusUnauthorized, unknown)
	if err := past.Refresh(context.Background()); err != nil {
		t.Errorf("Refresh of a static provider: %v", err)
	}
	if n := e.aad.TotalRequests(); n != 0 {
		t.Errorf("static provider made %d requests", n)
	}

	// Multi-tenant static providers use the template.
	o := e.options(t)
	o.StaticJWKS, o.TenantID, o.AllowedTenants = raw, "common", []string{fakeaad.TenantID}
	o.Now = func() time.Time { return then }
	if _, err := newProvider(t, o).Verify(context.Background(), v2); err != nil {
		t.Errorf("multi-tenant static: %v", err)
	}

	for _, bad := range []string{``, `{}`, `{"keys":[]}`, `{"keys":[{"kty":"EC"}]}`, `not json`} {
		o := e.options(t)
		o.StaticJWKS = []byte(bad)
		if p, err := idp.New(o); err == nil {
			p.Close()
			t.Errorf("StaticJWKS %q accepted", bad)
		}
	}
}

func TestStatusJSON(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, nil)
	b, err := json.Marshal(p.Status())
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got["name"] != "contoso" || got["ready"] != true || got["keys"].(float64) != 4 || got["type"] != "azure_ad" {
		t.Errorf("status JSON = %s", b)
	}
	pub := e.aad.PublicKey(e.aad.CurrentKID())
	if n := base64.RawURLEncoding.EncodeToString(pub.N.Bytes()); strings.Contains(string(b), n[:20]) {
		t.Errorf("status JSON carries key material: %s", b)
	}
	if _, ok := got["last_error"]; ok {
		t.Errorf("last_error present while healthy: %s", b)
	}
}

func TestConcurrentVerifyDuringRotation(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, nil)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				tok := e.aad.Mint(e.aad.V2Claims("", fakeaad.APIClientID))
				if _, err := p.Verify(context.Background(), tok); err != nil {
					// A rotation may race the refetch rate limit; only
					// unknown_key is acceptable.
					wantReason(t, err, idp.ReasonUnknownKey, http.StatusUnauthorized, tok)
				}
				_ = p.Status()
			}
		})
	}
	for range 3 {
		e.aad.RotateKey()
		if err := p.Refresh(context.Background()); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
}

func TestPeriodicRefresh(t *testing.T) {
	inBubble(t, func(t *testing.T, e *env) {
		p := e.provider(t, func(o *idp.Options) { o.RefreshInterval = time.Second })
		old := e.aad.Mint(e.aad.V2Claims("", fakeaad.APIClientID))
		if _, err := p.Verify(context.Background(), old); err != nil {
			t.Fatal(err)
		}
		// Revoke the key without any request telling the provider: the next
		// scheduled refresh must drop it (and with it the cached result).
		e.aad.RotateKey()
		e.aad.DropRetiredKeys()
		time.Sleep(1100 * time.Millisecond) // one interval, plus its ±10% jitter
		synctest.Wait()
		_, err := p.Verify(context.Background(), old)
		wantReason(t, err, idp.ReasonUnknownKey, http.StatusUnauthorized, old)
	})
}

// TestRefreshFailureLog is issue item 20: a failed key refresh says what is
// true, "keeping the last good keys" only when there are some, and
// otherwise that requests get 503 until a fetch succeeds.
func TestRefreshFailureLog(t *testing.T) {
	const (
		kept  = "identity provider key refresh failed; keeping the last good keys"
		never = "identity provider key refresh failed; no keys yet: requests for its rules get 503 until a fetch succeeds"
	)
	for _, tc := range []struct {
		name       string
		hadKeys    bool
		want, bans string
	}{
		{name: "never had keys", want: never, bans: kept},
		{name: "had keys", hadKeys: true, want: kept, bans: never},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			logs := &logtest.Buffer{}
			o := e.options(t)
			o.Logger = slog.New(slog.NewJSONHandler(logs, nil))
			p := newUnstarted(t, o)
			ctx := context.Background()
			if tc.hadKeys {
				if err := p.Refresh(ctx); err != nil {
					t.Fatal(err)
				}
			}
			e.aad.SetDown(true)
			if err := p.Refresh(ctx); err == nil {
				t.Fatal("Refresh succeeded with the identity provider down")
			}
			got := logs.String()
			if !strings.Contains(got, `"msg":"`+tc.want+`"`) {
				t.Errorf("log lacks %q:\n%s", tc.want, got)
			}
			if strings.Contains(got, tc.bans) {
				t.Errorf("log says %q:\n%s", tc.bans, got)
			}
		})
	}
}

// TestStatusKeyIDs: each source's status lists the ids of the keys it
// holds, sorted (public key set data, for the status page), and follows a
// rollover.
func TestStatusKeyIDs(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, nil)
	legacy, current := e.aad.LegacyKID(), e.aad.CurrentKID()
	check := func(when string, want ...string) {
		t.Helper()
		slices.Sort(want)
		st := p.Status()
		if len(st.Sources) == 0 {
			t.Fatalf("%s: no sources in %+v", when, st)
		}
		for _, src := range st.Sources {
			if !slices.Equal(src.KeyIDs, want) || src.Keys != len(src.KeyIDs) {
				t.Errorf("%s: source %s key ids %q (keys %d), want %q", when, src.Name, src.KeyIDs, src.Keys, want)
			}
		}
	}
	check("first fetch", legacy, current)
	rotated := e.aad.RotateKey()
	if err := p.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	check("after a rollover", legacy, current, rotated)
	e.aad.DropRetiredKeys()
	if err := p.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	check("after the retired keys are dropped", legacy, rotated)
}
