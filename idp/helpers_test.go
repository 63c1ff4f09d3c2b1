package idp_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelgate/modelgate/idp"
	"github.com/modelgate/modelgate/test/fakeaad"
)

// clock is an injectable clock that tests advance by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is a fake Azure AD and a clock shared by it and the providers under
// test.
type env struct {
	aad   *fakeaad.Server
	clock *clock
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{aad: fakeaad.New(t), clock: newClock()}
	e.aad.SetNow(e.clock.Now)
	return e
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
		HTTPClient:    e.aad.Client(),
		Logger:        testLogger(t),
		Now:           e.clock.Now,
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
