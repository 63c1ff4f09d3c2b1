// Package pool chooses which backend of an upstream serves a request, and
// keeps what is known about each backend's health: the selection rule, the
// per-backend circuit breaker, the bookkeeping of one request's tries, the
// active health check and the mirror's share and bound. It knows nothing of
// HTTP handlers; the proxy sends the requests and reports how they went.
//
// The rules are DESIGN.md's "Backend pools": the lowest priority number with
// an available backend serves, smooth weighted round robin inside it; a
// backend is available while its breaker is not open and the caller's
// [Options.Usable] says so (its credential is valid).
//
// A backend is known by its index in [Options.Backends] throughout. A
// [Pool] is built once by [New] (pure: no I/O, no goroutine) and is safe for
// concurrent use; only the breaker and round-robin state change.
package pool

import (
	"math/bits"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Pool is one upstream's backends and their state. Build it with [New].
type Pool struct {
	settings
	backends []*backend
	groups   []group // by ascending priority
	usable   func(int) bool
	mirror   *Mirror
	// epoch anchors every stored instant, so that they are monotonic
	// durations since it and immune to wall-clock steps.
	epoch time.Time

	mu      sync.Mutex // guards current
	current []int64    // smooth weighted round robin state, by backend
}

// group is the backends of one priority with a positive weight.
type group struct {
	priority int
	members  uint64
}

// backend is one member and its breaker.
type backend struct {
	name     string
	url      *url.URL
	priority int
	weight   int

	// openUntil is max(brokenUntil, throttledUntil), read lock-free by Pick.
	openUntil atomic.Int64 // since Pool.epoch

	mu             sync.Mutex
	failures       int   // consecutive counted failures
	brokenUntil    int64 // opened by failures or a failing probe
	throttledUntil int64 // opened by the backend's own Retry-After
	lastErr        string
	lastErrAt      int64
}

// New validates o and builds the pool. Every problem is reported at once,
// each a problem.Error with the field path relative to the upstream and
// wrapping [ErrInvalidOptions]. New does no I/O and starts nothing; a
// [Prober] is started separately.
func New(o Options) (*Pool, error) {
	s, backends, m, err := compile(&o)
	if err != nil {
		return nil, err
	}
	p := &Pool{
		settings: s,
		backends: backends,
		usable:   o.Usable,
		mirror:   m,
		epoch:    time.Now(),
		current:  make([]int64, len(backends)),
	}
	for i, b := range backends {
		if b.weight == 0 {
			continue
		}
		at := len(p.groups)
		for j, g := range p.groups {
			if g.priority == b.priority {
				at = -1
				p.groups[j].members |= 1 << i
				break
			}
			if g.priority > b.priority {
				at = j
				break
			}
		}
		if at >= 0 {
			p.groups = append(p.groups, group{})
			copy(p.groups[at+1:], p.groups[at:])
			p.groups[at] = group{priority: b.priority, members: 1 << i}
		}
	}
	return p, nil
}

// now returns the time since the pool's epoch, on the monotonic clock.
func (p *Pool) now() int64 { return int64(time.Since(p.epoch)) }

// at turns an instant since the epoch back into a time.
func (p *Pool) at(t int64) time.Time { return p.epoch.Add(time.Duration(t)) }

// Len returns the number of backends.
func (p *Pool) Len() int { return len(p.backends) }

// Name returns backend i's name.
func (p *Pool) Name(i int) string { return p.backends[i].name }

// URL returns backend i's base URL. The caller must not modify it.
func (p *Pool) URL(i int) *url.URL { return p.backends[i].url }

// Priority returns backend i's priority, its default applied.
func (p *Pool) Priority(i int) int { return p.backends[i].priority }

// Weight returns backend i's weight, its default applied.
func (p *Pool) Weight(i int) int { return p.backends[i].weight }

// Index returns the index of the backend called name.
func (p *Pool) Index(name string) (int, bool) {
	for i, b := range p.backends {
		if b.name == name {
			return i, true
		}
	}
	return -1, false
}

// MaxAttempts returns retry.attempts, its default applied.
func (p *Pool) MaxAttempts() int { return p.attempts }

// RetryOn returns the retry.on conditions.
func (p *Pool) RetryOn() Condition { return p.on }

// PerTryTimeout returns retry.per_try_timeout; 0 means none.
func (p *Pool) PerTryTimeout() time.Duration { return p.perTryTimeout }

// Mirror returns the pool's mirror, or nil when it has none.
func (p *Pool) Mirror() *Mirror { return p.mirror }

// available returns the set of backends that may take a request now: a
// positive weight, breaker not open, usable, and not in tried.
func (p *Pool) available(tried uint64, now int64) uint64 {
	var set uint64
	for i, b := range p.backends {
		if tried&(1<<i) != 0 || b.weight == 0 || b.openUntil.Load() > now {
			continue
		}
		if p.usable != nil && !p.usable(i) {
			continue
		}
		set |= 1 << i
	}
	return set
}

// Pick chooses the backend for a try. tried has bit i set for each backend
// already tried by this request, which Pick skips; pass 0 for a first try.
// The choice is the lowest priority number that has an available backend,
// and inside it smooth weighted round robin (nginx's: each candidate's
// current weight grows by its weight, the largest is chosen and loses the
// candidates' total), so weights 3 and 1 give a, a, b, a, ... interleaved
// rather than bursts. So a retry goes to another backend of the same
// priority first, and to a lower priority only when none is left. A backend
// of weight 0 is never picked. ok is false when no backend is available.
//
// Pick is safe for concurrent use and does not allocate.
func (p *Pool) Pick(tried uint64) (backend int, ok bool) {
	set := p.available(tried, p.now())
	for _, g := range p.groups {
		if c := g.members & set; c != 0 {
			return p.swrr(c), true
		}
	}
	return -1, false
}

// swrr runs one round of smooth weighted round robin over the candidates.
func (p *Pool) swrr(cands uint64) int {
	if cands&(cands-1) == 0 { // one candidate: nothing to balance
		return bits.TrailingZeros64(cands)
	}
	p.mu.Lock()
	best, total := -1, int64(0)
	for c := cands; c != 0; c &= c - 1 {
		i := bits.TrailingZeros64(c)
		w := int64(p.backends[i].weight)
		p.current[i] += w
		total += w
		if best < 0 || p.current[i] > p.current[best] {
			best = i
		}
	}
	p.current[best] -= total
	p.mu.Unlock()
	return best
}
