package credential

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Token is what a token-fetching function returns.
type Token struct {
	// Value is the bearer token.
	Value Secret
	// RefreshAt is the service's hint for when to fetch a new token
	// (refreshAfter, refreshAfterTimeUtc, azcore.AccessToken.RefreshOn).
	// Zero, or not before ExpiresAt, means RefreshPolicy.RefreshAhead
	// applies.
	RefreshAt time.Time
	// ExpiresAt is the hard expiry. Zero means the token does not expire
	// and is fetched once.
	ExpiresAt time.Time
}

// TokenSourceOptions configures NewTokenSource.
type TokenSourceOptions struct {
	// Name is the upstream's name, used in Status, logs and errors.
	Name string
	// Type is the upstream auth type reported by Status,
	// e.g. "aml_service_token".
	Type string
	// Label describes the token in Credential.Label and logs,
	// e.g. "aml service token".
	Label string
	// Fetch obtains a new token. It is called by one goroutine at a time
	// with a context bounded by Refresh.FetchTimeout and cancelled by Close.
	// Its errors must not contain the token (or any other secret).
	Fetch func(ctx context.Context) (Token, error)
	// Clock defaults to SystemClock().
	Clock Clock
	// Logger receives one line per refresh (never the token); nil discards.
	Logger *slog.Logger
	// Refresh tunes backoff, timeouts and rate limits.
	Refresh RefreshPolicy
}

// TokenSource is a Source of expiring bearer tokens obtained by a fetch
// function, refreshed in the background ahead of expiry. The
// aml_service_token, aml_endpoint_token and aad_token sources are
// TokenSources. It is safe for concurrent use.
//
// Rejected refetches (at most once per RefreshPolicy.RejectInterval, one
// fetch for any number of concurrent callers) and reports true only when the
// fetch produced a different token: a token service that answers from a
// cache (azidentity does, until shortly before expiry) may return the same
// one, in which case a replay is pointless.
type TokenSource struct {
	label string
	engine[bearerToken]
}

var _ ManagedSource = (*TokenSource)(nil)

// NewTokenSource returns a TokenSource for o. It does not fetch until Start
// or the first Credential call.
func NewTokenSource(o TokenSourceOptions) (*TokenSource, error) {
	if o.Name == "" {
		return nil, errors.New("credential: token source needs a name")
	}
	if o.Fetch == nil {
		return nil, fmt.Errorf("credential: token source %q needs a fetch function", o.Name)
	}
	o.Type, o.Label = cmp.Or(o.Type, "token"), cmp.Or(o.Label, "token")
	r := newRefresher(refresherConfig[bearerToken]{
		name: o.Name,
		kind: o.Type,
		fetch: func(ctx context.Context) (bearerToken, lifetime, error) {
			t, err := o.Fetch(ctx)
			if err != nil {
				return bearerToken{}, lifetime{}, err
			}
			if t.Value.IsZero() {
				return bearerToken{}, lifetime{}, errors.New("token service returned an empty token")
			}
			return bearerToken{t.Value, bearer(t.Value)}, lifetime{refreshAt: t.RefreshAt, expiresAt: t.ExpiresAt}, nil
		},
		describe: func(bearerToken) []slog.Attr { return []slog.Attr{slog.String("label", o.Label)} },
		clock:    o.Clock,
		log:      o.Logger,
		pol:      o.Refresh,
	})
	return &TokenSource{label: o.Label, engine: engine[bearerToken]{r}}, nil
}

// Credential returns the cached token, or waits (bounded by ctx) for the
// first fetch. See Source.
func (s *TokenSource) Credential(ctx context.Context) (Credential, error) {
	e, err := s.r.get(ctx)
	if err != nil {
		return Credential{}, err
	}
	return s.credential(e), nil
}

func (s *TokenSource) credential(e entry[bearerToken]) Credential {
	return Credential{Value: e.val.value, ExpiresAt: e.expiresAt, Generation: e.seq, Label: s.label, header: e.val.header}
}

// bearerToken is a fetched token with its Authorization header value, built
// once per fetch rather than once per request.
type bearerToken struct {
	value  Secret
	header Secret
}

// Rejected refetches the token once for any number of callers reporting the
// same generation, and reports whether the token changed. See Source.
func (s *TokenSource) Rejected(ctx context.Context, c Credential) bool {
	e, ok, err := s.r.refreshNow(ctx, c.Generation)
	changed := ok && !e.val.value.Equal(c.Value)
	if !changed {
		attrs := []slog.Attr{slog.Uint64("generation", c.Generation)}
		if err != nil {
			attrs = append(attrs, slog.String("error", err.Error()))
		}
		s.r.log.LogAttrs(ctx, slog.LevelWarn, "upstream rejected credential; no different one available", attrs...)
	}
	return changed
}

// Status reports the source's state without the token.
func (s *TokenSource) Status() Status {
	st, cur := s.r.status()
	if cur != nil {
		st.Label = s.label
	}
	return st
}
