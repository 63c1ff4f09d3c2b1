package pool_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/modelgate/modelgate/pool"
)

func TestBreakerCountsConsecutiveFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := mustNew(t, pool.Options{
			Backends:       []pool.BackendOptions{be("a", 1, 1), be("b", 1, 1)},
			CircuitBreaker: pool.BreakerOptions{ConsecutiveFailures: 3, OpenFor: 30 * time.Second},
		})
		check := func(step string, state pool.State, failures int, available bool) {
			t.Helper()
			s := p.State(0)
			if s.State != state || s.ConsecutiveFailures != failures || s.Available != available {
				t.Fatalf("%s: state %v, failures %d, available %v; want %v, %d, %v",
					step, s.State, s.ConsecutiveFailures, s.Available, state, failures, available)
			}
		}
		fail(p, 0, 2)
		check("two failures", pool.Closed, 2, true)
		p.Report(0, pool.Response(200, nil, time.Now()))
		check("a success resets", pool.Closed, 0, true)

		fail(p, 0, 2)
		p.Report(0, pool.Response(500, nil, time.Now()))
		p.Report(0, pool.Failure(pool.Timeout, errors.New("per-try timeout")))
		check("500 and timeout not in retry.on are neutral", pool.Closed, 2, true)

		p.Report(0, pool.Response(503, nil, time.Now()))
		check("third counted failure opens", pool.Open, 3, false)
		s := p.State(0)
		if want := time.Now().Add(30 * time.Second); !s.OpenUntil.Equal(want) {
			t.Errorf("OpenUntil = %v, want %v", s.OpenUntil, want)
		}
		if s.LastError != "status 503" || !s.LastErrorAt.Equal(time.Now()) {
			t.Errorf("LastError = %q at %v, want \"status 503\" now", s.LastError, s.LastErrorAt)
		}

		time.Sleep(30*time.Second - time.Nanosecond)
		check("still open just before open_for", pool.Open, 3, false)
		time.Sleep(time.Nanosecond)
		check("half-open after open_for", pool.HalfOpen, 3, true)

		fail(p, 0, 1)
		check("one failure when half-open reopens", pool.Open, 4, false)
		time.Sleep(30 * time.Second)
		p.Report(0, pool.Response(404, nil, time.Now()))
		check("a 4xx answer is a success and closes", pool.Closed, 0, true)
		if s := p.State(0); !strings.Contains(s.LastError, "connection refused") {
			t.Errorf("LastError after closing = %q, want the last failure kept", s.LastError)
		}
		if s := p.State(1); s.State != pool.Closed || s.LastError != "" {
			t.Errorf("other backend: %+v, want untouched", s)
		}
	})
}

func TestBreakerRetryAfter(t *testing.T) {
	const maxOpen = 10 * time.Minute
	tests := []struct {
		name   string
		status int
		header http.Header // "DATE+n" in a value is replaced by now+n seconds
		want   time.Duration
	}{
		{"429 seconds", 429, http.Header{"Retry-After": {"7"}}, 7 * time.Second},
		{"503 seconds", 503, http.Header{"Retry-After": {"120"}}, 2 * time.Minute},
		{"429 HTTP date", 429, http.Header{"Retry-After": {"DATE+90"}}, 90 * time.Second},
		{"429 retry-after-ms", 429, http.Header{"Retry-After-Ms": {"1500"}}, 1500 * time.Millisecond},
		{"503 x-ms-retry-after-ms", 503, http.Header{"X-Ms-Retry-After-Ms": {"2500"}}, 2500 * time.Millisecond},
		{"ms wins over seconds", 429, http.Header{"Retry-After": {"2"}, "Retry-After-Ms": {"1200"}}, 1200 * time.Millisecond},
		{"capped by max_open_for", 429, http.Header{"Retry-After": {"86400"}}, maxOpen},
		{"HTTP date capped", 503, http.Header{"Retry-After": {"DATE+7200"}}, maxOpen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := mustNew(t, pool.Options{
					Backends:       []pool.BackendOptions{be("a", 1, 1), be("b", 1, 1)},
					CircuitBreaker: pool.BreakerOptions{ConsecutiveFailures: 1, MaxOpenFor: maxOpen},
				})
				h := http.Header{}
				for k, vs := range tt.header {
					v := vs[0]
					if n, ok := strings.CutPrefix(v, "DATE+"); ok {
						d, _ := time.ParseDuration(n + "s")
						v = time.Now().Add(d).UTC().Format(http.TimeFormat)
					}
					h.Set(k, v)
				}
				p.Report(0, pool.Response(tt.status, h, time.Now()))
				s := p.State(0)
				if want := time.Now().Add(tt.want); s.State != pool.Open || !s.OpenUntil.Equal(want) {
					t.Fatalf("state %v until %v, want open until %v", s.State, s.OpenUntil, want)
				}
				if s.ConsecutiveFailures != 0 {
					t.Errorf("failures = %d, want 0: a Retry-After is not counted", s.ConsecutiveFailures)
				}
				if got := picks(t, p, 4); joined(got) != "bbbb" {
					t.Errorf("picks while open %v, want only b", got)
				}
				p.Report(0, pool.Response(200, nil, time.Now()))
				if s := p.State(0); s.State != pool.Open {
					t.Errorf("a late success cut the backend's own wait short: %v", s.State)
				}
				time.Sleep(tt.want)
				if s := p.State(0); s.State != pool.Closed || !s.Available {
					t.Errorf("after the wait: %v available %v, want closed and available (not broken longer than asked)", s.State, s.Available)
				}
			})
		})
	}
}

func TestBreakerRetryAfterIgnored(t *testing.T) {
	tests := []struct {
		name   string
		status int
		header http.Header
		want   pool.State
		fails  int
	}{
		{"429 without Retry-After counts", 429, nil, pool.Open, 1},
		{"garbage Retry-After counts", 429, http.Header{"Retry-After": {"soon"}}, pool.Open, 1},
		{"negative Retry-After counts", 503, http.Header{"Retry-After": {"-5"}}, pool.Open, 1},
		{"500 with Retry-After is neutral", 500, http.Header{"Retry-After": {"60"}}, pool.Closed, 0},
		{"Retry-After 0 opens for nothing", 429, http.Header{"Retry-After": {"0"}}, pool.Closed, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := mustNew(t, pool.Options{
					Backends:       []pool.BackendOptions{be("a", 1, 1)},
					CircuitBreaker: pool.BreakerOptions{ConsecutiveFailures: 1},
				})
				p.Report(0, pool.Response(tt.status, tt.header, time.Now()))
				if s := p.State(0); s.State != tt.want || s.ConsecutiveFailures != tt.fails {
					t.Errorf("state %v failures %d, want %v %d", s.State, s.ConsecutiveFailures, tt.want, tt.fails)
				}
			})
		})
	}
}

func TestSoonestAvailable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := mustNew(t, pool.Options{
			Backends:       []pool.BackendOptions{be("a", 1, 1), be("b", 1, 1), be("c", 2, 1), be("z", 1, 0)},
			CircuitBreaker: pool.BreakerOptions{ConsecutiveFailures: 1, OpenFor: 30 * time.Second},
		})
		if got := p.SoonestAvailable(); !got.IsZero() {
			t.Fatalf("nothing open: SoonestAvailable = %v, want zero", got)
		}
		start := time.Now()
		throttle := func(i int, secs string) {
			p.Report(i, pool.Response(429, http.Header{"Retry-After": {secs}}, time.Now()))
		}
		throttle(3, "5") // weight 0: takes no traffic, so not counted
		throttle(0, "60")
		fail(p, 1, 1) // 30s
		throttle(2, "45")
		if got, want := p.SoonestAvailable(), start.Add(30*time.Second); !got.Equal(want) {
			t.Errorf("SoonestAvailable = %v, want %v", got, want)
		}
		if _, ok := p.Pick(0); ok {
			t.Error("Pick found a backend while every one is open")
		}
		time.Sleep(30 * time.Second)
		if got, want := p.SoonestAvailable(), start.Add(45*time.Second); !got.Equal(want) {
			t.Errorf("after 30s: SoonestAvailable = %v, want %v (the next still open)", got, want)
		}
	})
}
