// Package redact holds Secret, the one string type for credential values in
// modelgate: configuration secrets, upstream keys and tokens. Every printing,
// logging and encoding path shows "[REDACTED]".
package redact

import (
	"crypto/subtle"
	"fmt"
	"log/slog"
)

// Redacted is what every printing, logging and encoding path shows in place
// of a Secret.
const Redacted = "[REDACTED]"

// Secret holds a credential value: an upstream key or token, or a client
// secret. Every way of printing it — fmt with any verb (%v, %s, %+v, %#v,
// %q, %x, %d…), slog (LogValue), encoding/json and encoding.TextMarshaler —
// yields "[REDACTED]", so a Secret that ends up in a log line, an error or
// a /readyz body leaks nothing. Reveal returns the value; call it only where
// the value goes on the wire.
//
// Converting a Secret back with string(s) also reveals it; prefer Reveal so
// that every use is easy to find. Do not use a Secret as a map key in
// something that is marshalled: encoding/json writes string-kinded keys
// verbatim.
type Secret string

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// IsZero reports whether s is empty.
func (s Secret) IsZero() bool { return s == "" }

// Equal reports whether s and o hold the same value, in time that does not
// depend on where they differ.
func (s Secret) Equal(o Secret) bool {
	return subtle.ConstantTimeCompare([]byte(s), []byte(o)) == 1
}

// String returns "[REDACTED]".
func (s Secret) String() string { return Redacted }

// GoString returns "[REDACTED]", for %#v.
func (s Secret) GoString() string { return Redacted }

// Format writes "[REDACTED]" for every verb, including ones such as %d and
// %x that fmt would otherwise apply to the underlying string.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		_, _ = fmt.Fprintf(f, "%q", Redacted)
		return
	}
	_, _ = f.Write([]byte(Redacted))
}

// LogValue implements slog.LogValuer: slog shows "[REDACTED]".
func (s Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalJSON encodes "[REDACTED]". A Secret therefore never round-trips
// through JSON; that is the point.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText encodes "[REDACTED]" for encoders that use
// encoding.TextMarshaler (map keys, YAML, XML).
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

var (
	_ fmt.Formatter  = Secret("")
	_ fmt.Stringer   = Secret("")
	_ fmt.GoStringer = Secret("")
	_ slog.LogValuer = Secret("")
)
