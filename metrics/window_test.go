package metrics

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestWindowLastHour drives a Window on a fake clock over fake counters:
// each step moves the clock, sets counters to absolute values (a lower
// value is a reset) and either takes a minute sample or asks for the last
// hour.
func TestWindowLastHour(t *testing.T) {
	req := func(route string) seriesKey { return seriesKey{kind: seriesRequests, route: route} }
	errc := func(route, code string) seriesKey { return seriesKey{kind: seriesErrors, route: route, label: code} }
	tok := func(route, kind string) seriesKey { return seriesKey{kind: seriesTokens, route: route, label: kind} }
	type step struct {
		after  time.Duration // clock moves by this first
		set    map[seriesKey]float64
		sample bool // take a ring sample (otherwise ask LastHour)
		// expectations of LastHour
		since time.Duration // since start
		full  bool
		want  map[string]Usage
	}
	minutes := func(from, to int, set func(i int) map[seriesKey]float64) []step {
		var out []step
		for i := from; i <= to; i++ {
			out = append(out, step{after: time.Minute, set: set(i), sample: true})
		}
		return out
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "first reading counts from now",
			steps: []step{
				{set: map[seriesKey]float64{req("a"): 5}, want: map[string]Usage{"a": {}}},
				{after: 30 * time.Second, set: map[seriesKey]float64{req("a"): 8, errc("a", "forbidden"): 2},
					want: map[string]Usage{"a": {Requests: 3, Errors: map[string]uint64{"forbidden": 2}}}},
			},
		},
		{
			name: "younger than an hour: since the first sample",
			steps: []step{
				{set: map[seriesKey]float64{req("a"): 1, tok("a", "total"): 10}, sample: true},
				{after: time.Minute, set: map[seriesKey]float64{req("a"): 4, tok("a", "total"): 25}, sample: true},
				{after: 20 * time.Second, set: map[seriesKey]float64{req("a"): 6, tok("a", "total"): 30, req("b"): 2},
					want: map[string]Usage{"a": {Requests: 5, Tokens: map[string]uint64{"total": 20}}, "b": {Requests: 2}}},
			},
		},
		{
			name: "a reset never counts negative: it counts from zero",
			steps: []step{
				{set: map[seriesKey]float64{req("a"): 100, errc("a", "rate_limited"): 7}, sample: true},
				{after: time.Minute, set: map[seriesKey]float64{req("a"): 110, errc("a", "rate_limited"): 9}, sample: true},
				// The counters restarted from zero and counted 3 and 1 again.
				{after: time.Minute, set: map[seriesKey]float64{req("a"): 3, errc("a", "rate_limited"): 1}, sample: true},
				// Lower than the baseline (100, 7): counted from zero.
				{after: 10 * time.Second, set: map[seriesKey]float64{req("a"): 5, errc("a", "rate_limited"): 1},
					want: map[string]Usage{"a": {Requests: 5, Errors: map[string]uint64{"rate_limited": 1}}}},
			},
		},
		{
			name: "older than an hour: only the last hour counts",
			steps: append(append(
				[]step{{set: map[seriesKey]float64{req("a"): 0}, sample: true}},
				// One request a minute for 90 minutes.
				minutes(1, 90, func(i int) map[seriesKey]float64 { return map[seriesKey]float64{req("a"): float64(i)} })...),
				step{after: 30 * time.Second, set: map[seriesKey]float64{req("a"): 90},
					// The newest sample at or before an hour ago (now is
					// 90.5) is minute 30: 60 requests since.
					since: 30 * time.Minute, full: true, want: map[string]Usage{"a": {Requests: 60}}},
			),
		},
		{
			name: "no sample for over an hour: since the last one, not full",
			steps: []step{
				{set: map[seriesKey]float64{req("a"): 1}, sample: true},
				{after: 2 * time.Hour, set: map[seriesKey]float64{req("a"): 50},
					want: map[string]Usage{"a": {Requests: 49}}},
			},
		},
		{
			name: "sampling stalled after half an hour: since the last sample, not full",
			steps: append(append(
				[]step{{set: map[seriesKey]float64{req("a"): 0, errc("a", "forbidden"): 0}, sample: true}},
				minutes(1, 30, func(i int) map[seriesKey]float64 { return map[seriesKey]float64{req("a"): float64(i)} })...),
				step{after: 2 * time.Hour, set: map[seriesKey]float64{req("a"): 100, errc("a", "forbidden"): 4, req("b"): 3},
					since: 30 * time.Minute, want: map[string]Usage{"a": {Requests: 70, Errors: map[string]uint64{"forbidden": 4}}, "b": {Requests: 3}}},
			),
		},
		{
			name: "a route that appears later counts all it has",
			steps: append(append(
				[]step{{set: map[seriesKey]float64{req("a"): 0}, sample: true}},
				minutes(1, 70, func(i int) map[seriesKey]float64 {
					if i < 40 {
						return map[seriesKey]float64{req("a"): float64(i)}
					}
					return map[seriesKey]float64{req("a"): float64(i), req("b"): float64(i - 39)}
				})...),
				step{after: 10 * time.Second, set: map[seriesKey]float64{req("a"): 70, req("b"): 31},
					since: 10 * time.Minute, full: true, want: map[string]Usage{"a": {Requests: 60}, "b": {Requests: 31}}},
			),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
			now := start
			values := map[seriesKey]float64{}
			w := newWindow(func() time.Time { return now }, func() (map[seriesKey]float64, error) { return maps.Clone(values), nil })
			for i, s := range tt.steps {
				now = now.Add(s.after)
				maps.Copy(values, s.set)
				if s.sample {
					if err := w.Sample(); err != nil {
						t.Fatal(err)
					}
					continue
				}
				got, err := w.LastHour()
				if err != nil {
					t.Fatal(err)
				}
				wantSince := start.Add(s.since)
				if !got.Since.Equal(wantSince) || got.Full != s.full || !got.At.Equal(now) {
					t.Errorf("step %d: since %v full %v at %v, want since %v full %v at %v", i, got.Since, got.Full, got.At, wantSince, s.full, now)
				}
				if len(got.Routes) != len(s.want) {
					t.Errorf("step %d: routes %v, want %v", i, got.Routes, s.want)
				}
				for route, want := range s.want {
					u := got.Routes[route]
					if u.Requests != want.Requests || !maps.Equal(u.Errors, want.Errors) || !equalNonZero(u.Tokens, want.Tokens) {
						t.Errorf("step %d: route %s = %+v, want %+v", i, route, u, want)
					}
				}
			}
		})
	}
}

// equalNonZero compares two counts ignoring zero entries.
func equalNonZero(a, b map[string]uint64) bool {
	nz := func(m map[string]uint64) map[string]uint64 {
		out := map[string]uint64{}
		for k, v := range m {
			if v != 0 {
				out[k] = v
			}
		}
		return out
	}
	return maps.Equal(nz(a), nz(b))
}

// TestWindowRingHoldsAnHour: the ring keeps windowSamples samples, however many are
// taken.
func TestWindowRingHoldsAnHour(t *testing.T) {
	now := time.Unix(0, 0)
	w := newWindow(func() time.Time { return now }, func() (map[seriesKey]float64, error) { return nil, nil })
	for range 500 {
		now = now.Add(time.Minute)
		if err := w.Sample(); err != nil {
			t.Fatal(err)
		}
	}
	if w.n != windowSamples {
		t.Errorf("ring holds %d samples, want %d", w.n, windowSamples)
	}
}

// TestWindowGatherError: a failed reading is returned, wrapped, and keeps
// no sample.
func TestWindowGatherError(t *testing.T) {
	boom := errors.New("boom")
	w := newWindow(nil, func() (map[seriesKey]float64, error) { return nil, boom })
	if err := w.Sample(); !errors.Is(err, boom) {
		t.Errorf("Sample error %v, want boom", err)
	}
	if _, err := w.LastHour(); !errors.Is(err, boom) {
		t.Errorf("LastHour error %v, want boom", err)
	}
	if w.n != 0 {
		t.Errorf("a failed reading was kept")
	}
}

// TestWindowReadsTheMetrics: over real Metrics, requests are summed over
// status classes and auth methods, errors counted by code and tokens by
// kind, per route; concurrent readers are safe.
func TestWindowReadsTheMetrics(t *testing.T) {
	m := New("test")
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	a, b := m.Route("a"), m.Route("b")
	a.Observe(200, "key", time.Millisecond, 0, "")
	w := m.NewWindow(clock) // its first sample: a's first request
	mu.Lock()
	now = now.Add(90 * time.Second)
	mu.Unlock()
	a.Observe(200, "key", time.Millisecond, 0, "")
	a.Observe(401, "", time.Millisecond, 0, "missing_credential")
	a.Observe(429, "key", time.Millisecond, 0, "rate_limited")
	a.Observe(429, "token", time.Millisecond, 0, "rate_limited")
	a.Tokens(10, 5, 15)
	b.Observe(502, "public", time.Millisecond, 0, "upstream_unavailable")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if _, err := w.LastHour(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, err := w.LastHour()
	if err != nil {
		t.Fatal(err)
	}
	if ua := got.Routes["a"]; ua.Requests != 4 || ua.ErrorCount() != 3 ||
		!maps.Equal(ua.Errors, map[string]uint64{"missing_credential": 1, "rate_limited": 2}) ||
		!maps.Equal(ua.Tokens, map[string]uint64{"prompt": 10, "completion": 5, "total": 15}) {
		t.Errorf("route a = %+v", ua)
	}
	if ua := got.Routes["a"]; ua.ServerErrors != 0 {
		t.Errorf("route a has %d 5xx, want 0", ua.ServerErrors)
	}
	if ub := got.Routes["b"]; ub.Requests != 1 || ub.ServerErrors != 1 || !maps.Equal(ub.Errors, map[string]uint64{"upstream_unavailable": 1}) {
		t.Errorf("route b = %+v", ub)
	}
	if got.Full || !got.Since.Equal(now.Add(-90*time.Second)) {
		t.Errorf("since %v full %v, want the first sample, not full", got.Since, got.Full)
	}
}

// TestWindowRunSamplesEveryMinute: Run keeps a sample a minute and stops
// with its context (in a synctest bubble, so no real minute passes).
func TestWindowRunSamplesEveryMinute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWindow(nil, func() (map[seriesKey]float64, error) { return map[seriesKey]float64{}, nil })
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); w.Run(ctx) }()
		time.Sleep(3*time.Minute + time.Second)
		synctest.Wait()
		w.mu.Lock()
		n := w.n
		w.mu.Unlock()
		if n != 3 {
			t.Errorf("%d samples after 3 minutes, want 3", n)
		}
		cancel()
		<-done
	})
}

// BenchmarkWindowLastHour: a status page's read of the last hour with 500
// routes (every series of each pre-created, some counted) and a full ring.
func BenchmarkWindowLastHour(b *testing.B) {
	m := New("bench")
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	var routes []*Route
	for i := range 500 {
		routes = append(routes, m.Route(fmt.Sprintf("route-%03d", i)))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	w := m.NewWindow(func() time.Time { return now })
	for range windowSamples + 5 {
		now = now.Add(time.Minute)
		for i, r := range routes {
			r.Observe(200, "key", time.Millisecond, 0, "")
			if i%7 == 0 {
				r.Observe(429, "key", time.Millisecond, 0, "rate_limited")
				r.Tokens(10, 5, 15)
			}
		}
		if err := w.Sample(); err != nil {
			b.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	now = now.Add(30 * time.Second)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := w.LastHour(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MB-held")
}
