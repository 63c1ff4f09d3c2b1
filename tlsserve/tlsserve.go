// Package tlsserve provides the TLS configuration of the gateway's public
// listener: certificates obtained and renewed automatically over ACME
// (RFC 8555) by certmagic, or loaded from files and reloaded when they change.
//
// Typical use:
//
//	m, err := tlsserve.New(ctx, opts)
//	...
//	defer m.Close()
//	srv := &http.Server{Handler: h, TLSConfig: m.TLSConfig()}
//	go srv.ServeTLS(ln, "", "")                                  // :443
//	go http.Serve(httpLn, m.HTTPHandler(nil))                    // :80, optional
//
// In ACME mode the CA validates control of each domain by connecting back to
// it: HTTP-01 on port 80 (answered by [Manager.HTTPHandler], or by a listener
// certmagic opens itself when nothing listens on that port) and TLS-ALPN-01
// on port 443 (answered by the listener that uses [Manager.TLSConfig]). If
// the gateway listens elsewhere, forward 80 and 443 to it and set
// [Options.AltHTTPPort] and [Options.AltTLSALPNPort].
package tlsserve

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/modelgate/modelgate/internal/problem"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
)

// Modes for [Options.Mode], as written in config server.tls.mode.
const (
	// ModeACME obtains and renews certificates from an ACME CA.
	ModeACME = "acme"
	// ModeFiles serves a certificate and key read from files.
	ModeFiles = "files"
)

// LetsEncryptCA is the ACME directory used when [Options.CA] is empty:
// Let's Encrypt's production CA. Its rate limits are strict; test against
// its staging directory or Pebble instead.
const LetsEncryptCA = certmagic.LetsEncryptProductionCA

// DefaultReloadInterval is how often files mode checks the certificate and
// key files for changes when [Options.ReloadInterval] is 0.
const DefaultReloadInterval = 30 * time.Second

// maxPEMBytes bounds what files mode reads from a certificate or key file.
const maxPEMBytes = 1 << 20

// ErrInvalidOptions is wrapped by every error [New] returns for options it
// cannot use; test for it with errors.Is. Errors loading the certificate
// files in files mode wrap the underlying error instead.
var ErrInvalidOptions = errors.New("invalid tls options")

// Options configures a [Manager]. It mirrors config server.tls:
//
//	mode              → Mode
//	domains, email    → Domains, Email
//	ca                → CA
//	storage           → Storage
//	http_challenge    → DisableHTTPChallenge = !http_challenge
//	tls_alpn_challenge→ DisableTLSALPNChallenge = !tls_alpn_challenge
//	cert_file         → CertFile
//	key_file          → KeyFile
//	reload_interval   → ReloadInterval
//
// The remaining fields are for tests and unusual deployments. Fields that
// belong to the other mode must be left zero.
type Options struct {
	// Mode is ModeACME or ModeFiles. Required.
	Mode string

	// Domains are the names to obtain one certificate each for (ModeACME,
	// at least one). Wildcards are not supported: they need the DNS-01
	// challenge. The first domain's certificate is also served to clients
	// that send no server name (SNI), e.g. when connecting by IP address.
	// Certificates are only ever requested for these names: a handshake for
	// any other name fails, and no client can make the gateway ask the CA
	// for a certificate (no on-demand issuance).
	Domains []string
	// Email is the ACME account's contact address, where the CA sends
	// expiry warnings. Optional but recommended. Setting ModeACME means
	// the operator accepts the CA's subscriber agreement.
	Email string
	// CA is the ACME directory URL; it must be https.
	// Default: [LetsEncryptCA].
	CA string
	// Storage is the directory where certificates, private keys and the
	// ACME account are kept across restarts, readable only by the gateway's
	// user (certmagic writes files 0600 and directories 0700). Replicas that
	// share it (e.g. a shared volume) share certificates and coordinate
	// issuance through lock files in it. Default: [DefaultStorage].
	Storage string
	// DisableHTTPChallenge turns off the HTTP-01 challenge.
	// Default: false (enabled).
	DisableHTTPChallenge bool
	// DisableTLSALPNChallenge turns off the TLS-ALPN-01 challenge (RFC 8737),
	// which TLSConfig otherwise answers on the TLS listener itself.
	// Default: false (enabled). At least one challenge must be enabled.
	DisableTLSALPNChallenge bool
	// AltHTTPPort is the port HTTP-01 challenges reach the gateway on when
	// port 80 is forwarded elsewhere. Default: 0, meaning 80.
	AltHTTPPort int
	// AltTLSALPNPort is the port TLS-ALPN-01 challenges reach the gateway on
	// when port 443 is forwarded elsewhere. Default: 0, meaning 443.
	AltTLSALPNPort int
	// TrustedRoots, if set, replaces the system roots for verifying the ACME
	// CA's own HTTPS certificate. For tests against a private ACME server;
	// it does not affect clients of the gateway. Default: system roots.
	TrustedRoots *x509.CertPool
	// RenewCheckInterval is how often managed certificates are checked for
	// renewal. Default: 0, meaning certmagic's (10 minutes).
	RenewCheckInterval time.Duration

	// CertFile is the PEM certificate chain, leaf first (ModeFiles, required).
	CertFile string
	// KeyFile is the PEM private key for CertFile's leaf (ModeFiles,
	// required). Keep it readable only by the gateway's user.
	KeyFile string
	// ReloadInterval is how often CertFile and KeyFile are read to look for a
	// new pair (as written by cert-manager or a Key Vault sync). A changed
	// pair is loaded and served to new connections; a pair that fails to
	// load is logged once and the previous certificate stays in use. A
	// negative value turns polling off ([Manager.Reload] still works).
	// Default: [DefaultReloadInterval].
	ReloadInterval time.Duration

	// Logger receives certificate events: obtained, renewed, reloaded, and
	// failures. Private keys and key material are never logged.
	// Default: discard.
	Logger *slog.Logger
}

// DefaultStorage returns the ACME storage directory used when
// [Options.Storage] is empty: $XDG_DATA_HOME/modelgate/certs if XDG_DATA_HOME
// is set, otherwise /var/lib/modelgate/certs.
func DefaultStorage() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "modelgate", "certs")
	}
	return "/var/lib/modelgate/certs"
}

// Manager owns the listener's certificates. Its methods are safe for
// concurrent use. Close it to stop renewal or file polling.
type Manager struct {
	log       *slog.Logger
	alpnACME  bool // offer acme-tls/1
	getCert   func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	cancel    context.CancelFunc
	done      chan struct{} // closed when background work has stopped
	closeOnce sync.Once

	// ModeACME
	magic   *certmagic.Config
	issuer  *certmagic.ACMEIssuer
	cache   *certmagic.Cache
	domains []string

	// ModeFiles
	files *fileSource
}

// New validates o and starts managing certificates.
//
// In ModeACME, certificates already in storage are loaded and the rest are
// obtained in the background, with retries and exponential backoff, while
// New returns at once: the listeners must be serving for the CA's challenges
// to succeed. Until a certificate is obtained, handshakes for its domain fail;
// [Manager.Ready] reports progress. Renewal runs in the background until
// Close or until ctx is done.
//
// In ModeFiles, the pair is loaded before New returns, and an error loading
// it is returned: the gateway must not start without a certificate.
//
// ctx bounds the background work, like Close; it is not used for a deadline
// on New itself.
func New(ctx context.Context, o Options) (*Manager, error) {
	if err := validate(&o); err != nil {
		return nil, err
	}
	log := cmp.Or(o.Logger, slog.New(slog.DiscardHandler)).With("component", "tlsserve")
	ctx, cancel := context.WithCancel(ctx)
	m := &Manager{log: log, cancel: cancel, done: make(chan struct{})}

	var err error
	switch o.Mode {
	case ModeACME:
		err = m.startACME(ctx, o)
	case ModeFiles:
		err = m.startFiles(ctx, o)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	return m, nil
}

// Validate checks o as New would, without starting anything: every problem
// at once, each at its server.tls field path ("domains[0]", "ca", ...).
func Validate(o Options) error { return validate(&o) }

// validate checks o and fills in defaults. It reports every problem at once.
func validate(o *Options) error {
	var errs problem.List
	bad := func(path, format string, args ...any) { errs.AddErr(ErrInvalidOptions, path, format, args...) }
	switch o.Mode {
	case ModeACME:
		if len(o.Domains) == 0 {
			bad("domains", "mode acme needs at least one domain")
		}
		seen := map[string]bool{}
		o.Domains = slices.Clone(o.Domains) // normalized below; the caller's slice is left alone
		for i, d := range o.Domains {
			d = strings.ToLower(strings.TrimSpace(d))
			p := fmt.Sprintf("domains[%d]", i)
			switch {
			case strings.Contains(d, "*"):
				bad(p, "%q: wildcard certificates need the DNS-01 challenge, which modelgate does not configure; list each name", d)
			case !certmagic.SubjectQualifiesForCert(d) || strings.ContainsAny(d, ":/ "):
				bad(p, "%q is not a DNS name", d)
			case seen[d]:
				bad(p, "%q is listed twice", d)
			}
			seen[d] = true
			o.Domains[i] = d
		}
		if o.CA == "" {
			o.CA = LetsEncryptCA
		}
		if u, err := url.Parse(o.CA); err != nil || u.Scheme != "https" || u.Host == "" {
			bad("ca", "%q: want the https URL of an ACME directory, e.g. %s", o.CA, LetsEncryptCA)
		}
		if o.Storage == "" {
			o.Storage = DefaultStorage()
		}
		if o.DisableHTTPChallenge && o.DisableTLSALPNChallenge {
			bad("", "both the HTTP-01 and TLS-ALPN-01 challenges are off: leave tls_alpn_challenge on, or set http_listen (port 80) for HTTP-01")
		}
		for name, p := range map[string]int{"http_listen": o.AltHTTPPort, "listen": o.AltTLSALPNPort} {
			if p < 0 || p > 65535 {
				bad(name, "port %d: want a port from 1 to 65535, or 0 for the standard port", p)
			}
		}
		if o.RenewCheckInterval < 0 {
			bad("", "renew check interval %v: must not be negative", o.RenewCheckInterval)
		}
		if o.CertFile != "" || o.KeyFile != "" || o.ReloadInterval != 0 {
			bad("", "cert_file, key_file and reload_interval belong to mode files, not acme")
		}
	case ModeFiles:
		if o.CertFile == "" || o.KeyFile == "" {
			bad("", "mode files needs both cert_file and key_file")
		}
		if len(o.Domains) > 0 || o.Email != "" || o.CA != "" || o.Storage != "" || o.TrustedRoots != nil {
			bad("", "domains, email, ca, ca_root, storage and the challenge switches belong to mode acme, not files")
		}
		if o.ReloadInterval == 0 {
			o.ReloadInterval = DefaultReloadInterval
		}
	case "":
		bad("mode", "missing: write acme or files (or remove tls for plain HTTP)")
	default:
		bad("mode", "%q is not a TLS mode: write acme or files", o.Mode)
	}
	return errs.Err()
}

// TLSConfig returns a new tls.Config for the public listener: certificates
// from this Manager, TLS 1.2 or later, and ALPN offering HTTP/2 and
// HTTP/1.1 (plus acme-tls/1 in ModeACME with TLS-ALPN-01 enabled, which
// must stay in NextProtos for that challenge to work). Each call returns a
// fresh value the caller may adjust before use.
//
// The config is bound to m. To replace a Manager under a running listener
// (a config reload that changes server.tls), give the listener a tls.Config
// whose GetConfigForClient returns the current Manager's TLSConfig, and
// Close the old Manager once swapped; a new Manager with the same Storage
// picks up the stored certificates without asking the CA again.
func (m *Manager) TLSConfig() *tls.Config {
	protos := []string{"h2", "http/1.1"}
	if m.alpnACME {
		protos = append(protos, acmez.ACMETLS1Protocol)
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     protos,
		GetCertificate: m.getCert,
	}
}

// HTTPHandler returns the handler for an optional plain-HTTP listener on
// port 80. It answers ACME HTTP-01 challenge requests
// (/.well-known/acme-challenge/, RFC 8555 §8.3) in ModeACME and passes every
// other request to next. If next is nil, other requests are redirected to
// HTTPS on the standard port (see [RedirectHandler]), which is what a public
// listener should do: the gateway never serves API traffic in clear text.
func (m *Manager) HTTPHandler(next http.Handler) http.Handler {
	if next == nil {
		next = RedirectHandler(0, m.Serves)
	}
	if m.issuer == nil || m.issuer.DisableHTTPChallenge {
		return next
	}
	return m.issuer.HTTPChallengeHandler(next)
}

// RedirectHandler redirects every request to the same host, path and query
// over https, with 308 Permanent Redirect (RFC 9110 §15.4.9) so clients keep
// the method and body. httpsPort is the port to put in the URL; 0 or 443
// leaves it out. A request with no usable Host gets 400.
func RedirectHandler(httpsPort int, serves func(host string) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if host == "" || strings.ContainsAny(host, "/\\@?#% ") {
			writeError(w, http.StatusBadRequest, "missing_host", "a Host header naming this gateway is required to redirect to https")
			return
		}
		host = strings.ToLower(strings.TrimSuffix(host, "."))
		if serves != nil && !serves(host) {
			// Never send a client to a host the request named but this
			// gateway has no certificate for.
			writeError(w, http.StatusMisdirectedRequest, "unknown_host", "this gateway does not serve that host name over https")
			return
		}
		if strings.Contains(host, ":") { // IPv6 literal
			host = "[" + host + "]"
		}
		if httpsPort != 0 && httpsPort != 443 {
			host += ":" + strconv.Itoa(httpsPort)
		}
		u := url.URL{Scheme: "https", Host: host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
		w.Header().Set("Connection", "close")
		http.Redirect(w, r, u.String(), http.StatusPermanentRedirect)
	})
}

// writeError answers in the gateway's JSON error shape.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Connection", "close")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]map[string]string{"error": {"code": code, "message": msg}})
	_, _ = w.Write(append(b, '\n'))
}

// Serves reports whether host (lower case, no port) is a name this
// manager has, or is obtaining, a certificate for: one of the ACME domains,
// or a name the current certificate file covers.
func (m *Manager) Serves(host string) bool {
	if m.files != nil {
		c := m.files.cur.Load()
		return c != nil && c.Leaf != nil && c.Leaf.VerifyHostname(host) == nil
	}
	return slices.Contains(m.domains, host)
}

// Ready returns nil when a certificate is available for every name: in
// ModeACME, once each domain's certificate has been loaded from storage or
// obtained; in ModeFiles, always (New fails without a certificate).
// Otherwise the error names the domains still waiting. For /readyz.
func (m *Manager) Ready() error {
	if m.magic == nil {
		return nil
	}
	var missing []string
	for _, d := range m.domains {
		if !slices.ContainsFunc(m.cache.AllMatchingCertificates(d), func(c certmagic.Certificate) bool { return !c.Expired() }) {
			missing = append(missing, d)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("tls: no certificate yet for %s", strings.Join(missing, ", "))
	}
	return nil
}

// Reload re-reads the certificate files now (ModeFiles), as the poller does,
// and returns the load error if the new pair is bad; the previous
// certificate then stays in use. It is a no-op in ModeACME, where renewal is
// automatic. Wire it to SIGHUP to pick up new files without waiting.
func (m *Manager) Reload() error {
	if m.files == nil {
		return nil
	}
	_, err := m.files.load()
	return err
}

// Close stops renewal (ModeACME) or file polling (ModeFiles) and waits for
// the background work it started to stop. Certificates already handed to
// connections stay valid; handshakes after Close still get the last
// certificate. Close is idempotent and always returns nil.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		m.cancel()
		if m.cache != nil {
			m.cache.Stop()
		}
		<-m.done
	})
	return nil
}
