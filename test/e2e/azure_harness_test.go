package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	azpolicy "github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/credential/credtest"
	"github.com/modelgate/modelgate/gateway"
	"github.com/modelgate/modelgate/test/fakeazure"
)

// startGatewayWith is startGateway with injected dependencies: deps is
// used as given (the harness only sets its Logger, to the test's log
// buffer), so a test can give the gateway an HTTP client that trusts the
// fakes' CA, a fake clock for identity providers (Now) and for upstream
// credentials (Clock), and a refresh policy. env resolves ${NAME}; nil
// means baseEnv.
func startGatewayWith(t testing.TB, conf *cfgBuilder, env map[string]string, deps gateway.Deps) *testGateway {
	t.Helper()
	pub, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	adm, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		pub.Close()
		t.Fatalf("listen: %v", err)
	}
	text := conf.YAML(pub.Addr().String(), adm.Addr().String())
	if env == nil {
		env = baseEnv
	}
	lookup := func(k string) (string, bool) { s, ok := env[k]; return s, ok }
	cfg, err := config.Parse("e2e.yaml", []byte(text), lookup)
	if err != nil {
		pub.Close()
		adm.Close()
		t.Fatalf("config:\n%v\n--- config text ---\n%s", err, text)
	}
	logs := &logBuffer{}
	deps.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	snap, err := gateway.Build(ctx, cfg, deps)
	if err != nil {
		cancel()
		pub.Close()
		adm.Close()
		t.Fatalf("build: %v", err)
	}
	srv := gateway.NewServer(snap, func() (*config.Config, error) {
		return config.Parse("e2e.yaml", []byte(text), lookup)
	}, deps)
	g := &testGateway{
		URL: "http://" + pub.Addr().String(), Admin: "http://" + adm.Addr().String(), Addr: pub.Addr().String(),
		Logs: logs, Server: srv, cancel: cancel, done: make(chan error, 1),
	}
	go func() { g.done <- srv.Run(ctx, pub, adm) }()
	t.Cleanup(func() {
		if err := g.Stop(); err != nil {
			t.Errorf("Run returned %v, want nil", err)
		}
	})
	return g
}

// trustingClient returns an HTTP client (and its transport) whose roots are
// exactly the given PEM certificates: the one client the gateway uses for
// fakeaad's metadata and keys, fakeazure's token endpoint (through
// azidentity) and the fake control plane, all over HTTPS.
func trustingClient(t testing.TB, pems ...[]byte) (*http.Client, *http.Transport) {
	t.Helper()
	pool := x509.NewCertPool()
	for _, p := range pems {
		if !pool.AppendCertsFromPEM(p) {
			t.Fatal("trustingClient: no certificate in PEM")
		}
	}
	tr := &http.Transport{
		Proxy:               nil,
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     30 * time.Second,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}, tr
}

// readyz fetches /readyz and returns its status, decoded report and raw
// body.
func readyz(t testing.TB, g *testGateway) (int, gateway.Readiness, string) {
	t.Helper()
	resp := do(t, client(), g.Admin, request{path: "/readyz"})
	var rep gateway.Readiness
	if err := json.Unmarshal(resp.body, &rep); err != nil {
		t.Fatalf("/readyz body %q: %v", resp.body, err)
	}
	return resp.status, rep, string(resp.body)
}

// credentialStatus returns the /readyz entry of upstream name.
func credentialStatus(t testing.TB, rep gateway.Readiness, name string) credential.Status {
	t.Helper()
	for _, s := range rep.Credentials {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("/readyz lists no upstream credential %q: %+v", name, rep.Credentials)
	return credential.Status{}
}

// requestLine returns the audit line of the request with id (its
// X-Request-Id). The line is written when the handler returns, which can be
// just after the client has its answer, so it waits briefly.
func (g *testGateway) requestLine(t testing.TB, id string) map[string]any {
	t.Helper()
	if id == "" {
		t.Fatal("the answer has no X-Request-Id")
	}
	var line map[string]any
	waitFor(t, 2*time.Second, "the audit line of request "+id, func() bool {
		for _, m := range g.Logs.RequestLines(t) {
			if m["request_id"] == id {
				line = m
				return true
			}
		}
		return false
	})
	return line
}

// assertNotIn fails if any of secrets (ignoring short or empty ones, which
// would match by accident) appears in s.
func assertNotIn(t testing.TB, what, s string, secrets []string) {
	t.Helper()
	for _, k := range secrets {
		if len(k) < 16 {
			continue
		}
		if strings.Contains(s, k) {
			t.Errorf("%s contains a credential (%.12s…)", what, k)
		}
	}
}

// assertRefused checks a refusal end to end: status, JSON error code, the
// WWW-Authenticate challenge (wantErr is its error="..." value; "" means the
// header must carry none), and the audit line's reason.
func assertRefused(t testing.TB, g *testGateway, resp response, status int, code, wantErr, reason string) {
	t.Helper()
	if resp.status != status {
		t.Fatalf("status = %d, want %d: %s", resp.status, status, resp.body)
	}
	if e := decodeError(t, resp.body); e.Error.Code != code {
		t.Errorf("error code = %q, want %q (message %q)", e.Error.Code, code, e.Error.Message)
	}
	challenge := resp.header.Get("WWW-Authenticate")
	switch {
	case wantErr == "" && strings.Contains(challenge, "error="):
		t.Errorf("WWW-Authenticate = %q, want no error code", challenge)
	case wantErr != "" && !strings.Contains(challenge, `error="`+wantErr+`"`):
		t.Errorf("WWW-Authenticate = %q, want error=%q", challenge, wantErr)
	}
	if reason != "" {
		line := g.requestLine(t, resp.header.Get("X-Request-Id"))
		if line["decision"] != "deny" || line["reason"] != reason {
			t.Errorf("audit line decision=%v reason=%v, want deny %s", line["decision"], line["reason"], reason)
		}
	}
}

// Upstream credentials (issue 4): the fake Azure the gateway's own identity
// works against.

const (
	// The gateway's service principal, known to the fake Azure AD.
	spTenant   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	spClientID = "5d1e0c3a-2b4f-4e6d-8a9c-0b1c2d3e4f5a"
	// spSecret is its client secret: a canary like the keys.
	spSecret = "canary-sp-secret-9c4e1f7a2b3d5e6f"

	wsSub, wsRG, wsName = "00000000-1111-2222-3333-444444444444", "rg-ml", "ws-ml"

	// Lifetimes of the upstream credentials the fakes hand out: short, so
	// a few minutes of fake time span several refreshes.
	upTokenLifetime = 2 * time.Minute
	upRefreshAfter  = time.Minute
)

// azureEnv resolves the ${NAME}s of the credential tests' configurations.
var azureEnv = map[string]string{
	"PARTNER_KEY":        partnerKey,
	"UPSTREAM_KEY":       upstreamKey,
	"UPSTREAM_KEY_2":     upstreamKey2,
	"AML_PRINCIPAL_PASS": spSecret,
}

// azureWorld is the fake Azure behind one gateway: Azure AD (the gateway's
// own identity, through the real azidentity), the AML control planes, one
// fake scoring endpoint per upstream that accepts only currently valid
// credentials, and the fake clock that drives every expiry and refresh.
type azureWorld struct {
	t     *testing.T
	clock *credtest.Clock
	aad   *fakeazure.AAD
	aml   *fakeazure.AML
	// http is the gateway's Deps.HTTPClient; transport its upstream
	// transport (both trust the fakes' CA).
	http      *http.Client
	transport *http.Transport
	refresh   credential.RefreshPolicy
	// plainUpstreams serves every scoring endpoint over plain HTTP, for
	// tests that open hundreds of upstream connections (TLS handshakes are
	// slow under the race detector).
	plainUpstreams bool

	ups []*azureUpstream
	// credYAML is the credentials: entry "ml-sp"; client_secret against
	// the fake AAD by default.
	credYAML string
}

// azureUpstream is one upstream of the world, its route (/name) and the
// fakes behind it.
type azureUpstream struct {
	name, typ string
	// dep issues its tokens or holds its keys (aml_* types).
	dep *fakeazure.Deployment
	// endpoint: an online endpoint (ARM) rather than a web service.
	endpoint bool
	// up is the scoring endpoint.
	up *fakeazure.Upstream
}

// newAzureWorld starts the fakes. The fake clock starts a day before the
// real time and the fake AAD writes expires_on: MSAL then sees the fakes'
// expiries, always in its past, so it never answers from its cache (which
// runs on the real clock) and every token refresh is driven by the fake
// clock alone.
func newAzureWorld(t *testing.T) *azureWorld {
	t.Helper()
	clock := credtest.NewClock(time.Now().Add(-24 * time.Hour).Truncate(time.Second))
	aad := fakeazure.NewAAD(t, clock.Now)
	aad.SetExpiresOn(true)
	aad.SetTokenLifetime(upTokenLifetime, 0)
	aad.AddClientSecret(spTenant, spClientID, spSecret)
	aml := fakeazure.NewAML(t, aad)
	c, tr := trustingClient(t, aad.CACertPEM())
	w := &azureWorld{
		t: t, clock: clock, aad: aad, aml: aml, http: c, transport: tr,
		refresh: credential.RefreshPolicy{Rand: func() float64 { return 0.5 }},
	}
	w.credYAML = fmt.Sprintf(`{ type: client_secret, tenant_id: %q, client_id: %q, client_secret: "${AML_PRINCIPAL_PASS}", authority_host: %q }`,
		spTenant, spClientID, aad.URL())
	return w
}

// add adds an upstream of auth type typ served at /name. aml_keys and the
// token types get a deployment on the fake control plane; endpoint selects
// an online endpoint (ARM, HTTPS scoring URI) over a web service.
func (w *azureWorld) add(typ, name string, endpoint bool) *azureUpstream {
	w.t.Helper()
	u := &azureUpstream{name: name, typ: typ, endpoint: endpoint}
	switch typ {
	case config.AuthAMLServiceToken, config.AuthAMLEndpointToken, config.AuthAMLKeys:
		if typ == config.AuthAMLEndpointToken {
			u.endpoint = true
		}
		if u.endpoint {
			u.dep = w.aml.AddEndpoint(wsSub, wsRG, wsName, name)
			u.up = w.newUpstream(true, u.dep.Accepts)
		} else {
			u.dep = w.aml.AddService(wsSub, wsRG, wsName, name)
			u.up = w.newUpstream(false, u.dep.Accepts)
		}
		u.dep.SetTokenLifetime(upTokenLifetime, upRefreshAfter)
	case config.AuthAADToken:
		u.up = w.newUpstream(true, w.aad.Accepts(credential.ScopeAzureML))
	case config.AuthKey:
		u.up = fakeazure.NewUpstream(w.t, fakeazure.StaticKeys(upstreamKey))
	default:
		w.t.Fatalf("add: auth type %q", typ)
	}
	w.ups = append(w.ups, u)
	return u
}

// newUpstream starts a scoring endpoint: HTTPS when tls (online endpoints
// are https) unless the world serves plain HTTP only.
func (w *azureWorld) newUpstream(tls bool, accept func(string) bool) *fakeazure.Upstream {
	if tls && !w.plainUpstreams {
		return fakeazure.NewTLSUpstream(w.t, accept)
	}
	return fakeazure.NewUpstream(w.t, accept)
}

// config is the gateway configuration for the world's upstreams, each
// behind route /name admitting the partner key; server adds fields to the
// server section.
func (w *azureWorld) config(server ...string) *cfgBuilder {
	b := newConfig().Server("shutdown_timeout: 2s").Server(server...).Partners().Credential("ml-sp", w.credYAML)
	ws := fmt.Sprintf(`{ subscription_id: %q, resource_group: %q, name: %q, api_host: %q, management_host: %q }`,
		wsSub, wsRG, wsName, w.aml.URL(), w.aml.URL())
	for _, u := range w.ups {
		var auth string
		switch u.typ {
		case config.AuthAMLServiceToken:
			auth = fmt.Sprintf(`{ type: aml_service_token, credential: ml-sp, service: %q, workspace: %s }`, u.name, ws)
		case config.AuthAMLEndpointToken:
			auth = fmt.Sprintf(`{ type: aml_endpoint_token, credential: ml-sp, endpoint: %q, workspace: %s }`, u.name, ws)
		case config.AuthAMLKeys:
			which := "service"
			if u.endpoint {
				which = "endpoint"
			}
			auth = fmt.Sprintf(`{ type: aml_keys, credential: ml-sp, %s: %q, refresh_interval: 1m, workspace: %s }`, which, u.name, ws)
		case config.AuthAADToken:
			auth = `{ type: aad_token, credential: ml-sp }`
		case config.AuthKey:
			auth = upstreamKeyAuth
		}
		b.Upstream(u.name, u.up.URL()+"/score", auth)
	}
	for _, u := range w.ups {
		b.Route(u.name, "/"+u.name, u.name, allowPartners)
	}
	return b
}

// start runs a gateway for the world's upstreams on the fake clock; server
// adds fields to the server section.
func (w *azureWorld) start(server ...string) *testGateway {
	w.t.Helper()
	return startGatewayWith(w.t, w.config(server...), azureEnv, gateway.Deps{
		HTTPClient: w.http,
		Transport:  w.transport,
		Clock:      w.clock,
		Refresh:    w.refresh,
		AzureRetry: azpolicy.RetryOptions{MaxRetries: -1},
	})
}

// waitReady waits until /readyz says every credential is valid. The first
// fetches run in the background at start, on real time.
func (w *azureWorld) waitReady(g *testGateway) {
	w.t.Helper()
	waitFor(w.t, 5*time.Second, "/readyz to be ready", func() bool {
		st, _, _ := readyz(w.t, g)
		return st == http.StatusOK
	})
}

// call sends POST /name/score with body and the partner key.
func (w *azureWorld) call(g *testGateway, u *azureUpstream, body []byte) response {
	w.t.Helper()
	return do(w.t, client(), g.URL, request{method: http.MethodPost, path: "/" + u.name + "/score",
		header: http.Header{"Authorization": {"Bearer " + partnerKey}, "Content-Type": {"application/octet-stream"}},
		body:   bytes.NewReader(body)})
}

// lastBearer returns the credential the upstream received last.
func (u *azureUpstream) lastBearer(t testing.TB) (string, fakeazure.Request) {
	t.Helper()
	reqs := u.up.Requests()
	if len(reqs) == 0 {
		t.Fatalf("upstream %s received nothing", u.name)
	}
	r := reqs[len(reqs)-1]
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), r
}

// checkCredential reports why bearer is not the credential upstream u must
// receive now, or "" when it is: a token its deployment issued and still
// accepts, the current primary key, an Azure AD token the fake issued to
// the gateway for Azure ML, or the configured key.
func (w *azureWorld) checkCredential(u *azureUpstream, bearer string) string {
	switch u.typ {
	case config.AuthAMLServiceToken, config.AuthAMLEndpointToken:
		if !strings.HasPrefix(bearer, "amltok.") || !u.dep.Accepts(bearer) {
			return "not a currently valid token of " + u.name
		}
	case config.AuthAMLKeys:
		if p, _ := u.dep.Keys(); bearer != p {
			return "not the current primary key of " + u.name
		}
	case config.AuthAADToken:
		it, err := w.aad.Validate(bearer, credential.ScopeAzureML)
		if err != nil {
			return err.Error()
		}
		if it.ClientID != spClientID || it.Tenant != spTenant {
			return "issued to " + it.Tenant + "/" + it.ClientID + ", not the gateway's principal"
		}
	case config.AuthKey:
		if bearer != upstreamKey {
			return "not the configured upstream key"
		}
	}
	return ""
}

// seen returns every credential any upstream of the world received, plus
// the gateway's client secret and the client's key: none may appear in a
// log line, a client-visible body or /readyz.
func (w *azureWorld) seen() []string {
	out := []string{spSecret, partnerKey, upstreamKey}
	for _, u := range w.ups {
		for _, r := range u.up.Requests() {
			if b := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "); b != "" {
				out = append(out, b)
			}
		}
		if u.dep != nil {
			p, s := u.dep.Keys()
			out = append(out, p, s)
		}
	}
	return out
}

// fetches counts the requests that fetched u's credential (failed ones
// included): the deployment's token or key fetches, or the gateway's Azure
// AD token requests for Azure ML; 0 for a static key.
func (w *azureWorld) fetches(u *azureUpstream) int {
	switch u.typ {
	case config.AuthAADToken:
		return w.aad.TokenRequests(credential.ScopeAzureML)
	case config.AuthAMLKeys:
		return u.dep.KeyFetches()
	case config.AuthKey:
		return 0
	}
	return u.dep.TokenFetches()
}

// callResult is the outcome of one of callMany's requests.
type callResult struct {
	status int
	body   []byte
	err    error
}

// callMany sends n concurrent POSTs of small distinct bodies to path with
// the partner key, each on its own connection. wrote returns once every
// request is on the wire; answered counts the answers so far; the results
// arrive on the channel (buffered for all n).
func callMany(t testing.TB, g *testGateway, path string, n int) (results <-chan callResult, wrote func(), answered *atomic.Int32) {
	t.Helper()
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: n}}
	t.Cleanup(c.CloseIdleConnections)
	out := make(chan callResult, n)
	var written sync.WaitGroup
	answered = new(atomic.Int32)
	written.Add(n)
	for i := range n {
		go func() {
			var once sync.Once
			trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { once.Do(written.Done) }}
			defer once.Do(written.Done)
			req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
				http.MethodPost, g.URL+path, strings.NewReader(fmt.Sprintf(`{"request":%d}`, i)))
			if err != nil {
				out <- callResult{err: err}
				return
			}
			req.Header.Set("Authorization", "Bearer "+partnerKey)
			resp, err := c.Do(req)
			if err != nil {
				out <- callResult{err: err}
				return
			}
			answered.Add(1)
			out <- callResult{status: resp.StatusCode, body: readBody(resp)}
		}()
	}
	return out, written.Wait, answered
}

// readBody reads and closes r's body.
func readBody(r *http.Response) []byte {
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return b
}
