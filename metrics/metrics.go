// Package metrics exposes the gateway's Prometheus metrics on the admin
// listener.
//
// Labels carry only configuration names (route, upstream, provider), status
// classes, auth methods and outcomes: never an identity, a key, a token or
// any value a client chose, so label cardinality is bounded by the
// configuration.
//
// Per-request counters and histograms are resolved per route once, when a
// configuration is built (Route), so the request path does no label lookups.
// Credential, identity provider and reload state is read at scrape time from
// a StateFunc.
package metrics

import (
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/idp"
)

const namespace = "modelgate"

// codeRateLimited is proxy.CodeRateLimited, counted in rate_limited_total
// too.
const codeRateLimited = "rate_limited"

// ErrorCodes are the gateway's error codes (proxy's, policy's and
// credential.CodeUnavailable): the values request_errors_total counts by.
// Route creates every (route, code) series at 0, so Prometheus sees the
// first of a rare code; any other code counts as ErrorCodeOther. A test in
// package gateway holds this list to the constants.
var ErrorCodes = []string{
	"missing_credential", "invalid_credential", "forbidden", "identity_provider_unavailable",
	"no_route", "bad_path", "bad_request", "body_too_large", "request_timeout",
	"method_not_allowed", "cors_origin_not_allowed",
	codeRateLimited, "limits_unavailable",
	"upstream_unavailable", "upstream_timeout", "upstream_credential_unavailable",
	"upstream_credential_rejected", "upstream_aborted", "client_closed_request",
}

// ErrorCodeOther is what a code not in ErrorCodes is counted as.
const ErrorCodeOther = "other"

// Auth methods a request can be counted under.
var authMethods = [...]string{"none", "key", "token", "public"}

// Status classes a request can be counted under.
var statusClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// State is what a scrape reads from the serving configuration.
type State struct {
	Credentials       []credential.Status
	IdentityProviders []idp.Status
	ReloadsOK         uint64
	ReloadsFailed     uint64
	// Backends are the pools' members and their breakers.
	Backends []BackendState
	// Mirrors are the pools' shadow traffic.
	Mirrors []MirrorState
}

// MirrorState is one pool's mirror.
type MirrorState struct {
	Upstream string
	// Dropped counts copies not sent because max_in_flight were in flight.
	Dropped uint64
	// InFlight is the copies being sent now.
	InFlight int
}

// BackendState is one pool member's breaker, for the gauges.
type BackendState struct {
	Upstream, Backend string
	// Breaker is closed, open or half-open.
	Breaker string
	// Available is true when the backend may take traffic now.
	Available bool
}

// StateFunc returns the current State; it must be cheap and never block on
// the network.
type StateFunc func() State

// Metrics is the gateway's metric registry. It is safe for concurrent use.
type Metrics struct {
	reg         *prometheus.Registry
	requests    *prometheus.CounterVec
	gatewayTime *prometheus.HistogramVec
	upstream    *prometheus.HistogramVec
	limited     *prometheus.CounterVec
	denied      *prometheus.CounterVec
	refused     *prometheus.CounterVec
	tries       *prometheus.CounterVec
	retries     *prometheus.CounterVec
	probes      *prometheus.CounterVec
	storeFails  prometheus.Counter
	tokens      *prometheus.CounterVec
	noUsage     *prometheus.CounterVec

	version string

	mu     sync.Mutex
	routes map[string]*Route
	state  StateFunc
	now    func() time.Time
}

// New returns a registry with the Go runtime and process collectors, build
// info, and the gateway's own metrics.
func New(version string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), routes: map[string]*Route{}, now: time.Now, version: version}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "requests_total",
		Help: "Requests answered, by route, status class and auth method.",
	}, []string{"route", "code", "auth"})
	// Buckets from 100µs (the gateway's own work) to 60s (slow models).
	buckets := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	m.gatewayTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "gateway_duration_seconds",
		Help:    "Time spent in the gateway itself per request (total minus upstream), by route.",
		Buckets: buckets,
	}, []string{"route"})
	m.upstream = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "upstream_duration_seconds",
		Help:    "Time from sending a request upstream to its response headers, by route.",
		Buckets: buckets,
	}, []string{"route"})
	m.limited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "rate_limited_total",
		Help: "Requests refused with 429 by a rate limit, by route.",
	}, []string{"route"})
	m.denied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "denied_total",
		Help: "Requests refused by the route policy, by route and status (401, 403, 503).",
	}, []string{"route", "status"})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "request_errors_total",
		Help: "Requests that ended with one of the gateway's error codes (the JSON error body's code, such as missing_credential, forbidden, rate_limited, upstream_unavailable; or a logged-only one such as client_closed_request), by route and code.",
	}, []string{"route", "code"})

	m.tries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "backend_requests_total",
		Help: "Tries sent to a pool's backends, by upstream, backend and outcome (ok, or failure: a retry.on condition).",
	}, []string{"upstream", "backend", "outcome"})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "backend_retries_total",
		Help: "Tries that were retries of a request, by upstream and the backend retried on.",
	}, []string{"upstream", "backend"})
	m.probes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "backend_health_checks_total",
		Help: "Active health-check probes, by upstream, backend and result (up, down, skipped).",
	}, []string{"upstream", "backend", "result"})
	m.storeFails = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "limits_store_failures_total",
		Help: "Calls to limits.store that failed or outlasted its timeout; requests then followed its on_error.",
	})
	m.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "tokens_total",
		Help: "LLM tokens answers reported on routes with a token_limit, by route and kind (prompt, completion, total).",
	}, []string{"route", "kind"})
	m.noUsage = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "token_usage_missing_total",
		Help: "Answers on routes with a token_limit that reported no usage, so charged nothing, by route.",
	}, []string{"route"})

	goVersion := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help:        "Build information; the value is always 1.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": goVersion},
	})
	build.Set(1)
	m.reg.MustRegister(m.requests, m.gatewayTime, m.upstream, m.limited, m.denied, m.refused, m.tries, m.retries, m.probes, m.storeFails, m.tokens, m.noUsage, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{m: m})
	return m
}

// SetState installs the function scrapes read credential, identity
// provider and reload state from.
func (m *Metrics) SetState(f StateFunc) {
	m.mu.Lock()
	m.state = f
	m.mu.Unlock()
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Version returns the gateway version New was given (build_info's).
func (m *Metrics) Version() string { return m.version }

// Registry returns the underlying registry (tests gather from it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Route returns the pre-resolved metrics of a route. The same name returns
// the same Route, so counters continue across reloads.
func (m *Metrics) Route(name string) *Route {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.routes[name]; ok {
		return r
	}
	r := &Route{
		gatewayTime: m.gatewayTime.WithLabelValues(name),
		upstream:    m.upstream.WithLabelValues(name),
		limited:     m.limited.WithLabelValues(name),
		denied:      map[int]prometheus.Counter{},
		refused:     make(map[string]prometheus.Counter, len(ErrorCodes)),
		other:       m.refused.WithLabelValues(name, ErrorCodeOther),
		prompt:      m.tokens.WithLabelValues(name, "prompt"),
		completion:  m.tokens.WithLabelValues(name, "completion"),
		total:       m.tokens.WithLabelValues(name, "total"),
		noUsage:     m.noUsage.WithLabelValues(name),
	}
	for i, c := range statusClasses {
		for j, a := range authMethods {
			r.requests[i][j] = m.requests.WithLabelValues(name, c, a)
		}
	}
	for _, s := range []int{401, 403, 503} {
		r.denied[s] = m.denied.WithLabelValues(name, strconv.Itoa(s))
	}
	for _, c := range ErrorCodes {
		r.refused[c] = m.refused.WithLabelValues(name, c)
	}
	m.routes[name] = r
	return r
}

// Route holds one route's counters and histograms, resolved once.
type Route struct {
	requests    [len(statusClasses)][len(authMethods)]prometheus.Counter
	gatewayTime prometheus.Observer
	upstream    prometheus.Observer
	limited     prometheus.Counter
	denied      map[int]prometheus.Counter    // read-only after creation
	refused     map[string]prometheus.Counter // by code; read-only after creation
	other       prometheus.Counter            // a code not in ErrorCodes

	prompt, completion, total, noUsage prometheus.Counter
}

// Tokens counts one answer's reported LLM tokens by kind.
func (r *Route) Tokens(prompt, completion, total int64) {
	r.prompt.Add(float64(prompt))
	r.completion.Add(float64(completion))
	r.total.Add(float64(total))
}

// NoUsage counts an answer on a token-limited route that reported no
// usage.
func (r *Route) NoUsage() { r.noUsage.Inc() }

// Observe records one answered request. auth is "", "key", "token" or
// "public"; upstream is zero when the request never went upstream; code is
// the error code the gateway answered or logged ("" for none); a code not
// in ErrorCodes counts as ErrorCodeOther, so the code label stays bounded.
func (r *Route) Observe(status int, auth string, total, upstream time.Duration, code string) {
	ci := status/100 - 1
	if ci < 0 || ci >= len(statusClasses) {
		ci = len(statusClasses) - 1 // 499 and the like count as errors
		if status < 500 {
			ci = 3
		}
	}
	ai := 0
	switch auth {
	case "key":
		ai = 1
	case "token":
		ai = 2
	case "public":
		ai = 3
	}
	r.requests[ci][ai].Inc()
	if upstream > 0 {
		r.upstream.Observe(upstream.Seconds())
	}
	r.gatewayTime.Observe((total - upstream).Seconds())
	if code != "" {
		if c, ok := r.refused[code]; ok {
			c.Inc()
		} else {
			r.other.Inc()
		}
		if code == codeRateLimited {
			r.limited.Inc()
		}
	}
	if c, ok := r.denied[status]; ok && auth == "" {
		c.Inc()
	}
}

// Pool returns the pre-resolved counters of an upstream's backends (label
// values come from the configuration only).
func (m *Metrics) Pool(upstream string, backends []string) *Pool {
	p := &Pool{}
	for _, b := range backends {
		p.ok = append(p.ok, m.tries.WithLabelValues(upstream, b, "ok"))
		p.failed = append(p.failed, m.tries.WithLabelValues(upstream, b, "failure"))
		p.retries = append(p.retries, m.retries.WithLabelValues(upstream, b))
	}
	return p
}

// Pool counts one pooled upstream's tries; safe for concurrent use and
// allocation-free.
type Pool struct{ ok, failed, retries []prometheus.Counter }

// Try records a try on backend i: whether it failed (a retry.on
// condition) and whether it was a retry.
func (p *Pool) Try(i int, failed, retry bool) {
	if failed {
		p.failed[i].Inc()
	} else {
		p.ok[i].Inc()
	}
	if retry {
		p.retries[i].Inc()
	}
}

// LimitsStoreFailure counts one failed limits.store call.
func (m *Metrics) LimitsStoreFailure() { m.storeFails.Inc() }

// HealthCheck counts one probe's result.
func (m *Metrics) HealthCheck(upstream, backend, result string) {
	m.probes.WithLabelValues(upstream, backend, result).Inc()
}

// stateCollector turns State into metrics at scrape time.
type stateCollector struct{ m *Metrics }

var (
	descCredValid = prometheus.NewDesc(namespace+"_upstream_credential_valid",
		"1 when the upstream's credential source holds a valid credential.", []string{"upstream", "type"}, nil)
	descCredExpiry = prometheus.NewDesc(namespace+"_upstream_credential_expiry_seconds",
		"Seconds until the served upstream credential expires (absent for keys, which do not).", []string{"upstream"}, nil)
	descCredRefresh = prometheus.NewDesc(namespace+"_upstream_credential_refreshes_total",
		"Upstream credential fetches, by upstream and outcome.", []string{"upstream", "outcome"}, nil)
	descJWKSReady = prometheus.NewDesc(namespace+"_identity_provider_ready",
		"1 when the identity provider has signing keys.", []string{"provider"}, nil)
	descJWKSKeys = prometheus.NewDesc(namespace+"_identity_provider_keys",
		"Usable signing keys of the identity provider.", []string{"provider"}, nil)
	descJWKSAge = prometheus.NewDesc(namespace+"_identity_provider_key_age_seconds",
		"Seconds since the provider's keys were last fetched successfully.", []string{"provider"}, nil)
	descJWKSRefresh = prometheus.NewDesc(namespace+"_jwks_refreshes_total",
		"Key set fetches, by provider and outcome.", []string{"provider", "outcome"}, nil)
	descReloads = prometheus.NewDesc(namespace+"_config_reloads_total",
		"Configuration reloads, by outcome.", []string{"outcome"}, nil)
	descBreaker = prometheus.NewDesc(namespace+"_backend_breaker_state",
		"A pool backend's circuit breaker: 1 for its current state (closed, open, half-open), 0 for the others.", []string{"upstream", "backend", "state"}, nil)
	descMirrorDropped = prometheus.NewDesc(namespace+"_mirror_dropped_total",
		"Mirror copies dropped because the pool's in-flight bound was reached, by upstream.", []string{"upstream"}, nil)
	descMirrorInFlight = prometheus.NewDesc(namespace+"_mirror_in_flight",
		"Mirror copies being sent now, by upstream.", []string{"upstream"}, nil)
	descAvailable = prometheus.NewDesc(namespace+"_backend_available",
		"1 when a pool backend may take traffic (breaker closed, credential valid).", []string{"upstream", "backend"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCredValid, descCredExpiry, descCredRefresh, descJWKSReady, descJWKSKeys, descJWKSAge, descJWKSRefresh, descReloads, descBreaker, descAvailable, descMirrorDropped, descMirrorInFlight} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	f := c.m.state
	c.m.mu.Unlock()
	if f == nil {
		return
	}
	st := f()
	now := c.m.now()
	for _, s := range st.Credentials {
		ch <- prometheus.MustNewConstMetric(descCredValid, prometheus.GaugeValue, b2f(s.Ready), s.Name, s.Type)
		if !s.ValidUntil.IsZero() {
			ch <- prometheus.MustNewConstMetric(descCredExpiry, prometheus.GaugeValue, s.ValidUntil.Sub(now).Seconds(), s.Name)
		}
		ch <- prometheus.MustNewConstMetric(descCredRefresh, prometheus.CounterValue, float64(s.Refreshes), s.Name, "success")
		ch <- prometheus.MustNewConstMetric(descCredRefresh, prometheus.CounterValue, float64(s.Failures), s.Name, "failure")
	}
	for _, p := range st.IdentityProviders {
		ch <- prometheus.MustNewConstMetric(descJWKSReady, prometheus.GaugeValue, b2f(p.Ready), p.Name)
		ch <- prometheus.MustNewConstMetric(descJWKSKeys, prometheus.GaugeValue, float64(p.Keys), p.Name)
		if !p.LastSuccess.IsZero() {
			ch <- prometheus.MustNewConstMetric(descJWKSAge, prometheus.GaugeValue, now.Sub(p.LastSuccess).Seconds(), p.Name)
		}
		var ok, failed uint64
		for _, src := range p.Sources {
			ok += src.Refreshes
			failed += src.Failures
		}
		ch <- prometheus.MustNewConstMetric(descJWKSRefresh, prometheus.CounterValue, float64(ok), p.Name, "success")
		ch <- prometheus.MustNewConstMetric(descJWKSRefresh, prometheus.CounterValue, float64(failed), p.Name, "failure")
	}
	for _, b := range st.Backends {
		for _, state := range [...]string{"closed", "open", "half-open"} {
			ch <- prometheus.MustNewConstMetric(descBreaker, prometheus.GaugeValue, b2f(b.Breaker == state), b.Upstream, b.Backend, state)
		}
		ch <- prometheus.MustNewConstMetric(descAvailable, prometheus.GaugeValue, b2f(b.Available), b.Upstream, b.Backend)
	}
	for _, m := range st.Mirrors {
		ch <- prometheus.MustNewConstMetric(descMirrorDropped, prometheus.CounterValue, float64(m.Dropped), m.Upstream)
		ch <- prometheus.MustNewConstMetric(descMirrorInFlight, prometheus.GaugeValue, float64(m.InFlight), m.Upstream)
	}
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(st.ReloadsOK), "success")
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(st.ReloadsFailed), "failure")
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
