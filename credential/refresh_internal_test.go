package credential

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestBackoffGrowsWithJitterWithinBounds(t *testing.T) {
	tests := []struct {
		n          int
		base       time.Duration // un-jittered backoff for attempt n
		rand, want float64       // rand value → fraction of base
	}{
		{1, time.Second, 0, 0.5},
		{1, time.Second, 0.999, 0.9995},
		{2, 2 * time.Second, 0.5, 0.75},
		{3, 4 * time.Second, 0, 0.5},
		{7, 64 * time.Second, 0.5, 0.75},
		{8, 2 * time.Minute, 0.5, 0.75}, // capped
		{50, 2 * time.Minute, 0.999, 0.9995},
		{3, 4 * time.Second, 7, 0.75}, // out-of-range rand treated as 0.5
	}
	for _, tt := range tests {
		p := RefreshPolicy{Rand: func() float64 { return tt.rand }}.withDefaults()
		got := p.backoff(tt.n)
		want := time.Duration(float64(tt.base) * tt.want)
		if d := got - want; d < -time.Millisecond || d > time.Millisecond {
			t.Errorf("backoff(%d) with rand %v = %v, want %v", tt.n, tt.rand, got, want)
		}
		if got < tt.base/2 || got > tt.base {
			t.Errorf("backoff(%d) = %v outside [%v, %v]", tt.n, got, tt.base/2, tt.base)
		}
	}
}

// fetcher is a scripted fetch function.
type fetcher struct {
	mu    sync.Mutex
	calls int
	next  func(now time.Time, n int) (Token, error)
}

func (f *fetcher) fetch(context.Context) (Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.next(time.Now(), f.calls)
}

func (f *fetcher) n() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// newScripted returns a token source over a scripted fetch. Call it in a
// testing/synctest bubble: the engine's timers run on the bubble's clock.
func newScripted(t *testing.T, next func(now time.Time, n int) (Token, error)) (*TokenSource, *fetcher) {
	t.Helper()
	f := &fetcher{next: next}
	src, err := NewTokenSource(TokenSourceOptions{Name: "t", Fetch: f.fetch,
		Refresh: RefreshPolicy{Rand: func() float64 { return 0.5 }}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	return src, f
}

// sleepUntil lets the bubble's clock reach at and every goroutine due by
// then finish.
func sleepUntil(at time.Time) {
	time.Sleep(time.Until(at))
	synctest.Wait()
}

func TestExpiredOnArrivalIsAFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src, f := newScripted(t, func(now time.Time, n int) (Token, error) {
			if n == 1 {
				return Token{Value: "stale", ExpiresAt: now.Add(5 * time.Second)}, nil
			}
			return Token{Value: "fresh", ExpiresAt: now.Add(time.Hour)}, nil
		})
		_, err := src.Credential(context.Background())
		var ue *UnavailableError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), "check the clocks") {
			t.Fatalf("err = %v, want unavailable because the token expires on arrival", err)
		}
		sleepUntil(src.Status().NextRefresh)
		c, err := src.Credential(context.Background())
		if err != nil || c.Value != "fresh" || f.n() != 2 {
			t.Fatalf("after retry: %v, %v (calls %d)", c.Label, err, f.n())
		}
	})
}

func TestRefreshHintInThePastDoesNotSpin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src, f := newScripted(t, func(now time.Time, n int) (Token, error) {
			return Token{Value: Secret("tok-" + string(rune('a'+n))), RefreshAt: now.Add(-time.Minute), ExpiresAt: now.Add(time.Hour)}, nil
		})
		if _, err := src.Credential(context.Background()); err != nil {
			t.Fatal(err)
		}
		// A hint in the past falls back to refreshing ahead of expiry.
		if got := time.Until(src.Status().NextRefresh); got != 55*time.Minute {
			t.Fatalf("next refresh in %v, want 55m", got)
		}
		sleepUntil(time.Now().Add(55 * time.Minute))
		if f.n() != 2 {
			t.Fatalf("calls = %d, want 2", f.n())
		}
	})
}

func TestTokenWithoutExpiryIsFetchedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src, f := newScripted(t, func(now time.Time, n int) (Token, error) {
			return Token{Value: "forever"}, nil
		})
		src.Start()
		if _, err := src.Credential(context.Background()); err != nil {
			t.Fatal(err)
		}
		if next := src.Status().NextRefresh; !next.IsZero() {
			t.Fatalf("next refresh at %v; want none", next)
		}
		sleepUntil(time.Now().Add(1000 * time.Hour))
		if f.n() != 1 {
			t.Fatalf("calls %d; want one fetch", f.n())
		}
	})
}

func TestEmptyTokenIsAFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src, _ := newScripted(t, func(now time.Time, n int) (Token, error) {
			return Token{ExpiresAt: now.Add(time.Hour)}, nil
		})
		if _, err := src.Credential(context.Background()); err == nil || !strings.Contains(err.Error(), "empty token") {
			t.Fatalf("err = %v, want an empty-token failure", err)
		}
		if _, err := NewTokenSource(TokenSourceOptions{Name: "x"}); err == nil {
			t.Fatal("NewTokenSource without Fetch succeeded")
		}
	})
}
