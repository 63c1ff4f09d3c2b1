// Package fakeaad is a minimal fake of Azure AD (Microsoft Entra ID) for
// tests: OpenID Connect metadata for v1 and v2 tokens, Azure-shaped JSON Web
// Key Sets, and a minting API for access tokens, served over HTTPS on
// loopback.
//
// It is modelled on tailscale's tstest/integration/testcontrol: a real HTTP
// server with exported knobs (RotateKey, FailNext, SetDown, SetDelay,
// SetKeysOverride) and request counters, so that tests exercise the real
// fetching, caching and validation code instead of mocks.
//
// # What it serves
//
// For every tenant path segment that Azure AD accepts (a GUID, "common",
// "organizations" or "consumers"):
//
//	GET /{tenant}/.well-known/openid-configuration       v1 metadata
//	GET /{tenant}/v2.0/.well-known/openid-configuration  v2 metadata
//	GET /common/discovery/keys                           v1 key set (what v1 metadata points at)
//	GET /{tenant}/discovery/keys                         v1 key set
//	GET /{tenant}/discovery/v2.0/keys                    v2 key set (entries carry "issuer")
//
// The metadata "issuer" is the real Azure string, not the fake's URL:
// https://sts.windows.net/{tid}/ for v1 and
// https://login.microsoftonline.com/{tid}/v2.0 for v2, with the literal
// template "{tenantid}" for "common" and "organizations", exactly as Azure
// serves them. Tokens minted here carry the same issuers, so a verifier
// pointed at the fake (by overriding its authority host) sees what it would
// see in production.
//
// The key set holds the current signing key, every key retired by RotateKey
// until DropRetiredKeys, and one extra "legacy" entry whose x5c certificate
// current Go refuses to parse (a negative serial number), like the old
// certificates real Azure AD key sets still publish. Its n/e are valid and
// tokens can be signed with it (WithKID(s.LegacyKID())), so a verifier can be
// tested to use n/e and to survive the unparsable certificate.
//
// # Trust
//
// The server uses httptest's TLS certificate, valid for 127.0.0.1, ::1 and
// example.com. Client returns an *http.Client that trusts it; CertPool and
// CACertPEM give the same trust anchor to code that builds its own client
// or to a subprocess (write it to a file and set SSL_CERT_FILE).
//
// All methods are safe for concurrent use.
package fakeaad

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelgate/modelgate/internal/guid"
	"github.com/modelgate/modelgate/internal/inproc"
)

// Well-known identifiers used by the claim helpers. They are arbitrary
// GUIDs, fixed so that tests and documentation can refer to them.
const (
	// TenantID is the default tenant of tokens minted by V1Claims/V2Claims
	// when the tenant argument is empty.
	TenantID = "3f5c7c2a-8d4e-4b1a-9c6f-2e7d8a9b0c1d"
	// OtherTenantID is a second tenant for multi-tenant and "other tenant"
	// tests.
	OtherTenantID = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
	// UserObjectID is the "oid" of the user in minted tokens.
	UserObjectID = "0d9b7c3e-6a5f-4e2d-8b1c-9f8e7d6c5b4a"
	// ClientAppID is the client application ("appid" in v1, "azp" in v2) of
	// minted tokens.
	ClientAppID = "c0ffee00-1234-4abc-8def-0123456789ab"
	// APIClientID is the client id of the protected API (the gateway's app
	// registration); v2 tokens carry it as "aud".
	APIClientID = "b5e1d0a9-7c6b-4a3f-9e8d-1c2b3a4f5e6d"
	// APIAppIDURI is the App ID URI of the protected API; v1 tokens usually
	// carry it as "aud".
	APIAppIDURI = "api://modelgate"
	// UserPrincipalName is the "upn"/"preferred_username" of minted tokens.
	// Verifiers must never authorize on it.
	UserPrincipalName = "alice@contoso.example"
)

// Server is a fake Azure AD. Create one with New (tests) or Start.
type Server struct {
	srv *httptest.Server

	mu           sync.Mutex
	current      *signingKey
	retired      []*signingKey // still published, newest first
	dropped      []*signingKey // unpublished, still usable for signing
	legacy       *signingKey   // published with an unparsable x5c
	failNext     int
	down         bool
	delay        time.Duration
	keysOverride []byte
	counts       map[string]int
	total        int
	now          func() time.Time
}

// New starts a Server and stops it when the test ends. It fails the test if
// the server cannot start.
func New(tb testing.TB) *Server {
	tb.Helper()
	s, err := Start()
	if err != nil {
		tb.Fatalf("fakeaad: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// Start starts a Server on a loopback port. Call Close when done.
func Start() (*Server, error) {
	cur, err := newSigningKey(false)
	if err != nil {
		return nil, err
	}
	legacy, err := newSigningKey(true)
	if err != nil {
		return nil, err
	}
	s := &Server{
		current: cur,
		legacy:  legacy,
		counts:  make(map[string]int),
		now:     time.Now,
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	// Clients that give up mid-handshake (the point of SetDelay tests) are
	// not news.
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.StartTLS()
	return s, nil
}

// Close shuts the server down, waiting for in-flight requests.
func (s *Server) Close() { s.srv.Close() }

// URL is the server's base URL, https://127.0.0.1:port. Use it as the
// authority host of a verifier under test.
func (s *Server) URL() string { return s.srv.URL }

// Client returns an HTTP client that trusts the server's certificate.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// InProcessClient returns an HTTP client that serves requests to URL() by
// calling the fake's handler in the calling goroutine, without a socket; it
// answers any other host with an error. Tests in a testing/synctest bubble
// use it, so that the fake's timers (SetDelay) and clock (time.Now unless
// SetNow) are the bubble's (see package inproc). Create the Server outside
// the bubble.
func (s *Server) InProcessClient() *http.Client { return inproc.Client(s.srv) }

// Certificate returns the server's TLS certificate (self-signed; it is its
// own CA).
func (s *Server) Certificate() *x509.Certificate { return s.srv.Certificate() }

// CertPool returns a pool containing the server's certificate.
func (s *Server) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(s.srv.Certificate())
	return p
}

// CACertPEM returns the server's certificate in PEM form, for SSL_CERT_FILE.
func (s *Server) CACertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}

// MetadataURL is the OpenID configuration URL for tenant (a GUID, "common"
// or "organizations"); v2 selects the v2.0 document.
func (s *Server) MetadataURL(tenant string, v2 bool) string {
	if v2 {
		return s.srv.URL + "/" + tenant + "/v2.0/.well-known/openid-configuration"
	}
	return s.srv.URL + "/" + tenant + "/.well-known/openid-configuration"
}

// JWKSURL is the key set URL that the metadata of that version points at.
func (s *Server) JWKSURL(tenant string, v2 bool) string {
	if v2 {
		return s.srv.URL + "/" + tenant + "/discovery/v2.0/keys"
	}
	return s.srv.URL + "/common/discovery/keys"
}

// IssuerV1 is the issuer of v1 tokens for tenant tid, as Azure AD writes it.
func IssuerV1(tid string) string { return "https://sts.windows.net/" + tid + "/" }

// IssuerV2 is the issuer of v2 tokens for tenant tid, as Azure AD writes it.
func IssuerV2(tid string) string { return "https://login.microsoftonline.com/" + tid + "/v2.0" }

// SetNow sets the clock used for iat/nbf/exp by V1Claims and V2Claims
// (default time.Now). It does not affect TLS.
func (s *Server) SetNow(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now == nil {
		now = time.Now
	}
	s.now = now
}

// Now returns the fake's current time (see SetNow).
func (s *Server) Now() time.Time {
	s.mu.Lock()
	now := s.now
	s.mu.Unlock()
	return now()
}

// CurrentKID is the key id that Mint signs with by default.
func (s *Server) CurrentKID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current.kid
}

// LegacyKID is the key id of the published entry whose x5c certificate
// cannot be parsed by current Go. Its n/e are valid and Mint can sign with
// it (WithKID).
func (s *Server) LegacyKID() string { return s.legacy.kid }

// PublicKey returns the public key for kid, or nil if the fake never had it.
func (s *Server) PublicKey(kid string) *rsa.PublicKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := s.keyLocked(kid); k != nil {
		return &k.priv.PublicKey
	}
	return nil
}

// RotateKey generates a new signing key, publishes it and makes it the
// current one. The previous key stays published (as Azure AD does during a
// rollover) until DropRetiredKeys. It returns the new key id.
func (s *Server) RotateKey() string {
	k, err := newSigningKey(false)
	if err != nil {
		panic(fmt.Sprintf("fakeaad: %v", err))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retired = append([]*signingKey{s.current}, s.retired...)
	s.current = k
	return k.kid
}

// DropRetiredKeys stops publishing the keys retired by RotateKey. Mint can
// still sign with them (WithKID), to test tokens signed by a revoked key.
func (s *Server) DropRetiredKeys() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropped = append(s.dropped, s.retired...)
	s.retired = nil
}

// FailNext makes the next n requests, to any path, fail with 500.
func (s *Server) FailNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext = n
}

// SetDown makes every request fail with 503 until SetDown(false).
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

// SetDelay delays every response by d (0 restores). A request whose context
// ends first is abandoned.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// SetKeysOverride makes every key set endpoint answer 200 with raw as body
// instead of the real key set (nil restores), to test what a verifier does
// with malformed or hostile key sets.
func (s *Server) SetKeysOverride(raw []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keysOverride = raw
}

// Requests returns how many requests path (e.g. "/common/discovery/keys")
// has received, including failed ones.
func (s *Server) Requests(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[path]
}

// KeyRequests returns how many requests all key set endpoints have received.
func (s *Server) KeyRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for p, c := range s.counts {
		if isKeysPath(p) {
			n += c
		}
	}
	return n
}

// TotalRequests returns how many requests the server has received.
func (s *Server) TotalRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// ResetRequests zeroes the request counters.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.counts)
	s.total = 0
}

// JWKS returns the key set the server currently publishes (the v1 form,
// without per-key "issuer").
func (s *Server) JWKS() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := json.Marshal(s.jwksLocked(""))
	if err != nil {
		panic(fmt.Sprintf("fakeaad: %v", err))
	}
	return b
}

// WriteJWKS writes the published key set to path, as a saved key set for
// offline verification (gateway explain -jwks FILE).
func (s *Server) WriteJWKS(path string) error {
	return os.WriteFile(path, s.JWKS(), 0o600)
}

func (s *Server) keyLocked(kid string) *signingKey {
	for _, k := range s.allLocked() {
		if k.kid == kid {
			return k
		}
	}
	return nil
}

func (s *Server) allLocked() []*signingKey {
	all := []*signingKey{s.current}
	all = append(all, s.retired...)
	all = append(all, s.legacy)
	return append(all, s.dropped...)
}

func (s *Server) publishedLocked() []*signingKey {
	pub := []*signingKey{s.current}
	pub = append(pub, s.retired...)
	return append(pub, s.legacy)
}

func isKeysPath(p string) bool {
	return strings.HasSuffix(p, "/discovery/keys") || strings.HasSuffix(p, "/discovery/v2.0/keys")
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.counts[r.URL.Path]++
	s.total++
	delay := s.delay
	fail, down := s.failNext > 0, s.down
	if fail {
		s.failNext--
	}
	s.mu.Unlock()

	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	switch {
	case down:
		writeError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "fakeaad: SetDown(true)")
		return
	case fail:
		writeError(w, http.StatusInternalServerError, "server_error", "fakeaad: FailNext")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeError(w, http.StatusMethodNotAllowed, "invalid_request", "only GET is served")
		return
	}

	segs := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if len(segs) < 2 {
		http.NotFound(w, r)
		return
	}
	tenant := segs[0]
	if !validTenant(tenant) {
		writeError(w, http.StatusBadRequest, "invalid_tenant",
			fmt.Sprintf("AADSTS90002: Tenant '%s' not found.", tenant))
		return
	}
	rest := strings.Join(segs[1:], "/")
	switch rest {
	case ".well-known/openid-configuration":
		writeJSON(w, s.metadata(tenant, false))
	case "v2.0/.well-known/openid-configuration":
		writeJSON(w, s.metadata(tenant, true))
	case "discovery/keys":
		s.serveKeys(w, "")
	case "discovery/v2.0/keys":
		s.serveKeys(w, issuerFor(tenant, true))
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) serveKeys(w http.ResponseWriter, issuer string) {
	s.mu.Lock()
	override := s.keysOverride
	set := s.jwksLocked(issuer)
	s.mu.Unlock()
	if override != nil {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(override)
		return
	}
	writeJSON(w, set)
}

// issuerFor is the issuer Azure AD's metadata names for a tenant path
// segment: a template with "{tenantid}" for the multi-tenant segments.
func issuerFor(tenant string, v2 bool) string {
	tid := tenant
	switch tenant {
	case "common", "organizations":
		tid = "{tenantid}"
	case "consumers":
		tid = "9188040d-6c67-4c5b-b112-36a304b66dad" // the Microsoft account tenant
	}
	if v2 {
		return IssuerV2(tid)
	}
	return IssuerV1(tid)
}

// metadata mirrors the fields Azure AD serves. Only issuer and jwks_uri
// matter to a verifier; the rest keep the document realistic.
func (s *Server) metadata(tenant string, v2 bool) map[string]any {
	base := s.srv.URL + "/" + tenant
	m := map[string]any{
		"issuer":                                issuerFor(tenant, v2),
		"response_modes_supported":              []string{"query", "fragment", "form_post"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "token id_token", "token"},
		"scopes_supported":                      []string{"openid"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"microsoft_multi_refresh_token":         true,
		"http_logout_supported":                 true,
		"frontchannel_logout_supported":         true,
		"tenant_region_scope":                   "EU",
		"cloud_instance_name":                   "microsoftonline.com",
		"cloud_graph_host_name":                 "graph.windows.net",
		"msgraph_host":                          "graph.microsoft.com",
		"rbac_url":                              "https://pas.windows.net",
	}
	if v2 {
		m["jwks_uri"] = s.JWKSURL(tenant, true)
		m["token_endpoint"] = base + "/oauth2/v2.0/token"
		m["authorization_endpoint"] = base + "/oauth2/v2.0/authorize"
		m["end_session_endpoint"] = base + "/oauth2/v2.0/logout"
		m["device_authorization_endpoint"] = base + "/oauth2/v2.0/devicecode"
		m["request_uri_parameter_supported"] = false
		m["userinfo_endpoint"] = "https://graph.microsoft.com/oidc/userinfo"
		m["claims_supported"] = []string{"sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
			"cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce",
			"preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"}
		m["kerberos_endpoint"] = base + "/kerberos"
	} else {
		m["jwks_uri"] = s.JWKSURL(tenant, false)
		m["token_endpoint"] = base + "/oauth2/token"
		m["authorization_endpoint"] = base + "/oauth2/authorize"
		m["end_session_endpoint"] = base + "/oauth2/logout"
		m["device_authorization_endpoint"] = base + "/oauth2/devicecode"
		m["check_session_iframe"] = base + "/oauth2/checksession"
		m["userinfo_endpoint"] = base + "/openid/userinfo"
		m["claims_supported"] = []string{"sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
			"cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "amr",
			"nonce", "email", "given_name", "family_name", "nickname"}
	}
	return m
}

func validTenant(t string) bool {
	switch t {
	case "common", "organizations", "consumers":
		return true
	}
	return guid.Valid(t)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, kind, desc string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": kind, "error_description": desc})
}
