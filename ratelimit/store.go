package ratelimit

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/modelgate/modelgate/internal/problem"
	"github.com/modelgate/modelgate/internal/redact"
)

// ErrInvalidStore is wrapped by every error [NewStore] returns.
var ErrInvalidStore = errors.New("invalid limits store")

// Store types and on_error policies (limits.store in the configuration).
const (
	StoreRedis = "redis"

	// OnErrorLocal counts in this replica's memory while the store fails,
	// as if no store were configured. The default.
	OnErrorLocal = "local"
	// OnErrorAllow admits every request while the store fails.
	OnErrorAllow = "allow"
	// OnErrorDeny answers 503 while the store fails.
	OnErrorDeny = "deny"
)

// Defaults for [StoreOptions].
const (
	DefaultStoreTimeout = 50 * time.Millisecond
	// DefaultStoreBackoff is how long the request path leaves a failed store
	// alone before trying it again.
	DefaultStoreBackoff = time.Second
	// DefaultStoreHealthInterval is how often a started Store pings Redis,
	// so its state (and /readyz) follows Redis without traffic.
	DefaultStoreHealthInterval = 2 * time.Second
	// storeLogEvery bounds the store failure log to one line per interval.
	storeLogEvery = 10 * time.Second
)

// keyPrefix starts every key the gateway writes to Redis.
const keyPrefix = "modelgate:"

// StoreOptions configures a [Store].
//
// Config mapping (limits.store): type → Type, url → URL, timeout →
// Timeout, on_error → OnError.
type StoreOptions struct {
	// Type is "redis" (Redis 6+ or Valkey, standalone; Azure Cache for
	// Redis).
	Type string
	// URL is redis://[user:password@]host:port[/db] or rediss:// for TLS
	// (github.com/redis/go-redis/v9 ParseURL). It may hold a password, so
	// it is a Secret: it never appears in an error, a log line or /readyz;
	// only its redacted form (password replaced) does.
	URL redact.Secret
	// Timeout bounds every store call on the request path, dial included:
	// a request never waits longer than this for the store. Default
	// [DefaultStoreTimeout].
	Timeout time.Duration
	// OnError decides what a request gets while the store fails: local
	// (default), allow or deny.
	OnError string
	// Backoff is how long, after a failure, requests skip the store and
	// follow OnError without trying it. Default [DefaultStoreBackoff].
	Backoff time.Duration
	// HealthInterval is how often Start's background check pings the
	// store. Default [DefaultStoreHealthInterval].
	HealthInterval time.Duration
	// Logger receives the store's failures (at most one line per 10 s) and
	// recoveries; nil discards them.
	Logger *slog.Logger
	// OnFailure, when not nil, is called once per failed store call (a
	// metric). It must be cheap and safe for concurrent use.
	OnFailure func()
	// Now is the clock for backoff and log rate limiting; nil means
	// time.Now. GCRA itself runs on Redis's clock, shared by every replica.
	Now func() time.Time
}

// Store is a shared counter store for request limits: Redis through
// github.com/redis/go-redis/v9. It is safe for concurrent use. NewStore
// does no I/O; Start begins a background health check, Close ends it and
// closes the connections.
//
// While the store fails (an error, or no answer within Timeout), requests
// follow OnError, every failure is counted and the store's state is
// "degraded". After a failure the request path leaves the store alone for
// Backoff; the health check and the next request after that try it again,
// and go-redis redials, so shared limiting resumes within seconds of Redis
// coming back.
type Store struct {
	rdb       *redis.Client
	timeout   time.Duration
	onError   string
	backoff   time.Duration
	interval  time.Duration
	redacted  string
	password  string
	log       *slog.Logger
	onFailure func()
	now       func() time.Time

	downUntil atomic.Int64 // unix ns; requests skip the store before it
	degraded  atomic.Bool
	failures  atomic.Uint64
	lastLog   atomic.Int64 // unix ns of the last failure log line

	mu      sync.Mutex
	lastErr string
	since   time.Time
	stop    chan struct{}
	done    chan struct{}
}

// NewStore validates o and builds the store's client without connecting.
// Every error wraps [ErrInvalidStore], names the field, and never contains
// the URL's password.
func NewStore(o StoreOptions) (*Store, error) {
	var errs problem.List
	bad := func(path, format string, args ...any) { errs.AddErr(ErrInvalidStore, path, format, args...) }
	if o.Type != StoreRedis {
		bad("type", "%q is not a store type: write type: redis", o.Type)
	}
	switch o.OnError {
	case "":
		o.OnError = OnErrorLocal
	case OnErrorLocal, OnErrorAllow, OnErrorDeny:
	default:
		bad("on_error", "%q: want local, allow or deny", o.OnError)
	}
	switch {
	case o.Timeout == 0:
		o.Timeout = DefaultStoreTimeout
	case o.Timeout < time.Millisecond || o.Timeout > 10*time.Second:
		bad("timeout", "%s: want 1ms to 10s; every request waits up to this long for the store", o.Timeout)
	}
	raw := o.URL.Reveal()
	red := redactURL(raw)
	var opt *redis.Options
	if raw == "" {
		bad("url", "missing: write redis://host:6379/0 or rediss://:PASSWORD@host:6380/0 (use ${NAME} or ${file:PATH} for the password)")
	} else if u, err := url.Parse(raw); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
		bad("url", "%s is not a redis:// or rediss:// URL", red)
	} else if opt, err = redis.ParseURL(raw); err != nil {
		msg := strings.ReplaceAll(err.Error(), raw, red)
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, redact.Redacted)
		}
		bad("url", "%s: %s", red, msg)
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	// The request path must never wait longer than Timeout: no retries,
	// and every network step (dial, pool wait, read, write) bounded by it
	// and by the call's context (ContextTimeoutEnabled; without it
	// go-redis ignores a context deadline while reading).
	opt.MaxRetries = -1
	opt.DialerRetries = 1 // go-redis's default 5 would spend the whole timeout redialing a refused port
	opt.DialTimeout = o.Timeout
	opt.ReadTimeout = o.Timeout
	opt.WriteTimeout = o.Timeout
	opt.PoolTimeout = o.Timeout
	opt.ContextTimeoutEnabled = true
	opt.DisableIdentity = true // no CLIENT SETINFO: one round trip less per new connection
	s := &Store{
		rdb:       redis.NewClient(opt),
		timeout:   o.Timeout,
		onError:   o.OnError,
		backoff:   o.Backoff,
		interval:  o.HealthInterval,
		redacted:  red,
		password:  opt.Password,
		log:       o.Logger,
		onFailure: o.OnFailure,
		now:       o.Now,
	}
	if s.backoff <= 0 {
		s.backoff = DefaultStoreBackoff
	}
	if s.interval <= 0 {
		s.interval = DefaultStoreHealthInterval
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// redactURL returns raw with any password replaced, for messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return redact.Redacted
	}
	return u.Redacted()
}

// OnError is the store's on_error policy.
func (s *Store) OnError() string { return s.onError }

// Timeout is the longest a request waits for the store.
func (s *Store) Timeout() time.Duration { return s.timeout }

// Start begins the background health check: a PING every HealthInterval.
// Calling Start again does nothing.
func (s *Store) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop != nil {
		return
	}
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	go s.health(s.stop, s.done)
}

func (s *Store) health(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		err := s.rdb.Ping(ctx).Err()
		cancel()
		if err != nil {
			s.fail(err)
		} else {
			s.ok()
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// Close stops the health check and closes the store's connections.
func (s *Store) Close() {
	s.mu.Lock()
	stop, done := s.stop, s.done
	s.stop = nil
	s.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	_ = s.rdb.Close()
}

// usable reports whether the request path should try the store now.
func (s *Store) usable() bool {
	until := s.downUntil.Load()
	return until == 0 || s.now().UnixNano() >= until
}

// ok records a successful store call.
func (s *Store) ok() {
	if s.downUntil.Load() != 0 {
		s.downUntil.Store(0)
	}
	if s.degraded.Load() && s.degraded.CompareAndSwap(true, false) {
		s.mu.Lock()
		since := s.since
		s.mu.Unlock()
		s.log.LogAttrs(context.Background(), slog.LevelInfo, "limits store available again: shared limits resume",
			slog.String("store", s.redacted), slog.Duration("degraded_for", s.now().Sub(since)))
	}
}

// fail records a failed store call: counts it, backs off, and logs at most
// once per 10 s.
func (s *Store) fail(err error) {
	now := s.now()
	s.failures.Add(1)
	if s.onFailure != nil {
		s.onFailure()
	}
	s.downUntil.Store(now.Add(s.backoff).UnixNano())
	msg := s.scrub(err.Error())
	if errors.Is(err, context.DeadlineExceeded) {
		msg = "no answer within " + s.timeout.String()
	}
	s.mu.Lock()
	s.lastErr = msg
	if !s.degraded.Load() {
		s.since = now
	}
	s.mu.Unlock()
	s.degraded.Store(true)
	last := s.lastLog.Load()
	if now.UnixNano()-last >= int64(storeLogEvery) && s.lastLog.CompareAndSwap(last, now.UnixNano()) {
		s.log.LogAttrs(context.Background(), slog.LevelWarn, "limits store unavailable: requests follow on_error",
			slog.String("store", s.redacted), slog.String("on_error", s.onError),
			slog.String("error", msg), slog.Uint64("failures", s.failures.Load()))
	}
}

// scrub removes the password from an error text, should go-redis ever
// include it.
func (s *Store) scrub(msg string) string {
	if s.password != "" {
		msg = strings.ReplaceAll(msg, s.password, redact.Redacted)
	}
	return msg
}

// Store states in [StoreStatus].
const (
	StoreOK       = "ok"
	StoreDegraded = "degraded"
)

// StoreStatus is the store's state for /readyz. It holds no secret.
type StoreStatus struct {
	// State is ok or degraded (the last store call failed; requests follow
	// on_error). A degraded store never makes the gateway unready.
	State string `json:"state"`
	// Store is the URL with its password redacted.
	Store   string `json:"store"`
	OnError string `json:"on_error"`
	// Failures counts failed store calls since the store was built.
	Failures  uint64    `json:"failures"`
	LastError string    `json:"last_error,omitempty"`
	Since     time.Time `json:"degraded_since,omitzero"`
}

// Status reports the store's state. It never blocks on the network.
func (s *Store) Status() StoreStatus {
	st := StoreStatus{State: StoreOK, Store: s.redacted, OnError: s.onError, Failures: s.failures.Load()}
	if s.degraded.Load() {
		st.State = StoreDegraded
		s.mu.Lock()
		st.LastError, st.Since = s.lastErr, s.since
		s.mu.Unlock()
	}
	return st
}
