package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/gateway"
	"github.com/modelgate/modelgate/internal/jsonline"
	"github.com/modelgate/modelgate/metrics"
	"github.com/modelgate/modelgate/telemetry"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

func versionString() string {
	mainVersion, settings := "", map[string]string{}
	if bi, ok := debug.ReadBuildInfo(); ok {
		mainVersion = bi.Main.Version
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
	}
	return versionFrom(version, mainVersion, settings)
}

// versionFrom picks the version to report: the one stamped with -ldflags
// "-X main.version=...", else the module version (go install ...@v1.2.3),
// else "devel+" the git commit the binary was built from (go build
// -buildvcs, on by default in a checkout), "-dirty" when it had local
// changes.
func versionFrom(stamped, mainVersion string, vcs map[string]string) string {
	switch {
	case stamped != "":
		return "modelgate " + stamped
	case mainVersion != "" && mainVersion != "(devel)":
		return "modelgate " + mainVersion
	}
	v := "devel"
	if rev := vcs["vcs.revision"]; rev != "" {
		v += "+" + rev[:min(12, len(rev))]
		if vcs["vcs.modified"] == "true" {
			v += "-dirty"
		}
	}
	return "modelgate " + v
}

func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", os.Getenv("MODELGATE_CONFIG"), "configuration `file` (default $MODELGATE_CONFIG)")
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("gateway "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", stderr)
	path := configFlag(fs)
	watch := fs.Duration("watch", 0, "also reload when the config file or a ${file:...} secret changes, checking every `interval` (e.g. 5s; 0 = only on SIGHUP)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		fmt.Fprintln(stderr, "gateway serve: -config FILE is required (or set MODELGATE_CONFIG)")
		return exitError(2)
	}
	load := func() (*config.Config, error) { return config.Load(*path, os.LookupEnv) }
	cfg, err := load()
	if err != nil {
		fmt.Fprintf(stderr, "gateway: the configuration has errors:\n%v\n", err)
		return exitError(1)
	}
	log := newLogger(cfg.Log, stderr)
	auditOut, closeAudit, err := auditOutput(cfg.Log.Audit, stdout, stderr)
	if err != nil {
		return err
	}
	defer closeAudit()
	deps := gateway.Deps{Logger: log, Transport: gateway.NewTransport(cfg.Server.Upstream), Metrics: metrics.New(versionString())}
	switch {
	case cfg.Log.Format == "json" || cfg.Log.Audit != "":
		// The audit line is always JSON; write it with the fast encoder.
		var level slog.Level
		_ = level.UnmarshalText([]byte(cfg.Log.Level))
		if cfg.Log.Audit != "" {
			level = slog.LevelInfo // a separate audit output records every decision
		}
		deps.Audit = jsonline.New(auditOut, level)
	}
	snap, err := gateway.Compile(cfg, deps, gateway.CompileOptions{})
	if err != nil {
		fmt.Fprintf(stderr, "gateway: the configuration has errors:\n%v\n", err)
		return exitError(1)
	}
	snap, deps, stopTraces, err := startTelemetry(ctx, cfg, snap, deps)
	if err != nil {
		return err
	}
	defer stopTraces()
	for _, w := range snap.Warnings {
		log.Warn("configuration warning", slog.String("warning", w.Error()))
	}
	snap.Start(ctx)
	srv := gateway.NewServer(snap, load, deps)

	var lc net.ListenConfig
	pub, err := lc.Listen(ctx, "tcp", cfg.Server.Listen)
	if err != nil {
		snap.Close()
		return fmt.Errorf("listen on server.listen %s: %w", cfg.Server.Listen, err)
	}
	adm, err := lc.Listen(ctx, "tcp", cfg.Admin.Listen)
	if err != nil {
		pub.Close()
		snap.Close()
		return fmt.Errorf("listen on admin.listen %s: %w", cfg.Admin.Listen, err)
	}

	var httpLn net.Listener
	if t := cfg.Server.TLS; t != nil && t.HTTPListen != "" {
		if httpLn, err = lc.Listen(ctx, "tcp", t.HTTPListen); err != nil {
			pub.Close()
			adm.Close()
			snap.Close()
			return fmt.Errorf("listen on server.tls.http_listen %s: %w", t.HTTPListen, err)
		}
	}
	if err := srv.EnableTLS(ctx); err != nil {
		pub.Close()
		adm.Close()
		snap.Close()
		return fmt.Errorf("server.tls: %w", err)
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_ = srv.Reload(ctx)
			}
		}
	}()
	if *watch > 0 {
		// The configuration file and the secret files it reads (${file:...})
		// of the configuration being served.
		files := func() []string { return append([]string{*path}, srv.Snapshot().Config.SecretFiles()...) }
		go watchFiles(ctx, files, *watch, func() { _ = srv.Reload(ctx) })
	}
	return srv.RunListeners(ctx, gateway.Listeners{Public: pub, Admin: adm, HTTP: httpLn})
}

// startTelemetry starts the trace export snap's configuration asks for,
// if any, and compiles again so that everything records spans with it. It
// returns the snapshot and dependencies to serve with, and a function that
// sends the spans still queued (within 5 s) and stops the export. The
// export lives as long as the process.
func startTelemetry(ctx context.Context, cfg *config.Config, snap *gateway.Snapshot, deps gateway.Deps) (*gateway.Snapshot, gateway.Deps, func(), error) {
	if snap.Telemetry == nil {
		return snap, deps, func() {}, nil
	}
	log := deps.Logger
	tr, err := telemetry.Start(ctx, snap.Telemetry, telemetry.Options{Version: versionString(), Logger: log})
	if err != nil {
		return nil, deps, nil, err
	}
	stop := func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tr.Shutdown(sctx); err != nil {
			log.Warn("traces still queued at shutdown were dropped", slog.String("error", err.Error()))
		}
	}
	deps.Tracing = tr
	snap.Close()
	if snap, err = gateway.Compile(cfg, deps, gateway.CompileOptions{}); err != nil {
		stop()
		return nil, deps, nil, err
	}
	log.Info("telemetry on", slog.String("export", snap.Telemetry.String()))
	return snap, deps, stop, nil
}

// auditOutput opens log.audit: "" (the main log's stderr), stdout, stderr or
// a file (appended to, created 0600).
func auditOutput(dest string, stdout, stderr io.Writer) (io.Writer, func(), error) {
	switch dest {
	case "", "stderr":
		return stderr, func() {}, nil
	case "stdout":
		return stdout, func() {}, nil
	}
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("log.audit: %w", err)
	}
	return f, func() { _ = f.Close() }, nil
}

// watchFiles calls reload when the contents of any of files() change. It
// compares digests rather than modification times, because Kubernetes
// updates a mounted ConfigMap or Secret by swapping a symlink. A file that
// cannot be read (mid-swap) is skipped until it can.
func watchFiles(ctx context.Context, files func() []string, every time.Duration, reload func()) {
	digest := func() ([32]byte, bool) {
		h := sha256.New()
		for _, f := range files() {
			b, err := os.ReadFile(f)
			if err != nil {
				return [32]byte{}, false
			}
			h.Write([]byte(f))
			h.Write([]byte{0})
			sum := sha256.Sum256(b)
			h.Write(sum[:])
		}
		return [32]byte(h.Sum(nil)), true
	}
	last, known := digest()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d, ok := digest()
			if ok && !known {
				// Unreadable at start (a secret mid-swap): this is the
				// baseline, not a change.
				last, known = d, true
				continue
			}
			if ok && d != last {
				reload()
				// The reload may have changed which files are read.
				last, _ = digest()
			}
		}
	}
}
