package pool

import (
	"net/http"
	"strconv"
	"time"
)

// Condition is a set of failure conditions, the values of retry.on. An
// attempt's [Outcome] carries at most one.
type Condition uint16

// The conditions retry.on may list.
const (
	// ConnectError: no connection to the backend (dial, TLS, reset before
	// any answer). The request certainly did not reach the model.
	ConnectError Condition = 1 << iota
	// CredentialUnavailable: the backend's credential could not be had, so
	// the request was not sent.
	CredentialUnavailable
	// Timeout: retry.per_try_timeout expired before the answer's headers.
	Timeout
	Status429
	Status500
	Status502
	Status503
	Status504
)

var conditionNames = [...]struct {
	c    Condition
	name string
}{
	{ConnectError, "connect_error"},
	{CredentialUnavailable, "credential_unavailable"},
	{Timeout, "timeout"},
	{Status429, "429"},
	{Status500, "500"},
	{Status502, "502"},
	{Status503, "503"},
	{Status504, "504"},
}

// ParseCondition returns the condition a retry.on entry names.
func ParseCondition(s string) (Condition, bool) {
	for _, n := range conditionNames {
		if n.name == s {
			return n.c, true
		}
	}
	return 0, false
}

// String returns the retry.on spelling of the conditions in c, joined with
// "|", or "none".
func (c Condition) String() string {
	s := ""
	for _, n := range conditionNames {
		if c&n.c != 0 {
			if s != "" {
				s += "|"
			}
			s += n.name
		}
	}
	if s == "" {
		return "none"
	}
	return s
}

// StatusCondition returns the condition an HTTP status is, or 0 for a
// status retry.on cannot name.
func StatusCondition(code int) Condition {
	switch code {
	case 429:
		return Status429
	case 500:
		return Status500
	case 502:
		return Status502
	case 503:
		return Status503
	case 504:
		return Status504
	}
	return 0
}

// Outcome is what one try of a backend came to. Build it with [Response] or
// [Failure]; the zero Outcome is a success without a status.
//
// How the breaker reads it (see [Pool.Report]): a 429 or 503 with a
// Retry-After throttles; a condition listed in retry.on counts as a failure;
// any other 5xx or unlisted condition is neutral; everything else (a 2xx,
// 3xx or 4xx answer) is a success.
type Outcome struct {
	// Cond is the failure condition, 0 when there is none.
	Cond Condition
	// Status is the backend's HTTP status, 0 when no answer arrived.
	Status int
	// RetryAfter is the wait a 429 or 503 asked for; valid when
	// HasRetryAfter.
	RetryAfter    time.Duration
	HasRetryAfter bool
	// Err is the transport or credential error, kept (as text) as the
	// backend's last error. It must not contain a secret.
	Err error
}

// Response returns the outcome of an answer with status code and header h,
// received at now. For a 429 or 503 it reads the wait from h with
// [ParseRetryAfter].
func Response(code int, h http.Header, now time.Time) Outcome {
	o := Outcome{Cond: StatusCondition(code), Status: code}
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		o.RetryAfter, o.HasRetryAfter = ParseRetryAfter(h, now)
	}
	return o
}

// Failure returns the outcome of a try that got no answer: cond is
// [ConnectError], [CredentialUnavailable] or [Timeout].
func Failure(cond Condition, err error) Outcome {
	return Outcome{Cond: cond, Err: err}
}

// throttled reports whether o is a backend asking to be left alone for
// RetryAfter.
func (o *Outcome) throttled() bool {
	return o.HasRetryAfter && (o.Status == http.StatusTooManyRequests || o.Status == http.StatusServiceUnavailable)
}

// describe returns the text kept as a backend's last error.
func (o *Outcome) describe() string {
	switch {
	case o.Err != nil:
		return o.Cond.String() + ": " + o.Err.Error()
	case o.Status != 0 && o.HasRetryAfter:
		return "status " + strconv.Itoa(o.Status) + " with Retry-After " + o.RetryAfter.String()
	case o.Status != 0:
		return "status " + strconv.Itoa(o.Status)
	}
	return o.Cond.String()
}

// maxDelay is what an absurdly large Retry-After saturates at; the breaker
// caps it at max_open_for anyway.
const maxDelay = time.Duration(1<<63 - 1)

// ParseRetryAfter returns how long a throttling answer with header h,
// received at now, asks the client to wait. It reads, in this order of
// precedence (the one azcore's retry policy uses), the first that parses:
//
//   - retry-after-ms: milliseconds, as Azure OpenAI and Azure ML send it;
//   - x-ms-retry-after-ms: milliseconds, the older Azure spelling;
//   - Retry-After: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
//
// The millisecond headers come first because they are precise where
// Retry-After is rounded to whole seconds. Values that are negative,
// fractional or otherwise malformed are ignored, so a later header may
// still apply. An HTTP-date in the past means no wait (0, true). Huge
// values saturate instead of overflowing; capping them is the breaker's job
// (circuit_breaker.max_open_for), not the parser's. It does not allocate.
func ParseRetryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	if d, ok := parseDelay(first(h, "Retry-After-Ms"), time.Millisecond); ok {
		return d, true
	}
	if d, ok := parseDelay(first(h, "X-Ms-Retry-After-Ms"), time.Millisecond); ok {
		return d, true
	}
	v := first(h, "Retry-After")
	if d, ok := parseDelay(v, time.Second); ok {
		return d, true
	}
	if v == "" || v[0] < 'A' || v[0] > 'Z' { // an HTTP-date starts with a day name
		return 0, false
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	if d := t.Sub(now); d > 0 {
		return d, true
	}
	return 0, true
}

// first is h.Get for a key already in canonical form, as net/http stores
// a response's keys, without Get's cost of canonicalizing it again.
func first(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// parseDelay parses 1*DIGIT (surrounding blanks allowed) as a count of unit.
func parseDelay(v string, unit time.Duration) (time.Duration, bool) {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	if v == "" {
		return 0, false
	}
	limit := int64(maxDelay / unit)
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n <= limit {
			n = n*10 + int64(c-'0')
		}
	}
	if n > limit {
		return maxDelay, true
	}
	return time.Duration(n) * unit, true
}
