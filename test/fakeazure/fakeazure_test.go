package fakeazure

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func post(t *testing.T, c *http.Client, u, token string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: body %q is not JSON: %v", u, b, err)
	}
	return resp.StatusCode, m
}

// TestAMLWireFormats checks the fake's answers field by field against the
// formats in DESIGN.md, and its token checks.
func TestAMLWireFormats(t *testing.T) {
	at := time.Unix(1_900_000_000, 0)
	aad := NewAAD(t, func() time.Time { return at })
	aml := NewAML(t, aad)
	svc := aml.AddService("s", "rg", "ws", "svc")
	ep := aml.AddEndpoint("s", "rg", "ws", "ep")
	wsTok, _ := aad.Issue("t", "c", WorkspaceAPIScope, "client_secret", time.Hour)
	armTok, _ := aad.Issue("t", "c", ARMScope, "client_secret", time.Hour)
	v1 := aml.URL() + "/modelmanagement/v1.0/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/services/svc"
	arm := aml.URL() + "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/onlineEndpoints/ep"
	c := aml.Client()

	st, m := post(t, c, v1+"/token", wsTok)
	now := at.Unix()
	if st != 200 || m["tokenType"] != "Bearer" || m["accessToken"] == "" ||
		m["refreshAfter"] != float64(now+600) || m["expiryOn"] != float64(now+1200) {
		t.Errorf("v1 token: %d %v", st, m)
	}
	if !svc.Accepts(m["accessToken"].(string)) {
		t.Error("issued service token not accepted")
	}
	st, m = post(t, c, v1+"/listkeys", wsTok)
	if p, s := svc.Keys(); st != 200 || m["primaryKey"] != p || m["secondaryKey"] != s {
		t.Errorf("v1 listkeys: %d %v", st, m)
	}
	st, m = post(t, c, arm+"/token?api-version=2024-04-01", armTok)
	if st != 200 || m["expiryTimeUtc"] != float64(now+1200) || m["refreshAfterTimeUtc"] != float64(now+600) || !ep.Accepts(m["accessToken"].(string)) {
		t.Errorf("ARM token: %d %v", st, m)
	}
	st, m = post(t, c, arm+"/listKeys?api-version=2024-04-01", armTok)
	if p, _ := ep.Keys(); st != 200 || m["primaryKey"] != p {
		t.Errorf("ARM listKeys: %d %v", st, m)
	}

	errCode := func(m map[string]any) string {
		e, _ := m["error"].(map[string]any)
		s, _ := e["code"].(string)
		return s
	}
	tests := []struct {
		name, url, token string
		status           int
		code             string
	}{
		{"no token", v1 + "/token", "", 401, "AuthenticationFailed"},
		{"unknown token", v1 + "/token", "forged", 401, "InvalidAuthenticationToken"},
		{"ARM token on the workspace API", v1 + "/token", armTok, 401, "InvalidAuthenticationTokenAudience"},
		{"workspace token on ARM", arm + "/token?api-version=2024-04-01", wsTok, 401, "InvalidAuthenticationTokenAudience"},
		{"missing api-version", arm + "/token", armTok, 400, "MissingApiVersionParameter"},
		{"unknown endpoint", strings.Replace(arm, "/ep", "/nope", 1) + "/token?api-version=2024-04-01", armTok, 404, "ResourceNotFound"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, m := post(t, c, tt.url, tt.token)
			if st != tt.status || errCode(m) != tt.code {
				t.Errorf("got %d %v, want %d %s", st, m, tt.status, tt.code)
			}
		})
	}

	// Knobs.
	aml.Deny("c", true)
	if st, m := post(t, c, v1+"/token", wsTok); st != 403 || errCode(m) != "AuthorizationFailed" {
		t.Errorf("denied: %d %v", st, m)
	}
	aml.Deny("c", false)
	svc.FailNext(1, 500)
	if st, _ := post(t, c, v1+"/token", wsTok); st != 500 {
		t.Errorf("FailNext: %d", st)
	}
	if st, _ := post(t, c, v1+"/token", wsTok); st != 200 {
		t.Errorf("after FailNext: %d", st)
	}
	old, _ := svc.Keys()
	if nw := svc.RegenerateKey("Primary"); nw == old || svc.Accepts(old) || !svc.Accepts(nw) {
		t.Error("RegenerateKey did not replace the primary")
	}
	at = at.Add(2 * time.Hour)
	if st, m := post(t, c, v1+"/token", wsTok); st != 401 || errCode(m) != "ExpiredAuthenticationToken" {
		t.Errorf("expired ARM token: %d %v", st, m)
	}
}

func TestAADDiscoveryAndToken(t *testing.T) {
	aad := NewAAD(t, nil)
	aad.AddClientSecret("tid", "cid", "s3cret")
	c := aad.Client()
	resp, err := c.Get(aad.URL() + "/tid/v2.0/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&d)
	resp.Body.Close()
	iss, _ := url.Parse(d["issuer"].(string))
	auth, _ := url.Parse(aad.URL())
	if iss.Host != auth.Host || d["token_endpoint"] != aad.TokenEndpoint("tid") {
		t.Fatalf("discovery = %v", d)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"cid"}, "client_secret": {"s3cret"}, "scope": {ARMScope}}
	resp, err = c.PostForm(aad.TokenEndpoint("tid"), form)
	if err != nil {
		t.Fatal(err)
	}
	var tok map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if resp.StatusCode != 200 || tok["token_type"] != "Bearer" || tok["expires_in"] != float64(3600) {
		t.Fatalf("token: %d %v", resp.StatusCode, tok)
	}
	if _, err := aad.Validate(tok["access_token"].(string), "https://management.azure.com"); err != nil {
		t.Fatal(err)
	}
	if aad.TokenRequests(ARMScope) != 1 {
		t.Fatal("request not counted")
	}
	aad.SetOutage(true)
	resp, _ = c.PostForm(aad.TokenEndpoint("tid"), form)
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("outage: %d", resp.StatusCode)
	}
}

// TestAADExpiresOn: with SetExpiresOn the token answer also carries
// expires_on, the expiry by the fake's clock in Unix seconds.
func TestAADExpiresOn(t *testing.T) {
	at := time.Unix(1_700_000_000, 0)
	aad := NewAAD(t, func() time.Time { return at })
	aad.AddClientSecret("tid", "cid", "s3cret")
	aad.SetTokenLifetime(2*time.Minute, 0)
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"cid"}, "client_secret": {"s3cret"}, "scope": {ARMScope}}
	for _, on := range []bool{false, true} {
		aad.SetExpiresOn(on)
		resp, err := aad.Client().PostForm(aad.TokenEndpoint("tid"), form)
		if err != nil {
			t.Fatal(err)
		}
		var tok map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&tok)
		resp.Body.Close()
		got, present := tok["expires_on"]
		if present != on || (on && got != float64(1_700_000_120)) || tok["expires_in"] != float64(120) {
			t.Errorf("SetExpiresOn(%v): expires_on = %v (present %v), expires_in = %v", on, got, present, tok["expires_in"])
		}
	}
}

func TestUpstreamRecordsAndRejects(t *testing.T) {
	up := NewUpstream(t, StaticKeys("good"))
	send := func(key, body string) int {
		req, _ := http.NewRequest(http.MethodPost, up.URL()+"/score?x=1", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && string(b) != body {
			t.Errorf("echo = %q, want %q", b, body)
		}
		if resp.StatusCode == 401 && resp.Header.Get("WWW-Authenticate") == "" {
			t.Error("401 without WWW-Authenticate")
		}
		return resp.StatusCode
	}
	if send("good", `{"a":1}`) != 200 || send("bad", "x") != 401 {
		t.Fatal("accept function not applied")
	}
	up.Refuse("good", true)
	if send("good", "y") != 401 {
		t.Fatal("Refuse ignored")
	}
	reqs := up.Requests()
	if len(reqs) != 3 || reqs[0].Path != "/score" || reqs[0].RawQuery != "x=1" || string(reqs[0].Body) != `{"a":1}` ||
		reqs[0].Header.Get("Authorization") != "Bearer good" || !reqs[0].Accepted || reqs[1].Accepted {
		t.Fatalf("recorded %+v", reqs)
	}
	if a, r := up.Counts(); a != 1 || r != 2 {
		t.Fatalf("counts %d %d", a, r)
	}
}

// TestInProcessClient reaches the fakes without a socket from a
// testing/synctest bubble: tokens are issued by the bubble's clock, Hold
// waits durably (so synctest.Wait sees the request held), a cancelled
// request fails, and another host is refused.
func TestInProcessClient(t *testing.T) {
	aad := NewAAD(t, nil)
	aad.AddClientSecret("tid", "cid", "s3cret")
	aml := NewAML(t, aad)
	up := NewTLSUpstream(t, nil)
	synctest.Test(t, func(t *testing.T) {
		form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"cid"}, "client_secret": {"s3cret"}, "scope": {WorkspaceAPIScope}}
		resp, err := aad.InProcessClient().PostForm(aad.TokenEndpoint("tid"), form)
		if err != nil {
			t.Fatal(err)
		}
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&tok)
		resp.Body.Close()
		it, err := aad.Validate(tok.AccessToken, WorkspaceAPIScope)
		if err != nil || !it.ExpiresAt.Equal(time.Now().Add(DefaultAADTokenLifetime)) {
			t.Fatalf("token %+v (%v), want one expiring an hour from the bubble's now", it, err)
		}

		svc := aml.AddService("s", "rg", "ws", "svc")
		u := aml.URL() + "/modelmanagement/v1.0/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/services/svc/token"
		release := svc.Hold()
		done := make(chan int)
		go func() {
			st, _ := post(t, aml.InProcessClient(), u, tok.AccessToken)
			done <- st
		}()
		synctest.Wait()
		if svc.Held() != 1 {
			t.Fatalf("held = %d, want the request waiting", svc.Held())
		}
		release()
		if st := <-done; st != http.StatusOK {
			t.Fatalf("token request answered %d", st)
		}

		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
		if _, err := aml.InProcessClient().Do(req); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled request: err = %v, want context.Canceled", err)
		}

		up.SetAccept(StaticKeys("k"))
		req, _ = http.NewRequest(http.MethodGet, up.URL()+"/score", nil)
		req.Header.Set("Authorization", "Bearer k")
		resp, err = up.InProcessClient().Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("upstream: %v, %v; want 200 for the key SetAccept took", resp, err)
		}
		resp.Body.Close()
		if _, err := up.InProcessClient().Get(aml.URL()); err == nil {
			t.Fatal("the upstream's client reached another fake")
		}
	})
}
