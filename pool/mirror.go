package pool

import "sync/atomic"

// Mirror decides which requests are copied to the pool's shadow target and
// bounds the copies in flight. The proxy sends the copy (buffered bodies
// only, after the main request is sent) and reads and drops its answer; a
// Mirror only keeps count. It is safe for concurrent use and does not
// allocate.
type Mirror struct {
	target  string
	backend int // index in the pool, or -1 for another upstream
	percent uint64
	max     int64

	seen     atomic.Uint64
	inFlight atomic.Int64
	dropped  atomic.Uint64
}

// Target returns mirror.backend and, when that names a backend of this
// pool, its index; backend is -1 when it names another upstream, which the
// caller resolves.
func (m *Mirror) Target() (name string, backend int) { return m.target, m.backend }

// Sample reports whether this request is mirrored. The choice is a counter,
// not chance: exactly percent of every 100 consecutive calls say yes,
// spread evenly (10% is every tenth call), so tests and operators see the
// share they configured.
func (m *Mirror) Sample() bool {
	n := m.seen.Add(1)
	return n*m.percent/100 != (n-1)*m.percent/100
}

// TryAcquire takes a slot for one mirror request. When mirror.max_in_flight
// copies are already in flight it returns false and counts a drop: the copy
// is not sent, never queued. Every true must be paired with [Mirror.Release]
// when the copy's answer has been read (or failed).
func (m *Mirror) TryAcquire() bool {
	if m.inFlight.Add(1) > m.max {
		m.inFlight.Add(-1)
		m.dropped.Add(1)
		return false
	}
	return true
}

// Release returns a slot taken by TryAcquire.
func (m *Mirror) Release() { m.inFlight.Add(-1) }

// InFlight returns how many mirror requests hold a slot now.
func (m *Mirror) InFlight() int { return int(m.inFlight.Load()) }

// Dropped returns how many copies TryAcquire refused since the pool was
// built, for a counter metric.
func (m *Mirror) Dropped() uint64 { return m.dropped.Load() }
