package fakeazure

import (
	"crypto/subtle"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"
)

// ManagedIdentityTenant is the Tenant of tokens ManagedIdentity issues.
const ManagedIdentityTenant = "managed-identity"

// SystemAssignedClientID is the client id of the fake system-assigned
// identity.
const SystemAssignedClientID = "00000000-0000-0000-0000-00000000517e"

// ManagedIdentity is a fake App Service managed identity endpoint, the one
// azidentity (through MSAL) uses when IDENTITY_ENDPOINT and IDENTITY_HEADER
// are set: GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=R
// [&client_id=|&mi_res_id=|&object_id=] with header X-IDENTITY-HEADER,
// answering {"access_token","expires_on" (Unix seconds as a string),
// "resource","token_type","client_id"}. It serves plain HTTP on loopback, as
// the real endpoint does on localhost.
//
// Tokens are registered with the AAD passed to NewManagedIdentity, so the
// AML fakes accept them.
//
// Note that MSAL caches managed identity tokens process-wide, by resource,
// against the real clock: tests in one binary that expect a request to reach
// the fake should use distinct resources, or lifetimes under five minutes.
type ManagedIdentity struct {
	faults
	srv    *httptest.Server
	aad    *AAD
	header string

	mu        sync.Mutex
	byClient  map[string]string // user-assigned client id → resource id
	byRes     map[string]string // resource id → client id
	lifetime  time.Duration
	requests  map[string]int // resource → requests
	lastQuery string
}

// NewManagedIdentity starts the fake endpoint, issuing tokens through aad's
// registry and clock. It is closed when tb ends.
func NewManagedIdentity(tb testing.TB, aad *AAD) *ManagedIdentity {
	tb.Helper()
	m := &ManagedIdentity{
		aad:      aad,
		header:   randomToken("idh-"),
		byClient: map[string]string{},
		byRes:    map[string]string{},
		lifetime: DefaultAADTokenLifetime,
		requests: map[string]int{},
	}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	tb.Cleanup(m.srv.Close)
	return m
}

// URL is the value for IDENTITY_ENDPOINT.
func (m *ManagedIdentity) URL() string { return m.srv.URL + "/msi/token" }

// Header is the value for IDENTITY_HEADER; requests without it get 401.
func (m *ManagedIdentity) Header() string { return m.header }

// Setenv points azidentity at the fake for the rest of the test with
// t.Setenv (so the test must not be parallel).
func (m *ManagedIdentity) Setenv(tb testing.TB) {
	tb.Setenv("IDENTITY_ENDPOINT", m.URL())
	tb.Setenv("IDENTITY_HEADER", m.header)
	// Make sure no other managed identity source wins.
	for _, k := range []string{"IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT"} {
		tb.Setenv(k, "")
	}
}

// AddUserAssigned registers a user-assigned identity, addressable by client
// id or resource id.
func (m *ManagedIdentity) AddUserAssigned(clientID, resourceID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.byClient[clientID] = resourceID
	if resourceID != "" {
		m.byRes[resourceID] = clientID
	}
}

// SetTokenLifetime sets the lifetime of tokens issued from now on.
func (m *ManagedIdentity) SetTokenLifetime(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lifetime = d
}

// Requests returns how many token requests named resource (scope with or
// without "/.default").
func (m *ManagedIdentity) Requests(scope string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.requests[resourceOf(scope)]
}

// LastQuery returns the query string of the last request.
func (m *ManagedIdentity) LastQuery() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastQuery
}

func (m *ManagedIdentity) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	resource := resourceOf(q.Get("resource"))
	m.mu.Lock()
	m.requests[resource]++
	m.lastQuery = r.URL.RawQuery
	m.mu.Unlock()
	if r.Method != http.MethodGet || r.URL.Path != "/msi/token" {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found"})
		return
	}
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("X-IDENTITY-HEADER")), []byte(m.header)) != 1 {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or wrong"})
		return
	}
	if st := m.inject(r); st != 0 {
		writeJSON(w, st, map[string]any{"statusCode": st, "message": "fake managed identity outage"})
		return
	}
	if q.Get("api-version") != "2019-08-01" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"statusCode": 400, "message": "api-version must be 2019-08-01"})
		return
	}
	if resource == "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"statusCode": 400, "message": "resource is required"})
		return
	}
	m.mu.Lock()
	clientID := SystemAssignedClientID
	ok := true
	switch {
	case q.Get("client_id") != "":
		clientID = q.Get("client_id")
		_, ok = m.byClient[clientID]
	case q.Get("mi_res_id") != "":
		clientID, ok = m.byRes[q.Get("mi_res_id")]
	case q.Get("object_id") != "":
		ok = false
	}
	lifetime := m.lifetime
	m.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusBadRequest, map[string]any{"statusCode": 400, "message": "identity not found: the requested user-assigned identity is not assigned to this resource"})
		return
	}
	tok, it := m.aad.Issue(ManagedIdentityTenant, clientID, resource, "managed_identity", lifetime)
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": tok,
		"expires_on":   strconv.FormatInt(it.ExpiresAt.Unix(), 10),
		"resource":     resource,
		"token_type":   "Bearer",
		"client_id":    clientID,
	})
}
