package pool_test

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/modelgate/modelgate/pool"
)

func TestPickSmoothWeightedRoundRobin(t *testing.T) {
	tests := []struct {
		name     string
		backends []pool.BackendOptions
		n        int
		want     map[string]int
		prefix   string // the first picks, interleaved as nginx does
	}{
		{
			name:     "3 to 1",
			backends: []pool.BackendOptions{be("a", 1, 3), be("b", 1, 1)},
			n:        400,
			want:     map[string]int{"a": 300, "b": 100},
			prefix:   "aabaaaba",
		},
		{
			// The example in nginx's commit introducing smooth weighted
			// round robin: {a:5, b:1, c:1} gives a a b a c a a.
			name:     "nginx 5 1 1",
			backends: []pool.BackendOptions{be("a", 1, 5), be("b", 1, 1), be("c", 1, 1)},
			n:        700,
			want:     map[string]int{"a": 500, "b": 100, "c": 100},
			prefix:   "aabacaaaabacaa",
		},
		{
			name:     "equal weights alternate",
			backends: []pool.BackendOptions{be("a", 1, 1), be("b", 1, 1), be("c", 1, 1)},
			n:        300,
			want:     map[string]int{"a": 100, "b": 100, "c": 100},
			prefix:   "abcabc",
		},
		{
			name:     "weight 0 never picked",
			backends: []pool.BackendOptions{be("a", 1, 2), be("z", 1, 0), be("b", 1, 1)},
			n:        300,
			want:     map[string]int{"a": 200, "b": 100},
			prefix:   "abaaba",
		},
		{
			name:     "only the best priority serves",
			backends: []pool.BackendOptions{be("c", 2, 5), be("a", 1, 1), be("b", 1, 1)},
			n:        100,
			want:     map[string]int{"a": 50, "b": 50},
			prefix:   "abab",
		},
		{
			name:     "lone weight 0 standby at a better priority is ignored",
			backends: []pool.BackendOptions{be("z", 1, 0), be("a", 2, 1)},
			n:        10,
			want:     map[string]int{"a": 10},
			prefix:   "aaaa",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustNew(t, pool.Options{Backends: tt.backends})
			got := picks(t, p, tt.n)
			if g := joined(got[:len(tt.prefix)]); g != tt.prefix {
				t.Errorf("first picks %s, want %s", g, tt.prefix)
			}
			c := count(got)
			if len(c) != len(tt.want) {
				t.Errorf("picked %v, want %v", c, tt.want)
			}
			for name, n := range tt.want {
				if c[name] != n {
					t.Errorf("%s picked %d times, want %d (all: %v)", name, c[name], n, c)
				}
			}
		})
	}
}

func TestPickPriorityFailoverAndReturn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := mustNew(t, pool.Options{
			Backends:       []pool.BackendOptions{be("weu", 1, 3), be("weu2", 1, 1), be("neu", 2, 1)},
			CircuitBreaker: pool.BreakerOptions{ConsecutiveFailures: 2, OpenFor: 30 * time.Second},
		})
		fail(p, 0, 2)
		if c := count(picks(t, p, 40)); c["weu2"] != 40 {
			t.Fatalf("with weu open: picked %v, want only weu2 (same priority first)", c)
		}
		fail(p, 1, 2)
		if c := count(picks(t, p, 40)); c["neu"] != 40 {
			t.Fatalf("with priority 1 open: picked %v, want only neu", c)
		}
		time.Sleep(30 * time.Second)
		if c := count(picks(t, p, 40)); c["weu"] != 30 || c["weu2"] != 10 {
			t.Fatalf("after open_for: picked %v, want weu 30 and weu2 10 again", c)
		}
	})
}

func TestPickUsable(t *testing.T) {
	var mu sync.Mutex
	down := map[int]bool{}
	p := mustNew(t, pool.Options{
		Backends: []pool.BackendOptions{be("a", 1, 1), be("b", 1, 1), be("c", 2, 1)},
		Usable: func(i int) bool {
			mu.Lock()
			defer mu.Unlock()
			return !down[i]
		},
	})
	set := func(d map[int]bool) { mu.Lock(); down = d; mu.Unlock() }
	tests := []struct {
		name string
		down map[int]bool
		want map[string]int
	}{
		{"all usable", nil, map[string]int{"a": 5, "b": 5}},
		{"credential of a unavailable", map[int]bool{0: true}, map[string]int{"b": 10}},
		{"priority 1 unusable", map[int]bool{0: true, 1: true}, map[string]int{"c": 10}},
		{"none usable", map[int]bool{0: true, 1: true, 2: true}, map[string]int{"-": 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set(tt.down)
			c := count(picks(t, p, 10))
			for name, n := range tt.want {
				if c[name] != n {
					t.Errorf("picked %v, want %v", c, tt.want)
				}
			}
		})
	}
}

func TestPickExcludesTried(t *testing.T) {
	p := mustNew(t, pool.Options{
		Backends: []pool.BackendOptions{be("a", 1, 1), be("b", 1, 1), be("c", 2, 1), be("z", 1, 0)},
	})
	tests := []struct {
		name  string
		tried uint64
		want  string
	}{
		{"a tried: same priority first", 1 << 0, "b"},
		{"b tried", 1 << 1, "a"},
		{"priority 1 tried: lower priority", 1<<0 | 1<<1, "c"},
		{"all tried: none, weight 0 still not", 1<<0 | 1<<1 | 1<<2, "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 4 { // the same answer whatever the round-robin state
				got := "-"
				if i, ok := p.Pick(tt.tried); ok {
					got = p.Name(i)
				}
				if got != tt.want {
					t.Fatalf("Pick(%b) = %s, want %s", tt.tried, got, tt.want)
				}
			}
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	p := mustNew(t, pool.Options{
		Backends:       []pool.BackendOptions{be("a", 1, 3), be("b", 1, 1), be("c", 2, 1)},
		CircuitBreaker: pool.BreakerOptions{ConsecutiveFailures: 3},
		Mirror:         &pool.MirrorOptions{Backend: "other", Percent: 50, MaxInFlight: 2},
	})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for n := range 2000 {
				a := p.Attempts()
				for {
					i, ok := a.Next()
					if !ok {
						break
					}
					if (n+g+i)%7 == 0 {
						a.Record(i, pool.Failure(pool.ConnectError, nil))
					} else {
						a.Record(i, pool.Response(200, nil, time.Now()))
					}
					if !a.Retry(true, false) {
						break
					}
				}
				if n%100 == 0 {
					for i := range p.Len() {
						_ = p.State(i)
					}
					_ = p.SoonestAvailable()
				}
				if m := p.Mirror(); m.Sample() && m.TryAcquire() {
					m.Release()
				}
			}
		})
	}
	wg.Wait()
	if n := p.Mirror().InFlight(); n != 0 {
		t.Errorf("mirror in flight after all released = %d, want 0", n)
	}
}
