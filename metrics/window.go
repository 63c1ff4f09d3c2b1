package metrics

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// windowSamples is how many samples a Window keeps: one a minute for an
// hour, and the one the hour starts from.
const windowSamples = 61

// windowSpan is how far back a Window answers.
const windowSpan = time.Hour

// Usage is what one route did over a Window's span.
type Usage struct {
	// Requests counts the requests the route answered.
	Requests uint64
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
	// Since is the sample the counts start from: about an hour ago, or
	// the first sample while the window is younger than an hour.
	Since time.Time
	// At is when the counts were read.
	At time.Time
	// Full is true when the counts cover (about) the whole last hour, false
	// while the window holds less than an hour of samples.
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
// (summed over status classes and auth methods), its errors by code, or
// its tokens by kind.
type seriesKey struct {
	kind  uint8
	route string
	label string // code or kind; "" for requests
}

// sample is the followed counters' values at one instant.
type sample struct {
	at     time.Time
	values map[seriesKey]float64
}

// Window answers how many requests, errors and tokens each route had in
// the last hour, without adding work to the request path: it reads the
// counters Metrics already keeps into a ring of one-minute samples (Run
// takes one a minute) and subtracts. A counter that went down (a reset)
// counts from zero again, so no count is ever negative. It is safe for
// concurrent use.
type Window struct {
	now    func() time.Time
	gather func() (map[seriesKey]float64, error)

	mu      sync.Mutex
	ring    [windowSamples]sample
	next    int  // where the next sample goes
	n       int  // samples held
	evicted bool // a sample was dropped for age: the ring spans an hour
}

// NewWindow returns a Window over m's request, error and token counters,
// holding its first sample, so counts start now. now is its clock (nil
// means time.Now). The counters are read through a registry of exactly
// those three metrics, so a reading never runs the runtime, process or
// state collectors of m's own registry.
func (m *Metrics) NewWindow(now func() time.Time) *Window {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.requests, m.refused, m.tokens)
	w := newWindow(now, func() (map[seriesKey]float64, error) { return gatherSeries(reg) })
	_ = w.Sample() // on failure, LastHour takes the first sample
	return w
}

func newWindow(now func() time.Time, gather func() (map[seriesKey]float64, error)) *Window {
	if now == nil {
		now = time.Now
	}
	return &Window{now: now, gather: gather}
}

// gatherSeries reads the followed counters from reg.
func gatherSeries(reg prometheus.Gatherer) (map[seriesKey]float64, error) {
	families, err := reg.Gather()
	if err != nil {
		return nil, fmt.Errorf("gather counters: %w", err)
	}
	out := map[seriesKey]float64{}
	for _, f := range families {
		var kind uint8
		var label string
		switch f.GetName() {
		case namespace + "_requests_total":
			kind = seriesRequests
		case namespace + "_request_errors_total":
			kind, label = seriesErrors, "code"
		case namespace + "_tokens_total":
			kind, label = seriesTokens, "kind"
		default:
			continue
		}
		for _, m := range f.GetMetric() {
			k := seriesKey{kind: kind}
			for _, lp := range m.GetLabel() {
				switch lp.GetName() {
				case "route":
					k.route = lp.GetValue()
				case label:
					k.label = lp.GetValue()
				}
			}
			out[k] += m.GetCounter().GetValue()
		}
	}
	return out, nil
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
	w.push(sample{at: at, values: values})
	return nil
}

// push adds s to the ring; w.mu is held.
func (w *Window) push(s sample) {
	if w.n == len(w.ring) {
		w.evicted = true
	} else {
		w.n++
	}
	w.ring[w.next] = s
	w.next = (w.next + 1) % len(w.ring)
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
// sample) and returns how much each grew since the oldest sample of the
// last hour. Without any sample yet, it keeps this reading as the first,
// so everything counts from now.
func (w *Window) LastHour() (LastHour, error) {
	values, err := w.gather()
	if err != nil {
		return LastHour{}, err
	}
	now := w.now()
	cur := sample{at: now, values: values}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n == 0 {
		w.push(cur)
	}
	cutoff := now.Add(-windowSpan)
	// The held samples, oldest first, from the oldest inside the hour.
	var chain []sample
	full := w.evicted
	for i := range w.n {
		s := w.ring[(w.next-w.n+i+len(w.ring))%len(w.ring)]
		if s.at.Before(cutoff) {
			full = true
			continue
		}
		chain = append(chain, s)
	}
	chain = append(chain, cur)
	out := LastHour{Since: chain[0].at, At: now, Full: full, Routes: map[string]Usage{}}
	growth := map[seriesKey]float64{}
	for i := 1; i < len(chain); i++ {
		prev := chain[i-1].values
		for k, v := range chain[i].values {
			d := v - prev[k]
			if d < 0 { // a reset: the counter started again from zero
				d = v
			}
			growth[k] += d
		}
	}
	// Every followed route appears, even with nothing counted.
	for k := range cur.values {
		if _, ok := out.Routes[k.route]; !ok {
			out.Routes[k.route] = Usage{}
		}
	}
	for k, d := range growth {
		u := out.Routes[k.route]
		n := uint64(math.Round(d))
		switch k.kind {
		case seriesRequests:
			u.Requests += n
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
