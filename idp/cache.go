package idp

import (
	"crypto/sha256"
	"sync"
	"time"
)

// cache remembers successful verifications, keyed by the SHA-256 of the raw
// token, so that a client reusing its token (the normal case: Azure AD
// tokens live an hour) costs a hash and a map lookup instead of an RSA
// verification.
//
// Only successes are cached: a refused token is re-verified every time, so
// a cache can never turn a transient refusal into a lasting one, and
// garbage tokens cannot fill it. An entry is used only while its key
// generation is the provider's current one (any change of keys or issuer
// invalidates every entry) and the caller re-checks exp/nbf/iat on every
// hit, so an entry never outlives its token. Size is bounded: when full, an
// expired or stale entry among a few sampled is evicted, else a random one
// (Go randomizes map iteration order), which costs O(1) and cannot be
// steered into evicting a chosen victim.
type cache struct {
	max int

	mu sync.RWMutex
	m  map[[sha256.Size]byte]cacheEntry
}

type cacheEntry struct {
	claims *Claims
	gen    uint64
	until  time.Time // exp plus leeway: useless after this
}

func newCache(size int) *cache {
	return &cache{max: size, m: make(map[[sha256.Size]byte]cacheEntry)}
}

func (c *cache) get(key [sha256.Size]byte, gen uint64) (*Claims, bool) {
	c.mu.RLock()
	e, ok := c.m[key]
	c.mu.RUnlock()
	if !ok || e.gen != gen {
		return nil, false
	}
	return e.claims, true
}

func (c *cache) put(key [sha256.Size]byte, e cacheEntry, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[key]; !ok && len(c.m) >= c.max {
		c.evictLocked(e.gen, now)
	}
	c.m[key] = e
}

// evictLocked removes one entry: the first expired or stale one among a
// small sample, else the first one sampled.
func (c *cache) evictLocked(gen uint64, now time.Time) {
	var victim [sha256.Size]byte
	n := 0
	for k, e := range c.m {
		if n == 0 {
			victim = k
		}
		if e.gen != gen || !now.Before(e.until) {
			victim = k
			break
		}
		n++
		if n >= evictionSampleSize {
			break
		}
	}
	delete(c.m, victim)
}

func (c *cache) remove(key [sha256.Size]byte) {
	c.mu.Lock()
	delete(c.m, key)
	c.mu.Unlock()
}

func (c *cache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
