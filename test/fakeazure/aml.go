package fakeazure

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelgate/modelgate/internal/inproc"
)

// Scopes the AML fake requires of the ARM tokens it receives.
const (
	// WorkspaceAPIScope is required by the workspace service API
	// (/modelmanagement/v1.0/...).
	WorkspaceAPIScope = "https://management.core.windows.net//.default"
	// ARMScope is required by the online endpoint API.
	ARMScope = "https://management.azure.com/.default"
)

// Default lifetimes of the short-lived tokens Deployments issue.
const (
	DefaultDeploymentTokenLifetime = 20 * time.Minute
	DefaultDeploymentRefreshAfter  = 10 * time.Minute
)

// Kind says which API a Deployment is served by.
type Kind int

const (
	// WebService is an SDK v1 ACI/AKS web service (workspace service API).
	WebService Kind = iota
	// OnlineEndpoint is a managed or Kubernetes online endpoint (ARM).
	OnlineEndpoint
)

// AML is a fake of both Azure ML control planes, over HTTPS on one loopback
// host, so a test can use URL() as both api_host and management_host:
//
//	POST /modelmanagement/v1.0/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}/services/{name}/token
//	     → 200 {"accessToken","tokenType","refreshAfter","expiryOn"}
//	POST .../services/{name}/listkeys → 200 {"primaryKey","secondaryKey"}
//	POST /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}/onlineEndpoints/{name}/token?api-version=…
//	     → 200 {"accessToken","tokenType","expiryTimeUtc","refreshAfterTimeUtc"}
//	POST .../onlineEndpoints/{name}/listKeys?api-version=… → 200 {"primaryKey","secondaryKey"}
//
// Every call must carry an ARM token the fake AAD issued for the API's scope
// (WorkspaceAPIScope or ARMScope); otherwise 401 with an ARM error body.
// Deny makes a principal get 403 AuthorizationFailed. SetOutage and FailNext
// (on AML for the whole region, on a Deployment for one) make calls fail.
type AML struct {
	faults
	srv *httptest.Server
	aad *AAD

	mu          sync.Mutex
	deployments map[string]*Deployment
	denied      map[string]bool
}

// NewAML starts the fake control planes, validating ARM tokens with aad and
// issuing tokens by aad's clock. It is closed when tb ends.
func NewAML(tb testing.TB, aad *AAD) *AML {
	tb.Helper()
	a := &AML{aad: aad, deployments: map[string]*Deployment{}, denied: map[string]bool{}}
	mux := http.NewServeMux()
	const ws = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}"
	mux.HandleFunc("POST /modelmanagement/v1.0"+ws+"/services/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		a.serve(w, r, WebService)
	})
	mux.HandleFunc("POST "+ws+"/onlineEndpoints/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		a.serve(w, r, OnlineEndpoint)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeAzureError(w, http.StatusNotFound, "NotFound", "fake AML: no route for "+r.Method+" "+r.URL.Path)
	})
	a.srv = tlsServer(tb, mux)
	return a
}

// URL is the base URL, usable as both api_host and management_host.
func (a *AML) URL() string { return a.srv.URL }

// Client returns an HTTP client that trusts the fakes' certificate.
func (a *AML) Client() *http.Client { return a.srv.Client() }

// InProcessClient returns an HTTP client that reaches the fake without a
// socket or TLS, in the calling goroutine; see the package doc.
func (a *AML) InProcessClient() *http.Client { return inproc.Client(a.srv) }

// Deny makes requests by principal clientID fail with 403, as a missing role
// assignment does; Deny(clientID, false) grants again.
func (a *AML) Deny(clientID string, deny bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.denied[clientID] = deny
}

func deploymentKey(kind Kind, sub, rg, ws, name string) string {
	return fmt.Sprintf("%d/%s/%s/%s/%s", kind, strings.ToLower(sub), strings.ToLower(rg), strings.ToLower(ws), strings.ToLower(name))
}

// AddService adds a web service (SDK v1) with fresh keys.
func (a *AML) AddService(sub, rg, ws, name string) *Deployment {
	return a.add(WebService, sub, rg, ws, name)
}

// AddEndpoint adds an online endpoint with fresh keys.
func (a *AML) AddEndpoint(sub, rg, ws, name string) *Deployment {
	return a.add(OnlineEndpoint, sub, rg, ws, name)
}

func (a *AML) add(kind Kind, sub, rg, ws, name string) *Deployment {
	d := &Deployment{
		Kind:         kind,
		Name:         name,
		now:          a.aad.now,
		primary:      randomToken("pk-"),
		secondary:    randomToken("sk-"),
		lifetime:     DefaultDeploymentTokenLifetime,
		refreshAfter: DefaultDeploymentRefreshAfter,
		tokens:       map[string]time.Time{},
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.deployments[deploymentKey(kind, sub, rg, ws, name)] = d
	return d
}

func (a *AML) serve(w http.ResponseWriter, r *http.Request, kind Kind) {
	key := deploymentKey(kind, r.PathValue("sub"), r.PathValue("rg"), r.PathValue("ws"), r.PathValue("name"))
	a.mu.Lock()
	d := a.deployments[key]
	a.mu.Unlock()
	action := r.PathValue("action")
	if d != nil {
		d.count(action)
	}

	scope := WorkspaceAPIScope
	if kind == OnlineEndpoint {
		scope = ARMScope
		if r.URL.Query().Get("api-version") == "" {
			writeAzureError(w, http.StatusBadRequest, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests.")
			return
		}
	}
	tok := bearer(r)
	if tok == "" {
		writeAzureError(w, http.StatusUnauthorized, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
		return
	}
	it, err := a.aad.Validate(tok, scope)
	switch {
	case errors.Is(err, ErrWrongAudience):
		writeAzureError(w, http.StatusUnauthorized, "InvalidAuthenticationTokenAudience", "The access token has been obtained for wrong audience or resource '"+it.Resource+"'.")
		return
	case errors.Is(err, ErrTokenExpired):
		writeAzureError(w, http.StatusUnauthorized, "ExpiredAuthenticationToken", "The access token expiry UTC time is earlier than current UTC time.")
		return
	case err != nil:
		writeAzureError(w, http.StatusUnauthorized, "InvalidAuthenticationToken", "The access token is invalid.")
		return
	}
	if st := a.inject(r); st != 0 {
		writeAzureError(w, st, "ServiceUnavailable", "fake AML: the region is unavailable")
		return
	}
	a.mu.Lock()
	denied := a.denied[it.ClientID]
	a.mu.Unlock()
	if denied {
		writeAzureError(w, http.StatusForbidden, "AuthorizationFailed",
			fmt.Sprintf("The client '%s' does not have authorization to perform action 'Microsoft.MachineLearningServices/workspaces/%s/%s/action' over scope '%s' or the scope is invalid.",
				it.ClientID, map[Kind]string{WebService: "services", OnlineEndpoint: "onlineEndpoints"}[kind], action, r.URL.Path))
		return
	}
	if d == nil {
		writeAzureError(w, http.StatusNotFound, "ResourceNotFound", "The Resource '"+r.PathValue("name")+"' under resource group '"+r.PathValue("rg")+"' was not found.")
		return
	}
	if st := d.inject(r); st != 0 {
		writeAzureError(w, st, "ServiceUnavailable", "fake AML: "+d.Name+" is unavailable")
		return
	}
	switch {
	case action == "token":
		d.serveToken(w)
	case kind == WebService && action == "listkeys", kind == OnlineEndpoint && action == "listKeys":
		p, s := d.Keys()
		writeJSON(w, http.StatusOK, map[string]string{"primaryKey": p, "secondaryKey": s})
	default:
		writeAzureError(w, http.StatusNotFound, "NotFound", "fake AML: unknown action "+action)
	}
}

// Deployment is a fake web service or online endpoint: it issues
// short-lived tokens and holds a primary and a secondary key. Accepts says
// whether a bearer value is currently valid for it, for NewUpstream.
type Deployment struct {
	faults
	Kind Kind
	Name string

	now func() time.Time

	mu           sync.Mutex
	primary      string
	secondary    string
	lifetime     time.Duration
	refreshAfter time.Duration
	tokens       map[string]time.Time // token → expiry
	tokenFetches int
	keyFetches   int
}

func (d *Deployment) count(action string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if action == "token" {
		d.tokenFetches++
	} else {
		d.keyFetches++
	}
}

func (d *Deployment) serveToken(w http.ResponseWriter) {
	d.mu.Lock()
	now := d.now()
	tok := randomToken("amltok.")
	exp := now.Add(d.lifetime)
	ra := now.Add(d.refreshAfter)
	d.tokens[tok] = exp
	d.mu.Unlock()
	if d.Kind == WebService {
		writeJSON(w, http.StatusOK, map[string]any{
			"accessToken": tok, "tokenType": "Bearer", "refreshAfter": ra.Unix(), "expiryOn": exp.Unix(),
		})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"accessToken": tok, "tokenType": "Bearer", "expiryTimeUtc": exp.Unix(), "refreshAfterTimeUtc": ra.Unix(),
	})
}

// SetTokenLifetime sets the lifetime and refresh-after delay of tokens
// issued from now on.
func (d *Deployment) SetTokenLifetime(lifetime, refreshAfter time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lifetime, d.refreshAfter = lifetime, refreshAfter
}

// Keys returns the current primary and secondary keys.
func (d *Deployment) Keys() (primary, secondary string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.primary, d.secondary
}

// RegenerateKey replaces the "primary" or "secondary" key, as
// regen_key('Primary') does, and returns the new value. The old value stops
// working at once.
func (d *Deployment) RegenerateKey(which string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch strings.ToLower(which) {
	case "primary":
		d.primary = randomToken("pk-")
		return d.primary
	case "secondary":
		d.secondary = randomToken("sk-")
		return d.secondary
	}
	panic("fakeazure: RegenerateKey wants \"primary\" or \"secondary\", got " + which)
}

// RevokeTokens makes every token issued so far invalid.
func (d *Deployment) RevokeTokens() {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.tokens)
}

// TokenFetches returns how many token requests reached this deployment
// (including failed ones).
func (d *Deployment) TokenFetches() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tokenFetches
}

// KeyFetches returns how many listkeys/listKeys requests reached this
// deployment (including failed ones).
func (d *Deployment) KeyFetches() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.keyFetches
}

// Accepts reports whether bearer is a current key or an unexpired token
// this deployment issued.
func (d *Deployment) Accepts(bearer string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if bearer == "" {
		return false
	}
	if subtle.ConstantTimeCompare([]byte(bearer), []byte(d.primary)) == 1 ||
		subtle.ConstantTimeCompare([]byte(bearer), []byte(d.secondary)) == 1 {
		return true
	}
	exp, ok := d.tokens[bearer]
	return ok && d.now().Before(exp)
}
