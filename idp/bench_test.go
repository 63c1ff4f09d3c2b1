package idp_test

import (
	"context"
	"testing"

	"github.com/modelgate/modelgate/idp"
)

// BenchmarkVerifyCold is a full verification: parse, RS256 (2048-bit)
// signature, claim checks. The cache is disabled.
func BenchmarkVerifyCold(b *testing.B) { benchVerify(b, -1) }

// BenchmarkVerifyCached is a cache hit: SHA-256 of the token, a map lookup
// and the exp/nbf/iat re-check.
func BenchmarkVerifyCached(b *testing.B) { benchVerify(b, 0) }

// benchVerify verifies one token over and over with a provider whose
// CacheSize is cacheSize.
func benchVerify(b *testing.B, cacheSize int) {
	p, _, valid := staticProvider(b, cacheSize)
	tok := valid[0]
	ctx := context.Background()
	if _, err := p.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCachedParallel measures cache hits from all CPUs at once
// (the cache's lock is read-mostly).
func BenchmarkVerifyCachedParallel(b *testing.B) {
	p, _, valid := staticProvider(b, 0)
	ctx := context.Background()
	for _, tok := range valid {
		if _, err := p.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := p.Verify(ctx, valid[i%len(valid)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkVerifyRefusedGarbage is the cost of refusing a malformed token
// (never cached).
func BenchmarkVerifyRefusedGarbage(b *testing.B) {
	p, _, _ := staticProvider(b, 0)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Verify(ctx, "eyJhbGciOiJub25lIn0.e30.x"); err == nil {
			b.Fatal("accepted")
		}
	}
}

func BenchmarkRuleEvaluate(b *testing.B) {
	r, err := idp.CompileRule(idp.RuleSpec{
		Roles:  idp.Match{AnyOf: []string{"Score.Invoke"}},
		Groups: idp.Match{AnyOf: []string{"11111111-1111-4111-8111-111111111111"}},
	})
	if err != nil {
		b.Fatal(err)
	}
	p, _, valid := staticProvider(b, 0)
	c, err := p.Verify(context.Background(), valid[0])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if ok, _, _ := r.Evaluate(c); !ok {
			b.Fatal("denied")
		}
	}
}
