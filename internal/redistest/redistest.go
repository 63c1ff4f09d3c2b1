// Package redistest runs a real redis-server on loopback for tests, in the
// spirit of go-oidc's oidctest: a small real fake, not a mock.
//
// Each Server is its own redis-server process on a free 127.0.0.1 port with
// its own temporary directory, no persistence (an empty --save, --appendonly no),
// and is stopped by PID when the test (or TestMain) ends. Drills can Kill,
// Restart, Pause (SIGSTOP: the kernel still accepts connections, nothing is
// ever answered) and Resume it.
//
// redis-server must be installed: .ci/run installs it (Debian package
// redis-server) when it is missing. A test that needs Redis fails, never
// skips, when it is not there, so a green run always means Redis was tested.
package redistest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelgate/modelgate/internal/testcert"
	"github.com/redis/go-redis/v9"
)

// ErrNotInstalled is returned by New when redis-server is not on PATH.
var ErrNotInstalled = errors.New("redistest: redis-server not found on PATH: run .ci/run (it installs the Debian package redis-server) or `apt-get install redis-server`")

// Server is one redis-server process. Its methods are safe for concurrent
// use.
type Server struct {
	// Addr is host:port on 127.0.0.1.
	Addr string

	bin      string
	dir      string
	port     int
	password string    // requirepass, if any
	tls      *tlsSetup // TLS only, when set

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	paused bool
}

// Start runs a redis-server for tb and stops it in tb.Cleanup. It fails tb
// (does not skip) when redis-server is not installed or does not start.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return StartWithPassword(tb, "")
}

// StartTLS is Start for a server that speaks TLS only (rediss://), with a
// self-signed certificate for 127.0.0.1 in CAFile: trust it through
// SSL_CERT_FILE, as for any private CA.
func StartTLS(tb testing.TB) *Server {
	tb.Helper()
	dir := tb.TempDir()
	key := testcert.ECKey(tb)
	cert := testcert.Issue(tb, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "redistest"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		IsCA:        true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, key, nil, nil)
	certPEM, keyPEM := testcert.PEM(tb, cert, key)
	tlsFiles := [2]string{filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")}
	if err := os.WriteFile(tlsFiles[0], certPEM, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(tlsFiles[1], keyPEM, 0o600); err != nil {
		tb.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	s, err := newServerWith(dir, "", &tlsSetup{files: tlsFiles, roots: roots})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

// CAFile is the PEM file of the certificate a StartTLS server presents.
func (s *Server) CAFile() string {
	if s.tls == nil {
		return ""
	}
	return s.tls.files[0]
}

type tlsSetup struct {
	files [2]string // certificate, key
	roots *x509.CertPool
}

// StartWithPassword is Start for a server that requires password
// (requirepass, as Azure Cache for Redis does); URL carries it.
func StartWithPassword(tb testing.TB, password string) *Server {
	tb.Helper()
	s, err := newServer(tb.TempDir(), password)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

func newServer(dir, password string) (*Server, error) { return newServerWith(dir, password, nil) }

func newServerWith(dir, password string, t *tlsSetup) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNotInstalled
	}
	s := &Server{bin: bin, dir: dir, password: password, tls: t}
	// A free port can be taken between our probe and redis-server's bind;
	// try a few.
	var last error
	for range 5 {
		if s.port, err = freePort(); err != nil {
			return nil, err
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
		if last = s.start(); last == nil {
			return s, nil
		}
	}
	return nil, last
}

// URL is the redis:// URL of the server, database 0.
func (s *Server) URL() string {
	if s.tls != nil {
		return "rediss://" + s.Addr + "/0"
	}
	if s.password != "" {
		return "redis://:" + url.QueryEscape(s.password) + "@" + s.Addr + "/0"
	}
	return "redis://" + s.Addr + "/0"
}

// PID is the process id of the running redis-server, or 0 when stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

func (s *Server) start() error {
	args := []string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no",
		"--dir", s.dir, "--logfile", "", "--loglevel", "warning",
		"--daemonize", "no", "--protected-mode", "yes"}
	if s.password != "" {
		args = append(args, "--requirepass", s.password)
	}
	if s.tls != nil {
		args[1] = "0" // no plain port
		args = append(args, "--tls-port", strconv.Itoa(s.port), "--tls-cert-file", s.tls.files[0],
			"--tls-key-file", s.tls.files[1], "--tls-auth-clients", "no")
	}
	cmd := exec.Command(s.bin, args...)
	out, err := os.Create(s.dir + "/redis-" + strconv.Itoa(s.port) + ".log")
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("redistest: start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); out.Close(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.exited, s.paused = cmd, exited, false
	s.mu.Unlock()

	c := redis.NewClient(s.options(&redis.Options{DialTimeout: 200 * time.Millisecond}))
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(out.Name())
			s.mu.Lock()
			s.cmd = nil
			s.mu.Unlock()
			return fmt.Errorf("redistest: redis-server on port %d exited: %s", s.port, log)
		default:
		}
		if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("redistest: redis-server on %s did not answer PING within 10s: %w", s.Addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Kill stops the server at once with SIGKILL, as a crash would, and waits
// until the process is gone. Killing a stopped server does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill() // SIGKILL works on a SIGSTOPped process too
	<-exited
}

// Restart starts a killed server again on the same port, empty. It fails
// tb when the server does not come back.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Kill()
	if err := s.start(); err != nil {
		tb.Fatal(err)
	}
}

// Pause sends SIGSTOP: connections are still accepted by the kernel, and
// nothing is ever answered, until Resume.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP, true) }

// Resume sends SIGCONT to a paused server.
func (s *Server) Resume() { s.signal(syscall.SIGCONT, false) }

func (s *Server) signal(sig syscall.Signal, paused bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(sig)
	s.paused = paused
}

// Client returns a go-redis client for the server, closed with tb.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	// ContextTimeoutEnabled: without it go-redis ignores a context's
	// deadline for reads and writes, and a paused server holds a call for
	// ReadTimeout (3 s) times its retries.
	c := redis.NewClient(s.options(&redis.Options{}))
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Close stops the server by PID (SIGKILL: it holds nothing worth saving).
func (s *Server) Close() { s.Kill() }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("redistest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// options fills o to reach s: address, password, TLS; no retries, and
// contexts' deadlines honoured.
func (s *Server) options(o *redis.Options) *redis.Options {
	o.Addr, o.Password, o.ContextTimeoutEnabled, o.MaxRetries = s.Addr, s.password, true, -1
	if s.tls != nil {
		o.TLSConfig = &tls.Config{RootCAs: s.tls.roots, MinVersion: tls.VersionTLS12}
	}
	return o
}
