package credential_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/credential/azcred"
	"github.com/modelgate/modelgate/credential/credtest"
	"github.com/modelgate/modelgate/test/fakeazure"
)

const (
	tenant   = "72f988bf-0000-0000-0000-0000000000aa"
	clientID = "0a0a0a0a-1111-2222-3333-444444444444"
	// spSecret is the gateway's client secret; it must never show up in a
	// log line, an error or a Status.
	spSecret = "sp-secret-canary-7Hq2"

	sub, rg, wsName = "sub-1", "rg-1", "ws-1"
)

// world is the fake Azure a test runs against: a fake AAD that knows the
// gateway's service principal, the fake AML control planes, and a fake clock
// shared by all of them and by the sources under test.
type world struct {
	t      *testing.T
	clock  *credtest.Clock
	aad    *fakeazure.AAD
	aml    *fakeazure.AML
	cred   azcore.TokenCredential // the gateway's own identity, via azidentity
	ws     credential.Workspace
	logs   *syncBuffer
	logger *slog.Logger
}

func newWorld(t *testing.T) *world {
	t.Helper()
	// Start at the real time: MSAL caches the gateway's ARM token by the
	// real clock, and the fakes check it by this one.
	clock := credtest.NewClock(time.Now().Truncate(time.Second))
	aad := fakeazure.NewAAD(t, clock.Now)
	// The gateway's ARM token outlives any test's fake time (azidentity
	// caches it by the real clock, so it would never be refreshed anyway).
	aad.SetTokenLifetime(30*24*time.Hour, 0)
	aad.AddClientSecret(tenant, clientID, spSecret)
	aml := fakeazure.NewAML(t, aad)
	cred, err := azcred.New(azcred.Options{
		Name: "ml-sp", Type: azcred.ClientSecret, TenantID: tenant, ClientID: clientID, ClientSecret: spSecret,
		AuthorityHost: aad.URL(), HTTPClient: aad.Client(), Retry: policy.RetryOptions{MaxRetries: -1},
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	w := &world{
		t: t, clock: clock, aad: aad, aml: aml, cred: cred,
		ws: credential.Workspace{
			SubscriptionID: sub, ResourceGroup: rg, Name: wsName,
			APIHost: aml.URL(), ManagementHost: aml.URL(),
		},
		logs:   logs,
		logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	t.Cleanup(func() { w.assertNotLogged(spSecret) })
	return w
}

// policy is the refresh policy tests use: deterministic jitter (half way).
func testPolicy() credential.RefreshPolicy {
	return credential.RefreshPolicy{Rand: credtest.SeqRand(0.5)}
}

// assertNotLogged fails if any of the values appears in the logs.
func (w *world) assertNotLogged(values ...string) {
	w.t.Helper()
	logs := w.logs.String()
	for _, v := range values {
		if v != "" && strings.Contains(logs, v) {
			w.t.Errorf("logs contain a secret value %.8s…", v)
		}
	}
}

// ctx returns a context that bounds a wait in real time, so that a bug
// fails the test instead of hanging it.
func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func mustCredential(t *testing.T, s credential.Source) credential.Credential {
	t.Helper()
	c, err := s.Credential(ctx(t))
	if err != nil {
		t.Fatalf("Credential: %v", err)
	}
	if c.Value.IsZero() {
		t.Fatal("Credential returned an empty value")
	}
	return c
}

// call sends one scoring request to u with c and returns the status.
func call(t *testing.T, u *fakeazure.Upstream, c credential.Credential) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx(t), http.MethodPost, u.URL()+"/score", strings.NewReader(`{"data":[1,2]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Value.Reveal())
	resp, err := u.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitFor polls cond (real time, no fake clock involved) until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// tokenKind is one token-fetching upstream auth type, for table tests.
type tokenKind struct {
	name  string
	add   func(w *world) *fakeazure.Deployment
	build func(w *world, pol credential.RefreshPolicy) (*credential.TokenSource, error)
}

var tokenKinds = []tokenKind{
	{
		name: "aml_service_token",
		add:  func(w *world) *fakeazure.Deployment { return w.aml.AddService(sub, rg, wsName, "churn") },
		build: func(w *world, pol credential.RefreshPolicy) (*credential.TokenSource, error) {
			return credential.NewAMLServiceToken(credential.AMLServiceTokenOptions{
				Name: "churn-aks", Credential: w.cred, Workspace: w.ws, Service: "churn",
				HTTPClient: w.aml.Client(), Clock: w.clock, Logger: w.logger, Refresh: pol,
			})
		},
	},
	{
		name: "aml_endpoint_token",
		add:  func(w *world) *fakeazure.Deployment { return w.aml.AddEndpoint(sub, rg, wsName, "summarizer") },
		build: func(w *world, pol credential.RefreshPolicy) (*credential.TokenSource, error) {
			return credential.NewAMLEndpointToken(credential.AMLEndpointTokenOptions{
				Name: "summarizer", Credential: w.cred, Workspace: w.ws, Endpoint: "summarizer",
				HTTPClient: w.aml.Client(), Clock: w.clock, Logger: w.logger, Refresh: pol,
			})
		},
	},
}

// startToken builds and starts a token source of kind k and closes it at
// the end of the test.
func (w *world) startToken(k tokenKind) (*credential.TokenSource, *fakeazure.Deployment) {
	w.t.Helper()
	d := k.add(w)
	src, err := k.build(w, testPolicy())
	if err != nil {
		w.t.Fatal(err)
	}
	src.Start()
	w.t.Cleanup(func() { _ = src.Close() })
	return src, d
}

// keysKind is one aml_keys flavour.
type keysKind struct {
	name  string
	add   func(w *world) *fakeazure.Deployment
	build func(w *world, pol credential.RefreshPolicy) (*credential.AMLKeysSource, error)
}

var keysKinds = []keysKind{
	{
		name: "web service listkeys",
		add:  func(w *world) *fakeazure.Deployment { return w.aml.AddService(sub, rg, wsName, "scorer") },
		build: func(w *world, pol credential.RefreshPolicy) (*credential.AMLKeysSource, error) {
			return credential.NewAMLKeys(credential.AMLKeysOptions{
				Name: "scorer-keys", Credential: w.cred, Workspace: w.ws, Service: "scorer",
				HTTPClient: w.aml.Client(), Clock: w.clock, Logger: w.logger, Refresh: pol,
			})
		},
	},
	{
		name: "online endpoint listKeys",
		add:  func(w *world) *fakeazure.Deployment { return w.aml.AddEndpoint(sub, rg, wsName, "ranker") },
		build: func(w *world, pol credential.RefreshPolicy) (*credential.AMLKeysSource, error) {
			return credential.NewAMLKeys(credential.AMLKeysOptions{
				Name: "ranker-keys", Credential: w.cred, Workspace: w.ws, Endpoint: "ranker",
				HTTPClient: w.aml.Client(), Clock: w.clock, Logger: w.logger, Refresh: pol,
			})
		},
	},
}

func (w *world) startKeys(k keysKind) (*credential.AMLKeysSource, *fakeazure.Deployment) {
	w.t.Helper()
	d := k.add(w)
	src, err := k.build(w, testPolicy())
	if err != nil {
		w.t.Fatal(err)
	}
	src.Start()
	w.t.Cleanup(func() { _ = src.Close() })
	return src, d
}
