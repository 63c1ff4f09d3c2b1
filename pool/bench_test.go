package pool_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/modelgate/modelgate/pool"
)

func benchPool(b *testing.B, n int) *pool.Pool {
	var backends []pool.BackendOptions
	for i := range n {
		backends = append(backends, be(fmt.Sprintf("b%d", i), 1+i%2, 1+i%3))
	}
	return mustNew(b, pool.Options{Backends: backends, Usable: func(int) bool { return true }})
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{1, 2, 8, 64} {
		b.Run(fmt.Sprintf("backends=%d", n), func(b *testing.B) {
			p := benchPool(b, n)
			b.ReportAllocs()
			for b.Loop() {
				p.Pick(0)
			}
		})
	}
	b.Run("backends=8/parallel", func(b *testing.B) {
		p := benchPool(b, 8)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				p.Pick(0)
			}
		})
	})
}

// BenchmarkAttemptsHappyPath is one request's pool work when the first try
// succeeds: Next, Record, Retry.
func BenchmarkAttemptsHappyPath(b *testing.B) {
	p := benchPool(b, 4)
	ok := pool.Response(200, nil, now)
	b.ReportAllocs()
	for b.Loop() {
		a := p.Attempts()
		i, _ := a.Next()
		a.Record(i, ok)
		a.Retry(true, false)
	}
}

func BenchmarkParseRetryAfter(b *testing.B) {
	for _, h := range []http.Header{
		{"Retry-After": {"30"}},
		{"Retry-After-Ms": {"1500"}, "Retry-After": {"2"}},
		{"Retry-After": {"Sun, 01 Mar 2026 12:02:00 GMT"}},
	} {
		b.Run(fmt.Sprint(h), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				pool.ParseRetryAfter(h, now)
			}
		})
	}
}
