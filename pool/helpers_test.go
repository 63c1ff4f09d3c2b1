package pool_test

import (
	"fmt"
	"testing"

	"github.com/modelgate/modelgate/pool"
)

// w returns a weight.
func w(n int) *int { return &n }

// be returns a backend called name at priority prio with weight weight.
func be(name string, prio, weight int) pool.BackendOptions {
	return pool.BackendOptions{Name: name, URL: "http://" + name + ".example/score", Priority: prio, Weight: w(weight)}
}

func mustNew(t testing.TB, o pool.Options) *pool.Pool {
	t.Helper()
	p, err := pool.New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

// picks returns the names of n consecutive first-try picks.
func picks(t testing.TB, p *pool.Pool, n int) []string {
	t.Helper()
	var out []string
	for range n {
		i, ok := p.Pick(0)
		if !ok {
			out = append(out, "-")
			continue
		}
		out = append(out, p.Name(i))
	}
	return out
}

// count tallies names.
func count(names []string) map[string]int {
	m := map[string]int{}
	for _, n := range names {
		m[n]++
	}
	return m
}

func joined(names []string) string {
	s := ""
	for _, n := range names {
		s += n
	}
	return s
}

// fail reports n counted failures (connect errors) on backend i.
func fail(p *pool.Pool, i, n int) {
	for range n {
		p.Report(i, pool.Failure(pool.ConnectError, fmt.Errorf("dial tcp: connection refused")))
	}
}
