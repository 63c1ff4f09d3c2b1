package credential

import "time"

// Clock is the time source of the refresh engine, injected so tests can drive
// expiry and backoff without sleeping (see credential/credtest.Clock).
//
// Its methods use only unnamed types, so a fake in another package satisfies
// it without importing this one.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// AfterFunc calls f once d has elapsed and returns a function that
	// cancels the call, reporting whether it stopped it before it ran. The
	// system clock calls f in its own goroutine; credtest.Clock calls it
	// from Advance.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// SystemClock returns the Clock backed by package time.
func SystemClock() Clock { return systemClock{} }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}
