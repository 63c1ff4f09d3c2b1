package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/modelgate/modelgate/ratelimit"
)

// TokenLimiter bounds the LLM tokens an identity may use on a route;
// *ratelimit.Tokens implements it. The proxy calls Check before forwarding
// (429 with Retry-After when a window is used up, 503 when the store is
// unavailable and on_error is deny) and Charge with the answer's
// usage.total_tokens once the answer is complete.
type TokenLimiter interface {
	Check(ctx context.Context, identity string, now time.Time) ratelimit.TokenVerdict
	Charge(ctx context.Context, identity string, n int64, now time.Time)
}

// TokenObserver counts tokens by kind (prompt, completion, total) and the
// answers that reported no usage; *metrics.Route implements it. Never by
// identity.
type TokenObserver interface {
	Tokens(prompt, completion, total int64)
	NoUsage()
}

// Headers an answer carries where a token limit applies (OpenAI's names).
const (
	headerLimitTokens     = "X-Ratelimit-Limit-Tokens"
	headerRemainingTokens = "X-Ratelimit-Remaining-Tokens"
)

// maxUsageBytes bounds what is kept to find usage: a non-streamed JSON
// answer up to this size, or one SSE line. Larger ones charge nothing
// (and count as answers without usage).
const maxUsageBytes = 1 << 20

// traceUsageBytes is the bound where only a span wants the usage (no token
// limit on the route): an LLM answer that is not streamed fits; a large
// scoring answer is passed through without being kept.
const traceUsageBytes = 64 << 10

// tokenState is a request's token limit bookkeeping.
type tokenState struct {
	who      string     // the identity the token limit admitted, to charge
	usage    tokenUsage // what the answer reported
	answered bool       // an upstream answer arrived
	spanOnly bool       // no token limit: only the request's span reports the usage
	now      func() time.Time
	first    time.Time // when the answer's first body bytes arrived (spans only)
}

// tokenUsage is an OpenAI-shaped usage object.
type tokenUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

// checkTokens admits the request under the route's token limit, or
// answers 429/503; it reports whether the request may proceed.
func (h *Handler) checkTokens(w *statusWriter, r *http.Request, st *reqState, l TokenLimiter, who string) bool {
	v := l.Check(r.Context(), who, h.now())
	if v.Limit > 0 {
		w.Header().Set(headerLimitTokens, strconv.FormatInt(v.Limit, 10))
		w.Header().Set(headerRemainingTokens, strconv.FormatInt(v.Remaining, 10))
	}
	if v.OK {
		st.tok = &tokenState{who: who}
		if st.span != nil {
			st.tok.now = h.now // time to first token, for the span
		}
		return true
	}
	refuseLimited(w, st, v.RetryAfter, v.Unavailable, "token limit", "token limit reached on this route")
	return false
}

// watchUsage makes res's body record the usage it reports into st as it
// is read, without delaying or buffering what the client gets.
func watchUsage(res *http.Response, st *reqState) {
	st.tok.answered = true
	if res.Body == nil || res.Body == http.NoBody {
		return
	}
	mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
	switch mt {
	case "text/event-stream":
		res.Body = &usageBody{rc: res.Body, st: st, sse: true}
	case "application/json":
		res.Body = &usageBody{rc: res.Body, st: st}
	}
}

// usageBody passes an answer through and finds its usage: in a JSON
// answer, its top-level usage; in a server-sent event stream, the last
// data event that carries one (OpenAI sends it in the final chunk when
// stream_options.include_usage is set).
type usageBody struct {
	rc   io.ReadCloser
	st   *reqState
	sse  bool
	buf  []byte // JSON: the body so far; SSE: the current line
	over bool   // JSON: the body outgrew maxUsageBytes; SSE: skip to the next line
	done bool
}

func (u *usageBody) Read(p []byte) (int, error) {
	n, err := u.rc.Read(p)
	if n > 0 && u.st.tok.now != nil && u.st.tok.first.IsZero() {
		u.st.tok.first = u.st.tok.now()
	}
	if n > 0 && !u.done {
		if u.sse {
			u.feedSSE(p[:n])
		} else if !u.over {
			limit := maxUsageBytes
			if u.st.tok.spanOnly {
				limit = traceUsageBytes
			}
			if len(u.buf)+n > limit {
				u.over, u.buf = true, nil
			} else {
				u.buf = append(u.buf, p[:n]...)
			}
		}
	}
	if err == io.EOF && !u.done {
		u.done = true
		if u.sse {
			u.line(u.buf)
		} else if !u.over {
			u.parse(u.buf)
		}
		u.buf = nil
	}
	return n, err
}

func (u *usageBody) Close() error { return u.rc.Close() }

func (u *usageBody) feedSSE(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if !u.over {
				if len(u.buf)+len(p) > maxUsageBytes {
					u.over, u.buf = true, u.buf[:0]
				} else {
					u.buf = append(u.buf, p...)
				}
			}
			return
		}
		if !u.over && len(u.buf)+i <= maxUsageBytes {
			if len(u.buf) == 0 {
				u.line(p[:i])
			} else {
				u.buf = append(u.buf, p[:i]...)
				u.line(u.buf)
			}
		}
		u.over, u.buf = false, u.buf[:0]
		p = p[i+1:]
	}
}

// line looks at one SSE line for a data event with usage.
func (u *usageBody) line(l []byte) {
	l = bytes.TrimSuffix(l, []byte("\r"))
	data, ok := bytes.CutPrefix(l, []byte("data:"))
	if !ok || !bytes.Contains(data, []byte(`"usage"`)) {
		return
	}
	u.parse(bytes.TrimSpace(data))
}

func (u *usageBody) parse(b []byte) {
	var v struct {
		Usage *tokenUsage `json:"usage"`
	}
	if json.Unmarshal(b, &v) == nil && v.Usage != nil && v.Usage.TotalTokens > 0 {
		u.st.tok.usage = *v.Usage
	}
}

// chargeTokens charges the route's token limit with the answer's usage
// and counts it, once the answer is complete. It runs before the handler
// returns, so a caller's next request sees this one's usage; with a store
// it costs one round trip, bounded by the store's timeout.
func (h *Handler) chargeTokens(st *reqState) {
	if st.tok == nil || st.route.Tokens == nil {
		return // no token limit, or only a span that reports usage
	}
	obs, _ := st.route.Metrics.(TokenObserver)
	u := st.tok.usage
	if u.TotalTokens <= 0 {
		if obs != nil && st.tok.answered {
			obs.NoUsage()
		}
		return
	}
	if obs != nil {
		obs.Tokens(u.PromptTokens, u.CompletionTokens, u.TotalTokens)
	}
	st.route.Tokens.Charge(context.Background(), st.tok.who, u.TotalTokens, h.now())
}

// injectStreamUsage adds "stream_options":{"include_usage":true} at the
// start of a buffered JSON request body that asks for a stream and has no
// stream_options, so an OpenAI-compatible server reports usage in its last
// event. Everything else in the body stays byte for byte; a body that is
// not buffered, not JSON, not streamed or already has stream_options is
// left alone.
func injectStreamUsage(r *http.Request) {
	if r.GetBody == nil || r.ContentLength <= 0 {
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		return
	}
	rc, err := r.GetBody()
	if err != nil {
		return
	}
	body, err := io.ReadAll(rc)
	if err != nil {
		return
	}
	var v struct {
		Stream        *bool           `json:"stream"`
		StreamOptions json.RawMessage `json:"stream_options"`
	}
	if json.Unmarshal(body, &v) != nil || v.Stream == nil || !*v.Stream || v.StreamOptions != nil {
		return
	}
	i := bytes.IndexByte(body, '{')
	if i < 0 {
		return
	}
	const opt = `"stream_options":{"include_usage":true},`
	out := make([]byte, 0, len(body)+len(opt))
	out = append(append(append(out, body[:i+1]...), opt...), body[i+1:]...)
	r.Body = io.NopCloser(bytes.NewReader(out))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(out)), nil }
	r.ContentLength = int64(len(out))
}
