package pool_test

import (
	"testing"

	"github.com/modelgate/modelgate/pool"
)

func TestMirrorSample(t *testing.T) {
	for _, percent := range []int{1, 10, 33, 50, 99, 100} {
		p := mustNew(t, pool.Options{
			Backends: []pool.BackendOptions{be("a", 1, 1), be("m", 1, 0)},
			Mirror:   &pool.MirrorOptions{Backend: "m", Percent: percent},
		})
		m := p.Mirror()
		got, run := 0, 0
		for range 1000 {
			if m.Sample() {
				got++
				run = 0
			} else if run++; run >= 100 {
				t.Fatalf("%d%%: 100 calls in a row without a sample", percent)
			}
		}
		if got != percent*10 {
			t.Errorf("%d%%: sampled %d of 1000, want %d", percent, got, percent*10)
		}
		if name, i := m.Target(); name != "m" || i != 1 {
			t.Errorf("Target = %q, %d; want m, 1", name, i)
		}
	}
}

func TestMirrorBound(t *testing.T) {
	p := mustNew(t, pool.Options{
		Backends: []pool.BackendOptions{be("a", 1, 1)},
		Mirror:   &pool.MirrorOptions{Backend: "other-upstream", Percent: 100, MaxInFlight: 2},
	})
	m := p.Mirror()
	if _, i := m.Target(); i != -1 {
		t.Errorf("another upstream's index = %d, want -1", i)
	}
	steps := []struct {
		name    string
		acquire bool // else release
		want    bool
		flight  int
		dropped uint64
	}{
		{"first", true, true, 1, 0},
		{"second", true, true, 2, 0},
		{"full: dropped, not queued", true, false, 2, 1},
		{"still full", true, false, 2, 2},
		{"release", false, true, 1, 2},
		{"room again", true, true, 2, 2},
	}
	for _, s := range steps {
		got := true
		if s.acquire {
			got = m.TryAcquire()
		} else {
			m.Release()
		}
		if got != s.want || m.InFlight() != s.flight || m.Dropped() != s.dropped {
			t.Errorf("%s: got %v, in flight %d, dropped %d; want %v, %d, %d",
				s.name, got, m.InFlight(), m.Dropped(), s.want, s.flight, s.dropped)
		}
	}
	if q := mustNew(t, pool.Options{
		Backends: []pool.BackendOptions{be("a", 1, 1)},
		Mirror:   &pool.MirrorOptions{Backend: "x", Percent: 5},
	}).Mirror(); q == nil {
		t.Fatal("no mirror")
	} else {
		n := 0
		for q.TryAcquire() {
			n++
		}
		if n != pool.DefaultMirrorMaxInFlight {
			t.Errorf("default bound = %d, want %d", n, pool.DefaultMirrorMaxInFlight)
		}
	}
}
