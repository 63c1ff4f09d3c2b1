package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Verdict is one limit check's answer, from a limiter that reports more
// than Allow does.
type Verdict struct {
	// OK admits the request.
	OK bool
	// RetryAfter, when !OK, is how long until the request could pass.
	RetryAfter time.Duration
	// Unavailable means the store failed and on_error is deny: answer 503.
	Unavailable bool
	// Limit and Remaining are the request bucket's size and what is left
	// in it after this request, for x-ratelimit-limit-requests and
	// x-ratelimit-remaining-requests. Limit 0: not known (no headers).
	Limit, Remaining int
}

// gcra is GCRA over one or two keys in one call, after
// github.com/go-redis/redis_rate/v10's allowN (BSD-2-Clause): a request is
// admitted only when every key admits it, and only then charged to all of
// them, so a caller refused by its own limit takes nothing from the
// route's overall limit, and the pair costs one round trip. It runs on
// Redis's clock (TIME), which every replica shares.
//
// KEYS[i] holds a limit's theoretical arrival time, in seconds since
// 2017-01-01 (the epoch keeps the float exact to about 10 µs). ARGV[2i-1]
// is the emission interval (seconds per request), ARGV[2i] the burst.
// Returns {admitted 0|1, retry_after seconds as a string, remaining per key}.
// Every key written expires when its bucket is full again (at least 1 ms
// later: at very high rates an emission interval vanishes in the float's
// precision and the bucket is always full).
var gcra = redis.NewScript(`
local t = redis.call("TIME")
local now = (t[1] - 1483228800) + (t[2] / 1000000)
local out = {1, "0"}
local new = {}
local retry = 0
for i = 1, #KEYS do
  local ei = tonumber(ARGV[2*i-1])
  local burst = tonumber(ARGV[2*i])
  local tat = tonumber(redis.call("GET", KEYS[i])) or now
  if tat < now then tat = now end
  local new_tat = tat + ei
  local diff = now - (new_tat - ei * burst)
  if diff < 0 then
    out[1] = 0
    if -diff > retry then retry = -diff end
    out[2+i] = 0
  else
    out[2+i] = math.floor(diff / ei + 1e-9)
  end
  new[i] = new_tat
end
if out[1] == 0 then
  out[2] = tostring(retry)
  return out
end
for i = 1, #KEYS do
  redis.call("SET", KEYS[i], new[i], "PX", math.max(1, math.ceil((new[i] - now) * 1000)))
end
return out
`)

// Shared enforces a route's request limits in a [Store], so every replica
// counts against one budget; it falls back to Local (this replica's
// memory) when the store fails and on_error is local. Build it with
// [NewShared]; it is immutable and safe for concurrent use.
//
// Redis keys: modelgate:rl:{ROUTE}:id:HASH per identity, where HASH is the
// first 32 hex digits of the identity's SHA-256 (nothing in Redis names a
// caller), and modelgate:rl:{ROUTE}:all for the overall limit; the braces
// keep a route's keys in one hash slot.
type Shared struct {
	store *Store
	local *Limiter

	idPrefix string // "" when there is no per-identity limit
	idArgs   [2]string
	allKey   string // "" when there is no overall limit
	allArgs  [2]string

	limit int // the bucket reported in headers: per identity, else overall
}

// NewShared builds the store-backed form of the limits o describes (o must
// be valid: local is New(o)'s result, used when the store fails and
// on_error is local). route names the route in Redis keys.
func NewShared(store *Store, route string, o Options, local *Limiter) *Shared {
	l := &Shared{store: store, local: local}
	base := keyPrefix + "rl:{" + route + "}:"
	args := func(r Rate, burst int) [2]string {
		if burst == 0 {
			burst = r.DefaultBurst()
		}
		ei := r.Per.Seconds() / float64(r.Events)
		return [2]string{strconv.FormatFloat(ei, 'g', -1, 64), strconv.Itoa(burst)}
	}
	if !o.Overall.IsZero() {
		l.allKey = base + "all"
		l.allArgs = args(o.Overall, o.OverallBurst)
		l.limit, _ = strconv.Atoi(l.allArgs[1])
	}
	if !o.PerIdentity.IsZero() {
		l.idPrefix = base + "id:"
		l.idArgs = args(o.PerIdentity, o.PerIdentityBurst)
		l.limit, _ = strconv.Atoi(l.idArgs[1])
	}
	return l
}

// Allow is Check without a caller's context, for the [Limiter]-shaped
// interface; it still waits at most the store's timeout.
func (l *Shared) Allow(identity string, now time.Time) (bool, time.Duration) {
	v := l.Check(context.Background(), identity, now)
	return v.OK, v.RetryAfter
}

// Check counts one request from identity against the route's limits in
// the store, in one round trip, waiting at most the store's timeout. When
// the store fails or is backing off, on_error decides: local asks Local
// (now is its clock), allow admits, deny answers Unavailable.
func (l *Shared) Check(ctx context.Context, identity string, now time.Time) Verdict {
	if l.store.usable() {
		v, err := l.check(ctx, identity)
		if err == nil {
			l.store.ok()
			return v
		}
		if ctx.Err() != nil {
			// The caller went away: not the store's fault.
			return Verdict{OK: false, RetryAfter: time.Second}
		}
		l.store.fail(err)
	}
	switch l.store.onError {
	case OnErrorAllow:
		return Verdict{OK: true}
	case OnErrorDeny:
		return Verdict{Unavailable: true, RetryAfter: time.Second}
	}
	return l.local.Check(ctx, identity, now)
}

func (l *Shared) check(ctx context.Context, identity string) (Verdict, error) {
	ctx, cancel := context.WithTimeout(ctx, l.store.timeout)
	defer cancel()
	keys := make([]string, 0, 2)
	argv := make([]any, 0, 4)
	if l.idPrefix != "" {
		keys = append(keys, l.idPrefix+identityHash(identity))
		argv = append(argv, l.idArgs[0], l.idArgs[1])
	}
	if l.allKey != "" {
		keys = append(keys, l.allKey)
		argv = append(argv, l.allArgs[0], l.allArgs[1])
	}
	res, err := gcra.Run(ctx, l.store.rdb, keys, argv...).Slice()
	if err != nil {
		return Verdict{}, err
	}
	if len(res) != 2+len(keys) {
		return Verdict{}, fmt.Errorf("limits store: unexpected answer %v", res)
	}
	admitted, _ := res[0].(int64)
	v := Verdict{OK: admitted == 1, Limit: l.limit}
	// The first key is the per-identity one when there is one: its bucket
	// is what the headers report.
	if rem, ok := res[2].(int64); ok {
		v.Remaining = int(rem)
	}
	if !v.OK {
		s, _ := res[1].(string)
		secs, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return Verdict{}, fmt.Errorf("limits store: bad retry_after %q", s)
		}
		v.RetryAfter = max(time.Duration(secs*float64(time.Second)), time.Millisecond)
	}
	return v, nil
}

// identityHash names an identity in store keys: the first 16 bytes of its
// SHA-256, in hex. Nothing in Redis is a key id, an object id or a secret.
func identityHash(identity string) string {
	sum := sha256.Sum256([]byte(identity))
	return hex.EncodeToString(sum[:16])
}
