// Package proxy is the gateway's request pipeline: route lookup, policy
// decision, body handling, header hygiene, upstream credential injection and
// streaming, built on httputil.ReverseProxy with a Rewrite hook.
//
// Everything that can be computed from the configuration is computed by New:
// the route table, canonical header names and values, one ReverseProxy per
// upstream. The per-request path does map lookups and header edits only.
package proxy

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/modelgate/modelgate/pool"

	"github.com/modelgate/modelgate/internal/jsonline"
	"github.com/modelgate/modelgate/policy"
	"github.com/modelgate/modelgate/ratelimit"
)

// Upstream is a scoring endpoint and how to authenticate to it. New copies
// what it needs: changing an Upstream afterwards does not change a Handler.
type Upstream struct {
	// Name identifies the upstream in logs.
	Name string
	// URL is the base: scheme, host and optional path (no trailing slash).
	URL *url.URL
	// Headers replace client-sent headers of the same name.
	Headers map[string]string
	// IdentityHeaders maps an identity field (key_id, oid, tid, appid, sub,
	// provider, method) to the header that carries it upstream.
	IdentityHeaders map[string]string
	// Auth is the upstream credential; nil sends none.
	Auth UpstreamAuth

	// Backends, when set, make the upstream a pool: URL, Headers,
	// IdentityHeaders and Auth are then unused, and Pool (index-aligned with
	// Backends) selects, retries and breaks (DESIGN.md, "Backend pools").
	Backends []*Backend
	Pool     *pool.Pool
	// Tries, when not nil, counts each try per backend (*metrics.Pool).
	Tries TryObserver
	// MirrorTo is the other upstream a pool's mirror names, when its
	// target is not one of the pool's own backends.
	MirrorTo *Upstream

	// Set only on New's private copy.
	headers  []headerKV
	identity []identityHeader
	backends []*Backend
	rp       *httputil.ReverseProxy
}

// TryObserver counts tries of a pool's backends; *metrics.Pool implements
// it.
type TryObserver interface {
	// Try records a try on backend i: whether it failed with a retry.on
	// condition, and whether it was a retry.
	Try(i int, failed, retry bool)
}

// Limiter decides whether an admitted caller may proceed now;
// *ratelimit.Limiter implements it.
type Limiter interface {
	// Allow reports whether identity may make a request at now, and if not,
	// how long until it may.
	Allow(identity string, now time.Time) (ok bool, retryAfter time.Duration)
}

// CheckLimiter is a Limiter that also reports its bucket;
// *ratelimit.Limiter (in memory) and *ratelimit.Shared (in a store shared
// by replicas) implement it. When a Route's Limiter implements it,
// the proxy calls Check (with the request's context, so a caller that
// leaves stops the wait) instead of Allow, answers 503
// limits_unavailable when the verdict says so (limits.store on_error:
// deny), and sets x-ratelimit-limit-requests and
// x-ratelimit-remaining-requests, the names OpenAI's API uses, on the
// answer.
type CheckLimiter interface {
	Check(ctx context.Context, identity string, now time.Time) ratelimit.Verdict
}

// Route is one route. New copies it, so changing a Route afterwards does
// not change a Handler.
type Route struct {
	Name     string
	Host     string // lower case; "" = any host
	Prefix   string // clean path prefix
	Upstream *Upstream
	Policy   *policy.Policy
	// Limiter, when not nil, rate-limits admitted callers (429).
	Limiter Limiter
	// Tokens, when not nil, bounds admitted callers' LLM tokens (429).
	Tokens TokenLimiter
	// InjectStreamUsage adds stream_options.include_usage to buffered JSON
	// requests that ask for a stream and carry no stream_options, so the
	// last event reports the usage Tokens charges.
	InjectStreamUsage bool
	// Metrics, when not nil, records every answered request.
	Metrics RouteObserver
	// CORS, when not nil, answers preflights at the gateway and labels
	// answers for the allowed origins; nil forwards preflights like any
	// other request.
	CORS *CORS

	cors  *corsPolicy  // set only on New's private copy
	check CheckLimiter // Limiter, when it is one; set by New
}

// RouteObserver records answered requests; *metrics.Route implements it.
type RouteObserver interface {
	// Observe records one request: its status, how the caller was admitted
	// ("" when refused), the total and upstream durations, and the error
	// code the gateway answered or logged ("" for none; rate_limited when
	// a rate limit refused it).
	Observe(status int, auth string, total, upstream time.Duration, code string)
}

// Options configures a Handler.
type Options struct {
	Routes []*Route
	// Transport is the one shared upstream transport.
	Transport http.RoundTripper
	// MaxBodyBytes bounds request bodies (413 above it).
	MaxBodyBytes int64
	// BufferBodyBytes: bodies up to this size are read before forwarding
	// (replayable, and immune to golang/go#40747); larger ones stream.
	// The buffer grows as the body arrives; it is never allocated up front.
	BufferBodyBytes int64
	// ReadBodyTimeout is the longest a request body may pause: each read
	// must bring data within it (an idle timeout, restarted by every piece
	// that arrives). A body that stalls is answered 408 request_timeout,
	// or cut upstream when it was already streaming. 0 means no limit.
	ReadBodyTimeout time.Duration
	// TrustedProxies are peers whose forwarding headers are extended.
	TrustedProxies []netip.Prefix
	// CredentialHeaders are the canonical names of the headers a caller's
	// credential is read from, in order (Authorization, Api-Key,
	// Ocp-Apim-Subscription-Key). Default [Authorization]. All three are
	// removed before forwarding whatever is listed.
	CredentialHeaders []string
	// Logger receives proxy errors; nil discards them.
	Logger *slog.Logger
	// Audit receives the one audit line per request (README, "Audit
	// trail"). nil means Logger, in its own format (jsonline.NewHandler);
	// jsonline.New writes the same line as JSON several times cheaper.
	Audit *jsonline.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Tracer, when not nil, records a server span per request and a client
	// span per upstream try (otel.go); nil records nothing and costs
	// nothing.
	Tracer trace.Tracer
}

// Handler is the gateway's public http.Handler. It is immutable once built;
// a reload builds a new one.
type Handler struct {
	router      *Router
	maxBody     int64
	bufBody     int64
	bodyTimeout time.Duration
	pool        *bufferPool
	trusted     []netip.Prefix
	credHeaders []string
	log         *slog.Logger
	audit       *jsonline.Logger
	now         func() time.Time
	idPrefix    string
	idCounter   atomic.Uint64
	tracer      trace.Tracer
}

// New compiles the routes into a Handler. It does not modify o or anything
// o points to: the Handler works on copies of the Routes and Upstreams.
func New(o Options) *Handler {
	h := &Handler{
		maxBody:     o.MaxBodyBytes,
		bufBody:     o.BufferBodyBytes,
		bodyTimeout: o.ReadBodyTimeout,
		trusted:     slices.Clone(o.TrustedProxies),
		credHeaders: slices.Clone(o.CredentialHeaders),
		log:         cmp.Or(o.Logger, slog.New(slog.DiscardHandler)),
		audit:       o.Audit,
		now:         o.Now,
		tracer:      o.Tracer,
	}
	if h.audit == nil {
		h.audit = jsonline.NewHandler(h.log.Handler())
	}
	if h.now == nil {
		h.now = time.Now
	}
	if len(h.credHeaders) == 0 {
		h.credHeaders = defaultCredentialHeaders
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	h.idPrefix = hex.EncodeToString(rnd[:]) + "-"
	h.pool = newBufferPool()
	errLog := slog.NewLogLogger(h.log.Handler(), slog.LevelWarn)
	compiled := map[*Upstream]*Upstream{}
	routes := make([]*Route, 0, len(o.Routes))
	for _, r := range o.Routes {
		u := compiled[r.Upstream]
		if u == nil {
			u = compileUpstream(r.Upstream)
			u.rp = h.reverseProxy(u, o.Transport, h.pool, errLog)
			compiled[r.Upstream] = u
		}
		rc := *r
		rc.Upstream = u
		rc.cors = compileCORS(r.CORS, h.credHeaders)
		rc.check, _ = r.Limiter.(CheckLimiter)
		routes = append(routes, &rc)
	}
	h.router = NewRouter(routes)
	return h
}

func (h *Handler) reverseProxy(u *Upstream, base http.RoundTripper, pool httputil.BufferPool, errLog *log.Logger) *httputil.ReverseProxy {
	rt := h.traced(withAuth(base, u.Auth), u.URL, u.Name, u.Name)
	if u.Pool != nil {
		u.URL = nil
		u.backends = h.compileBackends(u, base)
		pt := &poolTransport{h: h, u: u, backends: u.backends, pool: u.Pool, setHeaders: []string{"Authorization"}}
		if u.MirrorTo != nil {
			pt.mirrorTo = h.mirrorTarget(compileUpstream(u.MirrorTo), base)
		}
		rt = pt
		u.identity = nil
		for _, b := range u.backends {
			u.identity = append(u.identity, b.identity...)
			for _, kv := range b.headers {
				pt.setHeaders = append(pt.setHeaders, kv.key)
			}
		}
		for _, ih := range u.identity {
			pt.setHeaders = append(pt.setHeaders, ih.key)
		}
	}
	return &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { h.rewrite(u, pr) },
		Transport: rt,
		// 0, not -1: ReverseProxy itself flushes every write of answers
		// that stream — text/event-stream or unknown length (chunked) — so
		// those reach the client event by event; an answer of known length
		// goes out in as few writes as the server's buffer allows. -1 here
		// cost a second write syscall per JSON answer (about 20% of the
		// gateway's CPU under load).
		FlushInterval: 0,
		BufferPool:    pool,
		ErrorLog:      errLog,
		ErrorHandler:  h.proxyError,
		// The gateway already set its own X-Request-Id on the answer (the
		// one it forwarded and logs); Azure ML endpoints echo it, so copying
		// the upstream's too would give the client two. Likewise its CORS
		// headers on a route where the gateway sets them.
		ModifyResponse: modifyResponse,
	}
}

// reqState is the per-request record shared by the pipeline stages and the
// log line. One allocation per request.
type reqState struct {
	id       string
	traceID  string
	newTrace string // traceparent to send when the client's was missing or invalid
	route    *Route
	ident    *policy.Identity
	rule     string
	peer     netip.Addr
	trusted  bool
	errCode  string
	reason   string
	upStart  time.Time
	upDur    time.Duration
	upStatus int
	replayed bool
	backend  string // the pool backend that answered (or was tried last)
	tries    int    // pool tries made
	retries  int
	rest     string      // the path after the route's prefix
	rawRest  string      // its escaped form, when that differs
	body     bodyReader  // the client's body, under the read timeout
	tok      *tokenState // token limit bookkeeping (tokens.go); nil unless a token limit admitted the request, or a recording span wants the usage

	span *spanState // with Options.Tracer only (otel.go)
}

type stateKey struct{}

func stateFrom(ctx context.Context) *reqState {
	s, _ := ctx.Value(stateKey{}).(*reqState)
	return s
}

// ServeHTTP runs the pipeline: route → policy → body → proxy, and writes one
// log line.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := h.now()
	st := &reqState{id: h.requestID(r)}
	sw := &statusWriter{ResponseWriter: w}
	sw.Header().Set(headerRequestID, st.id)
	if h.tracer != nil {
		// The tracer reads the caller's traceparent, or starts a trace.
		r = h.startSpan(r, st, start)
	} else if id, ok := parseTraceparent(r.Header.Get(headerTraceparent)); ok {
		st.traceID = id
	} else {
		st.newTrace, st.traceID = newTraceparent()
	}
	served := false
	defer func() {
		if !served {
			// A panic is unwinding: ReverseProxy aborts with
			// http.ErrAbortHandler when copying the answer fails mid-body
			// (golang/go#23643), because the upstream broke off or because
			// the client went away, which cancels the request's context.
			// The log line is still owed, and must blame the right side.
			st.errCode = CodeUpstreamAborted
			if r.Context().Err() != nil {
				st.errCode = CodeClientClosedRequest
			}
		}
		h.chargeTokens(st)
		h.logRequest(r, st, sw, start)
		if st.span != nil {
			h.endSpan(r, st, start, sw.answered())
		}
	}()
	h.serve(sw, r, st)
	served = true
}

func (h *Handler) serve(w *statusWriter, r *http.Request, st *reqState) {
	if refusedMethod(r.Method) {
		st.errCode = CodeMethodNotAllowed
		w.Header().Set("Allow", allowedMethods)
		WriteError(w, http.StatusMethodNotAllowed, CodeMethodNotAllowed,
			"the gateway does not forward "+r.Method+" requests: use "+allowedMethods)
		return
	}
	if msg := badPath(r.URL.Path); msg != "" {
		st.errCode = CodeBadPath
		WriteError(w, http.StatusBadRequest, CodeBadPath, msg)
		return
	}
	h.setPeer(r, st)
	route := h.router.Match(hostOnly(r.Host), r.URL.Path)
	if route == nil {
		st.errCode = CodeNoRoute
		WriteError(w, http.StatusNotFound, CodeNoRoute, "no route serves this host and path: check the URL")
		return
	}
	st.route = route
	if route.cors != nil && h.cors(w, r, st, route.cors) {
		return
	}

	d := route.Policy.Evaluate(r.Context(), h.credential(r), h.now(), nil)
	if d.Denial != nil {
		st.errCode, st.reason = d.Denial.Code, d.Denial.Reason
		if d.Denial.Challenge != "" {
			w.Header().Set(headerWWWAuthenticate, d.Denial.Challenge)
		}
		WriteError(w, d.Denial.Status, d.Denial.Code, d.Denial.Message)
		return
	}
	st.ident, st.rule = d.Identity, d.Rule

	if route.Limiter != nil || route.Tokens != nil {
		who := d.Identity.Key()
		if d.Identity.Method == policy.MethodPublic {
			// No credential: each client address gets its own bucket; behind
			// a trusted load balancer, the address it reports.
			who = h.clientBucket(r, st)
		}
		if route.Limiter == nil {
			// A token limit only: checked below.
		} else if route.check != nil {
			if !h.checkLimit(w, r, st, route.check, who) {
				return
			}
		} else if ok, wait := route.Limiter.Allow(who, h.now()); !ok {
			refuseLimited(w, st, wait, false, "rate limit", "too many requests on this route")
			return
		}
		if route.Tokens != nil && !h.checkTokens(w, r, st, route.Tokens, who) {
			return
		}
	}

	if r.ContentLength > h.maxBody {
		st.errCode = CodeBodyTooLarge
		w.Header().Set("Connection", "close")
		WriteError(w, http.StatusRequestEntityTooLarge, CodeBodyTooLarge, tooLargeMessage(h.maxBody))
		h.discardRefused(w, r, st)
		return
	}
	out := r.WithContext(context.WithValue(r.Context(), stateKey{}, st))
	if err := h.prepareBody(w, out, st); err != nil {
		status, code, msg := classifyBody(r.Context(), err)
		st.errCode = code
		if status == StatusClientClosedRequest {
			w.status = status
			return
		}
		// The rest of the body stays unread: the connection cannot
		// carry another request.
		w.Header().Set("Connection", "close")
		WriteError(w, status, code, msg)
		if status == http.StatusRequestEntityTooLarge {
			h.discardRefused(w, r, st)
		}
		return
	}
	if route.InjectStreamUsage {
		injectStreamUsage(out)
	}
	if st.tok == nil && st.span != nil && st.span.IsRecording() {
		// The span reports the answer's token usage (GenAI conventions)
		// even where no token limit asks for it.
		st.tok = &tokenState{spanOnly: true, now: h.now}
	}
	route.Upstream.rp.ServeHTTP(w, out)
}

// Headers an answer carries where a shared request limit applies.
const (
	headerLimitRequests     = "X-Ratelimit-Limit-Requests"
	headerRemainingRequests = "X-Ratelimit-Remaining-Requests"
)

// checkLimit asks a store-backed limiter about the request and answers
// 429 or 503 when it may not proceed; it reports whether it may.
func (h *Handler) checkLimit(w *statusWriter, r *http.Request, st *reqState, l CheckLimiter, who string) bool {
	v := l.Check(r.Context(), who, h.now())
	if v.Limit > 0 {
		w.Header().Set(headerLimitRequests, strconv.Itoa(v.Limit))
		w.Header().Set(headerRemainingRequests, strconv.Itoa(v.Remaining))
	}
	if v.OK {
		return true
	}
	refuseLimited(w, st, v.RetryAfter, v.Unavailable, "rate limit", "too many requests on this route")
	return false
}

// refuseLimited answers a request a limit refused: 429 with Retry-After, or
// 503 limits_unavailable when the limit could not be checked (limits.store
// down with on_error: deny). what names the limit; why is the 429's reason.
func refuseLimited(w http.ResponseWriter, st *reqState, wait time.Duration, unavailable bool, what, why string) {
	secs := strconv.Itoa(ratelimit.RetryAfterSeconds(wait))
	w.Header().Set(headerRetryAfter, secs)
	if unavailable {
		st.errCode = CodeLimitsUnavailable
		WriteError(w, http.StatusServiceUnavailable, CodeLimitsUnavailable,
			"the gateway cannot check this route's "+what+" right now: wait "+secs+" s (Retry-After) and try again")
		return
	}
	st.errCode = CodeRateLimited
	WriteError(w, http.StatusTooManyRequests, CodeRateLimited, why+": wait "+secs+" s (Retry-After) and try again")
}

func remoteHost(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i > 0 {
		return addr[:i]
	}
	return addr
}

// bufferPool shares ReverseProxy's 32 KiB copy buffers across requests.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(v []byte) { b.p.Put(&v) }
