package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	azpolicy "github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/gateway"
	"github.com/modelgate/modelgate/internal/otlptest"
	"github.com/modelgate/modelgate/metrics"
	"github.com/modelgate/modelgate/telemetry"
	"github.com/modelgate/modelgate/test/fakeaad"
)

// Traces: the gateway exports its spans over OTLP (HTTP and gRPC) to a
// receiver on loopback, which decodes them with the protocol's generated
// types. The span tree of an admitted, a refused and a retried request is
// checked, and no attribute anywhere carries a secret.

const (
	clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpan  = "00f067aa0ba902b7"
)

// startTraced runs a gateway that exports to rcv over protocol, configured
// the standard way: OTEL_EXPORTER_OTLP_ENDPOINT and
// OTEL_EXPORTER_OTLP_PROTOCOL.
func startTraced(t *testing.T, cfg *cfgBuilder, rcv *otlptest.Receiver, protocol string) *testGateway {
	t.Helper()
	tr, lookup := startTracing(t, rcv, protocol)
	return startGatewayWith(t, cfg, nil, gateway.Deps{Tracing: tr, LookupEnv: lookup, Metrics: metrics.New("test")})
}

// startTracing starts the export to rcv as serve does, from the
// environment; it returns the tracing and that environment.
func startTracing(t *testing.T, rcv *otlptest.Receiver, protocol string) (*telemetry.Tracing, func(string) (string, bool)) {
	t.Helper()
	env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.URL, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
		"OTEL_SERVICE_NAME": "modelgate-e2e"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	s, err := telemetry.Resolve(config.Telemetry{}, lookup)
	if err != nil || s == nil {
		t.Fatalf("telemetry.Resolve = %v, %v; want settings", s, err)
	}
	tr, err := telemetry.Start(context.Background(), s, telemetry.Options{Version: "test", BatchTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatalf("telemetry.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tr.Shutdown(ctx)
	})
	return tr, lookup
}

// spanOf returns the one span of kind in spans, failing otherwise.
func spanOf(t *testing.T, spans []otlptest.Span, kind tracepb.Span_SpanKind) otlptest.Span {
	t.Helper()
	var out []otlptest.Span
	for _, s := range spans {
		if s.Kind == kind {
			out = append(out, s)
		}
	}
	if len(out) != 1 {
		t.Fatalf("%d %s spans, want 1: %+v", len(out), kind, spans)
	}
	return out[0]
}

// wantAttrs checks the attributes of s named in want (nil: must be absent).
func wantAttrs(t *testing.T, s otlptest.Span, want map[string]any) {
	t.Helper()
	for k, v := range want {
		got, ok := s.Attrs[k]
		switch {
		case v == nil && ok:
			t.Errorf("span %q has %s=%v, want none", s.Name, k, got)
		case v != nil && fmt.Sprint(got) != fmt.Sprint(v):
			t.Errorf("span %q: %s = %v, want %v", s.Name, k, got, v)
		}
	}
}

// assertNoSecretInSpans fails if any span's or resource's attribute, name
// or status message carries a secret.
func assertNoSecretInSpans(t *testing.T, spans []otlptest.Span, extra ...string) {
	t.Helper()
	all := append(append([]string{}, secrets...), extra...)
	for _, s := range spans {
		b, _ := json.Marshal(s)
		assertNotIn(t, "span "+s.Name, string(b), all)
		if strings.Contains(string(b), "Bearer") {
			t.Errorf("span %q carries an Authorization value: %s", s.Name, b)
		}
	}
}

func TestTracesOverOTLP(t *testing.T) {
	for _, protocol := range []string{telemetry.ProtocolHTTP, telemetry.ProtocolGRPC} {
		t.Run(protocol, func(t *testing.T) {
			var rcv *otlptest.Receiver
			if protocol == telemetry.ProtocolGRPC {
				rcv = otlptest.StartGRPC(t)
			} else {
				rcv = otlptest.StartHTTP(t)
			}
			fraud := newPoolBackend(t, "fraud")
			a, b := newPoolBackend(t, "a"), newPoolBackend(t, "b")
			a.set(answer(http.StatusServiceUnavailable, nil, `{"error":"warming up"}`))
			cfg := newConfig().Partners().
				Upstream("fraud", fraud.URL, upstreamKeyAuth).
				PoolUpstream("churn", "backends:", backendLine("a", a.URL, "priority: 1"), backendLine("b", b.URL, "priority: 2"),
					"retry: { attempts: 2, on: [503] }").
				Route("fraud", "/fraud", "fraud", allowPartners).
				Route("churn", "/churn", "churn", allowPartners)
			g := startTraced(t, cfg, rcv, protocol)

			t.Run("admitted", func(t *testing.T) {
				h := bearer(partnerKey)
				h.Set("Traceparent", "00-"+clientTrace+"-"+clientSpan+"-01")
				h.Set("Tracestate", "vendor=opaque")
				r := do(t, client(), g.URL, request{method: http.MethodPost, path: "/fraud/score?sig=query-canary-9f8e", header: h, body: strings.NewReader(`{}`)})
				if r.status != http.StatusOK {
					t.Fatalf("status %d: %s", r.status, r.body)
				}
				spans := rcv.WaitFor(t, 10*time.Second, "the admitted request's server and client spans", func(s []otlptest.Span) bool {
					return len(otlptest.InTrace(s, clientTrace)) >= 2
				})
				spans = otlptest.InTrace(spans, clientTrace)
				srv := spanOf(t, spans, tracepb.Span_SPAN_KIND_SERVER)
				cli := spanOf(t, spans, tracepb.Span_SPAN_KIND_CLIENT)
				if srv.Parent != clientSpan {
					t.Errorf("server span's parent = %q, want the caller's span %s", srv.Parent, clientSpan)
				}
				if cli.Parent != srv.SpanID {
					t.Errorf("client span's parent = %q, want the server span %s", cli.Parent, srv.SpanID)
				}
				if srv.Name != "POST /fraud" || cli.Name != "POST" {
					t.Errorf("span names %q, %q; want \"POST /fraud\", \"POST\"", srv.Name, cli.Name)
				}
				wantAttrs(t, srv, map[string]any{
					"modelgate.route": "fraud", "modelgate.upstream": "fraud", "modelgate.decision": "admit",
					"modelgate.auth": "key", "http.route": "/fraud", "http.response.status_code": 200,
					"http.request.method": "POST", "url.path": "/fraud/score", "modelgate.error_code": nil,
					"modelgate.request_id": r.header.Get("X-Request-Id"),
				})
				wantAttrs(t, cli, map[string]any{
					"modelgate.upstream": "fraud", "modelgate.backend": "fraud", "http.response.status_code": 200,
					"url.full": fraud.URL + "/score", "http.request.resend_count": nil,
				})
				// Not an LLM answer: no GenAI attributes.
				wantAttrs(t, srv, map[string]any{"gen_ai.usage.input_tokens": nil, "gen_ai.server.time_to_first_token": nil})
				if got := srv.Resource["service.name"]; got != "modelgate-e2e" {
					t.Errorf("service.name = %v, want modelgate-e2e (OTEL_SERVICE_NAME)", got)
				}
				if srv.Scope == "" || !cli.End.After(cli.Start) || srv.Start.After(cli.Start) || srv.End.Before(cli.End) {
					t.Errorf("scope %q, client span %s..%s, server span %s..%s", srv.Scope, cli.Start, cli.End, srv.Start, srv.End)
				}
				// The upstream joins the same trace, as a child of the try.
				seen := fraud.requests()
				if len(seen) != 1 {
					t.Fatalf("the upstream got %d requests", len(seen))
				}
				if got, want := seen[0].header.Get("Traceparent"), "00-"+clientTrace+"-"+cli.SpanID+"-01"; got != want {
					t.Errorf("upstream traceparent = %q, want %q", got, want)
				}
				if got := seen[0].header.Get("Tracestate"); got != "vendor=opaque" {
					t.Errorf("upstream tracestate = %q, want the caller's", got)
				}
				if line := g.requestLine(t, r.header.Get("X-Request-Id")); line["trace_id"] != clientTrace {
					t.Errorf("audit trace_id = %v, want %s", line["trace_id"], clientTrace)
				}
				assertNoSecretInSpans(t, spans, "query-canary-9f8e")
			})

			t.Run("refused", func(t *testing.T) {
				r := do(t, client(), g.URL, request{method: http.MethodPost, path: "/fraud/score", header: http.Header{"Authorization": {"Bearer " + expiredKey}}})
				if r.status != http.StatusUnauthorized {
					t.Fatalf("status %d: %s", r.status, r.body)
				}
				line := g.requestLine(t, r.header.Get("X-Request-Id"))
				trace, _ := line["trace_id"].(string)
				spans := rcv.WaitFor(t, 10*time.Second, "the refused request's span", func(s []otlptest.Span) bool {
					return len(otlptest.InTrace(s, trace)) >= 1
				})
				spans = otlptest.InTrace(spans, trace)
				srv := spanOf(t, spans, tracepb.Span_SPAN_KIND_SERVER)
				if srv.Parent != "" {
					t.Errorf("a request without traceparent starts a trace; parent = %q", srv.Parent)
				}
				if kids := otlptest.Children(rcv.Spans(), srv.SpanID); len(kids) != 0 {
					t.Errorf("a refused request went upstream: %d child spans", len(kids))
				}
				wantAttrs(t, srv, map[string]any{
					"modelgate.route": "fraud", "modelgate.decision": "deny", "modelgate.auth": nil,
					"modelgate.error_code": "invalid_credential", "http.response.status_code": 401,
				})
				if srv.Status == tracepb.Status_STATUS_CODE_ERROR {
					t.Errorf("a 401 is the caller's error, not the server's: span status %v", srv.Status)
				}
				assertNoSecretInSpans(t, spans)
			})

			t.Run("retried", func(t *testing.T) {
				h := bearer(partnerKey)
				trace := strings.Repeat("ab", 16)
				h.Set("Traceparent", "00-"+trace+"-"+clientSpan+"-01")
				r := do(t, client(), g.URL, request{method: http.MethodPost, path: "/churn/score", header: h, body: strings.NewReader(`{"x":1}`)})
				if r.status != http.StatusOK || servedBy(r) != "b" {
					t.Fatalf("status %d: %s", r.status, r.body)
				}
				spans := rcv.WaitFor(t, 10*time.Second, "the retried request's three spans", func(s []otlptest.Span) bool {
					return len(otlptest.InTrace(s, trace)) >= 3
				})
				spans = otlptest.InTrace(spans, trace)
				srv := spanOf(t, spans, tracepb.Span_SPAN_KIND_SERVER)
				tries := otlptest.Children(spans, srv.SpanID)
				if len(tries) != 2 {
					t.Fatalf("%d tries under the server span, want 2", len(tries))
				}
				wantAttrs(t, tries[0], map[string]any{"modelgate.upstream": "churn", "modelgate.backend": "a",
					"http.response.status_code": 503, "http.request.resend_count": nil})
				wantAttrs(t, tries[1], map[string]any{"modelgate.upstream": "churn", "modelgate.backend": "b",
					"http.response.status_code": 200, "http.request.resend_count": 1})
				if tries[0].Status != tracepb.Status_STATUS_CODE_ERROR {
					t.Errorf("the 503 try's status = %v, want error", tries[0].Status)
				}
				wantAttrs(t, srv, map[string]any{"modelgate.backend": "b", "modelgate.tries": 2, "http.response.status_code": 200})
				// Each backend saw its own try's span as the parent.
				for i, be := range []*poolBackend{a, b} {
					seen := be.requests()
					got := seen[len(seen)-1].header.Get("Traceparent")
					if want := "00-" + trace + "-" + tries[i].SpanID + "-01"; got != want {
						t.Errorf("backend %s got traceparent %q, want %q", be.name, got, want)
					}
				}
				assertNoSecretInSpans(t, spans)
			})
		})
	}
}

// An LLM answer's usage becomes the GenAI attributes, for a JSON answer and
// for a stream, on a route without a token limit too; a caller's
// unsampled traceparent is followed (nothing exported) and passed on.
func TestTracesGenAIAndSampling(t *testing.T) {
	rcv := otlptest.StartHTTP(t)
	llm := newPoolBackend(t, "llm")
	llm.set(func(w http.ResponseWriter, r *http.Request, body []byte) {
		if strings.Contains(string(body), `"stream":true`) {
			w.Header().Set("Content-Type", "text/event-stream")
			for _, ev := range []string{`{"choices":[{"delta":{"content":"Hel"}}]}`, `{"choices":[{"delta":{"content":"lo"}}]}`,
				`{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}`, `[DONE]`} {
				_, _ = io.WriteString(w, "data: "+ev+"\n\n")
				w.(http.Flusher).Flush()
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}`)
	})
	cfg := newConfig().Partners().Upstream("llm", llm.URL, upstreamKeyAuth).Route("chat", "/chat", "llm", allowPartners)
	g := startTraced(t, cfg, rcv, telemetry.ProtocolHTTP)

	for _, tc := range []struct {
		name, body, trace string
		in, out           int
	}{
		{"json", `{"messages":[]}`, strings.Repeat("1c", 16), 12, 34},
		{"stream", `{"messages":[],"stream":true}`, strings.Repeat("2d", 16), 7, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := bearer(partnerKey)
			h.Set("Traceparent", "00-"+tc.trace+"-"+clientSpan+"-01")
			r := do(t, client(), g.URL, request{method: http.MethodPost, path: "/chat/completions", header: h, body: strings.NewReader(tc.body)})
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			spans := rcv.WaitFor(t, 10*time.Second, "the server span", func(s []otlptest.Span) bool {
				for _, sp := range otlptest.InTrace(s, tc.trace) {
					if sp.Kind == tracepb.Span_SPAN_KIND_SERVER {
						return true
					}
				}
				return false
			})
			srv := spanOf(t, otlptest.InTrace(spans, tc.trace), tracepb.Span_SPAN_KIND_SERVER)
			wantAttrs(t, srv, map[string]any{"gen_ai.usage.input_tokens": tc.in, "gen_ai.usage.output_tokens": tc.out})
			ttft, ok := srv.Attrs["gen_ai.server.time_to_first_token"].(float64)
			if !ok || ttft <= 0 || ttft > srv.End.Sub(srv.Start).Seconds() {
				t.Errorf("gen_ai.server.time_to_first_token = %v, want a positive number of seconds within the span", srv.Attrs["gen_ai.server.time_to_first_token"])
			}
		})
	}

	t.Run("unsampled caller", func(t *testing.T) {
		trace := strings.Repeat("3e", 16)
		h := bearer(partnerKey)
		h.Set("Traceparent", "00-"+trace+"-"+clientSpan+"-00")
		if r := do(t, client(), g.URL, request{method: http.MethodPost, path: "/chat/completions", header: h, body: strings.NewReader(`{}`)}); r.status != http.StatusOK {
			t.Fatalf("status %d", r.status)
		}
		seen := llm.requests()
		got := seen[len(seen)-1].header.Get("Traceparent")
		if !strings.HasPrefix(got, "00-"+trace+"-") || !strings.HasSuffix(got, "-00") {
			t.Errorf("upstream traceparent = %q, want the caller's trace, unsampled", got)
		}
		// A later sampled request's spans arrive; the unsampled one's never.
		h.Set("Traceparent", "00-"+strings.Repeat("4f", 16)+"-"+clientSpan+"-01")
		do(t, client(), g.URL, request{method: http.MethodPost, path: "/chat/completions", header: h, body: strings.NewReader(`{}`)})
		rcv.WaitFor(t, 10*time.Second, "the sampled request's spans", func(s []otlptest.Span) bool {
			return len(otlptest.InTrace(s, strings.Repeat("4f", 16))) >= 2
		})
		if n := len(otlptest.InTrace(rcv.Spans(), trace)); n != 0 {
			t.Errorf("%d spans exported for an unsampled trace", n)
		}
	})
	assertNoSecretInSpans(t, rcv.Spans())
}

// Background work shows too: each upstream credential fetch and each
// identity provider key fetch is a span of its own, failures marked as
// errors, and none carries the credential or the client secret.
func TestTracesOfRefreshes(t *testing.T) {
	rcv := otlptest.StartHTTP(t)
	tr, lookup := startTracing(t, rcv, telemetry.ProtocolHTTP)
	w := newAzureWorld(t)
	churn := w.add(config.AuthAMLServiceToken, "churn", false)
	aad := fakeaad.New(t)
	hc, transport := trustingClient(t, w.aad.CACertPEM(), aad.CACertPEM())
	cfg := w.config().
		IdentityProvider("contoso", "type: azure_ad", "tenant_id: "+strconv.Quote(fakeaad.TenantID), "authority_host: "+strconv.Quote(aad.URL()),
			"audiences: [api://modelgate]").
		IdentityProvider("down", "type: oidc", "issuer: http://127.0.0.1:1/down", "jwks_uri: http://127.0.0.1:1/down/keys", "audiences: [api://modelgate]")
	g := startGatewayWith(t, cfg, azureEnv, gateway.Deps{HTTPClient: hc, Transport: transport, Clock: w.clock, Refresh: w.refresh,
		AzureRetry: azpolicy.RetryOptions{MaxRetries: -1}, Tracing: tr, LookupEnv: lookup})
	if r := w.call(g, churn, []byte(`{}`)); r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	byName := func(spans []otlptest.Span, name string) []otlptest.Span {
		var out []otlptest.Span
		for _, s := range spans {
			if s.Name == name {
				out = append(out, s)
			}
		}
		return out
	}
	spans := rcv.WaitFor(t, 10*time.Second, "credential and key refresh spans", func(s []otlptest.Span) bool {
		return len(byName(s, "upstream credential refresh")) >= 1 && len(byName(s, "identity provider keys refresh")) >= 3
	})
	cred := byName(spans, "upstream credential refresh")[0]
	wantAttrs(t, cred, map[string]any{"modelgate.upstream": "churn", "modelgate.credential.type": "aml_service_token",
		"modelgate.credential.outcome": "ok", "modelgate.credential.generation": 1})
	if cred.Attrs["modelgate.credential.valid_until"] == nil || cred.Parent != "" || cred.Kind != tracepb.Span_SPAN_KIND_INTERNAL {
		t.Errorf("credential span %+v", cred)
	}
	sources := map[string]otlptest.Span{}
	for _, s := range byName(spans, "identity provider keys refresh") {
		sources[fmt.Sprint(s.Attrs["modelgate.identity_provider"], "/", s.Attrs["modelgate.key_source"])] = s
	}
	for _, src := range []string{"contoso/v1", "contoso/v2"} {
		s, ok := sources[src]
		if !ok {
			t.Fatalf("no key refresh span for %s: %v", src, sources)
		}
		if s.Attrs["modelgate.outcome"] != "ok" || s.Attrs["modelgate.keys"].(int64) < 1 || s.Status == tracepb.Status_STATUS_CODE_ERROR {
			t.Errorf("%s: %+v", src, s)
		}
	}
	var down *otlptest.Span
	for k, s := range sources {
		if strings.HasPrefix(k, "down/") {
			down = &s
		}
	}
	if down == nil || down.Status != tracepb.Status_STATUS_CODE_ERROR || down.Attrs["modelgate.outcome"] != "failed" || down.StatusMessage == "" {
		t.Errorf("the unreachable provider's fetch: %+v", down)
	}
	assertNoSecretInSpans(t, rcv.Spans(), w.seen()...)
}

// The spans of the harder paths: a mirror copy (whose request has often
// ended by the time it is sent), a try cut by retry.per_try_timeout, and
// an answer the upstream broke off mid-body.
func TestTracesOfFailuresAndMirrors(t *testing.T) {
	rcv := otlptest.StartHTTP(t)
	a, shadow, slow, cut := newPoolBackend(t, "a"), newPoolBackend(t, "shadow"), newPoolBackend(t, "slow"), newPoolBackend(t, "cut")
	slow.set(hang)
	cut.set(func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
	})
	cfg := newConfig().Partners().
		PoolUpstream("mirrored", "backends:", backendLine("a", a.URL), backendLine("shadow", shadow.URL, "weight: 0"),
			"mirror: { backend: shadow, percent: 100 }").
		PoolUpstream("timed", "backends:", backendLine("slow", slow.URL), "retry: { attempts: 1, on: [timeout], per_try_timeout: 100ms }").
		Upstream("cut", cut.URL, upstreamKeyAuth).
		Route("mirrored", "/mirrored", "mirrored", allowPartners).
		Route("timed", "/timed", "timed", allowPartners).
		Route("cut", "/cut", "cut", allowPartners)
	g := startTraced(t, cfg, rcv, telemetry.ProtocolHTTP)
	send := func(path, trace string) response {
		h := bearer(partnerKey)
		h.Set("Traceparent", "00-"+trace+"-"+clientSpan+"-01")
		return do(t, client(), g.URL, request{method: http.MethodPost, path: path, header: h, body: strings.NewReader(`{}`)})
	}

	t.Run("mirror", func(t *testing.T) {
		for i := range 5 {
			trace := fmt.Sprintf("%032x", 0x5000+i)
			if r := send("/mirrored/score", trace); servedBy(r) != "a" {
				t.Fatalf("%d %s", r.status, r.body)
			}
			spans := rcv.WaitFor(t, 10*time.Second, "the mirror copy's span", func(s []otlptest.Span) bool {
				for _, sp := range otlptest.InTrace(s, trace) {
					if sp.Attrs["modelgate.mirror"] == true {
						return true
					}
				}
				return false
			})
			srv := spanOf(t, otlptest.InTrace(spans, trace), tracepb.Span_SPAN_KIND_SERVER)
			for _, sp := range otlptest.InTrace(spans, trace) {
				if sp.Attrs["modelgate.mirror"] == true && (sp.Parent != srv.SpanID || sp.Attrs["modelgate.backend"] != "shadow") {
					t.Errorf("mirror span %+v, want a child of %s on backend shadow", sp, srv.SpanID)
				}
			}
		}
	})

	t.Run("per-try timeout", func(t *testing.T) {
		trace := strings.Repeat("6a", 16)
		if r := send("/timed/score", trace); r.status != http.StatusGatewayTimeout && r.status != http.StatusBadGateway {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		spans := rcv.WaitFor(t, 10*time.Second, "the timed-out try", func(s []otlptest.Span) bool { return len(otlptest.InTrace(s, trace)) >= 2 })
		try := spanOf(t, otlptest.InTrace(spans, trace), tracepb.Span_SPAN_KIND_CLIENT)
		if try.Attrs["error.type"] != "timeout" || try.Status != tracepb.Status_STATUS_CODE_ERROR {
			t.Errorf("timed-out try: error.type %v, status %v %q; want timeout, error", try.Attrs["error.type"], try.Status, try.StatusMessage)
		}
	})

	t.Run("upstream broke off", func(t *testing.T) {
		trace := strings.Repeat("7b", 16)
		h := bearer(partnerKey)
		h.Set("Traceparent", "00-"+trace+"-"+clientSpan+"-01")
		req, _ := http.NewRequest(http.MethodPost, g.URL+"/cut/score", strings.NewReader(`{}`))
		req.Header = h
		if resp, err := client().Do(req); err == nil {
			_, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		spans := rcv.WaitFor(t, 10*time.Second, "the cut request's spans", func(s []otlptest.Span) bool { return len(otlptest.InTrace(s, trace)) >= 2 })
		srv := spanOf(t, otlptest.InTrace(spans, trace), tracepb.Span_SPAN_KIND_SERVER)
		try := spanOf(t, otlptest.InTrace(spans, trace), tracepb.Span_SPAN_KIND_CLIENT)
		if srv.Attrs["modelgate.error_code"] != "upstream_aborted" || srv.Status != tracepb.Status_STATUS_CODE_ERROR {
			t.Errorf("server span: error_code %v, status %v; want upstream_aborted, error", srv.Attrs["modelgate.error_code"], srv.Status)
		}
		if try.Status != tracepb.Status_STATUS_CODE_ERROR {
			t.Errorf("the try whose body broke off has status %v, want error", try.Status)
		}
	})
}

// Edges of trace context with traces on: a malformed traceparent starts a
// new trace and its tracestate is not passed on; a made-up method cannot
// name a span; HEAD is traced like any request.
func TestTracesEdges(t *testing.T) {
	rcv := otlptest.StartHTTP(t)
	fraud := newPoolBackend(t, "fraud")
	cfg := newConfig().Partners().Upstream("fraud", fraud.URL, upstreamKeyAuth).Route("fraud", "/fraud", "fraud", allowPartners)
	g := startTraced(t, cfg, rcv, telemetry.ProtocolHTTP)
	serverSpanOf := func(r response) otlptest.Span {
		t.Helper()
		trace, _ := g.requestLine(t, r.header.Get("X-Request-Id"))["trace_id"].(string)
		spans := rcv.WaitFor(t, 10*time.Second, "the request's server span", func(s []otlptest.Span) bool { return len(otlptest.InTrace(s, trace)) >= 1 })
		return spanOf(t, otlptest.InTrace(spans, trace), tracepb.Span_SPAN_KIND_SERVER)
	}

	t.Run("malformed traceparent", func(t *testing.T) {
		h := bearer(partnerKey)
		h.Set("Traceparent", "00-"+strings.Repeat("0", 32)+"-"+clientSpan+"-01") // all-zero trace id: invalid
		h.Set("Tracestate", "vendor=from-a-broken-caller")
		r := do(t, client(), g.URL, request{method: http.MethodPost, path: "/fraud/score", header: h, body: strings.NewReader(`{}`)})
		if r.status != http.StatusOK {
			t.Fatalf("status %d", r.status)
		}
		srv := serverSpanOf(r)
		if srv.Parent != "" || srv.TraceID == strings.Repeat("0", 32) {
			t.Errorf("server span %s parent %q: want a new root", srv.TraceID, srv.Parent)
		}
		seen := fraud.requests()
		last := seen[len(seen)-1].header
		if got := last.Get("Traceparent"); !strings.HasPrefix(got, "00-"+srv.TraceID+"-") {
			t.Errorf("upstream traceparent %q, want the new trace %s", got, srv.TraceID)
		}
		if got := last.Get("Tracestate"); got != "" {
			t.Errorf("upstream got tracestate %q of a trace it is not in", got)
		}
	})

	t.Run("made-up method", func(t *testing.T) {
		r := do(t, client(), g.URL, request{method: "BREW", path: "/fraud/score", header: bearer(partnerKey)})
		srv := serverSpanOf(r)
		if srv.Name != "_OTHER /fraud" || srv.Attrs["http.request.method"] != "_OTHER" {
			t.Errorf("span %q method %v, want _OTHER", srv.Name, srv.Attrs["http.request.method"])
		}
	})

	t.Run("HEAD", func(t *testing.T) {
		r := do(t, client(), g.URL, request{method: http.MethodHead, path: "/fraud/score", header: bearer(partnerKey)})
		srv := serverSpanOf(r)
		if kids := otlptest.Children(rcv.Spans(), srv.SpanID); srv.Name != "HEAD /fraud" || len(kids) != 1 {
			t.Errorf("HEAD: span %q with %d tries", srv.Name, len(kids))
		}
	})
}
