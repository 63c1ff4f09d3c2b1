package fakeazure

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/modelgate/modelgate/internal/inproc"
)

// IssuedToken describes an access token a fake issued.
type IssuedToken struct {
	// Tenant and ClientID identify the principal ("managed-identity" is the
	// tenant of tokens from ManagedIdentity).
	Tenant, ClientID string
	// Resource is the scope without "/.default".
	Resource string
	// Grant says how it was obtained: "client_secret", "client_certificate",
	// "federated", "managed_identity".
	Grant string
	// ExpiresAt is the token's expiry by the fake's clock.
	ExpiresAt time.Time
}

type aadClient struct {
	secret    string
	cert      *x509.Certificate
	federated string
}

// AAD is a fake Azure AD authority over HTTPS. Point azidentity at it with
// ClientOptions.Cloud.ActiveDirectoryAuthorityHost = URL() (https is all
// azidentity accepts), DisableInstanceDiscovery, and Transport = Client().
//
// It serves GET /{tenant}/v2.0/.well-known/openid-configuration (issuer on
// the same host, as MSAL requires) and POST /{tenant}/oauth2/v2.0/token for
// grant_type=client_credentials, authenticated by client_secret or by
// client_assertion (a certificate-signed JWT or a registered federated
// token). It answers with opaque access tokens that other fakes check with
// Validate.
//
// Knobs (SetOutage, FailNext, SetDelay, Hold) apply to the token endpoint.
type AAD struct {
	faults
	srv *httptest.Server
	now func() time.Time

	mu        sync.Mutex
	clients   map[string]*aadClient // tenant + "/" + clientID
	issued    map[string]IssuedToken
	requests  map[string]int // resource → token requests (successful or not)
	lifetime  time.Duration
	refreshIn time.Duration
	expiresOn bool
}

// DefaultAADTokenLifetime is how long AAD's tokens live unless
// SetTokenLifetime says otherwise. Azure AD's range is 60–90 minutes.
const DefaultAADTokenLifetime = time.Hour

// NewAAD starts a fake Azure AD on loopback, closed when tb ends. Tokens are
// issued and expire by now (nil: time.Now).
func NewAAD(tb testing.TB, now func() time.Time) *AAD {
	tb.Helper()
	a := &AAD{
		now:      nowOrSystem(now),
		clients:  map[string]*aadClient{},
		issued:   map[string]IssuedToken{},
		requests: map[string]int{},
		lifetime: DefaultAADTokenLifetime,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", a.discovery)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", a.token)
	a.srv = tlsServer(tb, mux)
	return a
}

// URL is the authority host, e.g. https://127.0.0.1:41234.
func (a *AAD) URL() string { return a.srv.URL }

// Client returns an HTTP client that trusts the fakes' certificate.
func (a *AAD) Client() *http.Client { return a.srv.Client() }

// InProcessClient returns an HTTP client that reaches the fake without a
// socket or TLS, in the calling goroutine; see the package doc.
func (a *AAD) InProcessClient() *http.Client { return inproc.Client(a.srv) }

// CertPool returns a pool holding the fakes' CA certificate.
func (a *AAD) CertPool() *x509.CertPool { return certPool(a.srv) }

// CACertPEM returns the fakes' CA certificate in PEM.
func (a *AAD) CACertPEM() []byte { return certPEM(a.srv) }

// TokenEndpoint returns the token endpoint for tenant, as discovery
// advertises it (and as a client assertion's aud must name it).
func (a *AAD) TokenEndpoint(tenant string) string {
	return a.srv.URL + "/" + tenant + "/oauth2/v2.0/token"
}

func (a *AAD) client(tenant, clientID string) *aadClient {
	k := tenant + "/" + clientID
	c := a.clients[k]
	if c == nil {
		c = &aadClient{}
		a.clients[k] = c
	}
	return c
}

// AddClientSecret registers an application that authenticates with secret.
func (a *AAD) AddClientSecret(tenant, clientID, secret string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.client(tenant, clientID).secret = secret
}

// AddClientCertificate registers an application that authenticates with a
// JWT assertion signed by cert's key (PS256 or RS256, x5t#S256 thumbprint).
func (a *AAD) AddClientCertificate(tenant, clientID string, cert *x509.Certificate) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.client(tenant, clientID).cert = cert
}

// AddFederatedToken registers a federated credential: the application
// authenticates with assertion verbatim as its client_assertion, as a
// workload identity does with its projected service account token.
func (a *AAD) AddFederatedToken(tenant, clientID, assertion string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.client(tenant, clientID).federated = assertion
}

// SetTokenLifetime sets the lifetime (expires_in) of tokens issued from now
// on, and refreshIn, the refresh_in hint (0 omits it).
func (a *AAD) SetTokenLifetime(lifetime, refreshIn time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lifetime, a.refreshIn = lifetime, refreshIn
}

// SetExpiresOn makes token answers also carry expires_on: the token's
// expiry by the fake's clock, in Unix seconds, as Azure AD's v1 endpoint and
// the managed identity endpoints write it. MSAL then takes the expiry from it
// instead of adding expires_in to the real clock, so the client sees exactly
// the expiry that the fakes enforce even when the fake clock is not the real
// one. MSAL treats a cached token as expired from five minutes before its
// expiry by the real clock: with a fake clock set well before the real time,
// every GetToken reaches the fake and gets a new token, so token refreshes
// can be driven by the fake clock alone.
func (a *AAD) SetExpiresOn(on bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.expiresOn = on
}

// TokenRequests returns how many token requests named scope (with or without
// "/.default"), including failed ones.
func (a *AAD) TokenRequests(scope string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.requests[resourceOf(scope)]
}

// RevokeAll makes every token issued so far invalid.
func (a *AAD) RevokeAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	clear(a.issued)
}

// Issue mints a token directly, as if principal clientID of tenant had
// asked for scope. Tests use it to make tokens for fakes without a client.
func (a *AAD) Issue(tenant, clientID, scope, grant string, lifetime time.Duration) (string, IssuedToken) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.issueLocked(tenant, clientID, resourceOf(scope), grant, lifetime)
}

func (a *AAD) issueLocked(tenant, clientID, resource, grant string, lifetime time.Duration) (string, IssuedToken) {
	tok := randomToken("fakeaad.")
	it := IssuedToken{Tenant: tenant, ClientID: clientID, Resource: resource, Grant: grant, ExpiresAt: a.now().Add(lifetime)}
	a.issued[tok] = it
	return tok, it
}

// Errors Validate returns.
var (
	ErrUnknownToken  = errors.New("fakeazure: token was not issued by this fake AAD (or was revoked)")
	ErrTokenExpired  = errors.New("fakeazure: token expired")
	ErrWrongAudience = errors.New("fakeazure: token was issued for another resource")
)

// Validate checks that token was issued by this AAD (or its
// ManagedIdentity), has not expired by the clock, and was issued for scope.
func (a *AAD) Validate(token, scope string) (IssuedToken, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	it, ok := a.issued[token]
	switch {
	case !ok:
		return IssuedToken{}, ErrUnknownToken
	case !a.now().Before(it.ExpiresAt):
		return it, ErrTokenExpired
	case it.Resource != resourceOf(scope):
		return it, fmt.Errorf("%w: %q, want %q", ErrWrongAudience, it.Resource, resourceOf(scope))
	}
	return it, nil
}

// Accepts returns a function that accepts valid tokens for scope, for
// NewUpstream (an aad_token upstream).
func (a *AAD) Accepts(scope string) func(string) bool {
	return func(tok string) bool {
		_, err := a.Validate(tok, scope)
		return err == nil
	}
}

func (a *AAD) discovery(w http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("tenant")
	base := a.srv.URL + "/" + tenant
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                base + "/v2.0",
		"token_endpoint":                        base + "/oauth2/v2.0/token",
		"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
		"jwks_uri":                              base + "/discovery/v2.0/keys",
		"response_types_supported":              []string{"code", "id_token", "token"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"tenant_region_scope":                   "EU",
	})
}

func writeOAuthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]any{
		"error":             code,
		"error_description": desc,
		"timestamp":         time.Now().UTC().Format("2006-01-02 15:04:05Z"),
		"trace_id":          randomToken(""),
		"correlation_id":    randomToken(""),
	})
}

func (a *AAD) token(w http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("tenant")
	if err := r.ParseForm(); err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "AADSTS900144: malformed body")
		return
	}
	resource := ""
	for _, s := range strings.Fields(r.PostForm.Get("scope")) {
		switch s {
		case "openid", "profile", "offline_access":
			continue
		}
		resource = resourceOf(s)
		break
	}
	a.mu.Lock()
	a.requests[resource]++
	a.mu.Unlock()

	if st := a.inject(r); st != 0 {
		writeOAuthError(w, st, "temporarily_unavailable", "AADSTS90033: fake outage")
		return
	}
	if g := r.PostForm.Get("grant_type"); g != "client_credentials" {
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "AADSTS70003: fake AAD supports client_credentials only, got "+g)
		return
	}
	if resource == "" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_scope", "AADSTS70011: scope is required")
		return
	}
	clientID := r.PostForm.Get("client_id")
	a.mu.Lock()
	c := a.clients[tenant+"/"+clientID]
	var cc aadClient
	if c != nil {
		cc = *c
	}
	lifetime, refreshIn, expiresOn := a.lifetime, a.refreshIn, a.expiresOn
	a.mu.Unlock()
	if c == nil {
		writeOAuthError(w, http.StatusBadRequest, "unauthorized_client",
			fmt.Sprintf("AADSTS700016: Application with identifier '%s' was not found in the directory '%s'.", clientID, tenant))
		return
	}
	grant, failure := a.authenticate(tenant, clientID, cc, r)
	if failure != "" {
		writeOAuthError(w, http.StatusUnauthorized, "invalid_client", failure)
		return
	}
	a.mu.Lock()
	tok, it := a.issueLocked(tenant, clientID, resource, grant, lifetime)
	a.mu.Unlock()
	resp := map[string]any{
		"token_type":     "Bearer",
		"expires_in":     int64(lifetime / time.Second),
		"ext_expires_in": int64(lifetime / time.Second),
		"access_token":   tok,
	}
	if expiresOn {
		resp["expires_on"] = it.ExpiresAt.Unix()
	}
	if refreshIn > 0 {
		resp["refresh_in"] = int64(refreshIn / time.Second)
	}
	writeJSON(w, http.StatusOK, resp)
}

const jwtBearerType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// authenticate checks the client's credential and returns the grant kind, or
// an AADSTS error description.
func (a *AAD) authenticate(tenant, clientID string, c aadClient, r *http.Request) (grant, failure string) {
	if secret := r.PostForm.Get("client_secret"); secret != "" {
		if c.secret == "" || subtle.ConstantTimeCompare([]byte(secret), []byte(c.secret)) != 1 {
			return "", fmt.Sprintf("AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", clientID)
		}
		return "client_secret", ""
	}
	assertion := r.PostForm.Get("client_assertion")
	if assertion == "" || r.PostForm.Get("client_assertion_type") != jwtBearerType {
		return "", "AADSTS7000216: 'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type."
	}
	if c.federated != "" && subtle.ConstantTimeCompare([]byte(assertion), []byte(c.federated)) == 1 {
		return "federated", ""
	}
	if c.cert == nil {
		return "", "AADSTS700213: No matching federated identity record found for presented assertion."
	}
	if err := a.verifyCertAssertion(tenant, clientID, c.cert, assertion); err != nil {
		return "", "AADSTS700027: Client assertion failed signature validation: " + err.Error()
	}
	return "client_certificate", ""
}

// verifyCertAssertion checks a client assertion as Azure AD does: signed by
// the registered certificate's key, thumbprint header naming it, aud the
// token endpoint, iss and sub the client id, not expired (real time: MSAL
// stamps assertions with the real clock).
func (a *AAD) verifyCertAssertion(tenant, clientID string, cert *x509.Certificate, assertion string) error {
	tok, err := jwt.Parse(assertion, func(t *jwt.Token) (any, error) {
		switch t.Method.Alg() {
		case "PS256":
			sum := sha256.Sum256(cert.Raw)
			if x, _ := t.Header["x5t#S256"].(string); x != base64.StdEncoding.EncodeToString(sum[:]) &&
				x != base64.RawURLEncoding.EncodeToString(sum[:]) {
				return nil, errors.New("x5t#S256 does not match the registered certificate")
			}
		case "RS256":
			// x5t (SHA-1) is accepted without checking: the signature decides.
		default:
			return nil, fmt.Errorf("unexpected alg %s", t.Method.Alg())
		}
		return cert.PublicKey, nil
	},
		jwt.WithValidMethods([]string{"PS256", "RS256"}),
		jwt.WithAudience(a.TokenEndpoint(tenant)),
		jwt.WithIssuer(clientID),
		jwt.WithSubject(clientID),
		jwt.WithExpirationRequired(),
	)
	if err != nil {
		return err
	}
	if !tok.Valid {
		return errors.New("invalid assertion")
	}
	return nil
}
