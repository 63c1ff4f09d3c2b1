package pool

import "time"

// Attempts is the bookkeeping of one request's tries. Get one from
// [Pool.Attempts] per request and keep it in a local variable; it is not
// safe for concurrent use, and it does not allocate. The proxy's loop is:
//
//	a := p.Attempts()
//	for {
//		i, ok := a.Next()
//		if !ok {
//			// a.Tries() == 0: every backend is known unavailable; answer
//			// 503 upstream_unavailable without trying, Retry-After from
//			// p.SoonestAvailable().
//		}
//		o := send(i) // pool.Response or pool.Failure
//		a.Record(i, o)
//		if !a.Retry(bodyReplayable, wroteToClient) {
//			// pass the answer on; if a.AllThrottled() gives a wait, it is
//			// the smallest Retry-After of every backend's 429.
//		}
//	}
type Attempts struct {
	pool     *Pool
	tried    uint64
	n        int
	last     Outcome
	all429   bool
	minWait  time.Duration
	haveWait bool
}

// Attempts starts the bookkeeping of one request.
func (p *Pool) Attempts() Attempts { return Attempts{pool: p, all429: true} }

// Next chooses the backend for the next try and marks it tried. It follows
// [Pool.Pick] with the backends this request already tried excluded; when
// every available backend has been tried (retry.attempts exceeds them) it
// picks among all available ones again. ok is false when no backend is
// available: on the first call, the pool is known unavailable.
func (a *Attempts) Next() (backend int, ok bool) {
	i, ok := a.pool.Pick(a.tried)
	if !ok && a.tried != 0 {
		i, ok = a.pool.Pick(0)
	}
	if !ok {
		return -1, false
	}
	a.tried |= 1 << i
	a.n++
	return i, true
}

// Record reports how the try of backend i went, to this bookkeeping and to
// the backend's breaker ([Pool.Report]).
func (a *Attempts) Record(i int, o Outcome) {
	a.pool.Report(i, o)
	a.last = o
	if o.Status != 429 {
		a.all429 = false
	} else if o.HasRetryAfter && (!a.haveWait || o.RetryAfter < a.minWait) {
		a.minWait, a.haveWait = o.RetryAfter, true
	}
}

// Retry reports whether the request should be tried again after the
// outcome last recorded: a try is left (retry.attempts), the outcome's
// condition is listed in retry.on, the caller can send the body again
// byte for byte (replayable: it was buffered), nothing of the answer has
// reached the client yet (written false), and some backend is available.
// When it returns false the caller passes the last answer on (or, after a
// failure without an answer, reports it).
func (a *Attempts) Retry(replayable, written bool) bool {
	p := a.pool
	if a.n >= p.attempts || a.last.Cond&p.on == 0 || !replayable || written {
		return false
	}
	return p.available(0, p.now()) != 0
}

// Tries returns how many backends Next has handed out.
func (a *Attempts) Tries() int { return a.n }

// Tried returns the set of backends tried, bit i for backend i.
func (a *Attempts) Tried() uint64 { return a.tried }

// Last returns the outcome last recorded.
func (a *Attempts) Last() Outcome { return a.last }

// AllThrottled reports whether every try so far answered 429 and, if so,
// the smallest Retry-After among them: the one the client gets, since no
// backend could serve it sooner. ok is false when a try answered anything
// else, or no 429 carried a Retry-After.
func (a *Attempts) AllThrottled() (wait time.Duration, ok bool) {
	if a.n == 0 || !a.all429 || !a.haveWait {
		return 0, false
	}
	return a.minWait, true
}
