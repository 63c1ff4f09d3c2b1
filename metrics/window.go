package metrics

import (
	"context"
	"fmt"
	"maps"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// windowSamples is how many samples a Window keeps: one a minute for an
// hour, the one at or just before the hour's start, and one to spare for a
// late tick.
const windowSamples = 62

// windowSpan is how far back a Window answers.
const windowSpan = time.Hour

// windowSlack is how much older than windowSpan the baseline sample may be
// for the counts still to be the last hour (Full): a sampling interval and
// a late tick.
const windowSlack = 2 * time.Minute

// Usage is what one route did over a Window's span.
type Usage struct {
	// Requests counts the requests the route answered.
	Requests uint64
	// ServerErrors counts those answered with a 5xx status.
	ServerErrors uint64
	// Errors counts requests by the gateway error code they ended with
	// (missing_credential, forbidden, rate_limited, ...); codes that did
	// not occur are absent.
	Errors map[string]uint64
	// Tokens counts the LLM tokens answers reported, by kind (prompt,
	// completion, total); only routes with a token_limit count any.
	Tokens map[string]uint64
}

// ErrorCount sums Errors.
func (u Usage) ErrorCount() uint64 {
	var n uint64
	for _, c := range u.Errors {
		n += c
	}
	return n
}

// LastHour is what every route did since Since.
type LastHour struct {
	// Since is the sample the counts start from: the newest at or before
	// an hour ago, else the oldest held (the window is younger than an
	// hour).
	Since time.Time
	// At is when the counts were read.
	At time.Time
	// Full is true when the counts cover about the last hour: Since is an
	// hour ago, give or take a sampling interval. It is false while the
	// window is younger than an hour, and when sampling stalled so the
	// newest sample before the hour is older than that (the counts then
	// cover more than an hour: everything since Since).
	Full bool
	// Routes is each route's usage, by route name.
	Routes map[string]Usage
}

// series kinds, in a seriesKey.
const (
	seriesRequests = iota
	seriesErrors
	seriesTokens
)

// seriesKey names one counter a Window follows: requests of a route
// (summed over auth methods and all status classes, or only 5xx), its
// errors by code, or its tokens by kind.
type seriesKey struct {
	kind  uint8
	route string
	label string // code or kind; for requests "" (all) or "5xx"
}

// sample is the followed counters' values at one instant, indexed like
// Window.keys; NaN for a key the reading lacked. A sample never changes
// once taken, and holds only the keys known when it was taken (series are
// never deleted, so a later key is one the sample did not have).
type sample struct {
	at     time.Time
	values []float64
}

// Window answers how many requests, errors and tokens each route had in
// the last hour, without adding work to the request path: it reads the
// counters Metrics already keeps into a ring of one-minute samples (Run
// takes one a minute) and subtracts the sample of about an hour ago from a
// fresh reading. Counters only grow within a process, so that difference
// is the growth; a value lower than its baseline (a reset) counts from
// zero, so no count is ever negative. It is safe for concurrent use.
type Window struct {
	now    func() time.Time
	gather func() (map[seriesKey]float64, error)

	mu    sync.Mutex
	keys  []seriesKey       // append-only: an index never changes
	index map[seriesKey]int // into keys
	ring  [windowSamples]sample
	next  int // where the next sample goes
	n     int // samples held
}

// NewWindow returns a Window over m's request, error and token counters,
// holding its first sample, so counts start now. now is its clock (nil
// means time.Now). A reading reads each route's resolved counters
// directly: no registry gather, so no sorting or consistency checks of
// every series, and never the runtime, process or state collectors.
func (m *Metrics) NewWindow(now func() time.Time) *Window {
	w := newWindow(now, m.readSeries)
	_ = w.Sample() // on failure, LastHour takes the first sample
	return w
}

// readSeries reads every route's followed counters: requests summed over
// status classes and auth methods, errors by code, tokens by kind.
func (m *Metrics) readSeries() (map[seriesKey]float64, error) {
	m.mu.Lock()
	routes := make(map[string]*Route, len(m.routes))
	maps.Copy(routes, m.routes)
	m.mu.Unlock()
	out := make(map[seriesKey]float64, len(routes)*(len(ErrorCodes)+5))
	var d dto.Metric
	read := func(c prometheus.Counter) (float64, error) {
		d.Reset()
		if err := c.Write(&d); err != nil {
			return 0, fmt.Errorf("read counter: %w", err)
		}
		return d.GetCounter().GetValue(), nil
	}
	for name, r := range routes {
		var sum, server float64
		for i := range r.requests {
			for _, c := range r.requests[i] {
				v, err := read(c)
				if err != nil {
					return nil, err
				}
				sum += v
				if statusClasses[i] == "5xx" {
					server += v
				}
			}
		}
		out[seriesKey{kind: seriesRequests, route: name}] = sum
		out[seriesKey{kind: seriesRequests, route: name, label: "5xx"}] = server
		for code, c := range r.refused {
			v, err := read(c)
			if err != nil {
				return nil, err
			}
			out[seriesKey{kind: seriesErrors, route: name, label: code}] = v
		}
		for label, c := range map[string]prometheus.Counter{ErrorCodeOther: r.other} {
			v, err := read(c)
			if err != nil {
				return nil, err
			}
			out[seriesKey{kind: seriesErrors, route: name, label: label}] = v
		}
		for label, c := range map[string]prometheus.Counter{"prompt": r.prompt, "completion": r.completion, "total": r.total} {
			v, err := read(c)
			if err != nil {
				return nil, err
			}
			out[seriesKey{kind: seriesTokens, route: name, label: label}] = v
		}
	}
	return out, nil
}

func newWindow(now func() time.Time, gather func() (map[seriesKey]float64, error)) *Window {
	if now == nil {
		now = time.Now
	}
	return &Window{now: now, gather: gather, index: map[seriesKey]int{}}
}

// Sample reads the counters and keeps them as the newest sample, dropping
// the oldest when the ring is full. Run calls it once a minute.
func (w *Window) Sample() error {
	values, err := w.gather()
	if err != nil {
		return err
	}
	at := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.push(sample{at: at, values: w.compact(values)})
	return nil
}

// compact turns a reading into a sample's values, adding keys it meets for
// the first time; w.mu is held.
func (w *Window) compact(values map[seriesKey]float64) []float64 {
	for k := range values {
		if _, ok := w.index[k]; !ok {
			w.index[k] = len(w.keys)
			w.keys = append(w.keys, k)
		}
	}
	out := make([]float64, len(w.keys))
	if len(values) < len(w.keys) {
		for i := range out {
			out[i] = math.NaN()
		}
	}
	for k, v := range values {
		out[w.index[k]] = v
	}
	return out
}

// push adds s to the ring; w.mu is held.
func (w *Window) push(s sample) {
	if w.n < len(w.ring) {
		w.n++
	}
	w.ring[w.next] = s
	w.next = (w.next + 1) % len(w.ring)
}

// at returns the i-th held sample, oldest first; w.mu is held.
func (w *Window) at(i int) sample {
	return w.ring[(w.next-w.n+i+len(w.ring))%len(w.ring)]
}

// Run takes a sample every minute until ctx ends.
func (w *Window) Run(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = w.Sample()
		}
	}
}

// LastHour reads the counters afresh (without keeping the reading as a
// sample) and returns how much each grew since the baseline: the newest
// sample at or before an hour ago, or the oldest sample while there is
// none that old. A key the baseline lacks counts all it has. Without any
// sample yet, it keeps this reading as the first, so everything counts
// from now.
func (w *Window) LastHour() (LastHour, error) {
	values, err := w.gather()
	if err != nil {
		return LastHour{}, err
	}
	now := w.now()
	cutoff := now.Add(-windowSpan)
	w.mu.Lock()
	cur := w.compact(values)
	if w.n == 0 {
		w.push(sample{at: now, values: cur})
	}
	base := w.at(0)
	for i := w.n - 1; i >= 0; i-- {
		if s := w.at(i); !s.at.After(cutoff) {
			base = s
			break
		}
	}
	keys := w.keys[:len(cur)] // append-only: these entries never change
	w.mu.Unlock()

	out := LastHour{Since: base.at, At: now, Routes: map[string]Usage{},
		Full: !base.at.After(cutoff) && !base.at.Before(cutoff.Add(-windowSlack))}
	for i, v := range cur {
		if math.IsNaN(v) {
			continue
		}
		k := keys[i]
		d := v
		if i < len(base.values) && !math.IsNaN(base.values[i]) && v >= base.values[i] {
			d = v - base.values[i]
		}
		u := out.Routes[k.route] // every followed route appears, even with nothing counted
		n := uint64(math.Round(d))
		switch k.kind {
		case seriesRequests:
			if k.label == "" {
				u.Requests += n
			} else {
				u.ServerErrors += n
			}
		case seriesErrors:
			if n > 0 {
				if u.Errors == nil {
					u.Errors = map[string]uint64{}
				}
				u.Errors[k.label] += n
			}
		case seriesTokens:
			if u.Tokens == nil {
				u.Tokens = map[string]uint64{}
			}
			u.Tokens[k.label] += n
		}
		out.Routes[k.route] = u
	}
	return out, nil
}
