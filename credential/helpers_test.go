package credential_test

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/credential/azcred"
	"github.com/modelgate/modelgate/internal/logtest"
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
// gateway's service principal, the fake AML control planes and a scoring
// endpoint, and the gateway's own identity (through azidentity).
type world struct {
	t   *testing.T
	aad *fakeazure.AAD
	aml *fakeazure.AML
	// amlClient is the sources' HTTPClient for aml.
	amlClient *http.Client
	// up is the scoring endpoint; upClient reaches it.
	up       *fakeazure.Upstream
	upClient *http.Client
	cred     azcore.TokenCredential // the gateway's own identity, via azidentity
	ws       credential.Workspace
	logs     *logtest.Buffer
	logger   *slog.Logger
}

// fakes starts the fake Azure: AAD (tokens by time.Now), AML and an
// upstream that accepts nothing until told to.
func fakes(t *testing.T) (*fakeazure.AAD, *fakeazure.AML, *fakeazure.Upstream) {
	t.Helper()
	aad := fakeazure.NewAAD(t, nil)
	// The gateway's ARM token outlives every test, so azidentity fetches it
	// once and the tests count only the control planes' answers.
	aad.SetTokenLifetime(30*24*time.Hour, 0)
	aad.AddClientSecret(tenant, clientID, spSecret)
	return aad, fakeazure.NewAML(t, aad), fakeazure.NewUpstream(t, nil)
}

// newWorld returns a world reached over real sockets (TLS for AAD and AML),
// for tests that do not move time.
func newWorld(t *testing.T) *world {
	t.Helper()
	aad, aml, up := fakes(t)
	return makeWorld(t, aad, aml, up, aad.Client(), aml.Client(), up.Client())
}

// inWorld runs f in a testing/synctest bubble, where time is fake and
// advances only when every goroutine of the bubble waits: f sleeps through
// token lifetimes, refresh schedules and backoff in no real time (see
// advance). The fakes are started outside the bubble (their listeners would
// keep its clock from advancing) and reached in-process, so they, azidentity
// and the sources under test all read the bubble's clock.
func inWorld(t *testing.T, f func(t *testing.T, w *world)) {
	t.Helper()
	aad, aml, up := fakes(t)
	synctest.Test(t, func(t *testing.T) {
		f(t, makeWorld(t, aad, aml, up, aad.InProcessClient(), aml.InProcessClient(), up.InProcessClient()))
	})
}

func makeWorld(t *testing.T, aad *fakeazure.AAD, aml *fakeazure.AML, up *fakeazure.Upstream, aadClient, amlClient, upClient *http.Client) *world {
	t.Helper()
	cred, err := azcred.New(azcred.Options{
		Name: "ml-sp", Type: azcred.ClientSecret, TenantID: tenant, ClientID: clientID, ClientSecret: spSecret,
		AuthorityHost: aad.URL(), HTTPClient: aadClient, Retry: policy.RetryOptions{MaxRetries: -1},
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	w := &world{
		t: t, aad: aad, aml: aml, amlClient: amlClient, up: up, upClient: upClient, cred: cred,
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

// upstream makes the world's scoring endpoint accept what accept accepts,
// and returns it.
func (w *world) upstream(accept func(bearer string) bool) *fakeazure.Upstream {
	w.up.SetAccept(accept)
	return w.up
}

// advance lets the bubble's clock run for d and every goroutine woken by
// then (a refresh, a retry) finish what it can do before it waits again.
func advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// advanceTo is advance up to the instant at (now, if at has passed).
func advanceTo(at time.Time) { advance(time.Until(at)) }

// policy is the refresh policy tests use: deterministic jitter (half way).
func testPolicy() credential.RefreshPolicy {
	return credential.RefreshPolicy{Rand: func() float64 { return 0.5 }}
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

// ctx returns a context that bounds a wait, so that a bug fails the test
// instead of hanging it (in a bubble, on the bubble's clock).
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

// call sends one scoring request with c to the world's upstream and
// returns the status.
func (w *world) call(c credential.Credential) int {
	w.t.Helper()
	req, err := http.NewRequestWithContext(ctx(w.t), http.MethodPost, w.up.URL()+"/score", strings.NewReader(`{"data":[1,2]}`))
	if err != nil {
		w.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Value.Reveal())
	resp, err := w.upClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// source is what every credential source offers besides its credential.
type source interface {
	Start()
	Close() error
}

// sourceKind is one upstream auth type whose credential comes from Azure
// ML, for table tests: S is *credential.TokenSource or
// *credential.AMLKeysSource.
type sourceKind[S source] struct {
	name  string
	add   func(w *world) *fakeazure.Deployment
	build func(w *world, pol credential.RefreshPolicy) (S, error)
}

// tokenKind is one token-fetching upstream auth type.
type tokenKind = sourceKind[*credential.TokenSource]

// keysKind is one aml_keys flavour.
type keysKind = sourceKind[*credential.AMLKeysSource]

var tokenKinds = []tokenKind{
	{
		name: "aml_service_token",
		add:  func(w *world) *fakeazure.Deployment { return w.aml.AddService(sub, rg, wsName, "churn") },
		build: func(w *world, pol credential.RefreshPolicy) (*credential.TokenSource, error) {
			return credential.NewAMLServiceToken(credential.AMLServiceTokenOptions{
				Name: "churn-aks", Credential: w.cred, Workspace: w.ws, Service: "churn",
				HTTPClient: w.amlClient, Logger: w.logger, Refresh: pol,
			})
		},
	},
	{
		name: "aml_endpoint_token",
		add:  func(w *world) *fakeazure.Deployment { return w.aml.AddEndpoint(sub, rg, wsName, "summarizer") },
		build: func(w *world, pol credential.RefreshPolicy) (*credential.TokenSource, error) {
			return credential.NewAMLEndpointToken(credential.AMLEndpointTokenOptions{
				Name: "summarizer", Credential: w.cred, Workspace: w.ws, Endpoint: "summarizer",
				HTTPClient: w.amlClient, Logger: w.logger, Refresh: pol,
			})
		},
	},
}

// start builds and starts a source of kind k and closes it at the end of
// the test.
func start[S source](w *world, k sourceKind[S]) (S, *fakeazure.Deployment) {
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

// inEachWorld runs f for each of kinds, in a subtest named for the kind
// and in a world of its own.
func inEachWorld[S source](t *testing.T, kinds []sourceKind[S], f func(t *testing.T, w *world, k sourceKind[S])) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			inWorld(t, func(t *testing.T, w *world) { f(t, w, k) })
		})
	}
}

var keysKinds = []keysKind{
	{
		name: "web service listkeys",
		add:  func(w *world) *fakeazure.Deployment { return w.aml.AddService(sub, rg, wsName, "scorer") },
		build: func(w *world, pol credential.RefreshPolicy) (*credential.AMLKeysSource, error) {
			return credential.NewAMLKeys(credential.AMLKeysOptions{
				Name: "scorer-keys", Credential: w.cred, Workspace: w.ws, Service: "scorer",
				HTTPClient: w.amlClient, Logger: w.logger, Refresh: pol,
			})
		},
	},
	{
		name: "online endpoint listKeys",
		add:  func(w *world) *fakeazure.Deployment { return w.aml.AddEndpoint(sub, rg, wsName, "ranker") },
		build: func(w *world, pol credential.RefreshPolicy) (*credential.AMLKeysSource, error) {
			return credential.NewAMLKeys(credential.AMLKeysOptions{
				Name: "ranker-keys", Credential: w.cred, Workspace: w.ws, Endpoint: "ranker",
				HTTPClient: w.amlClient, Logger: w.logger, Refresh: pol,
			})
		},
	},
}
