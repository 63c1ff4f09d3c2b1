package proxy

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/modelgate/modelgate/internal/jsonline"
)

// logRequest writes the one structured line per request: who asked for
// what, what was decided and why, and how long it took. It never records a
// credential, the query string or a header value other than the request id.
func (h *Handler) logRequest(r *http.Request, st *reqState, sw *statusWriter, start time.Time) {
	status := sw.answered()
	decision := "admit"
	if st.ident == nil {
		decision = "deny"
	}
	if st.route != nil && st.route.Metrics != nil {
		auth := ""
		if st.ident != nil {
			auth = st.ident.Method
		}
		st.route.Metrics.Observe(status, auth, h.now().Sub(start), st.upDur, st.errCode)
	}
	level := slog.LevelInfo
	if status >= 500 && status != StatusClientClosedRequest {
		level = slog.LevelWarn
	}
	ctx := r.Context()
	if !h.audit.Enabled(ctx, level) {
		return
	}
	ln := h.audit.Begin(time.Now(), level, "request")
	h.requestFields(ln, r, st, sw, status, decision, start)
	h.audit.Write(ctx, ln)
}

// requestFields writes the audit schema (README, "Audit trail").
func (h *Handler) requestFields(f *jsonline.Line, r *http.Request, st *reqState, sw *statusWriter, status int, decision string, start time.Time) {
	f.Str("request_id", st.id)
	f.Str("trace_id", st.traceID)
	f.Str("method", r.Method)
	f.Str("host", r.Host)
	f.Str("path", r.URL.Path)
	f.Str("remote", r.RemoteAddr)
	if st.route != nil {
		f.Str("route", st.route.Name)
		f.Str("upstream", st.route.Upstream.Name)
	}
	f.Str("decision", decision)
	if st.ident != nil {
		f.Str("auth", st.ident.Method)
		f.Str("identity", st.ident.Key())
		f.Str("rule", st.rule)
	}
	if st.reason != "" {
		f.Str("reason", st.reason)
	}
	if st.errCode != "" {
		f.Str("error", st.errCode)
	}
	f.Int("status", int64(status))
	if st.upStatus != 0 {
		f.Int("upstream_status", int64(st.upStatus))
	}
	if st.backend != "" {
		f.Str("backend", st.backend)
		f.Int("tries", int64(st.tries))
	}
	if st.tok != nil && st.tok.usage.TotalTokens > 0 {
		f.Int("prompt_tokens", st.tok.usage.PromptTokens)
		f.Int("completion_tokens", st.tok.usage.CompletionTokens)
		f.Int("total_tokens", st.tok.usage.TotalTokens)
	}
	if st.replayed {
		f.Bool("replayed", true)
	}
	f.Int("bytes", sw.bytes)
	f.Millis("duration_ms", h.now().Sub(start))
	if st.upDur > 0 {
		f.Millis("upstream_ms", st.upDur)
	}
}
