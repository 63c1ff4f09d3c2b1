package gateway

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/modelgate/modelgate/internal/testcert"
)

// selfSigned writes a certificate and key for 127.0.0.1 to dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key := testcert.ECKey(t)
	cert := testcert.Issue(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "gw.test"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"gw.test"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, key, nil, nil)
	certPEM, keyPEM := testcert.PEM(t, cert, key)
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestH2RapidResetGetsGoAway is CVE-2023-44487 ("rapid reset") against the
// gateway's TLS listener: one connection opens a stream (HEADERS) and
// resets it (RST_STREAM) as fast as it can, for at most 5 s. A sane client
// never does that; the gateway must answer with GOAWAY and close the
// connection soon, and only a bounded number of the requests may reach
// the upstream (and the audit log).
func TestH2RapidResetGetsGoAway(t *testing.T) {
	var upstreamHits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamHits.Add(1)
		io.WriteString(w, "scored")
	}))
	t.Cleanup(up.Close)
	certFile, keyFile := selfSigned(t, t.TempDir())
	pub, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adm, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := parse(t, `
server:
  listen: "`+pub.Addr().String()+`"
  tls: { mode: files, cert_file: "`+certFile+`", key_file: "`+keyFile+`" }
admin:
  listen: "`+adm.Addr().String()+`"
upstreams:
  u: { url: "`+up.URL+`", auth: { type: key, key: "${K1}" } }
routes:
  - { name: r, path: /, upstream: u, public: true }
`)
	serveTLS(t, cfg, Listeners{Public: pub, Admin: adm})

	conn, err := tls.Dial("tcp", pub.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q, want h2", p)
	}
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hdr bytes.Buffer
	enc := hpack.NewEncoder(&hdr)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "gw.test"}, {":path", "/score"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	block := hdr.Bytes()

	var goaway atomic.Value // *http2.GoAwayFrame's error code
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		rf := http2.NewFramer(io.Discard, conn)
		for {
			f, err := rf.ReadFrame()
			if err != nil {
				return
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				goaway.Store(ga.ErrCode)
			}
		}
	}()

	const attack = 5 * time.Second
	start := time.Now()
	pairs := 0
	_ = conn.SetWriteDeadline(start.Add(attack + time.Second))
	for id := uint32(1); time.Since(start) < attack && goaway.Load() == nil; id += 2 {
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true}); err != nil {
			break
		}
		if err := fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			break
		}
		pairs++
	}
	took := time.Since(start)
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	<-readDone
	t.Logf("%d HEADERS+RST_STREAM pairs in %v; GOAWAY %v; %d requests reached the upstream", pairs, took, goaway.Load(), upstreamHits.Load())
	if goaway.Load() == nil {
		t.Fatalf("no GOAWAY after %d HEADERS+RST_STREAM pairs in %v; %d requests reached the upstream", pairs, took, upstreamHits.Load())
	}
	if code := goaway.Load().(http2.ErrCode); code != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("GOAWAY %v, want ENHANCE_YOUR_CALM", code)
	}
	if n := upstreamHits.Load(); n > 500 {
		t.Errorf("%d reset requests reached the upstream; want the connection cut before a few hundred", n)
	}
}
