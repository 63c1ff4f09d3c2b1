package pool_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/modelgate/modelgate/internal/problem"
	"github.com/modelgate/modelgate/pool"
)

func TestNewReportsEveryProblemWithItsPath(t *testing.T) {
	ok := []pool.BackendOptions{be("a", 1, 1), be("b", 2, 1)}
	tests := []struct {
		name string
		o    pool.Options
		want []string // paths
	}{
		{"no backend", pool.Options{}, []string{"backends"}},
		{"backend fields", pool.Options{Backends: []pool.BackendOptions{
			{URL: "http://x/"},
			{Name: "b", URL: "ftp://x/", Priority: -1, Weight: w(-2)},
			{Name: "b", URL: "", Weight: w(1)},
			{Name: "d", URL: "https://user:pw@x/"},
			{Name: "e", URL: "/relative"},
		}}, []string{"backends[0].name", "backends[1].url", "backends[1].priority", "backends[1].weight",
			"backends[2].name", "backends[2].url", "backends[3].url", "backends[4].url"}},
		{"every weight 0", pool.Options{Backends: []pool.BackendOptions{be("a", 1, 0)}}, []string{"backends"}},
		{"retry", pool.Options{Backends: ok, Retry: pool.RetryOptions{
			Attempts: 11, On: []string{"429", "connect_error", "404", "429", "reset"}, PerTryTimeout: -time.Second,
		}}, []string{"retry.attempts", "retry.on[2]", "retry.on[3]", "retry.on[4]", "retry.per_try_timeout"}},
		{"negative attempts", pool.Options{Backends: ok, Retry: pool.RetryOptions{Attempts: -1}}, []string{"retry.attempts"}},
		{"breaker", pool.Options{Backends: ok, CircuitBreaker: pool.BreakerOptions{
			ConsecutiveFailures: -1, OpenFor: -time.Second, MaxOpenFor: -time.Minute,
		}}, []string{"circuit_breaker.consecutive_failures", "circuit_breaker.open_for", "circuit_breaker.max_open_for"}},
		{"open_for above max", pool.Options{Backends: ok, CircuitBreaker: pool.BreakerOptions{OpenFor: 20 * time.Minute}},
			[]string{"circuit_breaker.open_for"}},
		{"max below default open_for", pool.Options{Backends: ok, CircuitBreaker: pool.BreakerOptions{MaxOpenFor: 10 * time.Second}},
			[]string{"circuit_breaker.max_open_for"}},
		{"health check", pool.Options{Backends: ok, HealthCheck: &pool.HealthCheckOptions{
			Path: "healthz?x=1", Interval: -time.Second, HealthyStatus: []int{200, 99, 600},
		}}, []string{"health_check.path", "health_check.interval", "health_check.healthy_status[1]", "health_check.healthy_status[2]"}},
		{"health timeout above interval", pool.Options{Backends: ok, HealthCheck: &pool.HealthCheckOptions{
			Interval: time.Second, Timeout: 2 * time.Second,
		}}, []string{"health_check.timeout"}},
		{"mirror", pool.Options{Backends: ok, Mirror: &pool.MirrorOptions{Percent: 101, MaxInFlight: -1}},
			[]string{"mirror.backend", "mirror.percent", "mirror.max_in_flight"}},
		{"mirror to a serving backend", pool.Options{Backends: ok, Mirror: &pool.MirrorOptions{Backend: "b", Percent: 10}},
			[]string{"mirror.backend"}},
		{"mirror percent 0", pool.Options{Backends: ok, Mirror: &pool.MirrorOptions{Backend: "x"}},
			[]string{"mirror.percent"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := pool.New(tt.o)
			if p != nil || err == nil {
				t.Fatalf("New = %v, %v; want an error", p, err)
			}
			if !errors.Is(err, pool.ErrInvalidOptions) {
				t.Errorf("error does not wrap ErrInvalidOptions: %v", err)
			}
			var got []string
			for _, e := range problem.Flatten(err) {
				var pe *problem.Error
				if !errors.As(e, &pe) {
					t.Fatalf("%v is not a problem.Error", e)
				}
				if pe.Msg == "" {
					t.Errorf("%s: empty message", pe.Path)
				}
				got = append(got, pe.Path)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("problems at %q, want %q\n%v", got, tt.want, err)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	tests := []struct {
		name     string
		o        pool.Options
		attempts int
		on       pool.Condition
	}{
		{"two serving backends", pool.Options{Backends: []pool.BackendOptions{be("a", 1, 1), be("b", 2, 1)}},
			2, pool.ConnectError | pool.CredentialUnavailable | pool.Status429 | pool.Status503},
		{"one backend", pool.Options{Backends: []pool.BackendOptions{{Name: "a", URL: "http://a/"}}},
			1, pool.ConnectError | pool.CredentialUnavailable | pool.Status429 | pool.Status503},
		{"one serving backend and a mirror target", pool.Options{Backends: []pool.BackendOptions{be("a", 1, 1), be("m", 1, 0)}},
			1, pool.ConnectError | pool.CredentialUnavailable | pool.Status429 | pool.Status503},
		{"empty retry.on retries nothing", pool.Options{Backends: []pool.BackendOptions{be("a", 1, 1), be("b", 1, 1)},
			Retry: pool.RetryOptions{Attempts: 3, On: []string{}}}, 3, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustNew(t, tt.o)
			if p.MaxAttempts() != tt.attempts || p.RetryOn() != tt.on {
				t.Errorf("attempts %d on %v, want %d %v", p.MaxAttempts(), p.RetryOn(), tt.attempts, tt.on)
			}
		})
	}
	p := mustNew(t, pool.Options{Backends: []pool.BackendOptions{{Name: "a", URL: "http://a/"}}})
	if p.Priority(0) != 1 || p.Weight(0) != 1 || p.URL(0).Host != "a" || p.Mirror() != nil || p.PerTryTimeout() != 0 {
		t.Errorf("backend defaults: priority %d weight %d url %v", p.Priority(0), p.Weight(0), p.URL(0))
	}
	if i, ok := p.Index("a"); !ok || i != 0 {
		t.Errorf("Index(a) = %d, %v", i, ok)
	}
	if _, ok := p.Index("nope"); ok {
		t.Error("Index found a backend that is not there")
	}
	if _, err := pool.New(pool.Options{
		Backends:    []pool.BackendOptions{be("a", 1, 1)},
		HealthCheck: &pool.HealthCheckOptions{Interval: time.Second},
	}); err != nil {
		t.Errorf("a 1s interval without a timeout: %v, want the timeout to default to the interval", err)
	}
}
