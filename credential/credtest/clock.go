// Package credtest provides a fake credential.Clock for tests that cannot
// use testing/synctest: tests that reach a gateway over real loopback
// sockets (test/e2e), where a goroutine blocked on a socket is not durably
// blocked, so a bubble's clock would never advance. Tests of package
// credential itself, and anything else that can be reached in-process, run
// in a synctest bubble on the system clock instead.
//
// credtest deliberately does not import package credential: Clock satisfies
// credential.Clock by its method set alone.
package credtest

import (
	"sort"
	"sync"
	"time"
)

// Clock is a fake clock. Its time moves only when Advance is called.
//
// Functions scheduled with AfterFunc run synchronously, in time order, on the
// goroutine that calls Advance, with Now reporting the time they were due. A
// function that schedules another one due within the same Advance window
// sees it run in the same Advance. So when Advance returns, every refresh
// that was due has completed, which makes tests deterministic.
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

// NewClock returns a fake clock reading start.
func NewClock(start time.Time) *Clock {
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
// due at the next Advance, even Advance(0).
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

// Advance moves the clock forward by d (a negative d counts as 0), running
// every scheduled function that falls due, in order, before returning.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	target := c.now.Add(max(d, 0))
	c.mu.Unlock()
	for {
		c.mu.Lock()
		sort.Slice(c.timers, func(i, j int) bool {
			a, b := c.timers[i], c.timers[j]
			if !a.when.Equal(b.when) {
				return a.when.Before(b.when)
			}
			return a.seq < b.seq
		})
		if len(c.timers) == 0 || c.timers[0].when.After(target) {
			c.now = target
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
