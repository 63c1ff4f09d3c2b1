// Package gateway assembles a running gateway from a loaded configuration:
// it compiles the key index, the route policies and the upstream credentials
// into an immutable Snapshot, serves the public and admin listeners, and
// swaps snapshots atomically on reload.
package gateway

import (
	"cmp"
	"context"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/modelgate/modelgate/pool"

	azpolicy "github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/idp"
	"github.com/modelgate/modelgate/internal/jsonline"
	"github.com/modelgate/modelgate/metrics"
	"github.com/modelgate/modelgate/proxy"
	"github.com/modelgate/modelgate/ratelimit"
	"github.com/modelgate/modelgate/telemetry"
)

// Deps are the process-wide dependencies a Snapshot is built with. They are
// injected, never global, so tests can build many gateways in one process.
type Deps struct {
	// Logger receives operational logs and the per-request lines.
	Logger *slog.Logger
	// Transport is the one shared upstream transport.
	Transport http.RoundTripper
	// Now is the clock; nil means time.Now. Identity providers judge token
	// times by it too (gateway explain -at sets a fixed instant).
	Now func() time.Time
	// HTTPClient fetches identity provider metadata and keys and talks to
	// the Azure control plane; nil means a default client trusting the
	// system roots.
	HTTPClient *http.Client
	// Clock drives upstream credential refreshes; nil means the system
	// clock.
	Clock credential.Clock
	// Refresh tunes the credential sources' backoff and rate limits; zero
	// means their defaults.
	Refresh credential.RefreshPolicy
	// AzureRetry tunes azidentity's own retries; zero means azcore's
	// defaults.
	AzureRetry azpolicy.RetryOptions
	// Audit receives the one audit line per request (README, "Audit
	// trail"); nil means Logger, in its own format.
	Audit *jsonline.Logger
	// Metrics, when not nil, records requests and serves /metrics.
	Metrics *metrics.Metrics
	// StaticJWKS supplies saved key sets by provider name ("*" for all), so
	// nothing is fetched (gateway explain -jwks).
	StaticJWKS map[string][]byte
	// Tracing, when not nil, is the process's OpenTelemetry export: the
	// request pipeline, credential sources and identity providers record
	// spans with it. nil records none. A reload keeps it (telemetry
	// changes take effect on restart).
	Tracing *telemetry.Tracing
	// LookupEnv reads the OTEL_* environment variables the telemetry
	// section defaults to; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

// withDefaults fills in the dependencies left zero.
func (d Deps) withDefaults(cfg *config.Config) Deps {
	d.Logger = cmp.Or(d.Logger, slog.New(slog.DiscardHandler))
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Transport == nil {
		d.Transport = NewTransport(cfg.Server.Upstream)
	}
	if d.LookupEnv == nil {
		d.LookupEnv = os.LookupEnv
	}
	if d.Tracing != nil {
		d.Refresh.Tracer = d.Tracing.Provider().Tracer(tracerName + "/credential")
	}
	return d
}

// tracerName is the instrumentation scope of the gateway's spans.
const tracerName = "github.com/modelgate/modelgate"

// Snapshot is one compiled configuration: immutable once compiled, served
// until a reload replaces it.
type Snapshot struct {
	Config  *config.Config
	Handler *proxy.Handler
	Routes  []*proxy.Route
	// Warnings are settings that are valid but likely not meant (a rule
	// that admits a whole tenant, a key sent in clear text), located at
	// file:line like errors. check prints them; serve logs them.
	Warnings []error
	// Telemetry is the trace export the configuration and environment ask
	// for; nil when traces are off.
	Telemetry *telemetry.Settings

	providers map[string]*idp.Provider            // by provider name
	sources   map[string]credential.ManagedSource // by upstream name (UPSTREAM/BACKEND in pools)
	pools     map[string]*pool.Pool               // by upstream name, for upstreams with backends
	parts     map[string]*part                    // by field path; see part
	tls       *tlsState                           // server.tls compiled; nil without TLS
	store     *ratelimit.Store                    // limits.store; nil for in-memory limits
}

// part is a component with background work (an identity provider's key
// refreshes, an upstream's credential refreshes). The snapshot that built
// it owns it: Start starts it and Close stops it. A reload whose settings
// for it did not change shares it with the next snapshot, which takes it
// over once it serves (Server.Reload); the old snapshot's Close then leaves
// it running. So each part has exactly one owner at a time.
type part struct {
	settings any // what it was built from, compared on reload
	value    any
	start    func(context.Context)
	stop     func()

	mu      sync.Mutex // guards the fields below
	owner   *Snapshot
	started bool
	stopped bool
}

// Build compiles cfg and starts the snapshot: Compile, then Start.
func Build(ctx context.Context, cfg *config.Config, deps Deps) (*Snapshot, error) {
	snap, err := Compile(cfg, deps, CompileOptions{})
	if err != nil {
		return nil, err
	}
	snap.Start(ctx)
	return snap, nil
}

// Start launches the background work of the parts this snapshot owns and
// has not started yet: identity providers fetch their keys, credential
// sources their first credential. It returns at once; an Azure outage
// never stops the gateway from starting. The work keeps ctx's values but
// not its cancellation; Close stops it.
func (s *Snapshot) Start(ctx context.Context) {
	s.each(func(p *part) {
		if p.owner == s && !p.started && !p.stopped {
			p.started = true
			p.start(ctx)
		}
	})
}

// Close stops the background work of the parts this snapshot owns. Parts a
// newer snapshot took over are left running. Close is idempotent.
func (s *Snapshot) Close() {
	s.each(func(p *part) {
		if p.owner == s && !p.stopped {
			p.stopped = true
			p.stop()
		}
	})
}

// handOver makes next the owner of the parts it shares with s. Call it once
// next is the snapshot being served.
func (s *Snapshot) handOver(next *Snapshot) (kept int) {
	next.each(func(p *part) {
		if p.owner == s {
			p.owner = next
			kept++
		}
	})
	return kept
}

// each calls f with every part locked, in a stable order.
func (s *Snapshot) each(f func(*part)) {
	for _, k := range sortedNames(s.parts) {
		p := s.parts[k]
		p.mu.Lock()
		f(p)
		p.mu.Unlock()
	}
}

func sortedNames[M ~map[string]V, V any](m M) []string { return slices.Sorted(maps.Keys(m)) }

// NewTransport builds the one upstream transport the gateway shares across
// all upstreams. Its timeouts bound connecting and waiting for response
// headers, never a response body, so long streams are not cut.
func NewTransport(c config.UpstreamTransport) *http.Transport {
	dialer := &net.Dialer{Timeout: c.DialTimeout.D(), KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            dialer.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           0,
		MaxIdleConnsPerHost:    c.MaxIdleConnsPerHost,
		IdleConnTimeout:        c.IdleConnTimeout.D(),
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  c.ResponseHeaderTimeout.D(),
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 1 << 20,
	}
}

// probeObserver returns the health-check callback for upstream name's pool:
// failures are logged (never with a credential), outcomes counted when
// metrics are on.
func (d Deps) probeObserver(name string, pl *pool.Pool) func(int, pool.ProbeResult, error) {
	return func(i int, r pool.ProbeResult, err error) {
		if d.Metrics != nil {
			d.Metrics.HealthCheck(name, pl.Name(i), r.String())
		}
		if r != pool.ProbeUp && d.Logger != nil {
			attrs := []slog.Attr{slog.String("upstream", name), slog.String("backend", pl.Name(i)), slog.String("result", r.String())}
			if err != nil {
				attrs = append(attrs, slog.String("error", err.Error()))
			}
			d.Logger.LogAttrs(context.Background(), slog.LevelWarn, "backend health check failed", attrs...)
		}
	}
}
