package credential

import "time"

// Clock is the time source of the refresh engine. It is the one clock
// interface in modelgate's production code; everything else reads package
// time (or takes a func() time.Time, as gateway.Deps.Now).
//
// Tests in process use testing/synctest and the system clock, which then
// runs on the bubble's fake time. Clock exists for tests that cannot: the
// end-to-end tests drive a gateway over real loopback sockets, where a
// goroutine blocked on a socket is not durably blocked and a bubble's clock
// would never advance, so they inject credtest.Clock (through
// gateway.Deps.Clock) and advance it by hand.
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
