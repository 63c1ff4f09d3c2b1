package credential

import (
	"context"
	"sync"
	"sync/atomic"
)

// HeaderAuth adapts a Source to callers that deal in Authorization header
// values and generations only, such as the proxy's UpstreamAuth interface:
//
//	Authorization(ctx) (value string, gen uint64, err error)
//	Rejected(ctx, gen uint64) bool
//
// It remembers the last few credentials it handed out, so that Rejected can
// pass the rejected Credential itself to the Source. It is safe for
// concurrent use.
type HeaderAuth struct {
	src Source

	// last caches the header of the credential handed out most recently, so
	// the common case (the same credential as before) takes no lock and
	// builds no string.
	last atomic.Pointer[headerValue]

	mu     sync.Mutex
	recent [4]Credential
	next   int
}

type headerValue struct {
	cred   Credential
	header string
}

// NewHeaderAuth returns a HeaderAuth for src.
func NewHeaderAuth(src Source) *HeaderAuth { return &HeaderAuth{src: src} }

// Source returns the underlying Source.
func (h *HeaderAuth) Source() Source { return h.src }

// Authorization returns "Bearer <credential>" and the credential's
// generation. The value is a secret: put it on the wire, never in a log.
// Errors are the Source's (*UnavailableError).
func (h *HeaderAuth) Authorization(ctx context.Context) (string, uint64, error) {
	c, err := h.src.Credential(ctx)
	if err != nil {
		return "", 0, err
	}
	if v := h.last.Load(); v != nil && v.cred.Generation == c.Generation && v.cred.Value.Equal(c.Value) {
		return v.header, c.Generation, nil
	}
	h.mu.Lock()
	if h.recent[(h.next+len(h.recent)-1)%len(h.recent)].Generation != c.Generation || c.Generation == 0 {
		h.recent[h.next] = c
		h.next = (h.next + 1) % len(h.recent)
	}
	h.mu.Unlock()
	v := &headerValue{cred: c, header: "Bearer " + c.Value.Reveal()}
	h.last.Store(v)
	return v.header, c.Generation, nil
}

// Rejected reports to the Source that the upstream answered 401 to the
// credential of generation gen; see Source.Rejected.
func (h *HeaderAuth) Rejected(ctx context.Context, gen uint64) bool {
	c := Credential{Generation: gen}
	h.mu.Lock()
	for _, r := range h.recent {
		if r.Generation == gen && !r.Value.IsZero() {
			c = r
			break
		}
	}
	h.mu.Unlock()
	return h.src.Rejected(ctx, c)
}
