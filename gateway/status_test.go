package gateway

import (
	"bytes"
	"context"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	azpolicy "github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"golang.org/x/net/html"

	"github.com/modelgate/modelgate/metrics"
	"github.com/modelgate/modelgate/test/fakeaad"
)

// Canaries the status page must never show: a route key, the key set
// entry's id (an identity), both upstream secrets (K1 is the upstream key,
// K2 the service principal's client secret, see parse), a request's query
// string and a role an allow rule matches.
const (
	statusRouteKey = "mgk_status-canary-route-key-0123456789"
	statusIdentity = "acme-identity-canary"
	statusQuery    = "sig=query-canary-0123456789"
	statusRole     = "Role.Canary.Score"
)

var statusSecrets = []string{statusRouteKey, statusIdentity, statusQuery, statusRole,
	"upstream-key-0123456789", "upstream-key-9876543210"}

// statusConfig has a key route (fraud), a pool route with two backends
// (churn), a token route (reports), a pool whose only backend refuses
// connections (lonely) and an upstream whose service principal cannot get
// a token (aad).
func statusConfig(aad *fakeaad.Server, up string) string {
	refused := "http://" + refusedAddr()
	return strings.NewReplacer("TENANT", fakeaad.TenantID, "AUTHORITY", aad.URL(), "UP", up, "REFUSED", refused,
		"KEYSHA", sha(statusRouteKey), "IDENTITY", statusIdentity, "QUERY", statusQuery, "ROLE", statusRole).Replace(`
identity_providers:
  corp:
    type: azure_ad
    tenant_id: TENANT
    authority_host: AUTHORITY
    audiences: [api://modelgate]
credentials:
  sp:
    type: client_secret
    tenant_id: 72f988bf-86f1-41af-91ab-2d7cd011db47
    client_id: 11111111-2222-3333-4444-555555555555
    client_secret: ${K2}
    authority_host: https://127.0.0.1:1/
key_sets:
  partners: [{ id: IDENTITY, sha256: "KEYSHA" }]
upstreams:
  fraud: { url: "UP/score", auth: { type: key, key: "${K1}" } }
  churn:
    backends:
      - { name: weu, url: "UP/weu", priority: 1, weight: 3, auth: { type: key, key: "${K1}" } }
      - { name: neu, url: "UP/neu", priority: 1, weight: 1, auth: { type: key, key: "${K1}" } }
  lonely:
    backends:
      - { name: only, url: "REFUSED", auth: { type: none } }
    circuit_breaker: { consecutive_failures: 1, open_for: 1m }
  aad: { url: "UP/aad", auth: { type: aad_token, credential: sp } }
routes:
  - { name: fraud, path: /fraud, upstream: fraud, allow: [{ key_set: partners }] }
  - { name: churn, path: /churn, upstream: churn, allow: [{ key_set: partners }] }
  - { name: reports, path: /reports, upstream: fraud, allow: [{ identity_provider: corp, roles: [ROLE] }] }
  - { name: lonely, path: /lonely, upstream: lonely, allow: [{ key_set: partners }] }
  - { name: aad, path: /aad, upstream: aad, allow: [{ key_set: partners }] }
`)
}

// refusedAddr is a loopback address nothing listens on.
func refusedAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:1"
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// statusServer builds the status configuration and waits until every
// component has made its first attempt.
func statusServer(t *testing.T, m *metrics.Metrics) *Server {
	t.Helper()
	aad := fakeaad.New(t)
	deps := Deps{HTTPClient: aad.Client(), AzureRetry: azpolicy.RetryOptions{MaxRetries: -1}, Metrics: m, Logger: testLogger(t)}
	snap, err := Build(context.Background(), parse(t, statusConfig(aad, emptyUpstream(t).URL)), deps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(snap.Close)
	srv := NewServer(snap, nil, deps)
	for deadline := time.Now().Add(10 * time.Second); len(snap.Readiness().Starting) > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("components still starting: %v", snap.Readiness().Starting)
		}
	}
	return srv
}

// getStatus fetches target from the admin handler.
func getStatus(t *testing.T, srv *Server, method, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	srv.AdminHandler().ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec
}

// row returns the table row of the page with the given data attribute.
func row(t *testing.T, page, attr, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?s)<tr ` + attr + `="` + regexp.QuoteMeta(name) + `">(.*?)</tr>`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no row %s=%q in the page:\n%s", attr, name, page)
	}
	return m[1]
}

// callStatus sends one request to the public handler.
func callStatus(srv *Server, path, key string) int {
	req := httptest.NewRequest("POST", path, strings.NewReader("{}"))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	return rec.Code
}

// TestStatusPage: the page shows every route's state and reasons, every
// backend, credential source and identity provider, the limits store and
// the last hour per route; a route goes down when its only backend's
// breaker opens; no secret, identity or query string appears.
func TestStatusPage(t *testing.T) {
	m := metrics.New("v1.2.3-test")
	srv := statusServer(t, m)
	for _, c := range []struct {
		path, key string
		want      int
	}{
		{"/fraud/x", statusRouteKey, 200},
		{"/fraud/x", statusRouteKey, 200},
		{"/fraud/x", "", 401},
		{"/fraud/x?" + statusQuery, "mgk_not-the-key-0123456789", 401},
		{"/churn/x", statusRouteKey, 200},
		{"/lonely/x?" + statusQuery, statusRouteKey, 502},
	} {
		if got := callStatus(srv, c.path, c.key); got != c.want {
			t.Fatalf("%s with a key %v: %d, want %d", c.path, c.key != "", got, c.want)
		}
	}
	rec := getStatus(t, srv, "GET", "/status")
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /status: %d %s", rec.Code, rec.Body)
	}
	page := rec.Body.String()

	routes := []struct{ name, state, reason string }{
		{"fraud", "ok", ""},
		{"churn", "ok", ""},
		{"reports", "ok", ""},
		{"lonely", "down", "upstream lonely backend only: unavailable (breaker open until"},
		{"aad", "down", "upstream aad: credential unavailable"},
	}
	for _, r := range routes {
		got := row(t, page, "data-route", r.name)
		if !strings.Contains(got, `data-state="`+r.state+`">`+r.state+`</span>`) {
			t.Errorf("route %s is not %s:\n%s", r.name, r.state, got)
		}
		if r.reason != "" && !strings.Contains(got, r.reason) {
			t.Errorf("route %s lacks the reason %q:\n%s", r.name, r.reason, got)
		}
	}
	for _, b := range []struct{ name, want string }{
		{"churn/weu", `<td class="num">1</td>\s*<td class="num">3</td>\s*<td><span class="badge ok">closed</span></td>\s*<td>yes</td>`},
		{"churn/neu", `<td class="num">1</td>\s*<td class="num">1</td>\s*<td><span class="badge ok">closed</span></td>`},
		{"lonely/only", `<span class="badge down">open</span></td>\s*<td><strong>no</strong></td>\s*<td class="num">1</td>\s*<td>20\d\d-.* UTC \(in \d+s\)</td>`},
	} {
		if got := row(t, page, "data-backend", b.name); !regexp.MustCompile(b.want).MatchString(got) {
			t.Errorf("backend %s does not match %s:\n%s", b.name, b.want, got)
		}
	}
	if got := row(t, page, "data-credential", "fraud"); !strings.Contains(got, "badge ok") || !strings.Contains(got, "<td>key</td>") {
		t.Errorf("credential fraud:\n%s", got)
	}
	if got := row(t, page, "data-credential", "aad"); !strings.Contains(got, "not ready") || !strings.Contains(got, `class="err"`) {
		t.Errorf("credential aad is not shown failing:\n%s", got)
	}
	prov := row(t, page, "data-provider", "corp")
	if !strings.Contains(prov, "badge ok") || !strings.Contains(prov, "azure_ad") {
		t.Errorf("provider corp:\n%s", prov)
	}
	var kids []string
	for _, ip := range srv.Snapshot().Readiness().IdentityProviders {
		for _, src := range ip.Sources {
			kids = append(kids, src.KeyIDs...)
		}
	}
	if len(kids) == 0 {
		t.Error("provider corp's sources report no key id, so none can be checked on the page")
	}
	for _, kid := range kids {
		if !strings.Contains(prov, "<code>"+kid+"</code>") {
			t.Errorf("provider corp lacks key id %s:\n%s", kid, prov)
		}
	}
	for _, want := range []string{
		`<meta http-equiv="refresh" content="5">`,
		`<code>v1.2.3-test</code>`, `<code>gw.yaml</code>`, `<dd>routes</dd>`, `0 ok, 0 failed`,
		`In memory, per replica`, "key set partners", "identity provider corp", "Traffic since 20",
		`<th class="num">Gateway errors</th>`, `<th class="num">5xx</th>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	usage := row(t, page, "data-usage", "fraud")
	if !regexp.MustCompile(`(?s)<td class="num">4</td>\s*<td class="num">0</td>\s*<td class="num">2</td>\s*<td><code>invalid_credential</code> 1, <code>missing_credential</code> 1</td>`).MatchString(usage) {
		t.Errorf("fraud's last hour is not 4 requests, no 5xx, 2 gateway errors by code:\n%s", usage)
	}
	if got := row(t, page, "data-usage", "lonely"); !regexp.MustCompile(`(?s)<td class="num">1</td>\s*<td class="num">1</td>\s*<td class="num">1</td>\s*<td><code>upstream_unavailable</code> 1</td>`).MatchString(got) {
		t.Errorf("lonely's last hour is not 1 request, 1 5xx, its upstream_unavailable:\n%s", got)
	}
	for _, s := range statusSecrets {
		if strings.Contains(page, s) {
			t.Errorf("the page contains the secret %q", s)
		}
	}
	if t.Failed() {
		t.Log(page)
	}
}

// TestStatusPageHTTP: / and /status serve the page with its headers, HEAD
// answers the headers without the body, other paths and methods do not,
// and the public listener has no status page.
func TestStatusPageHTTP(t *testing.T) {
	srv := statusServer(t, nil)
	get := getStatus(t, srv, "GET", "/status")
	tests := []struct {
		method, target string
		status         int
		html           bool
	}{
		{"GET", "/status", 200, true},
		{"GET", "/", 200, true},
		{"HEAD", "/status", 200, true},
		{"HEAD", "/", 200, true},
		{"POST", "/status", 405, false},
		{"GET", "/status/", 404, false},
		{"GET", "/index.html", 404, false},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			rec := getStatus(t, srv, tt.method, tt.target)
			if rec.Code != tt.status {
				t.Fatalf("%d, want %d", rec.Code, tt.status)
			}
			h := rec.Header()
			if !tt.html {
				if strings.HasPrefix(h.Get("Content-Type"), "text/html") {
					t.Errorf("Content-Type %q", h.Get("Content-Type"))
				}
				return
			}
			for k, want := range map[string]string{
				"Content-Type":            "text/html; charset=utf-8",
				"Cache-Control":           "no-store",
				"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
				"X-Content-Type-Options":  "nosniff",
				"X-Frame-Options":         "DENY",
				"Referrer-Policy":         "no-referrer",
			} {
				if got := h.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if h.Get("Content-Length") == "" {
				t.Error("no Content-Length")
			}
			if tt.method == "HEAD" {
				if rec.Body.Len() != 0 {
					t.Errorf("HEAD has a body of %d bytes", rec.Body.Len())
				}
				return
			}
			if !strings.HasPrefix(rec.Body.String(), "<!doctype html>") || !strings.Contains(rec.Body.String(), "Metrics are off") {
				t.Errorf("not the page without metrics:\n%s", rec.Body)
			}
		})
	}
	if !strings.Contains(get.Body.String(), "modelgate status") {
		t.Fatalf("GET /status is not the page")
	}
	for _, target := range []string{"/status", "/"} {
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
		if strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") || strings.Contains(rec.Body.String(), "modelgate status") {
			t.Errorf("the public listener serves the status page at %s: %d %s", target, rec.Code, rec.Body)
		}
	}
}

// TestStatusPageEscapes: every text the page shows is escaped, so an
// upstream's error text (or any other value) carrying markup stays text.
func TestStatusPageEscapes(t *testing.T) {
	const hostile = `<script>alert("x")</script><img src=x onerror=alert(1)>"'&`
	var p statusPage
	fill(reflect.ValueOf(&p).Elem(), hostile)
	p.Usage.Error = ""
	var buf bytes.Buffer
	if err := statusTemplate.Execute(&buf, p); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	for _, bad := range []string{"<script", "<img"} {
		if n := strings.Count(strings.ToLower(page), bad); n != 0 {
			t.Errorf("the page carries %d raw %q", n, bad)
		}
	}
	// Read the page as a browser does: no script or img element, no event
	// handler attribute, and every attribute or text holding the value
	// holds all of it (a " that broke out of an attribute would cut it
	// short and start attributes of its own).
	var inAttrs, inText int
	z := html.NewTokenizer(strings.NewReader(page))
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			if z.Err() != io.EOF {
				t.Fatal(z.Err())
			}
			break
		}
		tok := z.Token()
		switch tt {
		case html.StartTagToken, html.SelfClosingTagToken:
			if tok.Data == "script" || tok.Data == "img" {
				t.Errorf("the page has a <%s> element: %s", tok.Data, tok)
			}
			for _, a := range tok.Attr {
				if strings.HasPrefix(a.Key, "on") || a.Key == "src" || a.Key == "x" {
					t.Errorf("the value broke out into attribute %s=%q of %s", a.Key, a.Val, tok)
				}
				switch {
				case strings.Contains(a.Val, hostile):
					inAttrs++
				case strings.ContainsAny(a.Val, `<>"'`) || strings.Contains(a.Val, "alert"):
					t.Errorf("attribute %s=%q of <%s> holds part of the value", a.Key, a.Val, tok.Data)
				}
			}
		case html.TextToken:
			if strings.Contains(tok.Data, hostile) {
				inText++
			} else if strings.Contains(tok.Data, "alert") {
				t.Errorf("text %q holds part of the value", tok.Data)
			}
		}
	}
	// data-route, data-backend, data-credential, data-provider, data-usage
	// and the route badge's class and data-state hold the value.
	if inAttrs < 7 || inText == 0 {
		t.Errorf("the value is whole in %d attributes and %d texts, want at least 7 and 1", inAttrs, inText)
	}
	if !strings.Contains(page, `data-route="&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;&#34;&#39;&amp;"`) {
		t.Errorf("the value is not escaped in data-route:\n%s", page)
	}
	if !strings.Contains(page, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") {
		t.Errorf("the hostile text is not shown escaped:\n%s", page)
	}
}

// TestStatusPageUsageUnreadable: when the counters cannot be read, the
// traffic section says so under a whole heading.
func TestStatusPageUsageUnreadable(t *testing.T) {
	var buf bytes.Buffer
	if err := statusTemplate.Execute(&buf, statusPage{Usage: &statusUsage{Error: "the counters could not be read"}}); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	if !strings.Contains(page, "<h2>Traffic in the last hour</h2>") || !strings.Contains(page, `<p class="err">the counters could not be read</p>`) {
		t.Errorf("the traffic section without counters:\n%s", page[strings.Index(page, `<section id="usage">`):])
	}
}

// fill sets every string in v, through structs, slices and pointers, to s,
// and every bool to false, so a test sees each field rendered.
func fill(v reflect.Value, s string) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Struct:
		for i := range v.NumField() {
			fill(v.Field(i), s)
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), s)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range v.Len() {
			fill(v.Index(i), s)
		}
	}
}

// TestStatusPageTemplateError: a template that fails answers a JSON 500,
// never part of a page.
func TestStatusPageTemplateError(t *testing.T) {
	srv := statusServer(t, nil)
	saved := statusTemplate
	statusTemplate = template.Must(template.New("broken").Parse(`<p>partial</p>{{.NoSuchField}}`))
	t.Cleanup(func() { statusTemplate = saved })
	rec := getStatus(t, srv, "GET", "/status")
	if rec.Code != http.StatusInternalServerError || rec.Header().Get("Content-Type") != "application/json" ||
		!strings.Contains(rec.Body.String(), `"code": "internal_error"`) || strings.Contains(rec.Body.String(), "partial") {
		t.Errorf("template error: %d %s %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
}
