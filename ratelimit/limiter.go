package ratelimit

import (
	"cmp"
	"errors"
	"github.com/modelgate/modelgate/internal/problem"
	"hash/maphash"
	"math"
	"math/bits"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ErrInvalidOptions is wrapped by every error [New] returns; test for it with
// errors.Is.
var ErrInvalidOptions = errors.New("invalid rate limit options")

// DefaultMaxIdentities is the per-route cap on remembered identities when
// [Options.MaxIdentities] is 0. One remembered identity costs roughly 200
// bytes plus the length of its key, so the default bounds a route at about
// 20 MiB however many distinct identities call it.
const DefaultMaxIdentities = 100_000

// maxShards is the number of independently locked parts of the identity
// table. A power of two, so a hash picks a shard with a mask.
const maxShards = 64

// sweepBudget bounds how many idle identities one Allow call evicts, so the
// cost of eviction is spread over calls instead of landing on one.
const sweepBudget = 4

// Options configures a route's [Limiter]. The zero value of each field means
// its documented default; a zero [Rate] means "no limit of this kind". At
// least one of Overall and PerIdentity must be set.
//
// Config mapping (routes[].rate_limit), each rate through [ParseRate]:
// per_identity → PerIdentity, burst → PerIdentityBurst, overall → Overall,
// overall_burst → OverallBurst, max_identities → MaxIdentities.
type Options struct {
	// Overall limits the route as a whole, summed over every caller.
	// Default: no overall limit.
	Overall Rate
	// OverallBurst is the overall bucket's size: how many requests may pass
	// at once after a quiet period. Default: Overall.DefaultBurst().
	OverallBurst int

	// PerIdentity limits each identity (the key passed to Allow) on its own.
	// Default: no per-identity limit.
	PerIdentity Rate
	// PerIdentityBurst is each identity's bucket size.
	// Default: PerIdentity.DefaultBurst().
	PerIdentityBurst int

	// MaxIdentities caps how many identities the Limiter remembers at once,
	// which bounds its memory. Identities whose bucket has refilled are
	// forgotten anyway (they are indistinguishable from new ones); the cap
	// matters only when more identities than this are active within one
	// refill period. At the cap, the least recently seen identity is
	// forgotten to make room: if it calls again it starts with a full burst,
	// so under cap pressure an identity may exceed its limit by at most one
	// burst per time it is forgotten. The Overall limit is unaffected.
	// The cap is split evenly across internal shards, so forgetting may begin
	// slightly below MaxIdentities. Default: [DefaultMaxIdentities].
	MaxIdentities int
}

// Limiter enforces one route's limits. Build it with [New]; it is immutable
// apart from its buckets and safe for concurrent use by many goroutines.
//
// Memory is bounded: at most Options.MaxIdentities identities are
// remembered, and identities idle long enough for their bucket to refill are
// evicted a few at a time by later calls (or all at once by [Limiter.Sweep]).
// No call costs more than O(1) amortized.
type Limiter struct {
	opts Options // as given to New, for Options

	overall      *rate.Limiter // nil: no overall limit
	overallLimit rate.Limit

	perID     bool
	idLimit   rate.Limit
	idBurst   int
	idleAfter time.Duration // an identity idle this long has a full bucket again

	seed     maphash.Seed
	mask     uint64
	shardCap int
	shards   []shard
}

// shard is one independently locked part of the identity table: a map for
// lookup and an intrusive list in order of last use, most recent at head.
// Because every identity shares one refill time, the least recently used
// identity (at tail) is also the first to become idle, so idle eviction only
// ever looks at the tail.
type shard struct {
	mu         sync.Mutex
	m          map[string]*entry
	head, tail *entry
	_          [64]byte // keep neighbouring shards' locks off one cache line
}

type entry struct {
	key        string
	lim        *rate.Limiter
	lastSeen   time.Time
	prev, next *entry
}

// New compiles o into a Limiter. It returns an error wrapping
// [ErrInvalidOptions] if no limit is set, a burst is negative or set without
// its rate, or MaxIdentities is negative. New does no I/O and starts no
// goroutine; a Limiter needs no Close.
func New(o Options) (*Limiter, error) {
	var errs problem.List
	bad := func(path, format string, args ...any) { errs.AddErr(ErrInvalidOptions, path, format, args...) }
	if o.Overall.IsZero() && o.PerIdentity.IsZero() {
		bad("", "no limit set: set per_identity and/or overall (N/s, N/m or N/h), or omit rate_limit")
	}
	checkRate := func(name string, r Rate) {
		if !r.IsZero() && (r.Events < 1 || r.Events > MaxEvents || r.Per <= 0) {
			bad(name, "rate %s: want 1 to %d events per positive period", r, MaxEvents)
		}
	}
	checkRate("overall", o.Overall)
	checkRate("per_identity", o.PerIdentity)
	checkBurst := func(field, rateField string, b int, r Rate) {
		switch {
		case b < 0:
			bad(field, "%d: must be at least 1, or 0 for the default", b)
		case b > MaxEvents:
			bad(field, "%d: must be at most %d", b, MaxEvents)
		case b > 0 && r.IsZero():
			bad(field, "%d is set without a %s rate: set the rate or remove the burst", b, rateField)
		}
	}
	checkBurst("overall_burst", "overall", o.OverallBurst, o.Overall)
	checkBurst("burst", "per_identity", o.PerIdentityBurst, o.PerIdentity)
	switch {
	case o.MaxIdentities < 0:
		bad("max_identities", "%d: must be at least 1, or 0 for the default %d", o.MaxIdentities, DefaultMaxIdentities)
	case o.MaxIdentities > 0 && o.PerIdentity.IsZero():
		bad("max_identities", "has no per_identity rate to apply to: set per_identity too")
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}

	l := &Limiter{opts: o}
	if !o.Overall.IsZero() {
		l.overallLimit = o.Overall.Limit()
		l.overall = rate.NewLimiter(l.overallLimit, cmp.Or(o.OverallBurst, o.Overall.DefaultBurst()))
	}
	if !o.PerIdentity.IsZero() {
		l.perID = true
		l.idLimit = o.PerIdentity.Limit()
		l.idBurst = cmp.Or(o.PerIdentityBurst, o.PerIdentity.DefaultBurst())
		l.idleAfter = durationForTokens(float64(l.idBurst), l.idLimit)

		capacity := cmp.Or(o.MaxIdentities, DefaultMaxIdentities)
		// Largest power of two not above min(maxShards, capacity), so that
		// shards*shardCap never exceeds capacity and each shard holds one.
		n := 1 << (bits.Len(uint(min(maxShards, capacity))) - 1)
		l.shards = make([]shard, n)
		l.mask = uint64(n - 1)
		l.shardCap = capacity / n
		l.seed = maphash.MakeSeed()
		for i := range l.shards {
			l.shards[i].m = make(map[string]*entry)
		}
	}
	return l, nil
}

// Options returns the options l was built from, so the same limits can be
// counted elsewhere ([NewShared]).
func (l *Limiter) Options() Options { return l.opts }

// Allow reports whether a request from identity may proceed at time now,
// and takes a token from the identity's bucket and from the overall bucket
// if so. If not, retryAfter is how long until a request from identity could
// next be admitted, assuming no one else takes the tokens first; it is
// positive, and [RetryAfterSeconds] turns it into a Retry-After header value.
// A denied request takes no token from any bucket, so a caller hammering
// its own per-identity limit does not use up the route's overall limit.
// (One race is tolerated: if another goroutine takes the last overall token
// between this call's check and its take, the identity is charged for a
// denied request.)
//
// identity is an opaque key: a key id, or tenant and object id for a token.
// Every caller that passes the same string shares one bucket, including the
// empty string. It is used for hashing and as a map key; it is never logged.
// When the Limiter has no per-identity limit, identity is ignored.
//
// now is the time of the request, normally time.Now(); tests pass their own.
// Allow is safe for concurrent use and does not allocate for an identity it
// already remembers.
func (l *Limiter) Allow(identity string, now time.Time) (ok bool, retryAfter time.Duration) {
	if !l.perID {
		if l.overall.AllowN(now, 1) {
			return true, 0
		}
		return false, durationForTokens(1-l.overall.TokensAt(now), l.overallLimit)
	}
	if l.overall != nil {
		// Peek first, so a request the overall limit will refuse does not
		// take a token from the identity's bucket.
		if t := l.overall.TokensAt(now); t < 1 {
			return false, max(durationForTokens(1-t, l.overallLimit), l.peek(identity, now))
		}
	}
	if ok, wait := l.allowIdentity(identity, now); !ok {
		return false, wait
	}
	if l.overall != nil && !l.overall.AllowN(now, 1) {
		return false, durationForTokens(1-l.overall.TokensAt(now), l.overallLimit)
	}
	return true, 0
}

// allowIdentity finds or creates identity's bucket and takes a token from it.
func (l *Limiter) allowIdentity(identity string, now time.Time) (bool, time.Duration) {
	s := &l.shards[maphash.String(l.seed, identity)&l.mask]
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[identity]
	if e == nil {
		if len(s.m) >= l.shardCap {
			s.remove(s.tail) // at the cap: forget the least recently seen
		}
		e = &entry{key: identity, lim: rate.NewLimiter(l.idLimit, l.idBurst)}
		s.m[identity] = e
		s.pushFront(e)
	} else if e != s.head {
		s.unlink(e)
		s.pushFront(e)
	}
	if now.After(e.lastSeen) {
		e.lastSeen = now
	}
	s.evictIdle(now, l.idleAfter, sweepBudget)
	if e.lim.AllowN(now, 1) {
		return true, 0
	}
	return false, durationForTokens(1-e.lim.TokensAt(now), l.idLimit)
}

// peek returns how long identity would wait for a token, without creating a
// bucket for it or taking a token.
func (l *Limiter) peek(identity string, now time.Time) time.Duration {
	s := &l.shards[maphash.String(l.seed, identity)&l.mask]
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[identity]
	if e == nil {
		return 0
	}
	if t := e.lim.TokensAt(now); t < 1 {
		return durationForTokens(1-t, l.idLimit)
	}
	return 0
}

// Sweep forgets every identity whose bucket has refilled by now and returns
// how many it forgot. Allow already evicts a few idle identities per call, so
// Sweep is optional: call it from a ticker (a minute is plenty) to give back
// memory when traffic to the route stops altogether. It costs O(shards +
// evicted) and holds one shard's lock at a time.
func (l *Limiter) Sweep(now time.Time) int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += s.evictIdle(now, l.idleAfter, math.MaxInt)
		s.mu.Unlock()
	}
	return n
}

// Len returns how many identities are remembered now; at most
// Options.MaxIdentities. For tests and metrics.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// evictIdle removes up to budget identities from the tail whose bucket has
// refilled by now, stopping at the first that has not. s.mu must be held.
func (s *shard) evictIdle(now time.Time, idleAfter time.Duration, budget int) int {
	n := 0
	for n < budget && s.tail != nil && now.Sub(s.tail.lastSeen) >= idleAfter {
		s.remove(s.tail)
		n++
	}
	return n
}

func (s *shard) remove(e *entry) {
	s.unlink(e)
	delete(s.m, e.key)
}

func (s *shard) pushFront(e *entry) {
	e.prev, e.next = nil, s.head
	if s.head != nil {
		s.head.prev = e
	}
	s.head = e
	if s.tail == nil {
		s.tail = e
	}
}

func (s *shard) unlink(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		s.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

// durationForTokens is how long limit takes to accumulate tokens, rounded up
// to the nanosecond so that a caller who waits exactly this long finds the
// tokens there, and at least one nanosecond.
func durationForTokens(tokens float64, limit rate.Limit) time.Duration {
	if limit <= 0 {
		return time.Duration(math.MaxInt64)
	}
	ns := math.Ceil(tokens / float64(limit) * float64(time.Second))
	switch {
	case ns < 1:
		return 1
	case ns >= math.MaxInt64:
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(ns)
}
