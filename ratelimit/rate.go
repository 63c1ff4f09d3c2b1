// Package ratelimit enforces per-route request rate limits, overall and per
// identity, with token buckets from golang.org/x/time/rate.
//
// A route's limit is written "N/s", "N/m" or "N/h" (N events per second,
// minute or hour) with an optional burst. [ParseRate] turns the text into a
// [Rate]; [New] compiles a route's [Options] into an immutable
// [Limiter], safe for concurrent use, whose [Limiter.Allow] answers "may
// this identity call now, and if not, when?" so the proxy can answer 429
// with Retry-After (RFC 9110 §10.2.3, [RetryAfterSeconds]).
//
// Without a store, limits are per process: each gateway replica keeps its
// own buckets, so N replicas behind a load balancer admit up to N times the
// configured rate. With a [Store] (Redis, limits.store in the
// configuration), [Shared] counts the same limits in the store, so every
// replica draws on one budget; what happens while the store fails is the
// store's on_error.
package ratelimit

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// ErrInvalidRate is wrapped by every error [ParseRate] returns; test for it
// with errors.Is. The error text names the bad value and the accepted form.
var ErrInvalidRate = errors.New("invalid rate")

// MaxEvents bounds N in "N/unit". Larger values are rejected by [ParseRate]:
// they are almost certainly a typo, and a route that should not be limited
// should have no rate_limit at all.
const MaxEvents = 1_000_000_000

// Rate is a parsed rate: Events per Per. The zero Rate means "no limit" to
// [Options]; [ParseRate] never returns it. Rate is a plain value, safe to copy
// and compare.
type Rate struct {
	// Events is the number of events allowed per Per; at least 1.
	Events int
	// Per is the period: time.Second, time.Minute or time.Hour.
	Per time.Duration
}

// ParseRate parses "N/s", "N/m" or "N/h": N events per second, minute or hour,
// where N is a whole number from 1 to [MaxEvents]. Surrounding spaces are
// ignored; nothing else is accepted (no "5 per second", no "0/s", no "1.5/s").
// Every error wraps [ErrInvalidRate] and says what to write instead.
func ParseRate(s string) (Rate, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return Rate{}, fmt.Errorf("%w: empty: write N/s, N/m or N/h, e.g. \"5/s\"", ErrInvalidRate)
	}
	num, unit, ok := strings.Cut(t, "/")
	if !ok {
		return Rate{}, fmt.Errorf("%w %q: missing \"/unit\": write N/s, N/m or N/h, e.g. \"5/s\"", ErrInvalidRate, s)
	}
	per, ok := units[unit]
	if !ok {
		return Rate{}, fmt.Errorf("%w %q: unit %q is not one of s, m, h (per second, minute, hour)", ErrInvalidRate, s, unit)
	}
	// Digits only: strconv.Atoi would also take a sign, and "+5" or "-0" in a
	// config file is a mistake worth pointing out.
	if num == "" || strings.TrimLeft(num, "0123456789") != "" {
		return Rate{}, fmt.Errorf("%w %q: %q is not a whole number of events: write e.g. \"5/s\"", ErrInvalidRate, s, num)
	}
	n, err := strconv.Atoi(num)
	if err != nil || n > MaxEvents {
		return Rate{}, fmt.Errorf("%w %q: %s events is more than the maximum %d: omit rate_limit for an unlimited route", ErrInvalidRate, s, num, MaxEvents)
	}
	if n == 0 {
		return Rate{}, fmt.Errorf("%w %q: the number of events must be at least 1: omit rate_limit for an unlimited route", ErrInvalidRate, s)
	}
	return Rate{Events: n, Per: per}, nil
}

// units are the periods a rate may be written with.
var units = map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour}

// IsZero reports whether r is the zero Rate, which [Options] reads as "no
// limit".
func (r Rate) IsZero() bool { return r == Rate{} }

// Limit returns r as events per second for golang.org/x/time/rate. The zero
// Rate gives 0.
func (r Rate) Limit() rate.Limit {
	if r.Per <= 0 {
		return 0
	}
	return rate.Limit(float64(r.Events) / r.Per.Seconds())
}

// DefaultBurst is the burst used when none is configured: the number of
// events allowed in one second, rounded up, and at least 1. So "5/s" bursts
// to 5, "100/m" to 2 and "10/h" to 1: traffic is smoothed rather than allowed
// to spend a whole minute's or hour's budget at once. Configure a larger
// burst (e.g. burst: 100 for "100/m") for window-like behaviour.
func (r Rate) DefaultBurst() int {
	return int(min(max(math.Ceil(float64(r.Limit())), 1), MaxEvents))
}

// String formats r as ParseRate reads it ("5/s"); the zero Rate is "none".
func (r Rate) String() string {
	for unit, per := range units {
		if per == r.Per {
			return strconv.Itoa(r.Events) + "/" + unit
		}
	}
	if r.IsZero() {
		return "none"
	}
	return fmt.Sprintf("%d/%s", r.Events, r.Per)
}

// RetryAfterSeconds converts a wait from [Limiter.Allow] into the value of a
// Retry-After header (RFC 9110 §10.2.3): whole seconds, rounded up, at least
// 1, so a client that honours it is never early.
func RetryAfterSeconds(d time.Duration) int {
	s := d / time.Second
	if d%time.Second != 0 {
		s++
	}
	return int(min(max(s, 1), math.MaxInt32))
}
