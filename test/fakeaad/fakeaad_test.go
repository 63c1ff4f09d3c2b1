package fakeaad_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/modelgate/modelgate/test/fakeaad"
)

func getJSON(t *testing.T, s *fakeaad.Server, path string) (int, map[string]any) {
	t.Helper()
	resp, err := s.Client().Get(s.URL() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func TestMetadata(t *testing.T) {
	s := fakeaad.New(t)
	tid := fakeaad.TenantID
	tests := []struct {
		path, issuer, jwks string
	}{
		{"/" + tid + "/.well-known/openid-configuration", "https://sts.windows.net/" + tid + "/", s.URL() + "/common/discovery/keys"},
		{"/" + tid + "/v2.0/.well-known/openid-configuration", "https://login.microsoftonline.com/" + tid + "/v2.0", s.URL() + "/" + tid + "/discovery/v2.0/keys"},
		{"/common/.well-known/openid-configuration", "https://sts.windows.net/{tenantid}/", s.URL() + "/common/discovery/keys"},
		{"/common/v2.0/.well-known/openid-configuration", "https://login.microsoftonline.com/{tenantid}/v2.0", s.URL() + "/common/discovery/v2.0/keys"},
		{"/organizations/v2.0/.well-known/openid-configuration", "https://login.microsoftonline.com/{tenantid}/v2.0", s.URL() + "/organizations/discovery/v2.0/keys"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			code, m := getJSON(t, s, tt.path)
			if code != http.StatusOK || m["issuer"] != tt.issuer || m["jwks_uri"] != tt.jwks {
				t.Errorf("%d issuer %v jwks_uri %v", code, m["issuer"], m["jwks_uri"])
			}
			if m["token_endpoint"] == nil || m["id_token_signing_alg_values_supported"] == nil {
				t.Errorf("metadata lacks the usual fields: %v", m)
			}
		})
	}
	if code, m := getJSON(t, s, "/contoso.example/.well-known/openid-configuration"); code != http.StatusBadRequest || !strings.Contains(m["error_description"].(string), "AADSTS90002") {
		t.Errorf("unknown tenant: %d %v", code, m)
	}
	if code, _ := getJSON(t, s, "/"+tid+"/nothing"); code != http.StatusNotFound {
		t.Errorf("unknown path: %d", code)
	}
	if s.MetadataURL(tid, true) != s.URL()+"/"+tid+"/v2.0/.well-known/openid-configuration" || s.JWKSURL(tid, false) != s.URL()+"/common/discovery/keys" {
		t.Error("URL helpers disagree with the routes")
	}
}

func TestKeySet(t *testing.T) {
	s := fakeaad.New(t)
	_, v1 := getJSON(t, s, "/common/discovery/keys")
	_, v2 := getJSON(t, s, "/"+fakeaad.TenantID+"/discovery/v2.0/keys")
	for name, set := range map[string]map[string]any{"v1": v1, "v2": v2} {
		keys := set["keys"].([]any)
		if len(keys) != 2 {
			t.Fatalf("%s: %d keys, want current + legacy", name, len(keys))
		}
		for _, k := range keys {
			k := k.(map[string]any)
			for _, f := range []string{"kty", "use", "kid", "x5t", "n", "e", "x5c"} {
				if k[f] == nil {
					t.Errorf("%s key lacks %s", name, f)
				}
			}
			if k["kid"] != k["x5t"] {
				t.Errorf("%s: kid %v != x5t %v (Azure uses the thumbprint as kid)", name, k["kid"], k["x5t"])
			}
			if (name == "v2") != (k["issuer"] != nil) {
				t.Errorf("%s: issuer = %v", name, k["issuer"])
			}
			der, err := base64.StdEncoding.DecodeString(k["x5c"].([]any)[0].(string))
			if err != nil {
				t.Fatal(err)
			}
			_, err = x509.ParseCertificate(der)
			if legacy := k["kid"] == s.LegacyKID(); legacy != (err != nil) {
				t.Errorf("%s kid %v: legacy=%v, parse error %v", name, k["kid"], legacy, err)
			}
		}
	}
	if v2["keys"].([]any)[0].(map[string]any)["issuer"] != "https://login.microsoftonline.com/"+fakeaad.TenantID+"/v2.0" {
		t.Errorf("v2 key issuer = %v", v2["keys"].([]any)[0].(map[string]any)["issuer"])
	}

	old := s.CurrentKID()
	kid := s.RotateKey()
	if kid == old || s.CurrentKID() != kid {
		t.Fatal("RotateKey did not change the current key")
	}
	if n := len(jwksKids(t, s)); n != 3 {
		t.Errorf("after RotateKey: %d keys published, want 3", n)
	}
	s.DropRetiredKeys()
	kids := jwksKids(t, s)
	if len(kids) != 2 || kids[old] {
		t.Errorf("after DropRetiredKeys: %v", kids)
	}
	// Dropped keys still sign.
	if s.Mint(jwt.MapClaims{}, fakeaad.WithKID(old)) == "" || s.PublicKey(old) == nil {
		t.Error("dropped key unusable")
	}

	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := s.WriteJWKS(path); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != string(s.JWKS()) {
		t.Error("WriteJWKS differs from JWKS")
	}
}

func jwksKids(t *testing.T, s *fakeaad.Server) map[string]bool {
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(s.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	kids := map[string]bool{}
	for _, k := range set.Keys {
		kids[k.Kid] = true
	}
	return kids
}

func TestMint(t *testing.T) {
	s := fakeaad.New(t)
	now := time.Unix(1_800_000_000, 0)
	s.SetNow(func() time.Time { return now })
	for _, tc := range []struct {
		name   string
		claims jwt.MapClaims
		iss    string
		ver    string
	}{
		{"v1", s.V1Claims("", fakeaad.APIAppIDURI), fakeaad.IssuerV1(fakeaad.TenantID), "1.0"},
		{"v2", s.V2Claims(fakeaad.OtherTenantID, fakeaad.APIClientID), fakeaad.IssuerV2(fakeaad.OtherTenantID), "2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := s.Mint(tc.claims)
			parsed, err := jwt.Parse(tok, func(tk *jwt.Token) (any, error) {
				return s.PublicKey(tk.Header["kid"].(string)), nil
			}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithTimeFunc(func() time.Time { return now }))
			if err != nil {
				t.Fatal(err)
			}
			c := parsed.Claims.(jwt.MapClaims)
			if c["iss"] != tc.iss || c["ver"] != tc.ver || parsed.Header["kid"] != s.CurrentKID() || parsed.Header["x5t"] != s.CurrentKID() {
				t.Errorf("claims %v header %v", c, parsed.Header)
			}
			if exp, _ := c.GetExpirationTime(); !exp.Equal(now.Add(time.Hour)) {
				t.Errorf("exp = %v", exp)
			}
		})
	}

	tok := s.Mint(jwt.MapClaims{"a": 1}, fakeaad.WithKey(jwt.SigningMethodHS256, []byte("k"), ""), fakeaad.WithHeader("jku", "https://x"))
	h, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	var hdr map[string]any
	_ = json.Unmarshal(h, &hdr)
	if hdr["alg"] != "HS256" || hdr["kid"] != nil || hdr["jku"] != "https://x" {
		t.Errorf("header = %v", hdr)
	}
	raw := fakeaad.RawToken(map[string]any{"alg": "none"}, map[string]any{"sub": "x"}, nil)
	if !strings.HasSuffix(raw, ".") || strings.Count(raw, ".") != 2 {
		t.Errorf("RawToken = %q", raw)
	}
}

func TestKnobs(t *testing.T) {
	s := fakeaad.New(t)
	path := "/common/discovery/keys"
	get := func() int {
		code, _ := getJSON(t, s, path)
		return code
	}
	s.FailNext(2)
	if a, b, c := get(), get(), get(); a != 500 || b != 500 || c != 200 {
		t.Errorf("FailNext(2): %d %d %d", a, b, c)
	}
	s.SetDown(true)
	if get() != 503 {
		t.Error("SetDown(true) still serving")
	}
	s.SetDown(false)
	s.SetKeysOverride([]byte(`{"keys":"x"}`))
	if _, m := getJSON(t, s, path); m["keys"] != "x" {
		t.Errorf("override not served: %v", m)
	}
	s.SetKeysOverride(nil)
	if got := s.Requests(path); got != 5 {
		t.Errorf("Requests = %d, want 5", got)
	}
	if s.KeyRequests() != 5 || s.TotalRequests() != 5 {
		t.Errorf("KeyRequests %d TotalRequests %d", s.KeyRequests(), s.TotalRequests())
	}
	s.ResetRequests()
	if s.TotalRequests() != 0 {
		t.Error("ResetRequests")
	}

	// The delay runs on the bubble's clock when reached in-process: exact,
	// and no real time spent.
	synctest.Test(t, func(t *testing.T) {
		c := s.InProcessClient()
		s.SetDelay(300 * time.Millisecond)
		defer s.SetDelay(0)
		start := time.Now()
		resp, err := c.Get(s.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if d := time.Since(start); d != 300*time.Millisecond {
			t.Errorf("SetDelay(300ms): answered in %v", d)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL()+path, nil)
		start = time.Now()
		if _, err := c.Do(req); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("delayed request with a 50ms deadline: err = %v, want context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d != 50*time.Millisecond {
			t.Errorf("delayed request gave up after %v, want its deadline's 50ms", d)
		}
	})
}

func TestTrust(t *testing.T) {
	s := fakeaad.New(t)
	for name, c := range map[string]*http.Client{
		"CertPool": {Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.CertPool()}}},
		"CACertPEM": func() *http.Client {
			p := x509.NewCertPool()
			if !p.AppendCertsFromPEM(s.CACertPEM()) {
				t.Fatal("bad PEM")
			}
			return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p}}}
		}(),
	} {
		resp, err := c.Get(s.MetadataURL("common", true))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		resp.Body.Close()
		c.CloseIdleConnections()
	}
	resp, err := http.Get(s.URL() + "/common/discovery/keys")
	if err == nil {
		resp.Body.Close()
		t.Error("the default client trusted the fake")
	}
	if s.Certificate() == nil {
		t.Error("no certificate")
	}
}
