package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"

	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/ratelimit"
)

// Error codes the gateway itself answers with, in the JSON body
// {"error":{"code":"...","message":"..."}}. A missing upstream credential is
// answered with credential.CodeUnavailable (503).
const (
	CodeNoRoute               = "no_route"
	CodeBadPath               = "bad_path"
	CodeBodyTooLarge          = "body_too_large"
	CodeBadRequest            = "bad_request"
	CodeRequestTimeout        = "request_timeout" // the request body stopped arriving (server.read_body_timeout)
	CodeUpstreamUnavailable   = "upstream_unavailable"
	CodeUpstreamTimeout       = "upstream_timeout"
	CodeUpstreamRejectedCred  = "upstream_credential_rejected"
	CodeRateLimited           = "rate_limited"
	CodeLimitsUnavailable     = "limits_unavailable" // limits.store failed and its on_error is deny
	CodeClientClosedRequest   = "client_closed_request"
	CodeUpstreamAborted       = "upstream_aborted" // logged only: the answer had begun when the upstream broke off
	StatusClientClosedRequest = 499                // nginx's code; logged, never sent
	maxErrorMessageLength     = 512
	headerWWWAuthenticate     = "Www-Authenticate"
	headerRetryAfter          = "Retry-After"
	headerRequestID           = "X-Request-Id"
)

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// WriteError writes the gateway's JSON error response. The message must be
// safe for the client: no credential, no internal address.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	if len(message) > maxErrorMessageLength {
		message = message[:maxErrorMessageLength]
	}
	var b errorBody
	b.Error.Code, b.Error.Message = code, message
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // "<token>" reads better than "\u003ctoken\u003e"
	_ = enc.Encode(&b)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// errCredentialUnavailable wraps a failure to obtain the upstream credential.
type errCredentialUnavailable struct{ err error }

func (e *errCredentialUnavailable) Error() string {
	return "upstream credential unavailable: " + e.err.Error()
}
func (e *errCredentialUnavailable) Unwrap() error { return e.err }

// errUpstreamRejected is returned when the upstream answered 401 to the
// gateway's credential and no replay could fix it: the replay was refused
// too (replayed), the request body could not be sent again (tooLarge), or
// there was no other credential to try (neither).
type errUpstreamRejected struct{ replayed, tooLarge bool }

func (e *errUpstreamRejected) Error() string {
	switch {
	case e.replayed:
		return "upstream refused the gateway's credential after a refresh and replay"
	case e.tooLarge:
		return "upstream refused the gateway's credential (request body too large to replay)"
	}
	return "upstream refused the gateway's credential and no other credential is available"
}

// classify maps a proxying error to a status, code and client message, the
// way Caddy's statusError does: timeouts are 504, a client that went away is
// 499 (logged only), credential problems are 503 or 502, the rest 502.
func classify(err error) (status int, code, msg string) {
	var cu *errCredentialUnavailable
	var ur *errUpstreamRejected
	var mbe *http.MaxBytesError
	var ne net.Error
	var pu *errPoolUnavailable
	switch {
	case errors.As(err, &pu):
		return http.StatusServiceUnavailable, CodeUpstreamUnavailable, "every backend of this model is unavailable right now: retry after the time in Retry-After"
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, CodeBodyTooLarge, tooLargeMessage(mbe.Limit)
	case errors.As(err, &cu):
		return http.StatusServiceUnavailable, credential.CodeUnavailable, "the gateway cannot obtain a credential for the model endpoint right now: try again later"
	case errors.As(err, &ur):
		if ur.tooLarge {
			return http.StatusBadGateway, CodeUpstreamRejectedCred, "the model endpoint refused the gateway's credential and the request was too large to replay: retry the request"
		}
		return http.StatusBadGateway, CodeUpstreamRejectedCred, "the model endpoint refused the gateway's credential: the operators must check the upstream's auth settings"
	case errors.Is(err, context.Canceled):
		return StatusClientClosedRequest, CodeClientClosedRequest, "the client closed the request"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return http.StatusGatewayTimeout, CodeUpstreamTimeout, "the model endpoint did not answer in time: try again later"
	}
	return http.StatusBadGateway, CodeUpstreamUnavailable, "the model endpoint could not be reached: try again later"
}

// proxyError is the ReverseProxy's ErrorHandler: every transport failure
// becomes the gateway's JSON error with the right status.
func (h *Handler) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	status, code, msg := classify(err)
	st := stateFrom(r.Context())
	var mbe *http.MaxBytesError
	clientBody := errors.As(err, &mbe)
	if st != nil {
		if be := st.body.err.Load(); be != nil {
			// Reading the client's body failed while it streamed
			// upstream: the client's fault, never the upstream's, whatever
			// the Transport made of it (on HTTP/1.x the failed read also
			// cancels the request's context).
			clientBody = true
			status, code, msg = classifyBody(r.Context(), be.err)
		}
		st.errCode = code
	}
	if status == StatusClientClosedRequest {
		if sw, ok := w.(*statusWriter); ok && sw.status == 0 {
			sw.status = status
		}
		return
	}
	if status >= 500 && st != nil {
		h.log.LogAttrs(r.Context(), slog.LevelWarn, "upstream error",
			slog.String("request_id", st.id), slog.String("route", st.route.Name),
			slog.String("upstream", st.route.Upstream.Name), slog.String("code", code), slog.String("error", err.Error()))
	}
	var pu *errPoolUnavailable
	if errors.As(err, &pu) {
		w.Header().Set(headerRetryAfter, strconv.Itoa(ratelimit.RetryAfterSeconds(pu.retryAfter)))
	}
	if clientBody {
		// The rest of the streamed body stays unread: the connection
		// cannot carry another request.
		w.Header().Set("Connection", "close")
	}
	WriteError(w, status, code, msg)
	if status == http.StatusRequestEntityTooLarge && st != nil {
		h.discardRefused(w, r, st)
	}
}
