package idp_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelgate/modelgate/idp"
	"github.com/modelgate/modelgate/test/fakeaad"
)

// cachedToken mints a v2 token and has p verify it once, so that p has it
// cached; it returns the token and its claims.
func cachedToken(t *testing.T, e *env, p *idp.Provider) (string, *idp.Claims) {
	t.Helper()
	tok := e.aad.Mint(e.aad.V2Claims("", fakeaad.APIClientID))
	c, err := p.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	return tok, c
}

func TestCache(t *testing.T) {
	ctx := context.Background()

	t.Run("hit returns the same claims", func(t *testing.T) {
		e := newEnv(t)
		p := e.provider(t, nil)
		tok, a := cachedToken(t, e, p)
		b, err := p.Verify(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		if a != b {
			t.Error("second Verify did not come from the cache")
		}
	})

	t.Run("disabled", func(t *testing.T) {
		e := newEnv(t)
		p := e.provider(t, func(o *idp.Options) { o.CacheSize = -1 })
		tok := e.aad.Mint(e.aad.V2Claims("", fakeaad.APIClientID))
		a, _ := p.Verify(ctx, tok)
		b, _ := p.Verify(ctx, tok)
		if a == nil || a == b {
			t.Errorf("claims %p %p: want two distinct verifications", a, b)
		}
	})

	t.Run("expired cached token refused", func(t *testing.T) {
		inBubble(t, func(t *testing.T, e *env) {
			p := e.provider(t, nil)
			c := e.aad.V2Claims("", fakeaad.APIClientID)
			c["exp"] = time.Now().Add(10 * time.Minute).Unix()
			tok := e.aad.Mint(c)
			if _, err := p.Verify(ctx, tok); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10*time.Minute + idp.DefaultLeeway - time.Second)
			if _, err := p.Verify(ctx, tok); err != nil {
				t.Fatalf("within leeway: %v", err)
			}
			time.Sleep(time.Second)
			_, err := p.Verify(ctx, tok)
			wantReason(t, err, idp.ReasonTokenExpired, http.StatusUnauthorized, tok)
			// And it stays refused (the entry is gone, full verification
			// agrees).
			_, err = p.Verify(ctx, tok)
			wantReason(t, err, idp.ReasonTokenExpired, http.StatusUnauthorized, tok)
		})
	})

	for _, tc := range []struct {
		name    string
		dropNbf bool
		want    idp.Reason
	}{
		// explain -at evaluates as of an instant, possibly before nbf.
		{"not-yet-valid on a hit when the clock is earlier", false, idp.ReasonTokenNotYetValid},
		{"iat in the future on a hit", true, idp.ReasonTokenUsedBeforeIssued},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			var skew atomic.Int64
			p := e.provider(t, func(o *idp.Options) { o.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) } })
			c := e.aad.V2Claims("", fakeaad.APIClientID)
			if tc.dropNbf {
				delete(c, "nbf")
			}
			tok := e.aad.Mint(c)
			if _, err := p.Verify(ctx, tok); err != nil {
				t.Fatal(err)
			}
			skew.Store(int64(-time.Hour))
			_, err := p.Verify(ctx, tok)
			wantReason(t, err, tc.want, http.StatusUnauthorized, tok)
		})
	}

	t.Run("key removal invalidates", func(t *testing.T) {
		e := newEnv(t)
		p := e.provider(t, nil)
		tok, _ := cachedToken(t, e, p)
		e.aad.RotateKey()
		e.aad.DropRetiredKeys() // the key that signed tok is revoked
		if err := p.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		_, err := p.Verify(ctx, tok)
		wantReason(t, err, idp.ReasonUnknownKey, http.StatusUnauthorized, tok)
	})

	t.Run("unchanged refresh keeps entries", func(t *testing.T) {
		e := newEnv(t)
		p := e.provider(t, nil)
		tok, a := cachedToken(t, e, p)
		if err := p.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if b, _ := p.Verify(ctx, tok); a != b {
			t.Error("a refresh that changed nothing flushed the cache")
		}
	})

	t.Run("negative results are not cached", func(t *testing.T) {
		inBubble(t, func(t *testing.T, e *env) {
			p := e.provider(t, nil)
			c := e.aad.V2Claims("", fakeaad.APIClientID)
			c["nbf"] = time.Now().Add(10 * time.Minute).Unix()
			tok := e.aad.Mint(c)
			_, err := p.Verify(ctx, tok)
			wantReason(t, err, idp.ReasonTokenNotYetValid, http.StatusUnauthorized, tok)
			time.Sleep(10 * time.Minute)
			if _, err := p.Verify(ctx, tok); err != nil {
				t.Errorf("once valid: %v", err)
			}
		})
	})

	t.Run("bounded", func(t *testing.T) {
		e := newEnv(t)
		p := e.provider(t, func(o *idp.Options) { o.CacheSize = 4 })
		var toks []string
		for i := range 20 {
			c := e.aad.V2Claims("", fakeaad.APIClientID)
			c["uti"] = string(rune('a' + i))
			toks = append(toks, e.aad.Mint(c))
		}
		first := map[string]*idp.Claims{}
		for _, tok := range toks {
			c, err := p.Verify(ctx, tok)
			if err != nil {
				t.Fatal(err)
			}
			first[tok] = c
		}
		hits := 0
		for _, tok := range toks {
			c, err := p.Verify(ctx, tok)
			if err != nil {
				t.Fatal(err)
			}
			if c == first[tok] {
				hits++
			}
		}
		// At most 4 of the 20 can still be cached when the second pass
		// starts; the second pass evicts as it goes.
		if hits > 4 {
			t.Errorf("%d cache hits with a cache of 4", hits)
		}
	})
}
