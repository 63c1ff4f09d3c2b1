package pool

import "time"

// State is a backend's breaker state.
type State uint8

const (
	// Closed: the backend takes traffic.
	Closed State = iota
	// Open: the backend is skipped until BackendState.OpenUntil.
	Open
	// HalfOpen: an open period that failures (not a Retry-After) caused has
	// ended, and no try has succeeded since. The backend takes traffic
	// again, but its very next counted failure opens it for another
	// open_for; a success closes it. There is no single-trial gate: every
	// request in the window may try it, and a failed try costs that request
	// one retry on another backend.
	HalfOpen
)

// String returns "closed", "open" or "half-open", for logs and metric labels.
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half-open"
	}
	return "unknown"
}

// BackendState is a snapshot of one backend for metrics and readiness.
type BackendState struct {
	Name     string
	Priority int
	Weight   int
	// State is the breaker's.
	State State
	// Available reports whether Pick could choose the backend now: weight
	// above 0, breaker not open, and Options.Usable says so.
	Available bool
	// ConsecutiveFailures counts retry.on failures since the last success.
	ConsecutiveFailures int
	// OpenUntil is when an open breaker closes; zero unless State is Open.
	OpenUntil time.Time
	// LastError describes the most recent failure, throttle or failed
	// probe, kept after the breaker closes; "" if there was none.
	LastError   string
	LastErrorAt time.Time
}

// Report records the outcome of a try of backend i (or use
// [Attempts.Record], which calls it):
//
//   - a 429 or 503 with a Retry-After opens the backend for exactly that
//     long, capped by circuit_breaker.max_open_for; it is not counted as a
//     failure, so it never keeps the backend open longer than asked, and
//     a later success does not cut the wait short;
//   - a condition listed in retry.on counts; consecutive_failures in a row
//     open the backend for open_for, and once open, every further counted
//     failure (including the first after the period, see [HalfOpen])
//     opens it for open_for from then;
//   - any other 5xx, and conditions not in retry.on, are neutral;
//   - anything else is a success: the count resets and a breaker opened by
//     failures closes.
//
// Report is safe for concurrent use; it allocates only to keep a failure's
// text.
func (p *Pool) Report(i int, o Outcome) {
	b := p.backends[i]
	now := p.now()
	switch {
	case o.throttled():
		d := min(o.RetryAfter, p.maxOpenFor)
		b.mu.Lock()
		b.throttledUntil = max(b.throttledUntil, now+int64(d))
		b.noteErr(o.describe(), now)
	case o.Cond&p.on != 0:
		b.mu.Lock()
		b.failures++
		if b.failures >= p.threshold {
			b.brokenUntil = now + int64(p.openFor)
		}
		b.noteErr(o.describe(), now)
	case o.Cond != 0 || o.Status >= 500:
		return
	default:
		b.mu.Lock()
		if b.failures == 0 && b.brokenUntil == 0 {
			b.mu.Unlock()
			return // the common case: nothing to reset
		}
		b.failures, b.brokenUntil = 0, 0
	}
	b.openUntil.Store(max(b.brokenUntil, b.throttledUntil))
	b.mu.Unlock()
}

// probed records a health check's verdict on backend i: a pass closes the
// breaker like a success, a failure opens it for open_for at once.
func (p *Pool) probed(i int, up bool, why string) {
	b := p.backends[i]
	now := p.now()
	b.mu.Lock()
	if up {
		b.failures, b.brokenUntil = 0, 0
	} else {
		b.failures = max(b.failures+1, p.threshold)
		b.brokenUntil = now + int64(p.openFor)
		b.noteErr(why, now)
	}
	b.openUntil.Store(max(b.brokenUntil, b.throttledUntil))
	b.mu.Unlock()
}

func (b *backend) noteErr(s string, now int64) { b.lastErr, b.lastErrAt = s, now }

// State returns a snapshot of backend i.
func (p *Pool) State(i int) BackendState {
	b := p.backends[i]
	now := p.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	s := BackendState{
		Name:                b.name,
		Priority:            b.priority,
		Weight:              b.weight,
		ConsecutiveFailures: b.failures,
		LastError:           b.lastErr,
	}
	if b.lastErr != "" {
		s.LastErrorAt = p.at(b.lastErrAt)
	}
	switch until := max(b.brokenUntil, b.throttledUntil); {
	case until > now:
		s.State, s.OpenUntil = Open, p.at(until)
	case b.failures >= p.threshold:
		s.State = HalfOpen
	}
	s.Available = b.weight > 0 && s.State != Open && (p.usable == nil || p.usable(i))
	return s
}

// SoonestAvailable returns when the first open backend that takes traffic
// (weight above 0) closes: the Retry-After of an exhausted pool's 503. It
// returns the zero Time when no such backend is open, in which case the
// pool is unavailable for reasons it cannot time (Options.Usable) and the
// caller chooses the wait. Backends that Usable rejects are not counted.
func (p *Pool) SoonestAvailable() time.Time {
	now := p.now()
	soonest := int64(-1)
	for i, b := range p.backends {
		until := b.openUntil.Load()
		if b.weight == 0 || until <= now || (p.usable != nil && !p.usable(i)) {
			continue
		}
		if soonest < 0 || until < soonest {
			soonest = until
		}
	}
	if soonest < 0 {
		return time.Time{}
	}
	return p.at(soonest)
}
