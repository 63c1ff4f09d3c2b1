package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// OpenTelemetry spans (Options.Tracer): one server span per request, whose
// parent is the caller's traceparent, and one client span per upstream try
// (a pool's retries and mirror copies included), whose context is the
// traceparent the upstream receives. Attributes name configuration (route,
// upstream, backend, rule), what was decided and the answer's status;
// never a credential, an identity's value or the query string. With no
// tracer, none of this runs.

// traceContext reads and writes W3C traceparent and tracestate.
var traceContext = propagation.TraceContext{}

// Attribute keys beyond the HTTP semantic conventions.
const (
	attrRoute     = attribute.Key("modelgate.route")
	attrUpstream  = attribute.Key("modelgate.upstream")
	attrBackend   = attribute.Key("modelgate.backend")
	attrDecision  = attribute.Key("modelgate.decision")
	attrAuth      = attribute.Key("modelgate.auth")
	attrRule      = attribute.Key("modelgate.rule")
	attrErrorCode = attribute.Key("modelgate.error_code")
	attrReason    = attribute.Key("modelgate.reason")
	attrRequestID = attribute.Key("modelgate.request_id")
	attrTries     = attribute.Key("modelgate.tries")
	attrMirror    = attribute.Key("modelgate.mirror")
	// GenAI semantic conventions, for answers that report usage.
	attrInputTokens  = attribute.Key("gen_ai.usage.input_tokens")
	attrOutputTokens = attribute.Key("gen_ai.usage.output_tokens")
	// Seconds from the request's arrival to the answer's first body bytes
	// (the first streamed chunk), as the gen_ai.server.time_to_first_token
	// metric measures it.
	attrTimeToFirstToken = attribute.Key("gen_ai.server.time_to_first_token")
)

// knownMethods are the methods a span names; others are "_OTHER", as the
// HTTP semantic conventions ask, so a client cannot mint span names.
var knownMethods = map[string]string{
	http.MethodGet: http.MethodGet, http.MethodHead: http.MethodHead, http.MethodPost: http.MethodPost,
	http.MethodPut: http.MethodPut, http.MethodPatch: http.MethodPatch, http.MethodDelete: http.MethodDelete,
	http.MethodOptions: http.MethodOptions, http.MethodConnect: http.MethodConnect, http.MethodTrace: http.MethodTrace,
}

func spanMethod(m string) string {
	if k, ok := knownMethods[m]; ok {
		return k
	}
	return "_OTHER"
}

// spanState is a traced request's span and the upstream tries it has
// started.
type spanState struct {
	trace.Span
	tries int
}

// startSpan starts the request's server span, a child of the caller's
// traceparent when it sent a valid one, and returns r carrying it.
func (h *Handler) startSpan(r *http.Request, st *reqState, start time.Time) *http.Request {
	ctx := traceContext.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	method := spanMethod(r.Method)
	ctx, span := h.tracer.Start(ctx, method, trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(start))
	if span.IsRecording() {
		// Set here rather than passed to Start, so that an unsampled
		// request allocates none of it.
		span.SetAttributes(attribute.String("http.request.method", method), attribute.String("url.path", r.URL.Path),
			attribute.String("url.scheme", scheme(r)), attrRequestID.String(st.id))
	}
	st.span = &spanState{Span: span}
	if sc := span.SpanContext(); sc.IsValid() {
		// The audit line names the trace the spans are in; each try
		// sends its own span's traceparent upstream.
		st.traceID = sc.TraceID().String()
	} else if id, ok := parseTraceparent(r.Header.Get(headerTraceparent)); ok {
		st.traceID = id
	} else {
		st.newTrace, st.traceID = newTraceparent()
	}
	return r.WithContext(ctx)
}

func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// endSpan records the outcome of r, which arrived at start, on its span
// and ends it.
func (h *Handler) endSpan(r *http.Request, st *reqState, start time.Time, status int) {
	span := st.span.Span
	if !span.IsRecording() {
		span.End()
		return
	}
	attrs := make([]attribute.KeyValue, 0, 14)
	attrs = append(attrs, attribute.Int("http.response.status_code", status))
	name := ""
	if st.route != nil {
		attrs = append(attrs, attrRoute.String(st.route.Name), attrUpstream.String(st.route.Upstream.Name),
			attribute.String("http.route", st.route.Prefix))
		name = " " + st.route.Prefix
	}
	if st.ident != nil {
		attrs = append(attrs, attrDecision.String("admit"), attrAuth.String(st.ident.Method), attrRule.String(st.rule))
	} else {
		attrs = append(attrs, attrDecision.String("deny"))
	}
	if st.errCode != "" {
		attrs = append(attrs, attrErrorCode.String(st.errCode), attribute.String("error.type", st.errCode))
	}
	if st.reason != "" {
		attrs = append(attrs, attrReason.String(st.reason))
	}
	if st.backend != "" {
		attrs = append(attrs, attrBackend.String(st.backend), attrTries.Int(st.tries))
	}
	if t := st.tok; t != nil {
		// An LLM answer: one that reported its usage.
		if u := t.usage; u.TotalTokens > 0 || u.PromptTokens > 0 || u.CompletionTokens > 0 {
			attrs = append(attrs, attrInputTokens.Int64(u.PromptTokens), attrOutputTokens.Int64(u.CompletionTokens))
			if !t.first.IsZero() {
				attrs = append(attrs, attrTimeToFirstToken.Float64(t.first.Sub(start).Seconds()))
			}
		}
	}
	span.SetAttributes(attrs...)
	if name != "" {
		span.SetName(spanMethod(r.Method) + name)
	}
	if status >= 500 || st.errCode == CodeUpstreamAborted {
		span.SetStatus(codes.Error, st.errCode)
	}
	span.End()
}

// tracedTransport makes each upstream try a client span and sends its
// traceparent upstream.
type tracedTransport struct {
	next   http.RoundTripper
	tracer trace.Tracer
	attrs  []attribute.KeyValue // upstream, backend, server address and port
}

// traced wraps rt for the upstream (and backend) named; with no tracer it
// returns rt.
func (h *Handler) traced(rt http.RoundTripper, u *url.URL, upstream, backend string) http.RoundTripper {
	if h.tracer == nil {
		return rt
	}
	attrs := []attribute.KeyValue{attrUpstream.String(upstream), attrBackend.String(backend)}
	if u != nil {
		attrs = append(attrs, attribute.String("server.address", u.Hostname()))
		port := u.Port()
		if port == "" {
			port = map[string]string{"https": "443", "http": "80"}[u.Scheme]
		}
		if p, err := strconv.Atoi(port); err == nil {
			attrs = append(attrs, attribute.Int("server.port", p))
		}
	}
	return &tracedTransport{next: rt, tracer: h.tracer, attrs: attrs}
}

func (t *tracedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	st := stateFrom(ctx)
	if !trace.SpanContextFromContext(ctx).IsSampled() {
		// An unsampled request: no span of its own, which nobody would
		// see; the upstream gets the trace id and the decision not to
		// sample. (Sampled, not recording: a mirror copy's parent has
		// often ended, and a child of an ended span is still a span.)
		delete(req.Header, headerTracestate)
		traceContext.Inject(ctx, propagation.HeaderCarrier(req.Header))
		return t.next.RoundTrip(req)
	}
	method := spanMethod(req.Method)
	ctx, span := t.tracer.Start(ctx, method, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(t.attrs...)
		// The upstream's URL without its query, which may carry what the
		// client put there.
		full := url.URL{Scheme: req.URL.Scheme, Host: req.URL.Host, Path: req.URL.Path, RawPath: req.URL.RawPath}
		span.SetAttributes(attribute.String("http.request.method", method), attribute.String("url.full", full.String()))
		switch {
		case st == nil:
			span.SetAttributes(attrMirror.Bool(true))
		case st.span != nil && st.span.tries > 0:
			span.SetAttributes(attribute.Int("http.request.resend_count", st.span.tries))
		}
	}
	if st != nil && st.span != nil {
		st.span.tries++
	}
	// req is this try's own outbound request (ReverseProxy's clone, or
	// the pool's copy), so setting its header in place is safe.
	delete(req.Header, headerTracestate)
	traceContext.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		span.SetAttributes(attribute.String("error.type", errorType(req.Context(), err)))
		span.SetStatus(codes.Error, safeError(err))
		span.End()
		return nil, err
	}
	span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	if resp.StatusCode >= 400 {
		span.SetStatus(codes.Error, "")
	}
	if resp.StatusCode == http.StatusSwitchingProtocols || resp.Body == nil || resp.Body == http.NoBody {
		span.End()
		return resp, nil
	}
	// The try lasts until its answer has been read (or dropped).
	resp.Body = &spanBody{ReadCloser: resp.Body, span: span}
	return resp, nil
}

// spanBody ends a try's span when its answer's body is closed, marking it
// failed when the body broke off.
type spanBody struct {
	io.ReadCloser
	span   trace.Span
	ended  atomic.Bool
	failed bool
}

func (b *spanBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && !b.failed {
		b.failed = true
		b.span.SetAttributes(attribute.String("error.type", "body_broken_off"))
		b.span.SetStatus(codes.Error, safeError(err))
	}
	return n, err
}

func (b *spanBody) Close() error {
	err := b.ReadCloser.Close()
	if b.ended.CompareAndSwap(false, true) {
		b.span.End()
	}
	return err
}

// errorType names a transport failure for error.type: its retry.on
// condition (connect_error, timeout, credential_unavailable), else canceled
// or transport_error.
func errorType(ctx context.Context, err error) string {
	if c := failureCondition(ctx, err); c != 0 {
		return c.String()
	}
	if ctx.Err() != nil {
		return "canceled"
	}
	return "transport_error"
}

// safeError describes err without the request URL net/http puts in its
// errors (its query is the client's).
func safeError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}
