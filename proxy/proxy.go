// Package proxy is the gateway's request pipeline: route lookup, policy
// decision, body handling, header hygiene, upstream credential injection and
// streaming, built on httputil.ReverseProxy with a Rewrite hook.
//
// Everything that can be computed from the configuration is computed by New:
// the route table, canonical header names and values, one ReverseProxy per
// upstream. The per-request path does map lookups and header edits only.
package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelgate/modelgate/internal/jsonline"
	"github.com/modelgate/modelgate/policy"
)

// UpstreamAuth supplies the credential the gateway presents to an upstream.
// Implementations must be safe for concurrent use.
type UpstreamAuth interface {
	// Authorization returns the Authorization header value to send, and a
	// generation that identifies that credential. It must not block on the
	// network while a valid credential is cached. An error means no valid
	// credential can be had now (the client gets 503).
	Authorization(ctx context.Context) (value string, gen uint64, err error)
	// Rejected reports that the upstream answered 401 to the credential of
	// generation gen. It returns true when a different credential is now
	// available, so that one replay is worthwhile.
	Rejected(ctx context.Context, gen uint64) bool
}

// Upstream is a scoring endpoint and how to authenticate to it.
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

	headers  []headerKV
	identity []identityHeader
	rp       *httputil.ReverseProxy
}

type headerKV struct {
	key string
	val []string
}

type identityHeader struct {
	key   string // canonical header name
	field string
}

// Limiter decides whether an admitted caller may proceed now;
// *ratelimit.Limiter implements it.
type Limiter interface {
	// Allow reports whether identity may make a request at now, and if not,
	// how long until it may.
	Allow(identity string, now time.Time) (ok bool, retryAfter time.Duration)
}

// Route is one compiled route.
type Route struct {
	Name     string
	Host     string // lower case; "" = any host
	Prefix   string // clean path prefix
	Upstream *Upstream
	Policy   *policy.Policy
	// Limiter, when not nil, rate-limits admitted callers (429).
	Limiter Limiter
	// Metrics, when not nil, records every answered request.
	Metrics RouteObserver
}

// RouteObserver records answered requests; *metrics.Route implements it.
type RouteObserver interface {
	// Observe records one request: its status, how the caller was admitted
	// ("" when refused), the total and upstream durations, and whether a
	// rate limit refused it.
	Observe(status int, auth string, total, upstream time.Duration, rateLimited bool)
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
	BufferBodyBytes int64
	// TrustedProxies are peers whose forwarding headers are extended.
	TrustedProxies []netip.Prefix
	// Logger receives proxy errors, and the request lines unless
	// AuditLogger is set.
	Logger *slog.Logger
	// AuditLogger, when set, receives the one audit line per request.
	AuditLogger *slog.Logger
	// RequestLines, when set, writes the per-request line as JSON directly
	// (same schema, several times cheaper than slog); it takes precedence
	// over AuditLogger and Logger for that line.
	RequestLines *jsonline.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Handler is the gateway's public http.Handler. It is immutable once built;
// a reload builds a new one.
type Handler struct {
	router    *Router
	maxBody   int64
	bufBody   int64
	trusted   []netip.Prefix
	log       *slog.Logger
	audit     *slog.Logger
	lines     *jsonline.Logger
	now       func() time.Time
	idPrefix  string
	idCounter atomic.Uint64
}

// New compiles the routes into a Handler.
func New(o Options) *Handler {
	h := &Handler{
		router:  NewRouter(o.Routes),
		maxBody: o.MaxBodyBytes,
		bufBody: o.BufferBodyBytes,
		trusted: o.TrustedProxies,
		log:     o.Logger,
		now:     o.Now,
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.lines = o.RequestLines
	h.audit = o.AuditLogger
	if h.audit == nil {
		h.audit = h.log
	}
	if h.now == nil {
		h.now = time.Now
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	h.idPrefix = hex.EncodeToString(rnd[:]) + "-"
	pool := newBufferPool()
	errLog := slog.NewLogLogger(h.log.Handler(), slog.LevelWarn)
	seen := map[*Upstream]bool{}
	for _, r := range o.Routes {
		u := r.Upstream
		if seen[u] {
			continue
		}
		seen[u] = true
		u.compile()
		u.rp = h.reverseProxy(u, o.Transport, pool, errLog)
	}
	return h
}

func (u *Upstream) compile() {
	u.headers = u.headers[:0]
	for k, v := range u.Headers {
		u.headers = append(u.headers, headerKV{key: http.CanonicalHeaderKey(k), val: []string{v}})
	}
	u.identity = u.identity[:0]
	for field, name := range u.IdentityHeaders {
		u.identity = append(u.identity, identityHeader{key: http.CanonicalHeaderKey(name), field: field})
	}
}

func (h *Handler) reverseProxy(u *Upstream, base http.RoundTripper, pool httputil.BufferPool, errLog *log.Logger) *httputil.ReverseProxy {
	var rt http.RoundTripper = base
	if u.Auth != nil {
		rt = &authTransport{base: base, auth: u.Auth}
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
		// the upstream's too would give the client two.
		ModifyResponse: dropRequestID,
	}
}

func dropRequestID(res *http.Response) error {
	delete(res.Header, headerRequestID)
	return nil
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
	if id, ok := parseTraceparent(r.Header.Get(headerTraceparent)); ok {
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
		h.logRequest(r, st, sw, start)
	}()
	h.serve(sw, r, st)
	served = true
}

func (h *Handler) serve(w *statusWriter, r *http.Request, st *reqState) {
	if msg := badPath(r.URL.Path); msg != "" {
		st.errCode = CodeBadPath
		WriteError(w, http.StatusBadRequest, CodeBadPath, msg)
		return
	}
	route := h.router.Match(hostOnly(r.Host), r.URL.Path)
	if route == nil {
		st.errCode = CodeNoRoute
		WriteError(w, http.StatusNotFound, CodeNoRoute, "no route serves this host and path: check the URL")
		return
	}
	st.route = route

	d := route.Policy.Evaluate(r.Context(), r.Header.Get("Authorization"), h.now(), nil)
	if d.Denial != nil {
		st.errCode, st.reason = d.Denial.Code, d.Denial.Reason
		if d.Denial.Challenge != "" {
			w.Header().Set(headerWWWAuthenticate, d.Denial.Challenge)
		}
		WriteError(w, d.Denial.Status, d.Denial.Code, d.Denial.Message)
		return
	}
	st.ident, st.rule = d.Identity, d.Rule

	if route.Limiter != nil {
		who := d.Identity.Key()
		if d.Identity.Method == policy.MethodPublic {
			// No credential: each client address gets its own bucket.
			who = "ip:" + remoteHost(r.RemoteAddr)
		}
		if ok, wait := route.Limiter.Allow(who, h.now()); !ok {
			st.errCode = CodeRateLimited
			w.Header().Set(headerRetryAfter, strconv.Itoa(retryAfterSeconds(wait)))
			WriteError(w, http.StatusTooManyRequests, CodeRateLimited,
				"too many requests on this route: wait "+strconv.Itoa(retryAfterSeconds(wait))+" s (Retry-After) and try again")
			return
		}
	}

	if r.ContentLength > h.maxBody {
		st.errCode = CodeBodyTooLarge
		w.Header().Set("Connection", "close")
		WriteError(w, http.StatusRequestEntityTooLarge, CodeBodyTooLarge,
			"the request body is larger than this gateway accepts: send at most "+strconv.FormatInt(h.maxBody, 10)+" bytes")
		return
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		st.peer = ap.Addr().Unmap()
		for _, p := range h.trusted {
			if p.Contains(st.peer) {
				st.trusted = true
				break
			}
		}
	}
	out := r.WithContext(context.WithValue(r.Context(), stateKey{}, st))
	if err := h.prepareBody(w, out); err != nil {
		status, code, msg := classifyBodyError(err)
		st.errCode = code
		if status != StatusClientClosedRequest {
			// The rest of the body stays unread: the connection cannot
			// carry another request.
			w.Header().Set("Connection", "close")
			WriteError(w, status, code, msg)
		} else {
			w.status = status
		}
		return
	}
	route.Upstream.rp.ServeHTTP(w, out)
}

// prepareBody reads bodies up to the buffer bound into memory (so they can be
// replayed, and so the inbound connection is never read while the answer
// streams: golang/go#40747), and bounds larger ones by MaxBodyBytes.
func (h *Handler) prepareBody(w http.ResponseWriter, r *http.Request) error {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		r.Body, r.ContentLength = http.NoBody, 0
		return nil
	}
	if r.ContentLength > h.bufBody {
		fullDuplex(w)
		return nil // known length, streams; the server enforces Content-Length
	}
	var buf []byte
	if r.ContentLength > 0 {
		buf = make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			return err
		}
	} else {
		body := http.MaxBytesReader(w, r.Body, h.maxBody)
		var bb bytes.Buffer
		n, err := bb.ReadFrom(io.LimitReader(body, h.bufBody+1))
		if err != nil {
			return err
		}
		if n > h.bufBody {
			// Too large to buffer: stream what was read, then the rest.
			fullDuplex(w)
			r.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(bb.Bytes()), body), body}
			r.ContentLength = -1
			return nil
		}
		buf = bb.Bytes()
	}
	r.ContentLength = int64(len(buf))
	r.Body = io.NopCloser(bytes.NewReader(buf))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	return nil
}

// fullDuplex lets a request body that is forwarded as it arrives go on
// being read while the answer streams back. Otherwise, when the answer's
// header is flushed, the server drains and closes the unread request body
// under the Transport that is still sending it upstream, and the Transport
// tears the upstream connection down mid-answer (golang/go#40747). HTTP/2
// is always full duplex (the call then fails harmlessly).
func fullDuplex(w http.ResponseWriter) {
	_ = http.NewResponseController(w).EnableFullDuplex()
}

func remoteHost(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i > 0 {
		return addr[:i]
	}
	return addr
}

// retryAfterSeconds rounds a wait up to whole seconds, at least 1, so a
// client that honours Retry-After is never early (RFC 9110 §10.2.3).
func retryAfterSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

func classifyBodyError(err error) (int, string, string) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return classify(err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return http.StatusBadRequest, CodeBadRequest, "the request body ended before its Content-Length: send the whole body"
	}
	return StatusClientClosedRequest, CodeClientClosedRequest, ""
}

// spoofable lists client-sent headers that claim an identity or carry a
// credential. They never reach an upstream; the gateway sets identity
// headers only where an upstream asks for them (identity_headers).
var spoofable = []string{
	"Authorization", "Cookie",
	"X-Api-Key", "Ocp-Apim-Subscription-Key",
	"X-Forwarded-User", "X-Forwarded-Email", "X-Forwarded-Preferred-Username", "X-Forwarded-Groups", "X-Forwarded-Access-Token",
	"X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Groups", "X-Auth-Request-Access-Token", "X-Auth-Request-Preferred-Username",
	"X-Ms-Client-Principal", "X-Ms-Client-Principal-Id", "X-Ms-Client-Principal-Name", "X-Ms-Client-Principal-Idp",
	"X-Ms-Token-Aad-Access-Token", "X-Ms-Token-Aad-Id-Token",
	"X-Remote-User", "X-Remote-Group", "Remote-User",
	"X-Modelgate-Identity",
}

// rewrite builds the outbound request. ReverseProxy has already removed
// hop-by-hop headers (including any named in Connection) and client-sent
// Forwarded / X-Forwarded-* from pr.Out before this runs; the upstream
// credential is injected later, by the transport, so no client header can
// remove it.
func (h *Handler) rewrite(u *Upstream, pr *httputil.ProxyRequest) {
	st := stateFrom(pr.In.Context())
	out := pr.Out
	hdr := out.Header

	// Target: scheme and host of the upstream; its path replaces the prefix.
	out.URL.Scheme = u.URL.Scheme
	out.URL.Host = u.URL.Host
	out.Host = ""
	rest := strings.TrimPrefix(pr.In.URL.Path, st.route.Prefix)
	if st.route.Prefix == "/" {
		rest = pr.In.URL.Path
	}
	out.URL.Path = u.URL.Path + rest
	out.URL.RawPath = ""
	if raw := pr.In.URL.RawPath; raw != "" && strings.HasPrefix(raw, st.route.Prefix) {
		rawRest := raw[len(st.route.Prefix):]
		if st.route.Prefix == "/" {
			rawRest = raw
		}
		if dec, err := url.PathUnescape(rawRest); err == nil && dec == rest {
			out.URL.RawPath = u.URL.EscapedPath() + rawRest
		}
	}
	if out.URL.Path == "" {
		out.URL.Path = "/"
	}
	out.URL.RawQuery = pr.In.URL.RawQuery

	for _, k := range spoofable {
		delete(hdr, k)
	}
	// ReverseProxy puts back Connection: Upgrade and Upgrade after removing
	// hop-by-hop headers, to tunnel WebSocket and h2c. The gateway does not
	// switch protocols: a tunnel would hand the client a raw connection to
	// the upstream, authenticated with the gateway's credential, outside the
	// body limit and the per-request log. Scoring APIs are plain HTTP.
	delete(hdr, "Connection")
	delete(hdr, "Upgrade")
	for _, ih := range u.identity {
		delete(hdr, ih.key)
	}
	h.setForwarded(pr, st)
	hdr[headerRequestID] = []string{st.id}
	if st.newTrace != "" {
		hdr[headerTraceparent] = []string{st.newTrace}
		delete(hdr, headerTracestate)
	}
	for _, kv := range u.headers {
		hdr[kv.key] = kv.val
	}
	if st.ident != nil {
		for _, ih := range u.identity {
			if v := identityField(st.ident, ih.field); v != "" {
				hdr[ih.key] = []string{v}
			}
		}
	}
}

func identityField(id *policy.Identity, field string) string {
	switch field {
	case "key_id":
		return id.KeyID
	case "oid":
		return id.ObjectID
	case "tid":
		return id.TenantID
	case "appid":
		return id.AppID
	case "sub":
		return id.Subject
	case "provider":
		if id.Method == policy.MethodKey {
			return id.KeySet
		}
		return id.Provider
	case "method":
		return id.Method
	}
	return ""
}

// setForwarded sets X-Forwarded-For/Host/Proto and Forwarded (RFC 7239).
// From an untrusted peer the client's own values were dropped and the
// gateway's replace them; from a trusted proxy the chain is extended.
func (h *Handler) setForwarded(pr *httputil.ProxyRequest, st *reqState) {
	in, hdr := pr.In, pr.Out.Header
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	ip := st.peer.String()
	xff, xfh, xfp, fwd := ip, in.Host, proto, ""
	if st.trusted {
		if prior := in.Header.Values("X-Forwarded-For"); len(prior) > 0 {
			xff = strings.Join(prior, ", ") + ", " + ip
		}
		if v := in.Header.Get("X-Forwarded-Host"); v != "" {
			xfh = v
		}
		if v := in.Header.Get("X-Forwarded-Proto"); v != "" {
			xfp = v
		}
		if prior := in.Header.Values("Forwarded"); len(prior) > 0 {
			fwd = strings.Join(prior, ", ") + ", "
		}
	}
	if !st.peer.IsValid() {
		ip = "unknown"
		xff = ""
	}
	node := ip
	if st.peer.Is6() {
		node = `"[` + ip + `]"`
	}
	fwd += "for=" + node + ";host=" + quoteForwarded(in.Host) + ";proto=" + proto
	if xff != "" {
		hdr["X-Forwarded-For"] = []string{xff}
	}
	hdr["X-Forwarded-Host"] = []string{xfh}
	hdr["X-Forwarded-Proto"] = []string{xfp}
	hdr["Forwarded"] = []string{fwd}
}

func quoteForwarded(s string) string {
	if s == "" {
		return `""`
	}
	if !strings.ContainsAny(s, `"\`) {
		return `"` + s + `"`
	}
	return strconv.Quote(s)
}

// proxyError is the ReverseProxy's ErrorHandler: every transport failure
// becomes the gateway's JSON error with the right status.
func (h *Handler) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	status, code, msg := classify(err)
	st := stateFrom(r.Context())
	if st != nil {
		st.errCode = code
	}
	if status == StatusClientClosedRequest {
		if sw, ok := w.(*statusWriter); ok && sw.status == 0 {
			sw.status = status
		}
		return
	}
	if status >= 500 {
		h.log.LogAttrs(r.Context(), slog.LevelWarn, "upstream error",
			slog.String("request_id", st.id), slog.String("route", st.route.Name),
			slog.String("upstream", st.route.Upstream.Name), slog.String("code", code), slog.String("error", err.Error()))
	}
	if status == http.StatusRequestEntityTooLarge {
		// A streamed body hit max_body_bytes and the rest stays unread: the
		// connection cannot carry another request.
		w.Header().Set("Connection", "close")
	}
	WriteError(w, status, code, msg)
}

// requestID honours a sane client-sent X-Request-Id and otherwise makes one
// from a per-process random prefix and a counter (unique, and cheap).
func (h *Handler) requestID(r *http.Request) string {
	if v := r.Header.Get(headerRequestID); v != "" && validRequestID(v) {
		return v
	}
	var b [32]byte
	n := copy(b[:], h.idPrefix)
	return string(strconv.AppendUint(b[:n], h.idCounter.Add(1), 36))
}

func validRequestID(s string) bool {
	if len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

// bufferPool shares ReverseProxy's 32 KiB copy buffers across requests.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(v []byte) { b.p.Put(&v) }

// statusWriter records the status and size of the response for the log line
// and passes Flush through (ReverseProxy finds it via Unwrap).
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// FlushError flushes buffered data to the client (http.ResponseController
// looks for it).
func (w *statusWriter) FlushError() error {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	switch f := w.ResponseWriter.(type) {
	case interface{ FlushError() error }:
		return f.FlushError()
	case http.Flusher:
		f.Flush()
		return nil
	}
	return http.ErrNotSupported
}

// Flush implements http.Flusher.
func (w *statusWriter) Flush() { _ = w.FlushError() }

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
