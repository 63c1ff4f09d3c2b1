package strhash

import (
	"crypto/sha256"
	"strings"
	"testing"
)

func TestSHA256MatchesStdlib(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 1023, 1024, 1025, 5000} {
		s := strings.Repeat("eyJhbGciOiJSUzI1NiJ9.", n/21+1)[:n]
		if SHA256(s) != sha256.Sum256([]byte(s)) {
			t.Fatalf("length %d: digest differs", n)
		}
	}
}

func TestSHA256DoesNotAllocate(t *testing.T) {
	s := strings.Repeat("x", 1200)
	if a := testing.AllocsPerRun(100, func() { _ = SHA256(s) }); a != 0 {
		t.Fatalf("%.0f allocations per call", a)
	}
}

func BenchmarkSHA256Token(b *testing.B) {
	s := strings.Repeat("x", 1000)
	b.ReportAllocs()
	for b.Loop() {
		_ = SHA256(s)
	}
}
