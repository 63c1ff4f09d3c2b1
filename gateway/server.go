package gateway

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/metrics"
)

// Loader loads and validates a configuration (config.Load with the process
// environment, in production).
type Loader func() (*config.Config, error)

// Server serves the current Snapshot on the public listener and the
// operations endpoints on the admin listener. Reload swaps in a new snapshot
// atomically: requests in flight finish on the one they started with.
type Server struct {
	deps   Deps
	load   Loader
	log    *slog.Logger
	snap   atomic.Pointer[Snapshot]
	tls    atomic.Pointer[tlsState]
	mu     sync.Mutex // serializes reloads
	reload struct{ ok, failed atomic.Uint64 }
	// window keeps the last hour of the request counters for the status
	// page; nil without metrics. RunListeners samples it every minute.
	window *metrics.Window
}

// NewServer returns a server that serves snap. load is used by Reload.
func NewServer(snap *Snapshot, load Loader, deps Deps) *Server {
	s := &Server{deps: deps, load: load, log: cmp.Or(deps.Logger, slog.New(slog.DiscardHandler)), window: newWindow(deps)}
	s.snap.Store(snap)
	if deps.Metrics != nil {
		deps.Metrics.SetState(func() metrics.State {
			rep := s.snap.Load().Readiness()
			ok, failed := s.ReloadCounts()
			return metrics.State{Credentials: rep.Credentials, IdentityProviders: rep.IdentityProviders, ReloadsOK: ok, ReloadsFailed: failed,
				Backends: s.snap.Load().Backends(), Mirrors: s.snap.Load().Mirrors()}
		})
	}
	return s
}

// Snapshot returns the snapshot being served.
func (s *Server) Snapshot() *Snapshot { return s.snap.Load() }

// ServeHTTP serves a request with the current snapshot.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.snap.Load().Handler.ServeHTTP(w, r)
}

// Reload loads and builds the configuration off to the side and swaps it in.
// If loading or building fails, the error is logged and returned and the old
// snapshot keeps serving. The old snapshot's background work stops after
// the shutdown timeout, so requests still using it can finish.
func (s *Server) Reload(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg, err := s.load()
	if err == nil {
		old := s.snap.Load()
		var snap *Snapshot
		var swapTLS func()
		snap, err = Compile(cfg, s.deps, CompileOptions{Prev: old})
		if err == nil {
			if swapTLS, err = s.reloadTLS(ctx, snap); err != nil {
				snap.Close()
			}
		}
		if err == nil {
			snap.Start(ctx)
			s.snap.Store(snap)
			swapTLS()
			kept := old.handOver(snap)
			if running := s.deps.Tracing; !snap.Telemetry.Equal(running.Settings()) {
				s.log.Warn("the telemetry section or OTEL_* variables changed; the trace export changes on restart",
					slog.String("running", running.Settings().String()), slog.String("configured", snap.Telemetry.String()))
			}
			s.reload.ok.Add(1)
			s.log.Info("configuration reloaded", slog.String("config", cfg.File), slog.Int("routes", len(snap.Routes)),
				slog.Int("components_kept", kept))
			// Requests still running on the old snapshot may use its
			// components: stop them only after the drain timeout.
			time.AfterFunc(old.Config.Server.ShutdownTimeout.D(), old.Close)
			return nil
		}
	}
	s.reload.failed.Add(1)
	s.log.Error("configuration reload failed; the previous configuration keeps serving", slog.String("error", err.Error()))
	return err
}

// ReloadCounts returns how many reloads succeeded and failed.
func (s *Server) ReloadCounts() (ok, failed uint64) {
	return s.reload.ok.Load(), s.reload.failed.Load()
}

// readiness is the snapshot's Readiness with the TLS certificate's state.
func (s *Server) readiness(snap *Snapshot) Readiness {
	rep := snap.Readiness()
	if st := s.tls.Load(); st != nil {
		if err := st.mgr.Ready(); err != nil {
			rep.Ready, rep.TLS = false, err.Error()
		} else {
			rep.TLS = "ready"
		}
	}
	return rep
}

// AdminHandler serves /healthz (the process is up), /readyz (see
// Snapshot.Readiness; ?route=NAME for one route), /metrics when metrics
// are on, and the status page, an HTML view of the same state, at / and
// /status. It must only be exposed on the admin listener.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	if s.deps.Metrics != nil {
		mux.Handle("GET /metrics", s.deps.Metrics.Handler())
	}
	if s.snap.Load().Config.Admin.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		rep := s.readiness(s.snap.Load())
		status := http.StatusOK
		if !rep.Ready {
			status = http.StatusServiceUnavailable
		}
		// ?route=NAME follows one route, for probes that steer traffic per
		// model (Traffic Manager, Front Door): 503 while it is down.
		if name := r.URL.Query().Get("route"); name != "" {
			rs, ok := rep.Routes[name]
			switch {
			case !ok:
				status = http.StatusNotFound
			case rs.State == RouteDown || len(rep.Starting) > 0:
				status = http.StatusServiceUnavailable
			default:
				status = http.StatusOK
			}
		}
		writeJSON(w, status, rep)
	})
	// GET patterns answer HEAD too.
	mux.HandleFunc("GET /status", s.serveStatus)
	mux.HandleFunc("GET /{$}", s.serveStatus)
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// Listeners are the sockets Run serves on.
type Listeners struct {
	// Public serves the routes (wrapped in TLS when EnableTLS was called).
	Public net.Listener
	// Admin serves /healthz, /readyz, /metrics and the status page.
	Admin net.Listener
	// HTTP, optional with TLS, answers ACME HTTP-01 challenges and
	// redirects everything else to HTTPS.
	HTTP net.Listener
}

// Run serves on public and admin; see RunListeners.
func (s *Server) Run(ctx context.Context, public, admin net.Listener) error {
	return s.RunListeners(ctx, Listeners{Public: public, Admin: admin})
}

// RunListeners serves until ctx is cancelled, then stops accepting, lets
// in-flight requests finish (up to server.shutdown_timeout) and returns nil.
// A listener that fails to serve ends it with its error.
func (s *Server) RunListeners(ctx context.Context, ls Listeners) error {
	public, admin := ls.Public, ls.Admin
	cfg := s.snap.Load().Config
	if s.tls.Load() != nil {
		public = tls.NewListener(public, s.tlsConfig())
	} else {
		public = jsonErrorListener{public}
	}
	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	pub := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.D(),
		IdleTimeout:       cfg.Server.IdleTimeout.D(),
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          errLog,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if s.tls.Load() != nil {
		// HTTP/2 through x/net/http2 over a per-connection stream-reset
		// budget (h2guard.go); HTTP/1.1 is net/http's as before.
		pub.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: h2MaxConcurrentStreams}
		if err := serveH2(pub); err != nil {
			return fmt.Errorf("serve HTTP/2: %w", err)
		}
	}
	adm := &http.Server{
		Handler:           s.AdminHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       30 * time.Second,
		ErrorLog:          errLog,
	}
	var windowDone chan struct{}
	stopWindow := func() {}
	if s.window != nil {
		var wctx context.Context
		wctx, stopWindow = context.WithCancel(context.WithoutCancel(ctx))
		windowDone = make(chan struct{})
		go func() { defer close(windowDone); s.window.Run(wctx) }()
	}
	errc := make(chan error, 3)
	go func() { errc <- serveErr("public", pub.Serve(public)) }()
	go func() { errc <- serveErr("admin", adm.Serve(admin)) }()
	var redirect *http.Server
	if ls.HTTP != nil && s.tls.Load() != nil {
		redirect = &http.Server{Handler: s.httpRedirect(), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 30 * time.Second, ErrorLog: errLog}
		go func() { errc <- serveErr("http", redirect.Serve(ls.HTTP)) }()
	}
	s.log.Info("gateway listening", slog.String("public", public.Addr().String()), slog.String("admin", admin.Addr().String()),
		slog.Int("routes", len(s.snap.Load().Routes)))

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	timeout := s.snap.Load().Config.Server.ShutdownTimeout.D()
	s.log.Info("shutting down: draining in-flight requests", slog.String("timeout", timeout.String()))
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := pub.Shutdown(sctx); err != nil {
		s.log.Warn("drain did not finish in time; closing remaining connections", slog.String("error", err.Error()))
		_ = pub.Close()
	}
	_ = adm.Shutdown(sctx)
	if redirect != nil {
		_ = redirect.Shutdown(sctx)
	}
	stopWindow()
	if windowDone != nil {
		<-windowDone
	}
	s.snap.Load().Close()
	if st := s.tls.Load(); st != nil {
		_ = st.mgr.Close()
	}
	s.log.Info("stopped")
	return runErr
}

func serveErr(which string, err error) error {
	if err == nil || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("%s listener: %w", which, err)
}
