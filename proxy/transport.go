package proxy

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/modelgate/modelgate/credential"
)

// UpstreamAuth supplies the credential the gateway presents to an upstream;
// every credential.Source implements it. Implementations must be safe for
// concurrent use.
type UpstreamAuth interface {
	// Credential returns the credential to present now. It must not block
	// on the network while a valid credential is cached. An error means no
	// valid credential can be had now (the client gets 503
	// upstream_credential_unavailable). The proxy sends c.Header(), so a
	// source should hand out credentials whose header it built once.
	Credential(ctx context.Context) (credential.Credential, error)
	// Rejected reports that the upstream answered 401 to c, which the proxy
	// passes back unchanged. It returns true when a different credential is
	// now available, so that one replay is worthwhile.
	Rejected(ctx context.Context, c credential.Credential) bool
}

// authTransport injects the upstream credential into each outbound request
// and handles an upstream 401: it tells the credential source, and replays
// the request once with the new credential when the body can be replayed.
// A final 401 never reaches the client as such (the client's own credential
// was fine; the gateway's was refused), it becomes a 502.
type authTransport struct {
	base http.RoundTripper
	auth UpstreamAuth
}

// withAuth returns base with auth's credential injected, or base itself
// when auth is nil.
func withAuth(base http.RoundTripper, auth UpstreamAuth) http.RoundTripper {
	if auth == nil {
		return base
	}
	return &authTransport{base: base, auth: auth}
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	st := stateFrom(ctx)
	cred, err := t.auth.Credential(ctx)
	if err != nil {
		closeBody(req)
		return nil, &errCredentialUnavailable{err: err}
	}
	// req is the ReverseProxy's own outbound clone, built for this call, so
	// setting its header in place is safe.
	req.Header["Authorization"] = []string{cred.Header()}
	start := time.Now()
	resp, err := t.base.RoundTrip(req)
	if st != nil {
		if st.upStart.IsZero() {
			st.upStart = start
		}
		st.upDur += time.Since(start) // every try of a pool counts
	}
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		if st != nil && resp != nil {
			st.upStatus = resp.StatusCode
		}
		if err == nil {
			t.accepted(cred)
		}
		return resp, err
	}
	drain(resp)
	if !t.auth.Rejected(ctx, cred) {
		return nil, &errUpstreamRejected{}
	}
	if req.GetBody == nil && req.ContentLength != 0 {
		// A later request will use the new credential; this one cannot be
		// sent again.
		return nil, &errUpstreamRejected{tooLarge: true}
	}
	cred, err = t.auth.Credential(ctx)
	if err != nil {
		return nil, &errCredentialUnavailable{err: err}
	}
	retry := req.Clone(ctx)
	if req.GetBody != nil {
		if retry.Body, err = req.GetBody(); err != nil {
			return nil, err
		}
	}
	retry.Header["Authorization"] = []string{cred.Header()}
	if st != nil {
		st.replayed = true
	}
	start = time.Now()
	resp, err = t.base.RoundTrip(retry)
	if st != nil {
		st.upDur += time.Since(start)
	}
	if err != nil {
		return nil, err
	}
	if st != nil {
		st.upStatus = resp.StatusCode
	}
	if resp.StatusCode == http.StatusUnauthorized {
		drain(resp)
		t.auth.Rejected(ctx, cred)
		return nil, &errUpstreamRejected{replayed: true}
	}
	t.accepted(cred)
	return resp, nil
}

// acceptedReporter is implemented by sources that need to hear that a
// credential worked (credential.KeySource): it tells a path's own 401s from
// a revoked key, so that such a path cannot make the gateway flip between
// keys (issue "Harden the edge", item 8).
type acceptedReporter interface {
	Accepted(c credential.Credential)
}

// accepted tells the source, if it wants to know, that the upstream took c.
func (t *authTransport) accepted(c credential.Credential) {
	if a, ok := t.auth.(acceptedReporter); ok {
		a.Accepted(c)
	}
}

// drain reads a little of an unwanted response so its connection can be
// reused, then closes it.
func drain(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	resp.Body.Close()
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
