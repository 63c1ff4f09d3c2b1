package pool

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/modelgate/modelgate/internal/problem"
)

// ErrInvalidOptions is wrapped by every problem [New] reports; test for it
// with errors.Is.
var ErrInvalidOptions = errors.New("invalid backend pool options")

// Defaults and limits of [Options], as DESIGN.md "Backend pools" states them.
const (
	DefaultPriority            = 1
	DefaultWeight              = 1
	DefaultConsecutiveFailures = 5
	DefaultOpenFor             = 30 * time.Second
	DefaultMaxOpenFor          = 10 * time.Minute
	DefaultHealthPath          = "/"
	DefaultHealthInterval      = 10 * time.Second
	DefaultHealthTimeout       = 2 * time.Second
	DefaultMirrorMaxInFlight   = 16

	// MaxBackends is the most backends one pool may have: a request's tried
	// set is one uint64 bit per backend.
	MaxBackends = 64
	// MaxAttempts bounds retry.attempts, and so how much one request can
	// multiply into an outage.
	MaxAttempts = 10
)

// defaultRetryOn is retry.on when it is not set: the failures after which
// the model has certainly not done the work, plus throttling.
var defaultRetryOn = []string{"connect_error", "credential_unavailable", "429", "503"}

// Options configures a [Pool]. It mirrors the YAML of one pooled upstream
// (upstreams.NAME); every problem [New] reports has a field path relative to
// that upstream ("backends[1].weight", "retry.on[2]"), ready for
// problem.Under. The zero value of a field means its documented default.
type Options struct {
	// Backends are the pool's members, at least one and at most
	// [MaxBackends]. A backend is known by its index in this list
	// everywhere in the package's API.
	Backends []BackendOptions
	// Retry says how often and on what a request is tried again.
	Retry RetryOptions
	// CircuitBreaker says when a failing backend is skipped.
	CircuitBreaker BreakerOptions
	// HealthCheck, when set, enables an active probe of every backend (see
	// [Prober]). Nil: the breaker is passive only.
	HealthCheck *HealthCheckOptions
	// Mirror, when set, sends a share of requests to a shadow target too.
	Mirror *MirrorOptions

	// Usable reports whether backend i may take a request apart from its
	// breaker; the proxy passes "its credential is valid", so a backend
	// whose credential is unavailable is skipped like an open one. It is
	// called for every candidate on every pick, from many goroutines at
	// once: it must be fast, safe for concurrent use, and must not call back
	// into the Pool. Nil means every backend is usable.
	Usable func(backend int) bool
}

// BackendOptions is one member of a pool (backends[i]). Its credential,
// headers and identity headers belong to the proxy, which keeps them by
// the same index.
type BackendOptions struct {
	// Name identifies the backend in logs, audit lines and metric labels.
	// Required, unique in the pool.
	Name string
	// URL is the backend's base URL, absolute http or https. Required. The
	// health check GETs URL + HealthCheck.Path.
	URL string
	// Priority orders backends: the lowest number that has an available
	// backend takes the traffic. 0 means the default, 1; priorities are
	// written from 1 up, so an explicit 0 cannot be told from the default.
	Priority int
	// Weight is the backend's share of its priority's traffic. Nil means
	// the default, 1. 0 takes no traffic from Pick at all: a mirror target,
	// or a parked (cold) standby whose weight a reload raises.
	Weight *int
}

// RetryOptions is retry.
type RetryOptions struct {
	// Attempts is how many tries a request gets in total, each on a
	// different backend while one is left. Default 2 when more than one
	// backend has a positive weight, else 1. At most [MaxAttempts].
	Attempts int
	// On lists the conditions that are retried and that count against a
	// backend's breaker: connect_error, credential_unavailable, timeout,
	// 429, 500, 502, 503, 504. Statuses are strings here ("429"); the
	// config layer converts YAML numbers. Nil means the default
	// [connect_error, credential_unavailable, 429, 503]; an
	// empty, non-nil list retries nothing and counts nothing.
	On []string
	// PerTryTimeout bounds one try; 0 means none (a model may think for
	// minutes). The proxy applies it and reports its expiry as [Timeout].
	PerTryTimeout time.Duration
}

// BreakerOptions is circuit_breaker.
type BreakerOptions struct {
	// ConsecutiveFailures is how many retry.on failures in a row open a
	// backend. Default 5.
	ConsecutiveFailures int
	// OpenFor is how long an opened backend is skipped. Default 30s. At
	// most MaxOpenFor.
	OpenFor time.Duration
	// MaxOpenFor caps how long a backend's own Retry-After keeps it open
	// (Azure can answer with hours). Default 10m.
	MaxOpenFor time.Duration
}

// HealthCheckOptions is health_check.
type HealthCheckOptions struct {
	// Path is appended to each backend's URL path. Default "/".
	Path string
	// Interval between two probes of a backend. Default 10s.
	Interval time.Duration
	// Timeout of one probe. Default 2s, or Interval if that is shorter; at
	// most Interval.
	Timeout time.Duration
	// HealthyStatus lists the statuses that count as up. Default [200].
	HealthyStatus []int
}

// MirrorOptions is mirror.
type MirrorOptions struct {
	// Backend names the shadow target: a backend of this pool, which must
	// have weight 0, or (checked by the caller) another upstream.
	Backend string
	// Percent of requests that are mirrored, 1 to 100.
	Percent int
	// MaxInFlight bounds concurrent mirror requests; beyond it a copy is
	// dropped and counted, never queued. Default 16.
	MaxInFlight int
}

// compiled options, all defaults applied.
type settings struct {
	attempts      int
	on            Condition
	perTryTimeout time.Duration
	threshold     int
	openFor       time.Duration
	maxOpenFor    time.Duration
	health        *HealthCheckOptions // nil: no active probe
}

func compile(o *Options) (settings, []*backend, *Mirror, error) {
	var errs problem.List
	bad := func(path, format string, args ...any) { errs.AddErr(ErrInvalidOptions, path, format, args...) }

	var s settings
	switch n := len(o.Backends); {
	case n == 0:
		bad("backends", "no backend: list at least one, each with a name and url")
	case n > MaxBackends:
		bad("backends", "%d backends: at most %d per pool", n, MaxBackends)
	}
	backends := make([]*backend, 0, len(o.Backends))
	seen := make(map[string]int, len(o.Backends))
	serving := 0
	for i, bo := range o.Backends {
		at := func(field string) string { return fmt.Sprintf("backends[%d].%s", i, field) }
		b := &backend{name: bo.Name, priority: bo.Priority, weight: DefaultWeight}
		switch j, dup := seen[bo.Name]; {
		case bo.Name == "":
			bad(at("name"), "missing: every backend needs a name for logs and metrics")
		case dup:
			bad(at("name"), "%q is already the name of backends[%d]: names must be unique in a pool", bo.Name, j)
		default:
			seen[bo.Name] = i
		}
		u, err := parseURL(bo.URL)
		if err != nil {
			bad(at("url"), "%v", err)
		}
		b.url = u
		switch {
		case bo.Priority < 0:
			bad(at("priority"), "%d: must be 1 or more (lower is preferred)", bo.Priority)
		case bo.Priority == 0:
			b.priority = DefaultPriority
		}
		if bo.Weight != nil {
			b.weight = *bo.Weight
			switch {
			case b.weight < 0:
				bad(at("weight"), "%d: must be 0 (no normal traffic) or more", b.weight)
			case b.weight > 1_000_000:
				bad(at("weight"), "%d: must be at most 1000000", b.weight)
			}
		}
		if b.weight > 0 {
			serving++
		}
		backends = append(backends, b)
	}
	if len(o.Backends) > 0 && serving == 0 {
		bad("backends", "every backend has weight 0, so none takes traffic: give at least one a positive weight")
	}

	s.attempts = o.Retry.Attempts
	switch {
	case s.attempts < 0 || s.attempts > MaxAttempts:
		bad("retry.attempts", "%d: must be 1 to %d, or 0 for the default", s.attempts, MaxAttempts)
	case s.attempts == 0 && serving > 1:
		s.attempts = 2
	case s.attempts == 0:
		s.attempts = 1
	}
	on := o.Retry.On
	if on == nil {
		on = defaultRetryOn
	}
	for i, v := range on {
		c, ok := ParseCondition(v)
		switch {
		case !ok:
			bad(fmt.Sprintf("retry.on[%d]", i), "%q is not a retry condition: use connect_error, credential_unavailable, timeout, 429, 500, 502, 503 or 504", v)
		case s.on&c != 0:
			bad(fmt.Sprintf("retry.on[%d]", i), "%q is listed twice", v)
		}
		s.on |= c
	}
	if s.perTryTimeout = o.Retry.PerTryTimeout; s.perTryTimeout < 0 {
		bad("retry.per_try_timeout", "%s: must be positive, or 0 for none", s.perTryTimeout)
	}

	cb := o.CircuitBreaker
	s.threshold = defaulted(&errs, "circuit_breaker.consecutive_failures", cb.ConsecutiveFailures, DefaultConsecutiveFailures)
	s.openFor = defaulted(&errs, "circuit_breaker.open_for", cb.OpenFor, DefaultOpenFor)
	s.maxOpenFor = defaulted(&errs, "circuit_breaker.max_open_for", cb.MaxOpenFor, DefaultMaxOpenFor)
	if s.openFor > s.maxOpenFor && cb.OpenFor >= 0 && cb.MaxOpenFor >= 0 {
		if cb.OpenFor > 0 {
			bad("circuit_breaker.open_for", "%s is longer than max_open_for %s: lower open_for or raise max_open_for", s.openFor, s.maxOpenFor)
		} else {
			bad("circuit_breaker.max_open_for", "%s is shorter than the default open_for %s: raise max_open_for or set open_for", s.maxOpenFor, s.openFor)
		}
	}

	if hc := o.HealthCheck; hc != nil {
		h := &HealthCheckOptions{Path: hc.Path}
		if h.Path == "" {
			h.Path = DefaultHealthPath
		} else if !strings.HasPrefix(h.Path, "/") || strings.ContainsAny(h.Path, "?# \t") {
			bad("health_check.path", "%q: must be a path starting with / (no query)", h.Path)
		}
		h.Interval = defaulted(&errs, "health_check.interval", hc.Interval, DefaultHealthInterval)
		h.Timeout = defaulted(&errs, "health_check.timeout", hc.Timeout, min(DefaultHealthTimeout, h.Interval))
		if h.Timeout > h.Interval {
			bad("health_check.timeout", "%s is longer than interval %s: probes would overlap", h.Timeout, h.Interval)
		}
		h.HealthyStatus = append([]int(nil), hc.HealthyStatus...)
		if len(h.HealthyStatus) == 0 {
			h.HealthyStatus = []int{200}
		}
		for i, c := range h.HealthyStatus {
			if c < 100 || c > 599 {
				bad(fmt.Sprintf("health_check.healthy_status[%d]", i), "%d is not an HTTP status (100 to 599)", c)
			}
		}
		s.health = h
	}

	var m *Mirror
	if mo := o.Mirror; mo != nil {
		m = &Mirror{target: mo.Backend, backend: -1, percent: uint64(mo.Percent), max: int64(mo.MaxInFlight)}
		if mo.Backend == "" {
			bad("mirror.backend", "missing: name a weight-0 backend of this pool or another upstream")
		} else if i, ok := seen[mo.Backend]; ok {
			m.backend = i
			if w := backends[i].weight; w != 0 {
				bad("mirror.backend", "backend %q has weight %d: a mirror target must have weight: 0 so it takes no normal traffic", mo.Backend, w)
			}
		}
		if mo.Percent < 1 || mo.Percent > 100 {
			bad("mirror.percent", "%d: must be 1 to 100 (remove mirror to turn it off)", mo.Percent)
		}
		switch {
		case mo.MaxInFlight < 0:
			bad("mirror.max_in_flight", "%d: must be 1 or more, or 0 for the default %d", mo.MaxInFlight, DefaultMirrorMaxInFlight)
		case mo.MaxInFlight == 0:
			m.max = DefaultMirrorMaxInFlight
		}
	}
	return s, backends, m, errs.Err()
}

// defaulted returns v, or def when v is zero, and reports a negative v.
func defaulted[T int | time.Duration](errs *problem.List, path string, v, def T) T {
	switch {
	case v < 0:
		errs.AddErr(ErrInvalidOptions, path, "%v: must be positive, or 0 for the default %v", v, def)
		return def
	case v == 0:
		return def
	}
	return v
}

func parseURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("missing: set the backend's base URL, e.g. https://host/score")
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q: must be an absolute http:// or https:// URL", s)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%q carries credentials in the URL: use the backend's auth instead", u.Redacted())
	}
	return u, nil
}
