package credential

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// expiryDelta is how long before its hard expiry a credential stops being
// handed out, so that one handed out just in time does not expire in transit
// to the upstream. It plays the role of x/oauth2's expiryDelta.
const expiryDelta = 10 * time.Second

// minRefreshDelay is the shortest time to the next scheduled refresh after a
// success, so that a token service handing out refresh hints in the past
// cannot make the engine spin.
const minRefreshDelay = time.Second

// RefreshPolicy tunes the refresh engine shared by every fetching source. The
// zero value means the documented defaults.
type RefreshPolicy struct {
	// MinBackoff is the delay before the first retry after a failed fetch.
	// It doubles with every consecutive failure up to MaxBackoff.
	// Default: 1s.
	MinBackoff time.Duration
	// MaxBackoff caps the retry delay. Default: 2m.
	MaxBackoff time.Duration
	// Rand returns a number in [0, 1) used for jitter: a retry waits
	// between half and all of the current backoff. Default: math/rand/v2.
	// Tests inject a constant. Must be safe for concurrent use.
	Rand func() float64
	// FetchTimeout bounds one fetch, including getting the gateway's own
	// Azure AD token. Default: 30s.
	FetchTimeout time.Duration
	// RejectInterval is the minimum time between two fetches triggered by
	// Rejected (upstream 401s), so that a misbehaving upstream cannot make
	// the gateway hammer the control plane. Default: 5s.
	RejectInterval time.Duration
	// RefreshAhead applies to credentials that expire but carry no refresh
	// hint: they are refreshed this long before expiry, or at half their
	// remaining lifetime when that is shorter than twice RefreshAhead.
	// Default: 5m.
	RefreshAhead time.Duration
	// Tracer, when not nil, records each fetch as a span (name, type,
	// outcome, validity; never the credential).
	Tracer trace.Tracer
}

func (p RefreshPolicy) withDefaults() RefreshPolicy {
	for _, f := range [...]struct {
		d   *time.Duration
		def time.Duration
	}{{&p.MinBackoff, time.Second}, {&p.MaxBackoff, 2 * time.Minute}, {&p.FetchTimeout, 30 * time.Second},
		{&p.RejectInterval, 5 * time.Second}, {&p.RefreshAhead, 5 * time.Minute}} {
		if *f.d <= 0 {
			*f.d = f.def
		}
	}
	p.MaxBackoff = max(p.MaxBackoff, p.MinBackoff)
	if p.Rand == nil {
		p.Rand = rand.Float64
	}
	return p
}

// backoff returns the jittered delay before retry number n (n >= 1).
func (p RefreshPolicy) backoff(n int) time.Duration {
	d := p.MinBackoff
	for i := 1; i < n && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	r := p.Rand()
	if r < 0 || r >= 1 {
		r = 0.5
	}
	return d/2 + time.Duration(r*float64(d/2))
}

// lifetime is when a fetched value should be refreshed and when it expires.
// A zero expiresAt means it does not expire; then the engine refetches every
// refresher.interval, if set.
type lifetime struct {
	refreshAt, expiresAt time.Time
}

// entry is one successfully fetched value.
type entry[T any] struct {
	val       T
	seq       uint64 // 1 for the first fetch, +1 for every success
	fetchedAt time.Time
	lifetime
}

// flight is one fetch in progress; done is closed when it ends.
type flight struct {
	done chan struct{}
	err  error
}

// errRateLimited and errBackingOff explain why Rejected did not refetch.
var (
	errRateLimited = errors.New("refetch rate-limited")
	errBackingOff  = errors.New("backing off after failed fetches")
)

// refresher is the refresh engine: it caches one fetched value of type T,
// refreshes it in the background ahead of expiry, keeps one fetch in flight,
// backs off on failure and keeps serving the cached value while it is valid.
//
// Locking: mu guards everything below it. Fetches run without mu held, in a
// goroutine of their own with a context derived from the engine's, so that a
// caller giving up does not cancel a fetch other callers wait for.
type refresher[T any] struct {
	refresherConfig[T]

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	waiters atomic.Int64 // callers blocked on a flight; for tests

	mu          sync.Mutex
	cur         *entry[T]
	seq         uint64
	rejectedSeq uint64 // seq of cur reported by Rejected; callers wait for the refetch
	fl          *flight
	timerGen    uint64
	stopTimer   func() bool
	nextRefresh time.Time
	retryAt     time.Time // no on-demand or Rejected fetch before this
	lastForced  time.Time
	consecutive int
	lastErr     error
	lastErrAt   time.Time
	lastRefresh time.Time
	refreshes   uint64
	failures    uint64
	started     bool
	closed      bool
}

// refresherConfig is what a source tells the engine.
type refresherConfig[T any] struct {
	name, kind string
	fetch      func(context.Context) (T, lifetime, error)
	describe   func(T) []slog.Attr // safe attributes for the refresh log line
	interval   time.Duration       // refetch period for values that do not expire
	clock      Clock
	log        *slog.Logger
	pol        RefreshPolicy
}

func newRefresher[T any](c refresherConfig[T]) *refresher[T] {
	c.clock = cmp.Or(c.clock, SystemClock())
	if c.describe == nil {
		c.describe = func(T) []slog.Attr { return nil }
	}
	c.log = cmp.Or(c.log, slog.New(slog.DiscardHandler)).With(slog.String("source", c.name), slog.String("type", c.kind))
	c.pol = c.pol.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &refresher[T]{refresherConfig: c, ctx: ctx, cancel: cancel}
}

// engine gives a fetching source the lifecycle and the Usable check of its
// refresh engine.
type engine[T any] struct{ r *refresher[T] }

// Start begins the first fetch in the background.
func (e engine[T]) Start() { e.r.start() }

// Close stops refreshing and waits for a fetch in flight to return.
func (e engine[T]) Close() error {
	e.r.close()
	return nil
}

// Usable reports, without fetching or allocating, whether the source holds
// a credential it may hand out now (for pools, which skip a backend whose
// credential is unavailable).
func (e engine[T]) Usable() bool {
	_, ok := e.r.peek()
	return ok
}

// start begins the first fetch without waiting for it.
func (r *refresher[T]) start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.closed {
		return
	}
	r.started = true
	if r.fl == nil && r.cur == nil {
		r.beginLocked()
	}
}

// close stops the engine and waits for a fetch in flight to return.
func (r *refresher[T]) close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	r.timerGen++
	if r.stopTimer != nil {
		r.stopTimer()
		r.stopTimer = nil
	}
	r.nextRefresh = time.Time{}
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
}

// validLocked reports whether cur may be handed out at now.
func (r *refresher[T]) validLocked(now time.Time) bool {
	return r.cur != nil && (r.cur.expiresAt.IsZero() || now.Add(expiryDelta).Before(r.cur.expiresAt))
}

func (r *refresher[T]) unavailableLocked(err error) *UnavailableError {
	e := &UnavailableError{Source: r.name, Err: err}
	if r.cur != nil {
		e.ExpiredAt = r.cur.expiresAt
	}
	if !r.closed && r.fl == nil {
		e.RetryAt = r.nextRefresh
	}
	if e.Err == nil {
		e.Err = r.lastErr
	}
	if e.Err == nil {
		e.Err = errors.New("no credential fetched yet")
	}
	return e
}

// get returns the cached value when it is valid, and otherwise waits,
// bounded by ctx, for a fetch: the one in flight, or a new one unless the
// engine is backing off after failures.
func (r *refresher[T]) get(ctx context.Context) (entry[T], error) {
	r.mu.Lock()
	if r.closed {
		err := r.unavailableLocked(ErrClosed)
		r.mu.Unlock()
		return entry[T]{}, err
	}
	now := r.clock.Now()
	valid := r.validLocked(now)
	// A credential reported by Rejected is held back only while its refetch
	// is in flight; if the refetch fails it is served again while valid,
	// because a spurious 401 should not turn into 503s for the whole route.
	if valid && !(r.fl != nil && r.rejectedSeq == r.cur.seq) {
		e := *r.cur
		r.mu.Unlock()
		return e, nil
	}
	fl := r.fl
	if fl == nil {
		if now.Before(r.retryAt) {
			err := r.unavailableLocked(nil)
			r.mu.Unlock()
			return entry[T]{}, err
		}
		fl = r.beginLocked()
	}
	r.mu.Unlock()
	if err := r.wait(ctx, fl); err != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
		return entry[T]{}, r.unavailableLocked(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.validLocked(r.clock.Now()) {
		return *r.cur, nil
	}
	return entry[T]{}, r.unavailableLocked(fl.err)
}

// peek returns the cached value and whether it is valid now, without
// fetching.
func (r *refresher[T]) peek() (entry[T], bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur == nil {
		return entry[T]{}, false
	}
	return *r.cur, !r.closed && r.validLocked(r.clock.Now())
}

// refreshNow refetches because the value with sequence number seen was
// rejected upstream. When a newer value already exists it returns that
// without fetching; when a fetch is in flight it joins it; otherwise it
// starts one unless the engine is backing off or a Rejected-triggered fetch
// happened less than RejectInterval ago. It returns the current value,
// whether that value is valid, and why no fetch happened (if so).
func (r *refresher[T]) refreshNow(ctx context.Context, seen uint64) (entry[T], bool, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return entry[T]{}, false, ErrClosed
	}
	if r.cur != nil && r.cur.seq > seen {
		e, ok := *r.cur, r.validLocked(r.clock.Now())
		r.mu.Unlock()
		return e, ok, nil
	}
	if r.cur != nil && r.cur.seq == seen {
		r.rejectedSeq = seen
	}
	fl := r.fl
	if fl == nil {
		now := r.clock.Now()
		var why error
		switch {
		case now.Before(r.retryAt):
			why = errBackingOff
		case !r.lastForced.IsZero() && now.Sub(r.lastForced) < r.pol.RejectInterval:
			why = errRateLimited
		}
		if why != nil {
			var e entry[T]
			if r.cur != nil {
				e = *r.cur
			}
			ok := r.validLocked(now)
			r.mu.Unlock()
			return e, ok, why
		}
		r.lastForced = now
		fl = r.beginLocked()
	}
	r.mu.Unlock()
	werr := r.wait(ctx, fl)
	r.mu.Lock()
	defer r.mu.Unlock()
	var e entry[T]
	if r.cur != nil {
		e = *r.cur
	}
	if werr == nil {
		werr = fl.err
	}
	return e, !r.closed && r.validLocked(r.clock.Now()), werr
}

// wait blocks until fl ends or ctx is done.
func (r *refresher[T]) wait(ctx context.Context, fl *flight) error {
	r.waiters.Add(1)
	defer r.waiters.Add(-1)
	select {
	case <-fl.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// beginLocked starts a fetch in its own goroutine and records it as the
// flight in progress. r.mu must be held and r.fl must be nil.
func (r *refresher[T]) beginLocked() *flight {
	fl := &flight{done: make(chan struct{})}
	r.fl = fl
	r.wg.Add(1)
	go r.run(fl)
	return fl
}

// run performs one fetch and records its outcome.
func (r *refresher[T]) run(fl *flight) {
	var attrs []slog.Attr // the log line's, which the span repeats
	defer r.wg.Done()
	ctx, cancel := context.WithTimeout(r.ctx, r.pol.FetchTimeout)
	var span trace.Span
	if r.pol.Tracer != nil {
		ctx, span = r.pol.Tracer.Start(ctx, "upstream credential refresh",
			trace.WithAttributes(attribute.String("modelgate.upstream", r.name), attribute.String("modelgate.credential.type", r.kind)))
	}
	val, lt, err := r.fetch(ctx)
	cancel()
	if span != nil {
		defer func() { endRefreshSpan(span, attrs, err) }()
	}

	r.mu.Lock()
	now := r.clock.Now()
	if err == nil && !lt.expiresAt.IsZero() && !now.Add(expiryDelta).Before(lt.expiresAt) {
		err = fmt.Errorf("fetched credential expires at %s, which is not after now (%s) plus %s: check the clocks",
			lt.expiresAt.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), expiryDelta)
	}
	if r.closed {
		r.fl = nil
		fl.err = ErrClosed
		close(fl.done)
		r.mu.Unlock()
		return
	}
	level := slog.LevelInfo
	msg := "upstream credential refreshed"
	if err == nil {
		r.seq++
		r.cur = &entry[T]{val: val, seq: r.seq, fetchedAt: now, lifetime: lt}
		r.rejectedSeq, r.consecutive, r.lastErr, r.lastErrAt, r.retryAt = 0, 0, nil, time.Time{}, time.Time{}
		r.lastRefresh = now
		r.refreshes++
		next := r.nextRefreshAt(r.cur, now)
		r.scheduleLocked(now, next)
		attrs = append(attrs, slog.String("outcome", "ok"), slog.Uint64("generation", r.seq))
		attrs = append(attrs, r.describe(val)...)
		if !lt.expiresAt.IsZero() {
			attrs = append(attrs, slog.Time("valid_until", lt.expiresAt))
		}
		attrs = append(attrs, slog.Time("next_refresh", next))
	} else {
		r.failures++
		r.consecutive++
		r.lastErr = err
		r.lastErrAt = now
		delay := r.pol.backoff(r.consecutive)
		r.retryAt = now.Add(delay)
		r.scheduleLocked(now, r.retryAt)
		level, msg = slog.LevelWarn, "upstream credential refresh failed"
		attrs = append(attrs, slog.String("outcome", "error"), slog.String("error", err.Error()),
			slog.Int("consecutive_failures", r.consecutive), slog.Time("next_refresh", r.retryAt))
		if r.validLocked(now) {
			attrs = append(attrs, slog.String("serving", "cached credential"))
			if !r.cur.expiresAt.IsZero() {
				attrs = append(attrs, slog.Time("valid_until", r.cur.expiresAt))
			}
		} else {
			attrs = append(attrs, slog.String("serving", "nothing: requests fail with "+CodeUnavailable))
		}
	}
	r.fl = nil
	fl.err = err
	close(fl.done)
	r.mu.Unlock()
	r.log.LogAttrs(context.Background(), level, msg, attrs...)
}

// nextRefreshAt is when to refresh e, fetched at now; zero means never.
func (r *refresher[T]) nextRefreshAt(e *entry[T], now time.Time) time.Time {
	exp := e.expiresAt
	if exp.IsZero() {
		if r.interval > 0 {
			return now.Add(r.interval)
		}
		return time.Time{}
	}
	// A hint that is already due (clock skew between the gateway and the
	// token service) or not before expiry is ignored: following it would
	// refetch in a loop or too late.
	at := e.refreshAt
	if at.IsZero() || !at.After(now) || !at.Before(exp.Add(-expiryDelta)) {
		ahead := r.pol.RefreshAhead
		if remaining := exp.Sub(now); remaining < 2*ahead {
			ahead = remaining / 2
		}
		at = exp.Add(-ahead)
	}
	if earliest := now.Add(minRefreshDelay); at.Before(earliest) {
		at = earliest
	}
	return at
}

// scheduleLocked arms the one refresh timer for at, replacing any other.
func (r *refresher[T]) scheduleLocked(now, at time.Time) {
	r.timerGen++
	if r.stopTimer != nil {
		r.stopTimer()
		r.stopTimer = nil
	}
	r.nextRefresh = at
	if at.IsZero() {
		return
	}
	gen := r.timerGen
	r.stopTimer = r.clock.AfterFunc(at.Sub(now), func() { r.onTimer(gen) })
}

// onTimer runs a scheduled refresh (or retry) and waits for it, so that a
// fake clock's Advance returns only once the refresh is done.
func (r *refresher[T]) onTimer(gen uint64) {
	r.mu.Lock()
	if r.closed || gen != r.timerGen {
		r.mu.Unlock()
		return
	}
	r.stopTimer = nil
	fl := r.fl
	if fl == nil {
		fl = r.beginLocked()
	}
	r.mu.Unlock()
	select {
	case <-fl.done:
	case <-r.ctx.Done():
	}
}

// status reports the engine's state; describe supplies the label.
func (r *refresher[T]) status() (Status, *entry[T]) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Status{
		Name:                r.name,
		Type:                r.kind,
		Ready:               !r.closed && r.validLocked(r.clock.Now()),
		NextRefresh:         r.nextRefresh,
		LastRefresh:         r.lastRefresh,
		LastErrorAt:         r.lastErrAt,
		Refreshes:           r.refreshes,
		Failures:            r.failures,
		ConsecutiveFailures: r.consecutive,
	}
	if r.lastErr != nil {
		s.LastError = r.lastErr.Error()
	}
	var cur *entry[T]
	if r.cur != nil {
		s.ValidUntil = r.cur.expiresAt
		c := *r.cur
		cur = &c
	}
	return s, cur
}

// endRefreshSpan records a fetch's outcome, from its log line's
// attributes (which never carry the credential), and ends its span.
func endRefreshSpan(span trace.Span, attrs []slog.Attr, err error) {
	for _, a := range attrs {
		switch a.Value.Kind() {
		case slog.KindString:
			span.SetAttributes(attribute.String("modelgate.credential."+a.Key, a.Value.String()))
		case slog.KindInt64:
			span.SetAttributes(attribute.Int64("modelgate.credential."+a.Key, a.Value.Int64()))
		case slog.KindUint64:
			span.SetAttributes(attribute.Int64("modelgate.credential."+a.Key, int64(a.Value.Uint64())))
		case slog.KindTime:
			span.SetAttributes(attribute.String("modelgate.credential."+a.Key, a.Value.Time().UTC().Format(time.RFC3339)))
		}
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
