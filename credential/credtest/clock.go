// Package credtest provides test helpers for package credential and its
// users: a fake clock that satisfies credential.Clock (and the Clock of
// test/fakeazure), so that token lifetimes, refresh schedules and backoff can
// be driven in milliseconds with Advance instead of real sleeps.
//
// credtest deliberately does not import package credential, so that
// credential's own in-package tests can use it without an import cycle.
package credtest

import (
	"sort"
	"sync"
	"time"
)

// Clock is a fake clock. Its time moves only when Advance or Set is called.
//
// Functions scheduled with AfterFunc run synchronously, in time order, on the
// goroutine that calls Advance or Set, with Now reporting the time they were
// due. A function that schedules another one due within the same Advance
// window sees it run in the same Advance. So when Advance returns, every
// refresh that was due has completed, which makes tests deterministic.
//
// Clock is safe for concurrent use. Advance must not be called from inside a
// scheduled function.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	seq    uint64
	timers []*timer
}

type timer struct {
	when time.Time
	seq  uint64
	f    func()
}

// NewClock returns a fake clock reading start. A zero start means
// 2030-01-01T00:00:00Z. Tests that also drive real Azure SDK caches, which
// use the real clock, should pass time.Now().
func NewClock(start time.Time) *Clock {
	if start.IsZero() {
		start = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	return &Clock{now: start}
}

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc schedules f to run once the fake time has advanced by d, and
// returns a function that cancels it, reporting whether it did. A d <= 0 is
// due at the next Advance (or Set), even Advance(0).
func (c *Clock) AfterFunc(d time.Duration, f func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &timer{when: c.now.Add(d), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, x := range c.timers {
			if x == t {
				c.timers = append(c.timers[:i], c.timers[i+1:]...)
				return true
			}
		}
		return false
	}
}

// Advance moves the clock forward by d, running every scheduled function
// that falls due, in order, before returning.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	target := c.now.Add(d)
	c.mu.Unlock()
	c.Set(target)
}

// Set moves the clock to t (never backwards: an earlier t only runs what is
// already due) and runs every scheduled function due by then.
func (c *Clock) Set(t time.Time) {
	for {
		c.mu.Lock()
		if t.Before(c.now) {
			t = c.now
		}
		sort.Slice(c.timers, func(i, j int) bool {
			a, b := c.timers[i], c.timers[j]
			if !a.when.Equal(b.when) {
				return a.when.Before(b.when)
			}
			return a.seq < b.seq
		})
		if len(c.timers) == 0 || c.timers[0].when.After(t) {
			c.now = t
			c.mu.Unlock()
			return
		}
		next := c.timers[0]
		c.timers = c.timers[1:]
		if next.when.After(c.now) {
			c.now = next.when
		}
		c.mu.Unlock()
		next.f()
	}
}

// Pending returns how many scheduled functions have not run yet.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// NextDue returns when the earliest scheduled function falls due, and false
// when none is scheduled.
func (c *Clock) NextDue() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var first time.Time
	for _, t := range c.timers {
		if first.IsZero() || t.when.Before(first) {
			first = t.when
		}
	}
	return first, !first.IsZero()
}

// SeqRand returns a func() float64 that yields vals in turn, repeating the
// last one, for deterministic jitter in tests (credential.RefreshPolicy.Rand).
// It is safe for concurrent use.
func SeqRand(vals ...float64) func() float64 {
	if len(vals) == 0 {
		vals = []float64{0.5}
	}
	var mu sync.Mutex
	i := 0
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		v := vals[i]
		if i < len(vals)-1 {
			i++
		}
		return v
	}
}
