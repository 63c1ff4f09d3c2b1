package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/test/pebble"
)

// serveTLS builds cfg, enables its TLS listener and serves ls until the
// test ends, when it checks that the server stopped cleanly.
func serveTLS(t *testing.T, cfg *config.Config, ls Listeners) *Server {
	t.Helper()
	deps := Deps{Logger: testLogger(t)}
	snap, err := Build(context.Background(), cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(snap, nil, deps)
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.EnableTLS(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.RunListeners(ctx, ls) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return srv
}

// TestACMEWithPebble: the gateway obtains a certificate from an ACME CA
// (Pebble, in process, validating against the gateway's own loopback
// listeners) and serves a request over it with HTTP/2, with no manual step;
// its plain-HTTP listener redirects to HTTPS.
func TestACMEWithPebble(t *testing.T) {
	const domain = "gw.modelgate.test"
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	pub, adm, httpLn := listen(), listen(), listen()
	ca := pebble.Start(t, pebble.Options{
		HTTPPort: httpLn.Addr().(*net.TCPAddr).Port, TLSPort: pub.Addr().(*net.TCPAddr).Port,
		Names: []string{domain}, ValiditySeconds: 3600,
	})
	dir := t.TempDir()
	caRoot := filepath.Join(dir, "acme-ca.pem")
	if err := os.WriteFile(caRoot, ca.APIRootsPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "scored") }))
	t.Cleanup(up.Close)
	cfg := parse(t, `
server:
  listen: "`+pub.Addr().String()+`"
  tls:
    mode: acme
    domains: [`+domain+`]
    email: ops@modelgate.test
    ca: "`+ca.DirectoryURL+`"
    ca_root: "`+caRoot+`"
    storage: "`+filepath.Join(dir, "certs")+`"
    http_listen: "`+httpLn.Addr().String()+`"
admin:
  listen: "`+adm.Addr().String()+`"
upstreams:
  u: { url: "`+up.URL+`", auth: { type: none } }
routes:
  - { name: r, path: /, upstream: u, public: true }
`)
	srv := serveTLS(t, cfg, Listeners{Public: pub, Admin: adm, HTTP: httpLn})

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: ca.IssuerRoots(t), ServerName: domain},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, pub.Addr().String())
		},
	}}
	url := "https://" + domain + ":" + strconv.Itoa(pub.Addr().(*net.TCPAddr).Port) + "/score"
	var (
		resp *http.Response
		err  error
	)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err = client.Get(url)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("no certificate within 60s: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "scored" || resp.ProtoMajor != 2 {
		t.Fatalf("over the ACME certificate: %s %s %q", resp.Proto, resp.Status, body)
	}
	if issuer := resp.TLS.PeerCertificates[0].Issuer.CommonName; issuer == "" {
		t.Error("certificate without issuer")
	}

	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", "http://"+httpLn.Addr().String()+"/score?x=1", nil)
	req.Host = domain
	r2, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != http.StatusPermanentRedirect || r2.Header.Get("Location") != url+"?x=1" {
		t.Errorf("plain HTTP: %d Location %q, want 308 to %s?x=1", r2.StatusCode, r2.Header.Get("Location"), url)
	}

	rec := httptest.NewRecorder()
	srv.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 200 {
		t.Errorf("/readyz = %d %s", rec.Code, rec.Body)
	}
}
