package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelgate/modelgate/test/pebble"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/test/fakeaad"
)

func parse(t testing.TB, y string) *config.Config {
	t.Helper()
	env := map[string]string{"K1": "upstream-key-0123456789", "K2": "upstream-key-9876543210"}
	cfg, err := config.Parse("gw.yaml", []byte(y), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

const reloadBase = `
identity_providers:
  aad:
    type: oidc
    issuer: https://login.microsoftonline.com/TENANT/v2.0
    jwks_uri: JWKS
    audiences: [api://modelgate]
upstreams:
  a: { url: "http://127.0.0.1:1", auth: { type: key, key: "${K1}" } }
  b: { url: "http://127.0.0.1:2", auth: { type: key, key: "${K1}" } }
routes:
  - name: r
    path: /r
    upstream: a
    allow: [{ identity_provider: aad }]
`

// TestReloadCarriesOverUnchangedComponents: a reload keeps identity
// providers and credential sources whose settings did not change, replaces
// the ones that did, and a config that fails keeps the old snapshot serving.
func TestReloadCarriesOverUnchangedComponents(t *testing.T) {
	aad := fakeaad.New(t)
	base := strings.NewReplacer("TENANT", fakeaad.TenantID, "JWKS", aad.JWKSURL(fakeaad.TenantID, true)).Replace(reloadBase)
	deps := Deps{HTTPClient: aad.Client()}
	first, err := Build(context.Background(), parse(t, base), deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.WaitIdentityProviders(context.Background()); err != nil {
		t.Fatal(err)
	}
	next := strings.Replace(base, `b: { url: "http://127.0.0.1:2", auth: { type: key, key: "${K1}" } }`,
		`b: { url: "http://127.0.0.1:2", auth: { type: key, key: "${K2}" } }`, 1)
	next = strings.Replace(next, "path: /r", "path: /r2", 1)
	cfgs := []*config.Config{parse(t, next)}
	var loadErr error
	srv := NewServer(first, func() (*config.Config, error) {
		if loadErr != nil {
			return nil, loadErr
		}
		return cfgs[0], nil
	}, deps)
	t.Cleanup(func() { srv.Snapshot().Close() })

	if err := srv.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	second := srv.Snapshot()
	if second == first {
		t.Fatal("reload did not swap the snapshot")
	}
	if second.providers["aad"] != first.providers["aad"] {
		t.Error("unchanged identity provider was rebuilt (its keys would be fetched again)")
	}
	if second.sources["a"] != first.sources["a"] {
		t.Error("unchanged credential source was rebuilt")
	}
	if second.sources["b"] == first.sources["b"] {
		t.Error("credential source whose key changed was kept")
	}
	owner := func(s *Snapshot, key string) *Snapshot {
		p := s.parts[key]
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.owner
	}
	if owner(second, "identity_providers.aad") != second || owner(second, "source:a") != second {
		t.Error("ownership of the carried-over components was not handed over")
	}
	if owner(first, "source:b") != first {
		t.Error("the replaced source must stay with the old snapshot, to be closed with it")
	}

	loadErr = errors.New("gw.yaml:3: server.lisen: unknown field")
	if err := srv.Reload(context.Background()); err == nil {
		t.Fatal("a failing load was accepted")
	}
	if srv.Snapshot() != second {
		t.Fatal("a failed reload replaced the serving snapshot")
	}
	if ok, failed := srv.ReloadCounts(); ok != 1 || failed != 1 {
		t.Errorf("reload counts = %d ok, %d failed", ok, failed)
	}
	first.Close() // closes only what it still owns
	if !second.providers["aad"].Ready() {
		t.Error("closing the old snapshot stopped a carried-over provider")
	}
}

// emptyUpstream is an upstream that answers every request 200 with no
// body; it closes when the test ends.
func emptyUpstream(t *testing.T) *httptest.Server {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(up.Close)
	return up
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// testLogger sends the gateway's logs to the test output, dropped after the
// test ends (background work may still log).
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(pebble.TestWriter(t), &slog.HandlerOptions{Level: slog.LevelWarn}))
}
