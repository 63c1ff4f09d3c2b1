// Package credential provides the credentials modelgate presents to upstream
// scoring endpoints: static keys, keys fetched from an Azure ML workspace,
// AKS service tokens, online-endpoint tokens and Azure AD tokens obtained with
// the gateway's own identity (see package credential/azcred).
//
// Every upstream auth type is a Source. Token and fetched-key sources share
// one refresh engine which, compared with golang.org/x/oauth2's
// ReuseTokenSource, takes a context, refreshes in the background ahead of
// expiry instead of blocking callers at expiry, keeps one fetch in flight no
// matter how many callers wait, backs off with jitter on failure, and keeps
// serving the cached credential while it is still valid when the token
// service is down. Only past its hard expiry do callers get an
// *UnavailableError.
//
// Security: credential values are Secrets, which redact themselves in fmt,
// slog and JSON. Errors and Status never contain a credential. Nothing in this
// package logs a credential value.
package credential

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/modelgate/modelgate/internal/redact"
)

// Secret holds a credential value; see redact.Secret.
type Secret = redact.Secret

// Credential is one upstream credential, as a Source hands it out.
type Credential struct {
	// Value is what goes after "Bearer " in the upstream Authorization header.
	Value Secret
	// ExpiresAt is the hard expiry; zero means the credential does not expire
	// (keys).
	ExpiresAt time.Time
	// Generation identifies this credential within its source: it changes
	// whenever the source starts handing out a different credential (a new
	// token, a switch from primary to secondary key). Pass the Credential
	// back to Rejected unchanged.
	Generation uint64
	// Label is a safe description for logs: "primary key", "secondary key",
	// "aml service token", "aml endpoint token", "aad token".
	Label string

	// header is "Bearer " + Value, built once when the source created the
	// credential, so the proxy builds no string per request.
	header Secret
}

// Format prints c without its secrets, for every verb: fmt reads an
// unexported field by reflection, past any method that would redact it.
func (c Credential) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, "{Value:%s ExpiresAt:%s Generation:%d Label:%s}", redact.Redacted, c.ExpiresAt.Format(time.RFC3339), c.Generation, c.Label)
}

// LogValue logs c without its secrets.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("label", c.Label), slog.Uint64("generation", c.Generation), slog.Time("expires_at", c.ExpiresAt))
}

// Header returns the value of the upstream Authorization header for c:
// "Bearer " followed by Value. It is a secret: put it on the wire, never in
// a log. For a credential handed out by a source in this package it was built
// when the source obtained the credential, so Header does not allocate; for
// one built elsewhere it is built on each call.
func (c Credential) Header() string {
	if c.header == "" {
		return bearer(c.Value).Reveal()
	}
	return c.header.Reveal()
}

// bearer returns the Authorization header value for v.
func bearer(v Secret) Secret { return Secret("Bearer " + v.Reveal()) }

// Source hands out the credential an upstream expects. The proxy calls
// Credential for every forwarded request and Rejected when the upstream
// answers 401.
//
// Implementations in this package are safe for concurrent use by multiple
// goroutines.
type Source interface {
	// Credential returns the credential to present now. It never blocks on
	// the network while a valid cached credential exists. Before the first
	// successful fetch it waits, bounded by ctx, for the fetch in flight.
	// When no valid credential can be had it returns an *UnavailableError,
	// which the proxy maps to 503 upstream_credential_unavailable.
	Credential(ctx context.Context) (Credential, error)

	// Rejected reports that the upstream answered 401 to c. The source stops
	// preferring c and, with one refresh in flight no matter how many
	// callers report the same stale generation, fetches or switches to
	// another credential. It returns true when the next Credential call
	// returns a credential different from c, that is, when replaying the
	// request is worthwhile. Refetches triggered this way are rate-limited
	// (RefreshPolicy.RejectInterval) so a flood of 401s cannot hammer the
	// control plane. Rejected waits for the refresh, bounded by ctx.
	Rejected(ctx context.Context, c Credential) bool

	// Status reports the source's state for /readyz and logs. It never
	// contains a credential value and never blocks on the network.
	Status() Status
}

// ManagedSource is a Source with a lifecycle. Every constructor in this
// package returns one. The wiring calls Start once and Close when the source
// is retired (configuration reload, shutdown).
type ManagedSource interface {
	Source
	// Start begins the first fetch in the background and returns at once.
	// Calling Credential before Start is allowed and fetches on demand.
	Start()
	// Close stops background refreshes, cancels a fetch in flight and waits
	// for it to return. Credential and Rejected fail after Close.
	Close() error
}

// Status is a source's state, safe to serve as JSON on the admin listener:
// it contains no credential values.
type Status struct {
	// Name is the upstream (source) name from the configuration.
	Name string `json:"name"`
	// Type is the upstream auth type: key, aml_keys, aml_service_token,
	// aml_endpoint_token or aad_token.
	Type string `json:"type"`
	// Ready is true when the source holds a valid credential now.
	Ready bool `json:"ready"`
	// Label describes the credential being served, e.g. "secondary key".
	Label string `json:"label,omitempty"`
	// ValidUntil is the served credential's hard expiry; omitted for keys,
	// which do not expire.
	ValidUntil time.Time `json:"valid_until,omitzero"`
	// NextRefresh is when the next background fetch is due (a retry, after
	// a failure).
	NextRefresh time.Time `json:"next_refresh,omitzero"`
	// LastRefresh is when a fetch last succeeded.
	LastRefresh time.Time `json:"last_refresh,omitzero"`
	// LastError describes the last failed fetch, cleared by a success.
	LastError string `json:"last_error,omitempty"`
	// LastErrorAt is when LastError happened.
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Refreshes counts successful fetches.
	Refreshes uint64 `json:"refreshes"`
	// Failures counts failed fetches.
	Failures uint64 `json:"failures"`
	// ConsecutiveFailures counts failures since the last success; it drives
	// the backoff.
	ConsecutiveFailures int `json:"consecutive_failures"`
}

// CodeUnavailable is the error code the proxy answers with (503) when a
// source has no valid credential.
const CodeUnavailable = "upstream_credential_unavailable"

// ErrClosed is returned (wrapped in *UnavailableError) after Close.
var ErrClosed = errors.New("credential source closed")

// UnavailableError means a source has no valid credential to hand out: it has
// never obtained one, or the last one expired (or was rejected) and fetching a
// new one failed. Err is the cause — the last fetch error, a context error, or
// ErrClosed — and never contains a credential.
type UnavailableError struct {
	// Source is the source's name.
	Source string
	// ExpiredAt is when the last credential expired; zero when the source
	// never had one.
	ExpiredAt time.Time
	// RetryAt is when the source next tries to fetch, if known.
	RetryAt time.Time
	// Err is the cause.
	Err error
}

func (e *UnavailableError) Error() string {
	msg := fmt.Sprintf("credential: no valid upstream credential for %q", e.Source)
	if !e.ExpiredAt.IsZero() {
		msg += " (last one expired " + e.ExpiredAt.UTC().Format(time.RFC3339) + ")"
	}
	if !e.RetryAt.IsZero() {
		msg += "; next attempt " + e.RetryAt.UTC().Format(time.RFC3339)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the cause.
func (e *UnavailableError) Unwrap() error { return e.Err }
