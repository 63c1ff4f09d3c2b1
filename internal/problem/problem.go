// Package problem carries configuration problems from the package that
// validates a setting to the one that knows where the setting was written.
//
// A runtime package (idp, credential, tlsserve, ratelimit, ...) validates the
// settings it consumes and reports each problem at a field path relative to
// its own options ("tenant_id", "domains[0]"). The caller prefixes the path
// with where those options sit in the configuration (Under), and package
// config turns the full path into file:line. So every rule is written once,
// where it is used, and `gateway check` reports it exactly as `serve` would.
package problem

import (
	"errors"
	"fmt"
)

// Error is one problem with the setting at Path. Msg says what is wrong and,
// where it can, what to write instead; it never contains a secret.
type Error struct {
	// Path is the field path, dot-separated with [i] for list items, e.g.
	// "identity_providers.corp.tenant_id". Empty means the whole thing.
	Path string
	// Msg is the problem, lower-case, without the path.
	Msg string
	// Err, when set, is a sentinel the problem wraps (for errors.Is).
	Err error
}

// Unwrap returns the sentinel the problem wraps, if any.
func (e *Error) Unwrap() error { return e.Err }

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// At returns a problem at path.
func At(path, format string, args ...any) *Error {
	return &Error{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// List collects problems; its Err joins them. The zero value is ready to use.
type List struct{ errs []error }

// Add records a problem at path.
func (l *List) Add(path, format string, args ...any) { l.AddErr(nil, path, format, args...) }

// AddErr records a problem at path that wraps sentinel.
func (l *List) AddErr(sentinel error, path, format string, args ...any) {
	l.errs = append(l.errs, &Error{Path: path, Msg: fmt.Sprintf(format, args...), Err: sentinel})
}

// Err returns every problem joined with errors.Join, or nil.
func (l *List) Err() error { return errors.Join(l.errs...) }

// Under returns err with every problem's path placed below prefix: a *Error
// at "cloud" under "identity_providers.corp" is at
// "identity_providers.corp.cloud". Errors that are not *Error become a
// problem at prefix itself. A joined error stays joined. Under(p, nil) is nil.
func Under(prefix string, err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range Flatten(err) {
		var pe *Error
		if errors.As(e, &pe) {
			out = append(out, &Error{Path: join(prefix, pe.Path), Msg: pe.Msg, Err: pe.Err})
			continue
		}
		out = append(out, &Error{Path: prefix, Msg: e.Error()})
	}
	return errors.Join(out...)
}

func join(prefix, path string) string {
	switch {
	case prefix == "":
		return path
	case path == "":
		return prefix
	case path[0] == '[':
		return prefix + path
	}
	return prefix + "." + path
}

// Flatten returns the errors joined in err (recursively), or err alone.
func Flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, Flatten(e)...)
		}
		return out
	}
	return []error{err}
}
