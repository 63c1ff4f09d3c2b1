package pool_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/modelgate/modelgate/pool"
)

// healthServer is a fake backend whose health endpoint answers status and
// records what it was asked.
type healthServer struct {
	*httptest.Server
	status atomic.Int32
	hits   atomic.Int32
	mu     sync.Mutex
	path   string
	auth   string
}

// newHealthServer starts the fake. It is started outside any synctest
// bubble: its accept loop blocks on the network, which would keep a bubble's
// clock from ever advancing.
func newHealthServer(t *testing.T, status int) *healthServer {
	t.Helper()
	s := &healthServer{}
	s.status.Store(int32(status))
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		s.path, s.auth = r.URL.Path, r.Header.Get("Authorization")
		s.mu.Unlock()
		w.WriteHeader(int(s.status.Load()))
		_, _ = w.Write([]byte("Healthy"))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *healthServer) last() (path, auth string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.path, s.auth
}

// verdicts records the Prober's Observe calls.
type verdicts struct {
	mu  sync.Mutex
	got map[int][]pool.ProbeResult
}

func (v *verdicts) observe(i int, r pool.ProbeResult, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.got == nil {
		v.got = map[int][]pool.ProbeResult{}
	}
	v.got[i] = append(v.got[i], r)
}

func (v *verdicts) of(i int) []pool.ProbeResult {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]pool.ProbeResult(nil), v.got[i]...)
}

func TestProber(t *testing.T) {
	up := newHealthServer(t, 200)
	flaky := newHealthServer(t, 503)
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close() // connection refused
	locked := newHealthServer(t, 200)

	synctest.Test(t, func(t *testing.T) {
		p := mustNew(t, pool.Options{
			Backends: []pool.BackendOptions{
				{Name: "up", URL: up.URL + "/api/v1/service/churn/"},
				{Name: "flaky", URL: flaky.URL + "/score"},
				{Name: "gone", URL: gone.URL},
				{Name: "locked", URL: locked.URL, Weight: w(0)},
			},
			CircuitBreaker: pool.BreakerOptions{OpenFor: time.Minute},
			HealthCheck:    &pool.HealthCheckOptions{Path: "/healthz", Interval: 10 * time.Second, Timeout: 2 * time.Second},
		})
		var v verdicts
		pr := &pool.Prober{
			Pool: p,
			// No keep-alive: an idle pooled connection's reader blocks on
			// the network, which would stop the bubble's clock.
			Client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
			Prepare: func(r *http.Request, i int) error {
				if p.Name(i) == "locked" {
					return errors.New("credential unavailable")
				}
				r.Header.Set("Authorization", "Bearer token-for-"+p.Name(i))
				return nil
			},
			Observe: v.observe,
		}
		if err := pr.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		defer pr.Close()
		synctest.Wait()

		want := []struct {
			name    string
			result  pool.ProbeResult
			state   pool.State
			probeOK bool
		}{
			{"up", pool.ProbeUp, pool.Closed, true},
			{"flaky", pool.ProbeDown, pool.Open, true},
			{"gone", pool.ProbeDown, pool.Open, true},
			{"locked", pool.ProbeSkipped, pool.Closed, false},
		}
		for i, w := range want {
			if got := v.of(i); len(got) != 1 || got[0] != w.result {
				t.Errorf("%s: verdicts %v, want [%v]", w.name, got, w.result)
			}
			if s := p.State(i); s.State != w.state {
				t.Errorf("%s: state %v, want %v (%s)", w.name, s.State, w.state, s.LastError)
			}
		}
		if path, auth := up.last(); path != "/api/v1/service/churn/healthz" || auth != "Bearer token-for-up" {
			t.Errorf("probe of up: path %q auth %q", path, auth)
		}
		if path, _ := flaky.last(); path != "/score/healthz" {
			t.Errorf("probe of flaky: path %q", path)
		}
		if n := locked.hits.Load(); n != 0 {
			t.Errorf("a probe whose Prepare failed was sent %d times", n)
		}
		if s := p.State(1); s.OpenUntil != time.Now().Add(time.Minute) {
			t.Errorf("failed probe opened until %v, want open_for from now", s.OpenUntil)
		}

		flaky.status.Store(200)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got := v.of(1); len(got) != 2 || got[1] != pool.ProbeUp {
			t.Errorf("flaky after recovery: verdicts %v, want [down up]", got)
		}
		if s := p.State(1); s.State != pool.Closed || !s.Available {
			t.Errorf("flaky: a passing probe left it %v", s.State)
		}
		if s := p.State(2); s.State != pool.Open {
			t.Errorf("gone: %v, want still open", s.State)
		}
		if n := up.hits.Load(); n != 2 {
			t.Errorf("up probed %d times in one interval, want 2", n)
		}

		pr.Close()
		time.Sleep(time.Minute)
		if n := up.hits.Load(); n != 2 {
			t.Errorf("probes after Close: %d hits, want 2", n)
		}
	})
}

func TestProberStartErrors(t *testing.T) {
	withHC := mustNew(t, pool.Options{
		Backends:    []pool.BackendOptions{be("a", 1, 1)},
		HealthCheck: &pool.HealthCheckOptions{},
	})
	without := mustNew(t, pool.Options{Backends: []pool.BackendOptions{be("a", 1, 1)}})
	tests := []struct {
		name string
		pr   *pool.Prober
	}{
		{"no pool", &pool.Prober{Client: http.DefaultClient}},
		{"no health_check", &pool.Prober{Pool: without, Client: http.DefaultClient}},
		{"no client", &pool.Prober{Pool: withHC}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.pr.Start(context.Background()); err == nil {
				t.Error("Start succeeded")
			}
			tt.pr.Close()
		})
	}
	t.Run("twice", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // nothing is probed: the first probe sees a done context
		pr := &pool.Prober{Pool: withHC, Client: http.DefaultClient}
		if err := pr.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := pr.Start(ctx); err == nil {
			t.Error("second Start succeeded")
		}
		pr.Close()
		pr.Close()
	})
}
