package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/modelgate/modelgate/internal/problem"
)

// ErrInvalidTokenLimit is wrapped by every error [NewTokens] returns.
var ErrInvalidTokenLimit = errors.New("invalid token limit")

// TokenOptions configures a route's LLM token limit per identity.
//
// Config mapping (routes[].token_limit): per_minute → PerMinute, per_day →
// PerDay.
type TokenOptions struct {
	// PerMinute bounds the tokens one identity may use per UTC minute
	// (a fixed window). 0: no minute limit.
	PerMinute int64
	// PerDay bounds the tokens one identity may use per UTC day. 0: no
	// day limit.
	PerDay int64
}

// TokenVerdict is a token limit's answer for one request.
type TokenVerdict struct {
	// OK admits the request: the identity has tokens left in every window.
	OK bool
	// RetryAfter, when !OK, is how long until the exhausted window ends.
	RetryAfter time.Duration
	// Unavailable: the store failed and on_error is deny (503).
	Unavailable bool
	// Limit and Remaining describe the window with the least left, for
	// x-ratelimit-limit-tokens and x-ratelimit-remaining-tokens.
	Limit, Remaining int64
}

// Tokens enforces a route's token limit: admission checks what the
// identity has used so far in each window, and Charge adds an answer's
// usage once it is known (Azure API Management and Envoy AI Gateway work
// the same way), so one request may overshoot the limit by its own
// usage, never more. Counters live in a [Store] when one is given (Redis
// keys modelgate:tl:{ROUTE}:HASH:m:MINUTE and :d:DAY, expiring after their
// window), else in memory per replica. Safe for concurrent use.
type Tokens struct {
	o      TokenOptions
	store  *Store
	prefix string

	mu  sync.Mutex
	mem map[string]*tokenUse // identity → use, for the in-memory counters and on_error local

	sweptDay int64 // the day makeRoom last dropped ended days
}

type tokenUse struct {
	minute, day         int64 // window numbers: unix minute, unix day
	usedMinute, usedDay int64
}

// NewTokens validates o and builds the limiter; store may be nil for
// in-memory counters. route names the route in Redis keys.
func NewTokens(o TokenOptions, store *Store, route string) (*Tokens, error) {
	var errs problem.List
	if o.PerMinute < 0 {
		errs.AddErr(ErrInvalidTokenLimit, "per_minute", "%d: must be positive, or 0 for no minute limit", o.PerMinute)
	}
	if o.PerDay < 0 {
		errs.AddErr(ErrInvalidTokenLimit, "per_day", "%d: must be positive, or 0 for no day limit", o.PerDay)
	}
	if o.PerMinute == 0 && o.PerDay == 0 {
		errs.AddErr(ErrInvalidTokenLimit, "", "no limit set: set per_minute and/or per_day, or omit token_limit")
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return &Tokens{o: o, store: store, prefix: keyPrefix + "tl:{" + route + "}:", mem: map[string]*tokenUse{}}, nil
}

// Check reports whether identity has tokens left in every window at now.
func (l *Tokens) Check(ctx context.Context, identity string, now time.Time) TokenVerdict {
	if l.store == nil {
		m, d := l.memUsed(identity, now)
		return l.verdict(m, d, now)
	}
	if l.store.usable() {
		m, d, err := l.storeUsed(ctx, identity, now)
		if err == nil {
			l.store.ok()
			return l.verdict(m, d, now)
		}
		if ctx.Err() != nil {
			return TokenVerdict{RetryAfter: time.Second}
		}
		l.store.fail(err)
	}
	switch l.store.onError {
	case OnErrorAllow:
		return TokenVerdict{OK: true}
	case OnErrorDeny:
		return TokenVerdict{Unavailable: true, RetryAfter: time.Second}
	}
	m, d := l.memUsed(identity, now)
	return l.verdict(m, d, now)
}

// Charge adds n tokens to identity's windows at now. With a store it
// waits at most the store's timeout; a failed charge is counted as a
// store failure and, with on_error local, charged in memory instead.
func (l *Tokens) Charge(ctx context.Context, identity string, n int64, now time.Time) {
	if n <= 0 {
		return
	}
	if l.store != nil && l.store.usable() {
		err := l.storeCharge(ctx, identity, n, now)
		if err == nil {
			l.store.ok()
			return
		}
		l.store.fail(err)
	}
	if l.store == nil || l.store.onError == OnErrorLocal {
		l.memCharge(identity, n, now)
	}
}

func (l *Tokens) verdict(usedMinute, usedDay int64, now time.Time) TokenVerdict {
	v := TokenVerdict{OK: true, Limit: -1}
	consider := func(limit, used int64, end time.Time) {
		if limit == 0 {
			return
		}
		rem := max(limit-used, 0)
		if v.Limit < 0 || rem < v.Remaining {
			v.Limit, v.Remaining = limit, rem
		}
		if rem == 0 {
			v.OK = false
			v.RetryAfter = max(v.RetryAfter, end.Sub(now))
		}
	}
	u := now.Unix()
	consider(l.o.PerMinute, usedMinute, time.Unix((u/60+1)*60, 0))
	consider(l.o.PerDay, usedDay, time.Unix((u/86400+1)*86400, 0))
	if v.Limit < 0 {
		v.Limit = 0
	}
	return v
}

// memUsed returns identity's use in the current windows, in memory.
func (l *Tokens) memUsed(identity string, now time.Time) (int64, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.mem[identity]
	if e == nil {
		return 0, 0
	}
	l.roll(e, now)
	return e.usedMinute, e.usedDay
}

func (l *Tokens) memCharge(identity string, n int64, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.mem[identity]
	if e == nil {
		if len(l.mem) >= DefaultMaxIdentities {
			l.makeRoom(now)
		}
		e = &tokenUse{}
		l.mem[identity] = e
	}
	l.roll(e, now)
	e.usedMinute += n
	e.usedDay += n
}

// roll starts new windows for e when now is past its current ones.
func (*Tokens) roll(e *tokenUse, now time.Time) {
	m, d := now.Unix()/60, now.Unix()/86400
	if e.minute != m {
		e.minute, e.usedMinute = m, 0
	}
	if e.day != d {
		e.day, e.usedDay = d, 0
	}
}

// makeRoom frees a slot when the counters are full; l.mu is held. Once a
// day it forgets identities whose day has ended (one pass); past that, it
// forgets one identity at random, so memory stays bounded under any number
// of callers at the price of that caller's count (as the request limiter
// forgets idle buckets).
func (l *Tokens) makeRoom(now time.Time) {
	if d := now.Unix() / 86400; d != l.sweptDay {
		l.sweptDay = d
		for k, e := range l.mem {
			if e.day != d {
				delete(l.mem, k)
			}
		}
	}
	if len(l.mem) < DefaultMaxIdentities {
		return
	}
	for k := range l.mem {
		delete(l.mem, k)
		return
	}
}

// keys returns identity's minute and day counter keys at now.
func (l *Tokens) keys(identity string, now time.Time) (minute, day string) {
	base := l.prefix + identityHash(identity)
	u := now.Unix()
	return base + ":m:" + strconv.FormatInt(u/60, 10), base + ":d:" + strconv.FormatInt(u/86400, 10)
}

func (l *Tokens) storeUsed(ctx context.Context, identity string, now time.Time) (int64, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, l.store.timeout)
	defer cancel()
	km, kd := l.keys(identity, now)
	vals, err := l.store.rdb.MGet(ctx, km, kd).Result()
	if err != nil {
		return 0, 0, err
	}
	num := func(v any) int64 {
		s, _ := v.(string)
		n, _ := strconv.ParseInt(s, 10, 64)
		return n
	}
	return num(vals[0]), num(vals[1]), nil
}

// charge adds ARGV[1] to each key and makes it expire after ARGV[1+i]
// seconds, atomically: a counter never exists without its expiry.
var charge = redis.NewScript(`
for i = 1, #KEYS do
  redis.call("INCRBY", KEYS[i], ARGV[1])
  redis.call("EXPIRE", KEYS[i], ARGV[1+i])
end
return 1
`)

func (l *Tokens) storeCharge(ctx context.Context, identity string, n int64, now time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, l.store.timeout)
	defer cancel()
	km, kd := l.keys(identity, now)
	// Each counter outlives its window a little, for clock skew between
	// replicas.
	return charge.Run(ctx, l.store.rdb, []string{km, kd}, n, 120, 2*86400).Err()
}
