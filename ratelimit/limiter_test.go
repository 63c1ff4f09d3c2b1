package ratelimit

import (
	"errors"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func mustRate(t testing.TB, s string) Rate {
	t.Helper()
	r, err := ParseRate(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustNew(t testing.TB, o Options) *Limiter {
	t.Helper()
	l, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestNewRejects(t *testing.T) {
	fiveS := Rate{5, time.Second}
	tests := []struct {
		name string
		o    Options
		want []string
	}{
		{"nothing set", Options{}, []string{"no limit set"}},
		{"negative burst", Options{PerIdentity: fiveS, PerIdentityBurst: -1}, []string{"burst: -1"}},
		{"huge burst", Options{Overall: fiveS, OverallBurst: MaxEvents + 1}, []string{"overall_burst: ", "at most"}},
		{"burst without rate", Options{PerIdentity: fiveS, OverallBurst: 3}, []string{"overall_burst: 3 is set without a overall rate"}},
		{"negative cap", Options{PerIdentity: fiveS, MaxIdentities: -5}, []string{"max_identities: -5"}},
		{"hand-built rate", Options{Overall: Rate{Events: 0, Per: time.Second}}, []string{"overall: rate"}},
		{"several at once", Options{PerIdentity: fiveS, PerIdentityBurst: -1, MaxIdentities: -1}, []string{"burst: -1", "max_identities: -1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := New(tt.o)
			if err == nil {
				t.Fatalf("New(%+v) = %v, want error", tt.o, l)
			}
			if !errors.Is(err, ErrInvalidOptions) {
				t.Errorf("error %v does not wrap ErrInvalidOptions", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestRateHonoured(t *testing.T) {
	// 5/s with the default burst of 5, asked every 10ms for 10 simulated
	// seconds: the initial burst plus 5 per second.
	l := mustNew(t, Options{PerIdentity: mustRate(t, "5/s")})
	allowed := 0
	for i := range 1000 {
		if ok, _ := l.Allow("alice", t0.Add(time.Duration(i)*10*time.Millisecond)); ok {
			allowed++
		}
	}
	// Requests at 0..9.99s: the burst of 5 plus one per 200ms after t0.
	if want := 5 + 49; allowed != want {
		t.Errorf("allowed %d in 10s at 5/s burst 5, want %d", allowed, want)
	}
}

func TestBurst(t *testing.T) {
	tests := []struct {
		name  string
		o     Options
		burst int
		retry time.Duration
	}{
		{"default 5/s", Options{PerIdentity: Rate{5, time.Second}}, 5, 200 * time.Millisecond},
		{"default 100/m", Options{PerIdentity: Rate{100, time.Minute}}, 2, 600 * time.Millisecond},
		{"default 10/h", Options{PerIdentity: Rate{10, time.Hour}}, 1, 6 * time.Minute},
		{"explicit 1/m burst 3", Options{PerIdentity: Rate{1, time.Minute}, PerIdentityBurst: 3}, 3, time.Minute},
		{"overall 2/s burst 10", Options{Overall: Rate{2, time.Second}, OverallBurst: 10}, 10, 500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := mustNew(t, tt.o)
			for i := range tt.burst {
				if ok, _ := l.Allow("id", t0); !ok {
					t.Fatalf("request %d of burst %d denied", i+1, tt.burst)
				}
			}
			ok, retry := l.Allow("id", t0)
			if ok {
				t.Fatalf("request %d allowed past burst %d", tt.burst+1, tt.burst)
			}
			if retry != tt.retry {
				t.Errorf("retryAfter = %v, want %v", retry, tt.retry)
			}
		})
	}
}

func TestRetryAfterIsExact(t *testing.T) {
	for _, s := range []string{"1/s", "3/s", "7/s", "1000/s", "100/m", "7/m", "1/h", "13/h"} {
		t.Run(s, func(t *testing.T) {
			l := mustNew(t, Options{PerIdentity: mustRate(t, s)})
			now := t0
			// Drain, then walk forward by each retryAfter: each wait must be
			// exactly enough, and a microsecond less must not be. (Not a
			// nanosecond: x/time/rate rounds a deficit under 1ns down to no
			// wait, and admits.)
			for range l.idBurst {
				l.Allow("x", now)
			}
			for i := range 20 {
				ok, retry := l.Allow("x", now)
				if ok {
					t.Fatalf("step %d: allowed with an empty bucket", i)
				}
				if retry <= 0 {
					t.Fatalf("step %d: retryAfter %v, want > 0", i, retry)
				}
				if ok, _ := l.Allow("x", now.Add(retry-time.Microsecond)); ok {
					t.Fatalf("step %d: allowed 1µs before retryAfter %v", i, retry)
				}
				now = now.Add(retry)
				if ok, _ := l.Allow("x", now); !ok {
					t.Fatalf("step %d: denied at exactly retryAfter %v", i, retry)
				}
			}
		})
	}
}

func TestRetryAfterPartialRefill(t *testing.T) {
	l := mustNew(t, Options{PerIdentity: Rate{1, time.Second}})
	l.Allow("x", t0)
	ok, retry := l.Allow("x", t0.Add(300*time.Millisecond))
	if ok || retry != 700*time.Millisecond {
		t.Fatalf("Allow 300ms after draining 1/s = %v, %v; want false, 700ms", ok, retry)
	}
	if got := RetryAfterSeconds(retry); got != 1 {
		t.Errorf("RetryAfterSeconds(%v) = %d, want 1", retry, got)
	}
}

func TestPerIdentityIndependent(t *testing.T) {
	l := mustNew(t, Options{PerIdentity: Rate{2, time.Second}})
	for range 2 {
		if ok, _ := l.Allow("alice", t0); !ok {
			t.Fatal("alice denied within burst")
		}
	}
	if ok, _ := l.Allow("alice", t0); ok {
		t.Fatal("alice allowed past burst")
	}
	for _, id := range []string{"bob", "", "alice ", "Alice"} {
		for i := range 2 {
			if ok, _ := l.Allow(id, t0); !ok {
				t.Errorf("identity %q denied on request %d though only alice is over", id, i+1)
			}
		}
	}
	if got := l.Len(); got != 5 {
		t.Errorf("Len() = %d, want 5", got)
	}
}

func TestOverallAcrossIdentities(t *testing.T) {
	l := mustNew(t, Options{
		Overall:     Rate{10, time.Second}, // burst 10
		PerIdentity: Rate{5, time.Second},  // burst 5
	})
	allowed := 0
	for i := range 5 {
		for range 3 {
			if ok, _ := l.Allow("id"+strconv.Itoa(i), t0); ok {
				allowed++
			}
		}
	}
	if allowed != 10 {
		t.Fatalf("allowed %d across 5 identities, want the overall burst 10", allowed)
	}
	// id4 was refused by the overall limit only: it keeps its own tokens.
	ok, retry := l.Allow("id4", t0)
	if ok || retry != 100*time.Millisecond {
		t.Fatalf("Allow(id4) with overall empty = %v, %v; want false, 100ms", ok, retry)
	}
	later := t0.Add(time.Second) // overall refilled to 10
	for i := range 5 {
		if ok, _ := l.Allow("id4", later); !ok {
			t.Fatalf("id4 request %d denied after overall refill: a refused request took its token", i+1)
		}
	}
}

func TestIdentityDenialSparesOverall(t *testing.T) {
	l := mustNew(t, Options{
		Overall:     Rate{10, time.Second},
		PerIdentity: Rate{2, time.Second},
	})
	for range 100 {
		l.Allow("greedy", t0)
	}
	// greedy got 2; the other 8 overall tokens are still there.
	for i := range 8 {
		if ok, _ := l.Allow("other"+strconv.Itoa(i), t0); !ok {
			t.Fatalf("other%d denied: greedy's refused requests used the overall limit", i)
		}
	}
	if ok, _ := l.Allow("late", t0); ok {
		t.Fatal("allowed past the overall burst")
	}
}

func TestRetryAfterBothEmpty(t *testing.T) {
	l := mustNew(t, Options{
		Overall:     Rate{10, time.Second}, // a token per 100ms
		PerIdentity: Rate{1, time.Minute},  // a token per minute
	})
	l.Allow("slow", t0)
	for i := range 9 {
		l.Allow("f"+strconv.Itoa(i), t0)
	}
	// Both buckets are empty for "slow": the wait is the longer one.
	ok, retry := l.Allow("slow", t0)
	if ok || retry != time.Minute {
		t.Fatalf("Allow(slow) = %v, %v; want false, 1m", ok, retry)
	}
	// An unknown identity waits only for the overall bucket.
	ok, retry = l.Allow("new", t0)
	if ok || retry != 100*time.Millisecond {
		t.Fatalf("Allow(new) = %v, %v; want false, 100ms", ok, retry)
	}
	if got := l.Len(); got != 10 {
		t.Errorf("Len() = %d, want 10: a request refused by the overall limit must not create a bucket", got)
	}
}

func TestOverallOnlyIgnoresIdentity(t *testing.T) {
	l := mustNew(t, Options{Overall: Rate{3, time.Second}})
	for i := range 3 {
		if ok, _ := l.Allow(strconv.Itoa(i), t0); !ok {
			t.Fatal("denied within overall burst")
		}
	}
	if ok, _ := l.Allow("z", t0); ok {
		t.Fatal("allowed past the overall burst")
	}
	if l.Len() != 0 {
		t.Errorf("Len() = %d, want 0 without a per-identity limit", l.Len())
	}
	if n := l.Sweep(t0); n != 0 {
		t.Errorf("Sweep() = %d, want 0", n)
	}
}

func TestIdleEviction(t *testing.T) {
	l := mustNew(t, Options{PerIdentity: Rate{1, time.Second}, PerIdentityBurst: 2}) // refills in 2s
	for i := range 1000 {
		l.Allow("old"+strconv.Itoa(i), t0)
	}
	if got := l.Len(); got != 1000 {
		t.Fatalf("Len() = %d, want 1000", got)
	}

	// Not yet refilled: nothing may go.
	if n := l.Sweep(t0.Add(2*time.Second - 1)); n != 0 {
		t.Fatalf("Sweep before refill evicted %d", n)
	}
	// A drained identity is remembered, and still denied, while others come
	// and go.
	l.Allow("drained", t0)
	l.Allow("drained", t0)
	for i := range 300 {
		l.Allow("mid"+strconv.Itoa(i), t0.Add(time.Second))
	}
	if ok, _ := l.Allow("drained", t0.Add(time.Second)); !ok {
		t.Fatal("drained identity denied after 1s at 1/s") // one token back
	}
	if ok, _ := l.Allow("drained", t0.Add(time.Second)); ok {
		t.Fatal("drained identity allowed twice after 1s: its bucket was forgotten too early")
	}

	// Each Allow evicts a few idle identities from its shard: 2000 calls
	// (about 31 per shard, each evicting up to 4) clear the 1000 (about 16
	// per shard) whose buckets have refilled.
	later := t0.Add(2 * time.Second)
	for i := range 2000 {
		l.Allow("new"+strconv.Itoa(i), later)
	}
	if got, want := l.Len(), 300+1+2000; got != want {
		t.Errorf("Len() after 2000 calls at +2s = %d, want %d (the 1000 idle ones gone)", got, want)
	}
	if n, want := l.Sweep(later.Add(time.Hour)), 2301; n != want {
		t.Errorf("Sweep() = %d, want %d", n, want)
	}
	if got := l.Len(); got != 0 {
		t.Errorf("Len() after Sweep = %d, want 0", got)
	}
}

func TestCapEvictsLeastRecentlySeen(t *testing.T) {
	l := mustNew(t, Options{PerIdentity: Rate{1, time.Hour}, MaxIdentities: 64}) // 64 shards of 1
	if l.shardCap != 1 || len(l.shards) != 64 {
		t.Fatalf("shards %d × cap %d, want 64 × 1", len(l.shards), l.shardCap)
	}
	for i := range 10_000 {
		l.Allow(strconv.Itoa(i), t0)
		if got := l.Len(); got > 64 {
			t.Fatalf("Len() = %d after %d identities, cap 64", got, i+1)
		}
	}

	// Small caps use fewer shards and never exceed the cap.
	for _, c := range []int{1, 2, 3, 5, 63, 65, 1000} {
		l := mustNew(t, Options{PerIdentity: Rate{1, time.Hour}, MaxIdentities: c})
		for i := range 5000 {
			l.Allow(strconv.Itoa(i), t0)
		}
		if got := l.Len(); got > c || got < c/2 {
			t.Errorf("cap %d: Len() = %d", c, got)
		}
	}

	// Within a shard, the least recently seen goes first.
	// Force one shard of 3 so the order is visible.
	l = mustNew(t, Options{PerIdentity: Rate{1, time.Hour}, MaxIdentities: 3})
	l.shards, l.mask, l.shardCap = l.shards[:1], 0, 3
	// b is the least recently seen when d arrives.
	for _, id := range []string{"a", "b", "c", "a", "d"} {
		l.Allow(id, t0)
	}
	for id, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true} {
		if _, got := l.shards[0].m[id]; got != want {
			t.Errorf("remembered %q = %v, want %v", id, got, want)
		}
	}
	// a was drained before and is still remembered: denied.
	if ok, _ := l.Allow("a", t0); ok {
		t.Error("a allowed: its bucket was lost")
	}
	// b was forgotten at the cap: it starts again with a full burst.
	if ok, _ := l.Allow("b", t0); !ok {
		t.Error("b denied after being forgotten")
	}
}

// TestMillionIdentitiesBounded sends a million distinct identities through a
// Limiter, first all within one refill period (only the cap holds memory
// down), then spread over time (idle eviction alone does).
func TestMillionIdentitiesBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	const n = 1_000_000
	const capacity = 10_000

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	l := mustNew(t, Options{PerIdentity: Rate{5, time.Second}, MaxIdentities: capacity})
	buf := make([]byte, 0, 32)
	maxLen := 0
	for i := range n {
		buf = strconv.AppendInt(append(buf[:0], "tenant/oid-"...), int64(i), 10)
		l.Allow(string(buf), t0)
		if i%10_000 == 0 {
			maxLen = max(maxLen, l.Len())
		}
	}
	maxLen = max(maxLen, l.Len())
	if maxLen > capacity {
		t.Errorf("Len() reached %d, cap %d", maxLen, capacity)
	}

	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("1M identities at one instant, cap %d: max Len %d, heap grew %.1f MiB", capacity, maxLen, float64(grown)/(1<<20))
	if grown > 32<<20 {
		t.Errorf("heap grew %d MiB for %d remembered identities", grown>>20, capacity)
	}
	runtime.KeepAlive(l)

	// Spread over time: 1000 new identities each second at 5/s burst 5
	// (refill 1s): idle eviction alone keeps about two seconds' worth.
	l = mustNew(t, Options{PerIdentity: Rate{5, time.Second}, MaxIdentities: 500_000})
	maxLen = 0
	for i := range n {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		buf = strconv.AppendInt(append(buf[:0], "app-"...), int64(i), 10)
		l.Allow(string(buf), now)
		if i%1000 == 0 {
			maxLen = max(maxLen, l.Len())
		}
	}
	t.Logf("1M identities over 1000s, refill 1s: max Len %d", maxLen)
	if maxLen > 3000 {
		t.Errorf("Len() reached %d with 1000 identities per refill period: idle eviction is not keeping up", maxLen)
	}
}

func TestConcurrent(t *testing.T) {
	l := mustNew(t, Options{
		Overall:          Rate{1000, time.Second},
		OverallBurst:     1000,
		PerIdentity:      Rate{10, time.Second},
		PerIdentityBurst: 50,
		MaxIdentities:    256,
	})
	const workers = 8
	var hot atomic.Int64
	var total atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range 2000 {
				// Frozen clock: nothing refills, so exactly the bursts pass.
				if ok, _ := l.Allow("hot", t0); ok {
					hot.Add(1)
					total.Add(1)
				}
				if ok, _ := l.Allow("w"+strconv.Itoa(w)+"-"+strconv.Itoa(i%700), t0); ok {
					total.Add(1)
				}
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			l.Sweep(t0)
			l.Len()
		}
	})
	wg.Wait()
	if hot.Load() != 50 {
		t.Errorf("hot identity allowed %d times with burst 50 and a frozen clock", hot.Load())
	}
	if total.Load() > 1000 {
		t.Errorf("allowed %d in total with an overall burst of 1000", total.Load())
	}
	if got := l.Len(); got > 256 {
		t.Errorf("Len() = %d, cap 256", got)
	}
}

func TestAllowDoesNotAllocate(t *testing.T) {
	l := mustNew(t, Options{Overall: Rate{1000, time.Second}, PerIdentity: Rate{5, time.Second}})
	now := t0
	l.Allow("alice", now)
	allowed := testing.AllocsPerRun(1000, func() {
		now = now.Add(time.Second)
		if ok, _ := l.Allow("alice", now); !ok {
			t.Fatal("denied")
		}
	})
	denied := testing.AllocsPerRun(1000, func() {
		l.Allow("alice", now)
	})
	if allowed != 0 || denied != 0 {
		t.Errorf("allocations per Allow: allowed path %v, denied path %v; want 0", allowed, denied)
	}
}

func BenchmarkAllowHotIdentity(b *testing.B) {
	for _, bc := range []struct {
		name string
		o    Options
	}{
		{"per-identity", Options{PerIdentity: Rate{MaxEvents, time.Second}}},
		{"per-identity+overall", Options{Overall: Rate{MaxEvents, time.Second}, PerIdentity: Rate{MaxEvents, time.Second}}},
		{"overall", Options{Overall: Rate{MaxEvents, time.Second}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l := mustNew(b, bc.o)
			now := t0
			b.ReportAllocs()
			for b.Loop() {
				now = now.Add(time.Microsecond)
				l.Allow("tenant/3f2a0c7e-oid", now)
			}
		})
	}
}

func BenchmarkAllowManyIdentities(b *testing.B) {
	ids := make([]string, 1<<20)
	for i := range ids {
		ids[i] = "tenant/oid-" + strconv.Itoa(i)
	}
	l := mustNew(b, Options{PerIdentity: Rate{5, time.Second}}) // default cap 100k: steady eviction
	now := t0
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Microsecond)
		l.Allow(ids[i&(len(ids)-1)], now)
		i++
	}
}

func BenchmarkAllowParallel(b *testing.B) {
	ids := make([]string, 10_000)
	for i := range ids {
		ids[i] = "tenant/oid-" + strconv.Itoa(i)
	}
	l := mustNew(b, Options{PerIdentity: Rate{5, time.Second}})
	var seq atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seq.Add(1)) * 7919
		for pb.Next() {
			l.Allow(ids[i%len(ids)], t0.Add(time.Duration(i)*time.Microsecond))
			i++
		}
	})
}
