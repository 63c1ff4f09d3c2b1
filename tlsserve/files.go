package tlsserve

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// fileSource serves a certificate pair read from files and reloads it when
// the files' contents change.
type fileSource struct {
	certFile, keyFile string
	log               *slog.Logger
	cur               atomic.Pointer[tls.Certificate]

	mu      sync.Mutex // serializes loads; guards lastSum and lastErr
	lastSum [sha256.Size]byte
	lastErr error // from parsing the pair with lastSum
}

func (m *Manager) startFiles(ctx context.Context, o Options) error {
	f := &fileSource{certFile: o.CertFile, keyFile: o.KeyFile, log: m.log}
	if _, err := f.load(); err != nil {
		return err
	}
	m.files = f
	m.getCert = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return f.cur.Load(), nil
	}
	if o.ReloadInterval < 0 {
		close(m.done)
		return nil
	}
	go func() {
		defer close(m.done)
		t := time.NewTicker(o.ReloadInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				f.load() // logs its own failure
			}
		}
	}()
	return nil
}

// load reads both files and, if their contents differ from the last pair it
// tried, parses them and swaps the served certificate. It reports whether
// the certificate changed. A pair that fails to parse is logged once (until
// the files change again) and the previous certificate stays in use.
//
// Contents are compared rather than modification times because
// Kubernetes-mounted secrets are swapped through symlinks and some sync
// tools preserve mtimes. Reading two small files each interval is cheap.
func (f *fileSource) load() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()

	certPEM, err := readPEM(f.certFile)
	if err != nil {
		return false, f.fail(err)
	}
	keyPEM, err := readPEM(f.keyFile)
	if err != nil {
		return false, f.fail(err)
	}
	// Hash in place: no second copy of the private key in memory.
	h := sha256.New()
	h.Write(certPEM)
	h.Write([]byte{0})
	h.Write(keyPEM)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	if sum == f.lastSum {
		return false, f.lastErr // already tried, and logged if it failed
	}
	f.lastSum = sum

	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// tls errors describe PEM blocks and key types, never key bytes.
		f.lastErr = fmt.Errorf("tls: loading %s and %s: %w", f.certFile, f.keyFile, err)
		return false, f.fail(f.lastErr)
	}
	f.lastErr = nil
	leaf := cert.Leaf // set by X509KeyPair
	fp := sha256.Sum256(leaf.Raw)
	attrs := []any{
		slog.String("cert_file", f.certFile),
		slog.Any("names", leaf.DNSNames),
		slog.Time("not_after", leaf.NotAfter),
		slog.String("sha256", hex.EncodeToString(fp[:])),
	}
	now := time.Now()
	switch {
	case now.After(leaf.NotAfter):
		f.log.Warn("tls: loaded certificate has expired", attrs...)
	case now.Before(leaf.NotBefore):
		f.log.Warn("tls: loaded certificate is not valid yet", attrs...)
	}
	msg := "tls: reloaded certificate"
	if f.cur.Swap(&cert) == nil {
		msg = "tls: loaded certificate"
	}
	f.log.Info(msg, attrs...)
	return true, nil
}

// fail logs err when a previous certificate stays in use and returns it.
func (f *fileSource) fail(err error) error {
	if f.cur.Load() != nil {
		f.log.Error("tls: certificate reload failed; still serving the previous certificate",
			slog.String("cert_file", f.certFile), slog.String("key_file", f.keyFile), slog.Any("error", err))
	}
	return err
}

// readPEM reads at most maxPEMBytes of a certificate or key file.
func readPEM(name string) ([]byte, error) {
	fh, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxPEMBytes+1))
	if err != nil {
		return nil, fmt.Errorf("tls: reading %s: %w", name, err)
	}
	if len(b) > maxPEMBytes {
		return nil, fmt.Errorf("tls: %s is larger than %d bytes: not a PEM certificate or key file", name, maxPEMBytes)
	}
	return b, nil
}
