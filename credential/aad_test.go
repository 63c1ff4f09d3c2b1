package credential_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/credential/azcred"
	"github.com/modelgate/modelgate/test/fakeazure"
)

// TestAADTokenThroughAzidentity runs the aad_token source on a real
// azidentity client-secret credential against the fake AAD over HTTPS: the
// token is one the fake issued for https://ml.azure.com and the upstream
// accepts it. After the upstream starts refusing it, Rejected refetches, but
// azidentity answers from its cache with the same token, so Rejected
// reports that a replay is pointless (and no request reaches Azure AD).
func TestAADTokenThroughAzidentity(t *testing.T) {
	w := newWorld(t)
	w.aad.SetTokenLifetime(time.Hour, 0)
	src, err := credential.NewAADToken(credential.AADTokenOptions{
		Name: "llm", Credential: w.cred, Logger: w.logger, Refresh: testPolicy(),
	})
	if err != nil {
		t.Fatal(err)
	}
	src.Start()
	defer src.Close()
	w.upstream(w.aad.Accepts(credential.ScopeAzureML))

	c := mustCredential(t, src)
	if it, err := w.aad.Validate(c.Value.Reveal(), credential.ScopeAzureML); err != nil || it.ClientID != clientID {
		t.Fatalf("token not issued by the fake AAD to the gateway for %s: %v", credential.ScopeAzureML, err)
	}
	if st := w.call(c); st != http.StatusOK {
		t.Fatalf("upstream answered %d", st)
	}
	// One hour token without refresh_in: refresh 5 minutes before expiry.
	if st := src.Status(); st.Type != "aad_token" || !st.NextRefresh.Equal(c.ExpiresAt.Add(-5*time.Minute)) {
		t.Errorf("status = %+v, want next refresh 5m before %v", st, c.ExpiresAt)
	}

	w.aad.RevokeAll()
	if st := w.call(c); st != http.StatusUnauthorized {
		t.Fatalf("upstream answered %d to a revoked token", st)
	}
	if src.Rejected(ctx(t), c) {
		t.Fatal("Rejected claimed a new token although azidentity returns its cached one")
	}
	if n := w.aad.TokenRequests(credential.ScopeAzureML); n != 1 {
		t.Errorf("AAD token requests = %d, want 1 (azidentity's cache)", n)
	}
	w.assertNotLogged(c.Value.Reveal())
}

// scriptedCredential is an azcore.TokenCredential that mints tokens with
// the RefreshOn/ExpiresOn the test asks for, by time.Now (the bubble's
// clock). The real azidentity is exercised in TestAADTokenThroughAzidentity
// and package azcred; this one can hand out hints azidentity never would.
type scriptedCredential struct {
	mu        sync.Mutex
	n         int
	lifetime  time.Duration
	refreshIn time.Duration
	refreshAt time.Time // absolute, overrides refreshIn
	fail      error
	scopes    []string
}

func (s *scriptedCredential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	s.scopes = o.Scopes
	if s.fail != nil {
		return azcore.AccessToken{}, s.fail
	}
	now := time.Now()
	at := azcore.AccessToken{Token: fmt.Sprintf("aad-token-%d", s.n), ExpiresOn: now.Add(s.lifetime)}
	switch {
	case !s.refreshAt.IsZero():
		at.RefreshOn = s.refreshAt
	case s.refreshIn > 0:
		at.RefreshOn = now.Add(s.refreshIn)
	}
	return at, nil
}

func (s *scriptedCredential) calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func TestAADTokenRefreshHints(t *testing.T) {
	tests := []struct {
		name        string
		lifetime    time.Duration
		refreshIn   time.Duration
		bogusHint   bool // RefreshOn after ExpiresOn
		wantRefresh time.Duration
	}{
		{"RefreshOn honoured", time.Hour, 30 * time.Minute, false, 30 * time.Minute},
		{"no hint: 5m before expiry", time.Hour, 0, false, 55 * time.Minute},
		{"no hint, short token: half-life", 6 * time.Minute, 0, false, 3 * time.Minute},
		{"hint after expiry ignored", time.Hour, 0, true, 55 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				t0 := time.Now()
				sc := &scriptedCredential{lifetime: tt.lifetime, refreshIn: tt.refreshIn}
				if tt.bogusHint {
					sc.refreshAt = t0.Add(2 * time.Hour)
				}
				src, err := credential.NewAADToken(credential.AADTokenOptions{Name: "llm", Credential: sc, Refresh: testPolicy()})
				if err != nil {
					t.Fatal(err)
				}
				defer src.Close()
				src.Start()
				c1 := mustCredential(t, src)
				if got := src.Status().NextRefresh.Sub(t0); got != tt.wantRefresh {
					t.Fatalf("next refresh after %v, want %v", got, tt.wantRefresh)
				}
				if sc.scopes[0] != credential.ScopeAzureML {
					t.Errorf("scope = %v, want the default %s", sc.scopes, credential.ScopeAzureML)
				}
				advance(tt.wantRefresh - time.Second)
				if sc.calls() != 1 {
					t.Fatal("refreshed early")
				}
				advance(time.Second)
				if sc.calls() != 2 {
					t.Fatalf("GetToken calls = %d at the refresh time, want 2", sc.calls())
				}
				if c2 := mustCredential(t, src); c2.Value == c1.Value {
					t.Fatal("token not replaced")
				}
			})
		})
	}
}

func TestAADTokenHardExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sc := &scriptedCredential{lifetime: time.Hour}
		src, err := credential.NewAADToken(credential.AADTokenOptions{Name: "llm", Credential: sc, Refresh: testPolicy()})
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		c1 := mustCredential(t, src) // lazily, without Start
		sc.mu.Lock()
		sc.fail = errors.New("AADSTS90033: fake outage")
		sc.mu.Unlock()

		advanceTo(c1.ExpiresAt.Add(-11 * time.Second))
		if c := mustCredential(t, src); c != c1 {
			t.Fatal("cached token not served during the outage")
		}
		advance(time.Second)
		var ue *credential.UnavailableError
		if _, err := src.Credential(ctx(t)); !errors.As(err, &ue) {
			t.Fatalf("err = %v, want *UnavailableError", err)
		}
		sc.mu.Lock()
		sc.fail = nil
		sc.mu.Unlock()
		advanceTo(src.Status().NextRefresh)
		if c := mustCredential(t, src); c == c1 {
			t.Fatal("no new token after recovery")
		}
	})
}

// TestEndpointTokenWithManagedIdentity runs aml_endpoint_token with the
// gateway's identity coming from the managed identity endpoint
// (IDENTITY_ENDPOINT), through azidentity: the fake ARM accepts the managed
// identity's token. It sets environment variables, so it is not parallel.
func TestEndpointTokenWithManagedIdentity(t *testing.T) {
	w := newWorld(t)
	mi := fakeazure.NewManagedIdentity(t, w.aad)
	// Under MSAL's five-minute margin, so that its process-wide managed
	// identity cache never hands a later run (-count) a token from this
	// run's fake.
	mi.SetTokenLifetime(4 * time.Minute)
	mi.Setenv(t)
	cred, err := azcred.New(azcred.Options{Name: "mi", Type: azcred.ManagedIdentity, Retry: policy.RetryOptions{MaxRetries: -1}})
	if err != nil {
		t.Fatal(err)
	}
	d := w.aml.AddEndpoint(sub, rg, wsName, "mi-endpoint")
	src, err := credential.NewAMLEndpointToken(credential.AMLEndpointTokenOptions{
		Name: "mi-endpoint", Credential: cred, Workspace: w.ws, Endpoint: "mi-endpoint",
		HTTPClient: w.amlClient, Logger: w.logger, Refresh: testPolicy(),
	})
	if err != nil {
		t.Fatal(err)
	}
	src.Start()
	defer src.Close()
	c := mustCredential(t, src)
	if !d.Accepts(c.Value.Reveal()) {
		t.Fatal("endpoint token not accepted")
	}
	if mi.Requests(credential.ScopeARM) != 1 {
		t.Errorf("managed identity requests = %d, want 1", mi.Requests(credential.ScopeARM))
	}
}
