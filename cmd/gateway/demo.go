package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/gateway"
	"github.com/modelgate/modelgate/internal/demoidp"
	"github.com/modelgate/modelgate/internal/demomodel"
	"github.com/modelgate/modelgate/metrics"
)

// demoConfig is a real configuration, loaded by the real loader; only the
// addresses and key hashes are filled in.
const demoConfig = `
server:
  listen: "{{.Listen}}"
admin:
  listen: "{{.Admin}}"
log:
  format: text
identity_providers:
  demo-idp:
    type: oidc
    issuer: "{{.Issuer}}"
    audiences: [api://modelgate-demo]
key_sets:
  partners:
    - id: demo-partner
      sha256: "{{.PartnerHash}}"
  batch:
    - id: demo-batch-job
      sha256: "{{.BatchHash}}"
upstreams:
  fraud-model:
    url: "{{.Model}}/api/v1/service/fraud"
    identity_headers: { key_id: X-Caller-Id }
    auth: { type: key, key: "${DEMO_UPSTREAM_KEY}" }
routes:
  - name: fraud
    path: /fraud
    upstream: fraud-model
    allow:
      - key_set: partners
      - identity_provider: demo-idp
        roles: [Score.Invoke]
  - name: batch
    path: /batch
    upstream: fraud-model
    allow:
      - key_set: batch
      - key_set: partners
`

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "public `address` of the demo gateway (loopback; falls back to a free port if taken)")
	quiet := fs.Bool("quiet", false, "do not log requests")
	ready := fs.String("ready-file", "", "write the gateway's base URL to this `file` once it serves (for scripts)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("demo takes no arguments: %w", flag.ErrHelp)
	}

	var lc net.ListenConfig
	pub, err := lc.Listen(ctx, "tcp", *listen)
	if err != nil {
		if pub, err = lc.Listen(ctx, "tcp", "127.0.0.1:0"); err != nil {
			return err
		}
	}
	// The admin listener, the fake model and the demo token issuer take free
	// loopback ports.
	var lns [3]net.Listener
	for i := range lns {
		if lns[i], err = lc.Listen(ctx, "tcp", "127.0.0.1:0"); err != nil {
			pub.Close()
			for _, ln := range lns[:i] {
				ln.Close()
			}
			return err
		}
	}
	adm, modelLn, idpLn := lns[0], lns[1], lns[2]

	// The fake model endpoint wants its own key, which only the gateway holds.
	upstreamKey := newKey()
	model := &http.Server{Handler: demomodel.Handler("fraud-v1", upstreamKey, "X-Caller-Id"), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = model.Serve(modelLn) }()
	defer model.Close()

	// The demo token issuer: OIDC discovery and keys on loopback.
	issuer, err := demoidp.New("http://" + idpLn.Addr().String())
	if err != nil {
		return err
	}
	idpSrv := &http.Server{Handler: issuer.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = idpSrv.Serve(idpLn) }()
	defer idpSrv.Close()
	scorer, err := issuer.Token("api://modelgate-demo", "4f1c2d3e-0000-4000-8000-0000000000a1", "5e6f7a8b-0000-4000-8000-0000000000c1", []string{"Score.Invoke"}, 24*time.Hour)
	if err != nil {
		return err
	}
	reader, err := issuer.Token("api://modelgate-demo", "4f1c2d3e-0000-4000-8000-0000000000a2", "5e6f7a8b-0000-4000-8000-0000000000c1", []string{"Reports.Read"}, 24*time.Hour)
	if err != nil {
		return err
	}

	partnerKey, batchKey := newKey(), newKey()
	var cfgText strings.Builder
	_ = template.Must(template.New("demo").Parse(demoConfig)).Execute(&cfgText, map[string]string{
		"Listen": pub.Addr().String(), "Admin": adm.Addr().String(), "Model": "http://" + modelLn.Addr().String(),
		"PartnerHash": keyHash(partnerKey), "BatchHash": keyHash(batchKey), "Issuer": issuer.URL(),
	})
	env := map[string]string{"DEMO_UPSTREAM_KEY": upstreamKey}
	load := func() (*config.Config, error) {
		return config.Parse("demo.yaml", []byte(cfgText.String()), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	}
	cfg, err := load()
	if err != nil {
		return fmt.Errorf("demo configuration: %w", err)
	}
	logOut := stderr
	if *quiet {
		logOut = io.Discard
	}
	deps := gateway.Deps{Logger: newLogger(cfg.Log, logOut), Metrics: metrics.New(versionString())}
	snap, err := gateway.Compile(cfg, deps, gateway.CompileOptions{})
	if err != nil {
		return err
	}
	// OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 traces the demo too.
	snap, deps, stopTraces, err := startTelemetry(ctx, cfg, snap, deps)
	if err != nil {
		return err
	}
	defer stopTraces()
	snap.Start(ctx)
	srv := gateway.NewServer(snap, load, deps)

	base := "http://" + pub.Addr().String()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_ = snap.WaitIdentityProviders(wctx)
	cancel()
	printDemo(stdout, base, "http://"+adm.Addr().String(), "http://"+modelLn.Addr().String(), partnerKey, batchKey)
	// The configuration, for `gateway explain` against the running demo.
	// In a private directory of this run's own (removed at exit), so two
	// demos, or a test suite, never overwrite each other's.
	cfgFile := "<not written>"
	if dir, err := os.MkdirTemp("", "modelgate-demo-"); err != nil {
		cfgFile = "<not written: " + err.Error() + ">"
	} else {
		defer os.RemoveAll(dir)
		cfgFile = filepath.Join(dir, "gw.yaml")
		if err := os.WriteFile(cfgFile, []byte(cfgText.String()), 0o600); err != nil {
			cfgFile = "<not written: " + err.Error() + ">"
		}
	}
	printDemoTokens(stdout, base, scorer, reader, cfgFile, upstreamKey)
	if *ready != "" {
		if err := os.WriteFile(*ready, []byte(base+"\n"), 0o600); err != nil {
			return err
		}
	}
	err = srv.Run(ctx, pub, adm)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

func printDemo(w io.Writer, base, admin, model, partnerKey, batchKey string) {
	fmt.Fprintf(w, `modelgate demo: the gateway listens on %s and fronts a fake model
endpoint at %s that accepts only its own key, which only the gateway holds.

Demo API key (key set "partners"): %s

1. Score through the gateway (200; the model sees the gateway's key, never yours):
   curl -s %s/fraud/score -H 'Authorization: Bearer %s' -d '{"amount": 120.5}'

2. Stream server-sent events as they are produced:
   curl -sN '%s/fraud/score?stream=1' -H 'Authorization: Bearer %s' -d '{}'

3. No credential (401, with WWW-Authenticate):
   curl -si %s/fraud/score -d '{}'

4. A wrong key (401; the answer never says which keys exist):
   curl -si %s/fraud/score -H 'Authorization: Bearer mgk_not-a-real-key' -d '{}'

5. A valid key that this route does not admit (403; key set "batch" may only call /batch):
   curl -si %s/fraud/score -H 'Authorization: Bearer %s' -d '{}'
   curl -s  %s/batch/score -H 'Authorization: Bearer %s' -d '{}'

6. No route (404) and a path that tries to climb out of its route (400):
   curl -si %s/nothing-here
   curl -si --path-as-is %s/fraud/../admin

7. Calling the model directly without its key (401 from the model itself):
   curl -si %s/api/v1/service/fraud/score -d '{}'

Admin endpoints (never on the public listener): %s/healthz  %s/readyz  %[18]s/metrics
Status page (open it in a browser; it refreshes itself): %[18]s/
`, base, model, partnerKey,
		base, partnerKey,
		base, partnerKey,
		base,
		base,
		base, batchKey, base, batchKey,
		base, base,
		model,
		admin, admin)
}

func printDemoTokens(w io.Writer, base, scorer, reader, cfgFile, upstreamKey string) {
	fmt.Fprintf(w, `Access tokens from the demo's own token issuer (RS256, shaped like Azure AD v2
tokens; the gateway fetched the issuer's keys through OIDC discovery):

   export SCORER_TOKEN=%s
   export READER_TOKEN=%s

8. A token with the app role Score.Invoke (200):
   curl -s %s/fraud/score -H "Authorization: Bearer $SCORER_TOKEN" -d '{"amount": 99}'

9. A valid token without that role (403, error="insufficient_scope"):
   curl -si %s/fraud/score -H "Authorization: Bearer $READER_TOKEN" -d '{}'

10. The same token with a forged signature (401, error="invalid_token"):
   curl -si %s/fraud/score -H "Authorization: Bearer ${SCORER_TOKEN%%.*}.Zm9yZ2Vk" -d '{}'

11. Ask the gateway why (the same policy code, with a trace; the demo's config is in
    %s, and its fake model's key comes from the environment like any secret):
   DEMO_UPSTREAM_KEY=%s go run ./cmd/gateway explain -config %s -path /fraud/score -token "$READER_TOKEN"

One structured log line per request goes to stderr. Press Ctrl-C to stop.

`, scorer, reader, base, base, base, cfgFile, upstreamKey, cfgFile)
}
