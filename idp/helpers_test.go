package idp_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/modelgate/modelgate/idp"
	"github.com/modelgate/modelgate/test/fakeaad"
)

// env is a fake Azure AD and the client the providers under test reach it
// with.
type env struct {
	aad    *fakeaad.Server
	client *http.Client
}

func newEnv(t testing.TB) *env {
	t.Helper()
	aad := fakeaad.New(t)
	return &env{aad: aad, client: aad.Client()}
}

// inBubble runs f in a testing/synctest bubble, where time is fake and
// advances only when every goroutine of the bubble waits: the tests sleep
// through token lifetimes, retries and rate limits in no real time. The fake
// is made outside the bubble (its listener would keep the bubble's clock
// from advancing) and reached in-process; tokens, the fake and the provider
// all read the bubble's clock.
func inBubble(t *testing.T, f func(t *testing.T, e *env)) {
	t.Helper()
	e := newEnv(t)
	e.client = e.aad.InProcessClient()
	synctest.Test(t, func(t *testing.T) { f(t, e) })
}

// options returns azure_ad options for the fake's default tenant, trusting
// the fake, with fast retries.
func (e *env) options(t testing.TB) idp.Options {
	return idp.Options{
		Name:          "contoso",
		Type:          idp.TypeAzureAD,
		TenantID:      fakeaad.TenantID,
		AuthorityHost: e.aad.URL(),
		Audiences:     []string{fakeaad.APIAppIDURI, fakeaad.APIClientID},
		HTTPClient:    e.client,
		Logger:        testLogger(t),
		RetryMin:      10 * time.Millisecond,
	}
}

// provider starts a provider with options(t) changed by mutate, and waits
// for its keys.
func (e *env) provider(t testing.TB, mutate func(*idp.Options)) *idp.Provider {
	t.Helper()
	o := e.options(t)
	if mutate != nil {
		mutate(&o)
	}
	p := newProvider(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		t.Fatalf("provider not ready: %v; status %+v", err, p.Status())
	}
	return p
}

// newProvider builds and starts a provider, closed when the test ends.
func newProvider(t testing.TB, o idp.Options) *idp.Provider {
	t.Helper()
	p := newUnstarted(t, o)
	p.Start(context.Background())
	return p
}

// newUnstarted builds a provider without starting it.
func newUnstarted(t testing.TB, o idp.Options) *idp.Provider {
	t.Helper()
	p, err := idp.New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// wantReason checks that err is an *idp.Error with reason r, the given HTTP
// status, and a client-safe detail that does not echo the token.
func wantReason(t testing.TB, err error, r idp.Reason, status int, token string) {
	t.Helper()
	var e *idp.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want *idp.Error with reason %s", err, err, r)
	}
	if e.Reason != r {
		t.Fatalf("reason = %s, want %s (error: %v)", e.Reason, r, err)
	}
	if !errors.Is(err, r) {
		t.Errorf("errors.Is(err, %s) = false", r)
	}
	if got := e.Status(); got != status {
		t.Errorf("status = %d, want %d", got, status)
	}
	if e.Detail == "" {
		t.Errorf("empty detail")
	}
	if len(token) >= 8 {
		for _, seg := range strings.Split(token, ".") {
			if len(seg) >= 8 && strings.Contains(e.Detail, seg) {
				t.Errorf("detail %q echoes the token", e.Detail)
			}
		}
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}
