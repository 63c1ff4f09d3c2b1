package proxy

import (
	"context"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/modelgate/modelgate/pool"
	"github.com/modelgate/modelgate/ratelimit"
)

// Backend is one deployment of an upstream that is a pool (DESIGN.md,
// "Backend pools"): its own URL, headers, identity headers and credential.
type Backend struct {
	// Name identifies the backend in logs, audit lines and metrics.
	Name string
	// URL is the base: scheme, host and optional path (no trailing slash).
	URL *url.URL
	// Headers replace client-sent headers of the same name.
	Headers map[string]string
	// IdentityHeaders maps an identity field to the header carrying it.
	IdentityHeaders map[string]string
	// Auth is the backend's credential; nil sends none.
	Auth UpstreamAuth

	// Set only on New's private copy.
	headers  []headerKV
	identity []identityHeader
	rt       http.RoundTripper // the shared transport, with Auth injected
}

// usable is implemented by credential sources that can tell, cheaply,
// whether they hold a credential now; a backend whose credential is
// unavailable is skipped like an open one.
type usable interface{ Usable() bool }

// compileBackends copies u's backends for New and builds their transports.
func (h *Handler) compileBackends(u *Upstream, base http.RoundTripper) []*Backend {
	out := make([]*Backend, len(u.Backends))
	for i, b := range u.Backends {
		c := &Backend{Name: b.Name, URL: cloneURL(b.URL), Auth: b.Auth, Headers: maps.Clone(b.Headers), IdentityHeaders: maps.Clone(b.IdentityHeaders),
			rt: h.traced(withAuth(base, b.Auth), b.URL, u.Name, b.Name)}
		c.headers, c.identity = compileHeaders(c.Headers, c.IdentityHeaders)
		out[i] = c
	}
	return out
}

// BackendUsable returns the pool's availability check for backends: a
// backend whose credential source says it has no credential is skipped.
// Sources that cannot tell are always usable.
func BackendUsable(auths []UpstreamAuth) func(int) bool {
	checks := make([]usable, len(auths))
	for i, a := range auths {
		checks[i], _ = a.(usable)
	}
	return func(i int) bool { return checks[i] == nil || checks[i].Usable() }
}

// errPoolUnavailable: every backend of the pool is known to be unavailable
// (breakers open, credentials missing), so nothing was tried.
type errPoolUnavailable struct{ retryAfter time.Duration }

func (e *errPoolUnavailable) Error() string {
	return "every backend of the upstream is unavailable"
}

// poolTransport sends a request to the pool's backends: the one selection
// picks first, then, while the outcome is one retry.on lists, the body can
// be replayed and attempts are left, another. A try ends when its answer's
// headers arrive, before anything reaches the client, so a retry never
// follows the first byte of an answer.
type poolTransport struct {
	h        *Handler
	u        *Upstream
	backends []*Backend
	pool     *pool.Pool
	mirrorTo func() *Backend // the mirror target in another upstream, if any
	// setHeaders are the headers a try sets (Authorization, every
	// backend's configured and identity headers), removed from a copy.
	setHeaders []string
}

// mirrorTarget returns where mirror copies to upstream u go: u itself when
// it is a single URL, else the backend its own pool would pick now.
func (h *Handler) mirrorTarget(u *Upstream, base http.RoundTripper) func() *Backend {
	if u.Pool == nil {
		b := &Backend{Name: u.Name, URL: u.URL, Auth: u.Auth, headers: u.headers, identity: u.identity, rt: h.traced(withAuth(base, u.Auth), u.URL, u.Name, u.Name)}
		return func() *Backend { return b }
	}
	backends := h.compileBackends(u, base)
	return func() *Backend {
		if i, ok := u.Pool.Pick(0); ok {
			return backends[i]
		}
		return nil
	}
}

func (t *poolTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	st := stateFrom(req.Context())
	att := t.pool.Attempts()
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	perTry := t.pool.PerTryTimeout()
	var resp *http.Response
	var err error
	tries := 0
	for {
		i, ok := att.Next()
		if !ok {
			if att.Tries() == 0 {
				closeBody(req)
				return nil, &errPoolUnavailable{retryAfter: time.Until(t.pool.SoonestAvailable())}
			}
			break
		}
		out := req
		if tries > 0 {
			if out, err = t.fresh(req, req.Context()); err != nil {
				return nil, err
			}
			if st != nil {
				st.retries++
			}
		}
		tries++
		b := t.backends[i]
		t.target(out, b, st)
		start := time.Now()
		resp, err = t.try(out, b, perTry)
		var o pool.Outcome
		if err != nil {
			o = pool.Failure(failureCondition(req.Context(), err), err)
		} else {
			o = pool.Response(resp.StatusCode, resp.Header, time.Now())
		}
		att.Record(i, o)
		if t.u.Tries != nil {
			t.u.Tries.Try(i, o.Cond&t.pool.RetryOn() != 0, att.Tries() > 1)
		}
		if st != nil {
			st.backend, st.tries = b.Name, att.Tries()
			if b.Auth == nil {
				st.upStart, st.upDur = start, st.upDur+time.Since(start)
				if resp != nil {
					st.upStatus = resp.StatusCode
				}
			}
		}
		if !att.Retry(replayable, false) {
			break
		}
		if resp != nil {
			drain(resp)
			resp = nil
		}
		if req.Context().Err() != nil {
			return nil, req.Context().Err()
		}
	}
	if resp == nil && err == nil {
		// The last answer asked for a retry, but by now no backend is left
		// (another request opened their breakers meanwhile).
		return nil, &errPoolUnavailable{retryAfter: time.Until(t.pool.SoonestAvailable())}
	}
	if resp != nil && resp.StatusCode == http.StatusTooManyRequests {
		// Every backend said 429: the caller waits for the soonest.
		if wait, ok := att.AllThrottled(); ok {
			resp.Header.Del("Retry-After-Ms")
			resp.Header.Del("X-Ms-Retry-After-Ms")
			resp.Header.Set(headerRetryAfter, strconv.Itoa(ratelimit.RetryAfterSeconds(wait)))
		}
	}
	if err == nil {
		t.mirror(req, st)
	}
	return resp, err
}

// fresh copies req for another try or a mirror copy, with a new body and
// without what an earlier try set on it: that backend's credential, its
// configured headers and the caller's identity headers. Each try's target
// sets its own again, so one backend's key never reaches another.
func (t *poolTransport) fresh(req *http.Request, ctx context.Context) (*http.Request, error) {
	out := req.Clone(ctx)
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		out.Body = body
	}
	for _, k := range t.setHeaders {
		delete(out.Header, k)
	}
	return out, nil
}

// try sends one attempt. A per-try timeout bounds the wait for the answer's
// headers only, never a streamed body.
func (t *poolTransport) try(out *http.Request, b *Backend, perTry time.Duration) (*http.Response, error) {
	if perTry <= 0 {
		return b.rt.RoundTrip(out)
	}
	ctx, cancel := context.WithCancelCause(out.Context())
	timer := time.AfterFunc(perTry, func() { cancel(errTryTimeout) })
	resp, err := b.rt.RoundTrip(out.WithContext(ctx))
	if !timer.Stop() {
		if err == nil {
			resp.Body.Close()
		}
		return nil, errTryTimeout
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: func() { cancel(nil) }}
	return resp, nil
}

var errTryTimeout = &tryTimeout{}

type tryTimeout struct{}

func (*tryTimeout) Error() string   { return "the backend did not answer within retry.per_try_timeout" }
func (*tryTimeout) Timeout() bool   { return true }
func (*tryTimeout) Temporary() bool { return true }

type cancelOnClose struct {
	io.ReadCloser
	cancel func()
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// failureCondition names a transport failure in retry.on's terms.
func failureCondition(ctx context.Context, err error) pool.Condition {
	var cu *errCredentialUnavailable
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.As(err, &cu):
		return pool.CredentialUnavailable
	case errors.Is(context.Cause(ctx), errTryTimeout):
		return pool.Timeout // ctx is the try's own, which retry.per_try_timeout cancelled
	case ctx.Err() != nil:
		return 0 // the client went away: nothing to retry, nobody to blame
	case errors.As(err, &oe) && oe.Op == "dial", errors.Is(err, syscall.ECONNREFUSED):
		return pool.ConnectError
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, net.ErrClosed), strings.HasSuffix(err.Error(), "server closed idle connection"):
		// (net/http's errServerClosedIdle is unexported; its text is the
		// only handle on it.)
		// The backend dropped the connection before answering: a stale
		// keep-alive connection, or a backend that died with the request
		// in flight. Nothing reached the client, and the backend's work
		// (if any) is lost with it, so this counts as not reaching it.
		return pool.ConnectError
	case errors.As(err, &ne) && ne.Timeout():
		return pool.Timeout
	}
	return 0
}

// target points out at backend b: its scheme and host, its path before the
// route-relative rest, its headers and the caller's identity headers.
func (t *poolTransport) target(out *http.Request, b *Backend, st *reqState) {
	retarget(out, b.URL, st)
	setBackendHeaders(out.Header, b.headers, b.identity, st)
}

// mirror sends a copy of a buffered request to the pool's mirror target,
// when this request is sampled and a slot is free: it never delays or fails
// the main request, and its answer is read and dropped.
func (t *poolTransport) mirror(req *http.Request, st *reqState) {
	m := t.pool.Mirror()
	if m == nil || req.GetBody == nil && req.Body != nil && req.Body != http.NoBody || !m.Sample() {
		return
	}
	var b *Backend
	if _, idx := m.Target(); idx >= 0 && idx < len(t.backends) {
		b = t.backends[idx]
	} else if t.mirrorTo != nil {
		b = t.mirrorTo()
	}
	if b == nil || !m.TryAcquire() {
		return
	}
	// A context of its own: the mirror outlives the request, and must not
	// write the request's state (the audit line's upstream fields).
	mctx := context.Background()
	if st != nil && st.span != nil {
		// Its span is a child of the request's, which it may outlive.
		mctx = trace.ContextWithSpan(mctx, st.span.Span)
	}
	out, err := t.fresh(req, mctx)
	if err != nil {
		m.Release()
		return
	}
	t.target(out, b, st)
	go func() {
		defer m.Release()
		ctx, cancel := context.WithTimeout(out.Context(), 5*time.Minute)
		defer cancel()
		resp, err := b.rt.RoundTrip(out.WithContext(ctx))
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<20))
			resp.Body.Close()
		}
	}()
}

// routeRest splits the request path for a pool: the part after the route's
// prefix (and its escaped form when it differs), which each backend's own
// base path precedes.
func routeRest(in *http.Request, prefix string) (rest, rawRest string) {
	cut := prefix // the root route keeps the whole path
	if prefix == "/" {
		cut = ""
	}
	rest = strings.TrimPrefix(in.URL.Path, cut)
	if raw := in.URL.RawPath; raw != "" && strings.HasPrefix(raw, prefix) {
		r := raw[len(cut):]
		if dec, err := url.PathUnescape(r); err == nil && dec == rest {
			rawRest = r
		}
	}
	return rest, rawRest
}
