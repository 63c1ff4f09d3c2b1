package ratelimit

import (
	"context"
	"hash/maphash"
	"math"
	"time"
)

// Check is Allow, reported as a [Verdict] with the bucket's size and what
// is left in it after this request (the identity's bucket when there is a
// per-identity limit, else the overall one), for the
// x-ratelimit-limit-requests and x-ratelimit-remaining-requests headers,
// so answers carry them whether limits count in memory or in a store.
// Nothing here blocks; ctx is unused.
func (l *Limiter) Check(_ context.Context, identity string, now time.Time) Verdict {
	ok, wait := l.Allow(identity, now)
	v := Verdict{OK: ok, RetryAfter: wait}
	if l.perID {
		v.Limit, v.Remaining = l.idBurst, l.left(identity, now)
	} else {
		v.Limit, v.Remaining = l.overall.Burst(), whole(l.overall.TokensAt(now))
	}
	return v
}

// left is how many whole tokens identity's bucket holds at now; a full
// bucket when it is not remembered.
func (l *Limiter) left(identity string, now time.Time) int {
	s := &l.shards[maphash.String(l.seed, identity)&l.mask]
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[identity]
	if e == nil {
		return l.idBurst
	}
	return whole(e.lim.TokensAt(now))
}

func whole(t float64) int {
	if t <= 0 {
		return 0
	}
	return int(math.Floor(t + 1e-9))
}
