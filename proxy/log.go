package proxy

import (
	"log/slog"
	"net/http"
	"time"
)

// logRequest writes the one structured line per request: who asked for
// what, what was decided and why, and how long it took. It never records a
// credential, the query string or a header value other than the request id.
func (h *Handler) logRequest(r *http.Request, st *reqState, sw *statusWriter, start time.Time) {
	status := sw.status
	if status == 0 {
		status = http.StatusOK
	}
	decision := "admit"
	if st.ident == nil {
		decision = "deny"
	}
	if st.route != nil && st.route.Metrics != nil {
		auth := ""
		if st.ident != nil {
			auth = st.ident.Method
		}
		st.route.Metrics.Observe(status, auth, h.now().Sub(start), st.upDur, st.errCode == CodeRateLimited)
	}
	level := slog.LevelInfo
	if status >= 500 && status != StatusClientClosedRequest {
		level = slog.LevelWarn
	}
	ctx := r.Context()
	if !h.audit.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 20) // room for every field below: one allocation
	attrs = append(attrs,
		slog.String("request_id", st.id),
		slog.String("trace_id", st.traceID),
		slog.String("method", r.Method),
		slog.String("host", r.Host),
		slog.String("path", r.URL.Path),
		slog.String("remote", r.RemoteAddr),
	)
	if st.route != nil {
		attrs = append(attrs, slog.String("route", st.route.Name), slog.String("upstream", st.route.Upstream.Name))
	}
	attrs = append(attrs, slog.String("decision", decision))
	if st.ident != nil {
		attrs = append(attrs, slog.String("auth", st.ident.Method), slog.String("identity", st.ident.Key()), slog.String("rule", st.rule))
	}
	if st.reason != "" {
		attrs = append(attrs, slog.String("reason", st.reason))
	}
	if st.errCode != "" {
		attrs = append(attrs, slog.String("error", st.errCode))
	}
	attrs = append(attrs, slog.Int("status", status))
	if st.upStatus != 0 {
		attrs = append(attrs, slog.Int("upstream_status", st.upStatus))
	}
	if st.replayed {
		attrs = append(attrs, slog.Bool("replayed", true))
	}
	attrs = append(attrs,
		slog.Int64("bytes", sw.bytes),
		slog.Float64("duration_ms", float64(h.now().Sub(start).Microseconds())/1000),
	)
	if st.upDur > 0 {
		attrs = append(attrs, slog.Float64("upstream_ms", float64(st.upDur.Microseconds())/1000))
	}
	h.audit.LogAttrs(ctx, level, "request", attrs...)
}
