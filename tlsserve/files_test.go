package tlsserve

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/modelgate/modelgate/internal/logtest"
	"github.com/modelgate/modelgate/internal/testcert"
)

// testCA issues leaf certificates for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key := testcert.ECKey(t)
	cert := testcert.Issue(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "modelgate test CA"},
		IsCA:    true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}, key, nil, nil)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf returns PEM certificate and key for serial, valid for the host
// "models.modelgate.test" and 127.0.0.1.
func (ca *testCA) leaf(t *testing.T, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key := testcert.ECKey(t)
	return testcert.PEM(t, testcert.Issue(t, &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		DNSNames:     []string{"models.modelgate.test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, key, ca.cert, ca.key), key)
}

// writeAtomic replaces name's contents the way a careful rotator does.
func writeAtomic(t *testing.T, name string, data []byte) {
	t.Helper()
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

// servedSerial does a fresh TLS handshake with addr and returns the leaf
// serial number it got.
func servedSerial(t *testing.T, addr string, roots *x509.CertPool) int64 {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "models.modelgate.test"},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
		ForceAttemptHTTP2: true,
		DisableKeepAlives: true,
	}}
	resp, err := c.Get("https://models.modelgate.test/")
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Errorf("served %s, want HTTP/2", resp.Proto)
	}
	return resp.TLS.PeerCertificates[0].SerialNumber.Int64()
}

func TestFilesServeAndReload(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	c1, k1 := ca.leaf(t, 1)
	writeAtomic(t, certFile, c1)
	writeAtomic(t, keyFile, k1)

	var logs logtest.Buffer
	m, err := New(t.Context(), Options{
		Mode: ModeFiles, CertFile: certFile, KeyFile: keyFile,
		ReloadInterval: -1, // reload by hand in this test
		Logger:         slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Ready(); err != nil {
		t.Errorf("Ready() = %v", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler(), TLSConfig: m.TLSConfig(), ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(slog.DiscardHandler, 0)}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()
	addr := ln.Addr().String()

	if got := servedSerial(t, addr, ca.pool); got != 1 {
		t.Fatalf("serving serial %d, want 1", got)
	}

	// Unchanged files: nothing to do.
	if err := m.Reload(); err != nil {
		t.Fatalf("Reload() with unchanged files = %v", err)
	}

	// A new pair is served without a restart.
	c2, k2 := ca.leaf(t, 2)
	writeAtomic(t, certFile, c2)
	writeAtomic(t, keyFile, k2)
	if err := m.Reload(); err != nil {
		t.Fatalf("Reload() = %v", err)
	}
	if got := servedSerial(t, addr, ca.pool); got != 2 {
		t.Fatalf("after rotation: serving serial %d, want 2", got)
	}

	// A broken replacement is refused: the certificate is new but the key is
	// still the old one (a rotator that has written only one file so far).
	c3, k3 := ca.leaf(t, 3)
	writeAtomic(t, certFile, c3)
	err = m.Reload()
	if err == nil || !strings.Contains(err.Error(), "private key does not match public key") {
		t.Fatalf("Reload() with mismatched pair = %v, want a key mismatch error", err)
	}
	if err2 := m.Reload(); err2 == nil {
		t.Error("second Reload() of the same bad pair = nil, want the same error")
	}
	if got := servedSerial(t, addr, ca.pool); got != 2 {
		t.Fatalf("after a bad pair: serving serial %d, want the previous 2", got)
	}
	// Garbage and a missing key file are refused too.
	writeAtomic(t, certFile, []byte("not a certificate"))
	if err := m.Reload(); err == nil {
		t.Error("Reload() with a garbage certificate = nil")
	}
	os.Remove(keyFile)
	if err := m.Reload(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Reload() with the key file missing = %v, want fs.ErrNotExist", err)
	}
	if got := servedSerial(t, addr, ca.pool); got != 2 {
		t.Fatalf("after bad files: serving serial %d, want the previous 2", got)
	}

	// The rotator finishes: the good pair is picked up.
	writeAtomic(t, certFile, c3)
	writeAtomic(t, keyFile, k3)
	if err := m.Reload(); err != nil {
		t.Fatalf("Reload() = %v", err)
	}
	if got := servedSerial(t, addr, ca.pool); got != 3 {
		t.Fatalf("after the fix: serving serial %d, want 3", got)
	}

	out := logs.String()
	if n := strings.Count(out, "certificate reload failed"); n != 3 {
		t.Errorf("logged %d reload failures, want 3 (one per distinct bad state):\n%s", n, out)
	}
	for _, k := range [][]byte{k1, k2, k3} {
		body := strings.Split(string(k), "\n")[1] // first line of the base64 key
		if strings.Contains(out, body) {
			t.Fatalf("a private key reached the log:\n%s", out)
		}
	}
	if !strings.Contains(out, "reloaded certificate") {
		t.Errorf("no reload logged:\n%s", out)
	}
}

// TestFilesPolling checks that a changed pair is picked up by the poller
// alone, using synctest's fake clock instead of waiting.
func TestFilesPolling(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	c1, k1 := ca.leaf(t, 1)
	c2, k2 := ca.leaf(t, 2)
	c3, _ := ca.leaf(t, 3)
	writeAtomic(t, certFile, c1)
	writeAtomic(t, keyFile, k1)

	synctest.Test(t, func(t *testing.T) {
		m, err := New(t.Context(), Options{Mode: ModeFiles, CertFile: certFile, KeyFile: keyFile, ReloadInterval: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		serial := func() int64 {
			c, err := m.TLSConfig().GetCertificate(&tls.ClientHelloInfo{})
			if err != nil {
				t.Fatal(err)
			}
			return c.Leaf.SerialNumber.Int64()
		}

		writeAtomic(t, certFile, c2)
		writeAtomic(t, keyFile, k2)
		time.Sleep(9 * time.Second)
		if got := serial(); got != 1 {
			t.Fatalf("before the first poll: serial %d, want 1", got)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := serial(); got != 2 {
			t.Fatalf("after the first poll: serial %d, want 2", got)
		}

		writeAtomic(t, certFile, c3) // key not rotated: bad pair
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got := serial(); got != 2 {
			t.Fatalf("after a bad pair: serial %d, want the previous 2", got)
		}
	})
}

func TestFilesNewFails(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	c1, k1 := ca.leaf(t, 1)
	_, k2 := ca.leaf(t, 2)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		writeAtomic(t, p, b)
		return p
	}
	cert, key, otherKey := write("c.pem", c1), write("k.pem", k1), write("k2.pem", k2)
	big := write("big.pem", bytes.Repeat([]byte("A"), maxPEMBytes+1))
	tests := []struct {
		name, cert, key, want string
	}{
		{"missing cert", filepath.Join(dir, "nope.pem"), key, "no such file"},
		{"key mismatch", cert, otherKey, "private key does not match"},
		{"swapped", key, cert, "failed to find"},
		{"too large", big, key, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(t.Context(), Options{Mode: ModeFiles, CertFile: tt.cert, KeyFile: tt.key})
			if err == nil {
				m.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

// TestFilesConcurrentReload hands out certificates while reloads swap them.
func TestFilesConcurrentReload(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	pairs := make([][2][]byte, 4)
	for i := range pairs {
		pairs[i][0], pairs[i][1] = ca.leaf(t, int64(i+1))
	}
	writeAtomic(t, certFile, pairs[0][0])
	writeAtomic(t, keyFile, pairs[0][1])
	m, err := New(t.Context(), Options{Mode: ModeFiles, CertFile: certFile, KeyFile: keyFile, ReloadInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	get := m.TLSConfig().GetCertificate
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if c, err := get(&tls.ClientHelloInfo{}); err != nil || c == nil {
					t.Errorf("GetCertificate = %v, %v", c, err)
					return
				}
			}
		})
	}
	for i := range 40 {
		p := pairs[i%len(pairs)]
		writeAtomic(t, certFile, p[0])
		writeAtomic(t, keyFile, p[1])
		m.Reload()
	}
	close(stop)
	wg.Wait()
}
