package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// ProbeResult is the verdict of one health check.
type ProbeResult uint8

const (
	// ProbeUp: the backend answered a healthy_status; its breaker closes.
	ProbeUp ProbeResult = iota
	// ProbeDown: another status, a transport error or the timeout; the
	// breaker opens for circuit_breaker.open_for.
	ProbeDown
	// ProbeSkipped: Prober.Prepare failed (typically the backend's
	// credential is unavailable), so nothing was learnt about the backend
	// and its breaker is left as it is; Options.Usable already keeps such
	// a backend out of traffic.
	ProbeSkipped
)

// String returns "up", "down" or "skipped", for logs and metric labels.
func (r ProbeResult) String() string {
	switch r {
	case ProbeUp:
		return "up"
	case ProbeDown:
		return "down"
	case ProbeSkipped:
		return "skipped"
	}
	return "unknown"
}

// Prober runs a pool's health_check: every interval it GETs each backend's
// URL + path, with the timeout, and feeds the verdict to the backend's
// breaker. Backends of weight 0 are probed too, so a standby's state is
// known before it is needed. Set the fields, then [Prober.Start]; they must
// not change afterwards.
type Prober struct {
	// Pool is the pool probed; it must have been built with a HealthCheck.
	Pool *Pool
	// Client sends the probes; required. health_check.timeout bounds each
	// probe through its context, whatever Client.Timeout says.
	Client *http.Client
	// Prepare, when set, is called on each probe request before it is sent,
	// typically to add the backend's credential. An error skips the probe
	// ([ProbeSkipped]). It is called from the probing goroutines, several
	// at once.
	Prepare func(req *http.Request, backend int) error
	// Observe, when set, receives each probe's verdict and, for ProbeDown
	// and ProbeSkipped, its reason; for metrics and logs. It is called from
	// the probing goroutines, several at once, and must not block.
	Observe func(backend int, r ProbeResult, err error)

	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// errNoHealthCheck is returned by Start for a pool without health_check.
var errNoHealthCheck = errors.New("pool has no health_check to run")

// Start begins probing: one goroutine per backend, the first probe at
// once, until ctx is done or [Prober.Close]. It fails if the pool has no
// health check, Client is nil, or the Prober was started before.
func (pr *Prober) Start(ctx context.Context) error {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	switch {
	case pr.started:
		return errors.New("prober already started: build a new Prober")
	case pr.Pool == nil || pr.Pool.health == nil:
		return errNoHealthCheck
	case pr.Client == nil:
		return errors.New("prober has no Client: set one (the gateway's shared transport)")
	}
	pr.started = true
	ctx, pr.cancel = context.WithCancel(ctx)
	hc := pr.Pool.health
	for i, b := range pr.Pool.backends {
		u := *b.url
		u.Path = strings.TrimSuffix(u.Path, "/") + hc.Path
		u.RawPath = ""
		target := u.String()
		pr.wg.Go(func() { pr.run(ctx, i, target, hc) })
	}
	return nil
}

// Close stops probing and waits for the probes in flight to end. It may be
// called more than once, and without Start.
func (pr *Prober) Close() {
	pr.mu.Lock()
	cancel := pr.cancel
	pr.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	pr.wg.Wait()
}

func (pr *Prober) run(ctx context.Context, i int, target string, hc *HealthCheckOptions) {
	t := time.NewTicker(hc.Interval)
	defer t.Stop()
	for {
		r, err := pr.probe(ctx, i, target, hc)
		if ctx.Err() != nil {
			return // stopped mid-probe: no verdict
		}
		if r != ProbeSkipped {
			why := ""
			if err != nil {
				why = err.Error()
			}
			pr.Pool.probed(i, r == ProbeUp, why)
		}
		if pr.Observe != nil {
			pr.Observe(i, r, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (pr *Prober) probe(ctx context.Context, i int, target string, hc *HealthCheckOptions) (ProbeResult, error) {
	ctx, cancel := context.WithTimeout(ctx, hc.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return ProbeSkipped, fmt.Errorf("health check: %w", err)
	}
	if pr.Prepare != nil {
		if err := pr.Prepare(req, i); err != nil {
			return ProbeSkipped, fmt.Errorf("health check not sent: %w", err)
		}
	}
	resp, err := pr.Client.Do(req)
	if err != nil {
		return ProbeDown, fmt.Errorf("health check: %w", err)
	}
	// Drain a little so the connection can be reused; a health endpoint
	// that answers more is not read to the end.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if !slices.Contains(hc.HealthyStatus, resp.StatusCode) {
		return ProbeDown, fmt.Errorf("health check: status %d, want one of %v", resp.StatusCode, hc.HealthyStatus)
	}
	return ProbeUp, nil
}
