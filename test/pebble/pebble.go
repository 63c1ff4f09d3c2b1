// Package pebble runs Pebble, Let's Encrypt's ACME test server, inside the
// test process on loopback, with a tiny DNS server that resolves the test's
// names to 127.0.0.1 so Pebble validates challenges against the gateway
// under test. Nothing needs installing: Pebble's Go packages are a module
// dependency.
//
//	srv := pebble.Start(t, pebble.Options{HTTPPort: hp, TLSPort: tp, Names: []string{"gw.example.test"}})
//	// ACME client: directory srv.DirectoryURL, trusting srv.APIRoots.
//	// Clients of the issued certificate: trust srv.IssuerRoots(t).
package pebble

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
)

// Options configures [Start].
type Options struct {
	// HTTPPort is the port Pebble connects to on 127.0.0.1 to validate
	// HTTP-01 challenges. Required if the client uses HTTP-01.
	HTTPPort int
	// TLSPort is the port Pebble connects to on 127.0.0.1 to validate
	// TLS-ALPN-01 challenges. Required if the client uses TLS-ALPN-01.
	TLSPort int
	// Names resolve to 127.0.0.1 (A) and to nothing (AAAA) for Pebble's
	// validation; every other name is NXDOMAIN.
	Names []string
	// ValiditySeconds is the lifetime of issued certificates.
	// Default: Pebble's (90 days).
	ValiditySeconds uint64
}

// Server is a running Pebble. Everything is stopped by t.Cleanup.
type Server struct {
	// DirectoryURL is the ACME directory, https on 127.0.0.1.
	DirectoryURL string
	// APIRoots verifies the HTTPS certificate of the ACME API and of
	// ManagementURL (not the certificates Pebble issues).
	APIRoots *x509.CertPool
	// APIRootsPEM is APIRoots as PEM, for configuration files (ca_root).
	APIRootsPEM []byte
	// ManagementURL is Pebble's management interface; /roots/0 serves the
	// root that issued certificates chain to.
	ManagementURL string
	// DNSAddr is the loopback TCP address of the DNS server Pebble resolves
	// challenge names with.
	DNSAddr string
}

// Start runs Pebble for the duration of t. It sets Pebble's environment
// knobs with t.Setenv (no random validation sleeps, no injected bad nonces,
// no authorization reuse), so it must not be called from a parallel test.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	t.Setenv("PEBBLE_AUTHZREUSE", "0")

	dnsAddr := startDNS(t, o.Names)

	logger := log.New(TestWriter(t), "pebble ", log.Lmicroseconds)
	store := db.NewMemoryStore()
	profiles := map[string]ca.Profile{
		"default": {Description: "test profile", ValidityPeriod: o.ValiditySeconds},
	}
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, profiles)
	validator := va.New(logger, o.HTTPPort, o.TLSPort, false, dnsAddr, store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)

	api := httptest.NewUnstartedServer(front.Handler())
	api.Config.ErrorLog = logger
	api.StartTLS()
	t.Cleanup(api.Close)
	mgmt := httptest.NewUnstartedServer(front.ManagementHandler())
	mgmt.Config.ErrorLog = logger
	mgmt.StartTLS()
	t.Cleanup(mgmt.Close)

	roots := x509.NewCertPool()
	roots.AddCert(api.Certificate())
	roots.AddCert(mgmt.Certificate())
	var rootsPEM []byte
	for _, c := range []*x509.Certificate{api.Certificate(), mgmt.Certificate()} {
		rootsPEM = append(rootsPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return &Server{
		DirectoryURL:  api.URL + wfe.DirectoryPath,
		APIRoots:      roots,
		APIRootsPEM:   rootsPEM,
		ManagementURL: mgmt.URL,
		DNSAddr:       dnsAddr,
	}
}

// IssuerRoots fetches the root certificate that Pebble's issued
// certificates chain to from the management endpoint /roots/0, as a client
// of the gateway would be configured to trust it.
func (s *Server) IssuerRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.APIRoots}}}
	resp, err := c.Get(s.ManagementURL + wfe.RootCertPath + "0")
	if err != nil {
		t.Fatalf("pebble: fetching root: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble: fetching root: %s %v", resp.Status, err)
	}
	pool := x509.NewCertPool()
	for rest := body; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatalf("pebble: parsing root: %v", err)
		}
		pool.AddCert(cert)
	}
	return pool
}

// TestWriter returns a writer to t's output that drops writes once t's
// cleanups run. Pebble's validation workers and an ACME client's background
// goroutines can log after a test returns, and writing to a finished test's
// output panics.
func TestWriter(t testing.TB) io.Writer {
	w := &testWriter{w: t.Output()}
	t.Cleanup(func() {
		w.mu.Lock()
		w.w = nil
		w.mu.Unlock()
	})
	return w
}

type testWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.w == nil {
		return len(p), nil
	}
	return w.w.Write(p)
}

// startDNS serves A 127.0.0.1 for names over TCP on loopback (Pebble's VA
// queries a custom resolver over TCP) and returns its address.
func startDNS(t testing.TB, names []string) string {
	t.Helper()
	known := map[string]bool{}
	for _, n := range names {
		known[dns.Fqdn(strings.ToLower(n))] = true
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		resp := new(dns.Msg)
		resp.SetReply(req)
		for _, q := range req.Question {
			name := strings.ToLower(q.Name)
			if !known[name] {
				resp.Rcode = dns.RcodeNameError
				continue
			}
			if q.Qtype == dns.TypeA {
				resp.Answer = append(resp.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		w.WriteMsg(resp)
	})
	srv := &dns.Server{Listener: ln, Handler: handler}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}
