package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
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
	cfg  config.TLS       // as written, to tell whether a reload changed it
	opts tlsserve.Options // compiled and validated (Compile)
	mgr  *tlsserve.Manager
}

// start builds the certificate manager: in mode files it loads the pair,
// in mode acme it starts obtaining and renewing certificates.
func (t *tlsState) start(ctx context.Context) (*tlsState, error) {
	mgr, err := tlsserve.New(ctx, t.opts)
	if err != nil {
		return nil, err
	}
	return &tlsState{cfg: t.cfg, opts: t.opts, mgr: mgr}, nil
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
	t := s.snap.Load().tls
	if t == nil {
		return nil
	}
	st, err := t.start(ctx)
	if err != nil {
		return err
	}
	s.tls.Store(st)
	return nil
}

// reloadTLS rebuilds the certificate manager when server.tls changed. It
// returns the manager to close once the swap is done.
func (s *Server) reloadTLS(ctx context.Context, snap *Snapshot) (swap func(), err error) {
	cur := s.tls.Load()
	next := snap.tls
	switch {
	case cur == nil && next == nil:
		return func() {}, nil
	case cur == nil || next == nil:
		return nil, errors.New("turning TLS on or off needs a restart (the listener changes)")
	case reflect.DeepEqual(cur.cfg, next.cfg):
		// Unchanged: certificate files may still have been rotated.
		return func() { _ = cur.mgr.Reload() }, nil
	}
	st, err := next.start(ctx)
	if err != nil {
		return nil, fmt.Errorf("server.tls: %w", err)
	}
	return func() {
		s.tls.Store(st)
		time.AfterFunc(snap.Config.Server.ShutdownTimeout.D(), func() { _ = cur.mgr.Close() })
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
		next := tlsserve.RedirectHandler(port(s.snap.Load().Config.Server.Listen), st.mgr.Serves)
		st.mgr.HTTPHandler(next).ServeHTTP(w, r)
	})
}
