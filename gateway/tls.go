package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"time"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/tlsserve"
)

// tlsState is the listener's certificate manager and the settings it was
// built from. The public listener asks the current one for every handshake,
// so a reload that changes server.tls swaps certificates without dropping
// the listener.
type tlsState struct {
	cfg config.TLS
	mgr *tlsserve.Manager
}

// newTLS builds a certificate manager for t. The listen addresses give the
// ports the ACME challenges reach the gateway on.
func newTLS(ctx context.Context, t *config.TLS, listen string, deps Deps) (*tlsState, error) {
	o := tlsserve.Options{
		Mode:           t.Mode,
		Domains:        t.Domains,
		Email:          t.Email,
		CA:             t.CA,
		Storage:        t.Storage,
		CertFile:       t.CertFile,
		KeyFile:        t.KeyFile,
		ReloadInterval: t.ReloadInterval.D(),
		Logger:         deps.Logger,
	}
	if t.Mode == tlsserve.ModeACME {
		o.DisableHTTPChallenge = (t.HTTPChallenge != nil && !*t.HTTPChallenge) || t.HTTPListen == ""
		o.DisableTLSALPNChallenge = t.TLSALPNChallenge != nil && !*t.TLSALPNChallenge
		o.AltTLSALPNPort = port(listen)
		o.AltHTTPPort = port(t.HTTPListen)
		if t.CARoot != "" {
			pem, err := os.ReadFile(t.CARoot)
			if err != nil {
				return nil, fmt.Errorf("server.tls.ca_root: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("server.tls.ca_root: %s holds no PEM certificate", t.CARoot)
			}
			o.TrustedRoots = pool
		}
	}
	mgr, err := tlsserve.New(ctx, o)
	if err != nil {
		return nil, err
	}
	return &tlsState{cfg: *t, mgr: mgr}, nil
}

func port(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// EnableTLS starts certificate management for the serving configuration's
// server.tls, if it has one. Call it before Run.
func (s *Server) EnableTLS(ctx context.Context) error {
	cfg := s.snap.Load().Config
	if cfg.Server.TLS == nil {
		return nil
	}
	st, err := newTLS(ctx, cfg.Server.TLS, cfg.Server.Listen, s.deps)
	if err != nil {
		return err
	}
	s.tls.Store(st)
	return nil
}

// reloadTLS rebuilds the certificate manager when server.tls changed. It
// returns the manager to close once the swap is done.
func (s *Server) reloadTLS(ctx context.Context, cfg *config.Config) (swap func(), err error) {
	cur := s.tls.Load()
	next := cfg.Server.TLS
	switch {
	case cur == nil && next == nil:
		return func() {}, nil
	case cur == nil || next == nil:
		return nil, errors.New("turning TLS on or off needs a restart (the listener changes)")
	case reflect.DeepEqual(cur.cfg, *next):
		// Unchanged: certificate files may still have been rotated.
		return func() { _ = cur.mgr.Reload() }, nil
	}
	st, err := newTLS(ctx, next, cfg.Server.Listen, s.deps)
	if err != nil {
		return nil, fmt.Errorf("server.tls: %w", err)
	}
	return func() {
		s.tls.Store(st)
		time.AfterFunc(cfg.Server.ShutdownTimeout.D(), func() { _ = cur.mgr.Close() })
	}, nil
}

// tlsConfig is the public listener's config: each handshake gets the current
// manager's.
func (s *Server) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.tls.Load().mgr.TLSConfig(), nil
		},
	}
}

// httpRedirect answers ACME HTTP-01 challenges and redirects the rest to
// HTTPS.
func (s *Server) httpRedirect() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := s.tls.Load()
		next := tlsserve.RedirectHandler(port(s.snap.Load().Config.Server.Listen))
		st.mgr.HTTPHandler(next).ServeHTTP(w, r)
	})
}
