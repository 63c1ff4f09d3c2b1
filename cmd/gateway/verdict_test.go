package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelgate/modelgate/internal/logtest"
)

// verdictBase is a valid configuration the rows of TestCheckAgreesWithServe
// change one thing in. Both listeners take a free port.
const verdictBase = `server:
  listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
key_sets:
  partners:
    - id: acme
      sha256: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
upstreams:
  fraud:
    url: http://127.0.0.1:1/score
    auth: { type: key, key: "${VERDICT_KEY}" }
routes:
  - name: fraud
    path: /fraud
    upstream: fraud
    allow:
      - key_set: partners
`

// verdictAzure adds an identity provider, an Azure identity and an
// upstream whose token comes from an Azure ML workspace; all on loopback
// ports nothing listens on, so serve starts and keeps trying.
const verdictAzure = `identity_providers:
  corp:
    type: oidc
    issuer: http://127.0.0.1:1/corp
    jwks_uri: http://127.0.0.1:1/corp/keys
    audiences: [api://scoring]
credentials:
  sp:
    type: client_secret
    tenant_id: 72f988bf-86f1-41af-91ab-2d7cd011db47
    client_id: 11111111-2222-3333-4444-555555555555
    client_secret: ${VERDICT_SP_SECRET}
    authority_host: https://127.0.0.1:1/
`

// verdictChurn is the upstream that uses verdictAzure's identity.
const verdictChurn = `  churn:
    url: http://127.0.0.1:1/churn
    auth:
      type: aml_service_token
      credential: sp
      service: churn
      workspace: { subscription_id: sub, resource_group: rg, name: ws, api_host: "http://127.0.0.1:1" }
`

// TestCheckAgreesWithServe loads each configuration with `gateway check`
// and with `gateway serve`: both must accept it, or both refuse it with the
// same problems at the same file:line. Check runs the same compile as serve,
// so a setting is validated once, where it is used.
func TestCheckAgreesWithServe(t *testing.T) {
	t.Setenv("VERDICT_KEY", "verdict-upstream-key-0123456789")
	t.Setenv("VERDICT_SP_SECRET", "verdict-sp-secret")
	withAzure := strings.Replace(verdictBase, "upstreams:\n", verdictAzure+"upstreams:\n"+verdictChurn, 1)
	sub := func(base, old, new string) string {
		if !strings.Contains(base, old) {
			t.Fatalf("row edit %q does not apply", old)
		}
		return strings.Replace(base, old, new, 1)
	}
	rows := []struct {
		name string
		yaml string
		want []string // problem lines check and serve must both print; none = both accept
	}{
		{"valid key route", verdictBase, nil},
		{"valid azure upstream and identity provider", withAzure, nil},
		{"wildcard ACME domain", sub(verdictBase, "  listen: 127.0.0.1:0\nadmin", "  listen: 127.0.0.1:0\n  tls: { mode: acme, domains: [\"*.example.com\"] }\nadmin"),
			[]string{`:3: server.tls.domains[0]: "*.example.com": wildcard certificates need the DNS-01 challenge`}},
		{"listen port 99999", sub(verdictBase, "listen: 127.0.0.1:0\nadmin", "listen: 127.0.0.1:99999\nadmin"),
			[]string{`:2: server.listen: "127.0.0.1:99999": port 99999 is not a number from 0 to 65535`}},
		{"upstream port 181011", sub(verdictBase, "http://127.0.0.1:1/score", "http://10.0.0.4:181011/score"),
			[]string{`:11: upstreams.fraud.url: "http://10.0.0.4:181011/score": port 181011 is not a number from 1 to 65535`}},
		{"tls mixed modes", sub(verdictBase, "  listen: 127.0.0.1:0\nadmin", "  listen: 127.0.0.1:0\n  tls: { mode: files, cert_file: a.pem, key_file: a.key, domains: [x.example.com] }\nadmin"),
			[]string{`:3: server.tls: domains, email, ca, ca_root, storage and the challenge switches belong to mode acme`}},
		{"tls acme without domains", sub(verdictBase, "  listen: 127.0.0.1:0\nadmin", "  listen: 127.0.0.1:0\n  tls:\n    mode: acme\nadmin"),
			[]string{`:3: server.tls.domains: mode acme needs at least one domain`}},
		{"bad rate", sub(verdictBase, "    upstream: fraud\n", "    upstream: fraud\n    rate_limit: { per_identity: 5/sec, burst: -1 }\n"),
			[]string{`:17: routes[0].rate_limit.per_identity: invalid rate "5/sec"`}},
		{"negative burst", sub(verdictBase, "    upstream: fraud\n", "    upstream: fraud\n    rate_limit: { per_identity: 5/s, burst: -1 }\n"),
			[]string{`:17: routes[0].rate_limit.burst: -1: must be at least 1`}},
		{"rate limit without a rate", sub(verdictBase, "    upstream: fraud\n", "    upstream: fraud\n    rate_limit: { burst: 3 }\n"),
			[]string{`:17: routes[0].rate_limit: no limit set`, `:17: routes[0].rate_limit.burst: 3 is set without a per_identity rate`}},
		{"identity provider keys over plain http", sub(withAzure, "jwks_uri: http://127.0.0.1:1/corp/keys", "jwks_uri: http://keys.example.com/corp"),
			[]string{`identity_providers.corp.jwks_uri: "http://keys.example.com/corp" must use https`}},
		{"identity provider localhost in capitals is loopback", sub(withAzure, "jwks_uri: http://127.0.0.1:1/corp/keys", "jwks_uri: http://LOCALHOST:1/corp/keys"), nil},
		{"credential cloud", sub(withAzure, "    authority_host: https://127.0.0.1:1/\n", "    cloud: mars\n"),
			[]string{`credentials.sp.cloud: "mars"`}},
		{"service token without service", sub(withAzure, "      service: churn\n", ""),
			[]string{`upstreams.churn.auth.service: missing`}},
		{"service token without credential", sub(withAzure, "      credential: sp\n", ""),
			[]string{`upstreams.churn.auth.credential: missing`}},
		{"workspace without subscription", sub(withAzure, "subscription_id: sub, ", ""),
			[]string{`upstreams.churn.auth.workspace.subscription_id: missing`}},
		{"key upstream without key", sub(verdictBase, `auth: { type: key, key: "${VERDICT_KEY}" }`, `auth: { type: key }`),
			[]string{`:12: upstreams.fraud.auth.key: missing`}},
		{"telemetry to a collector", verdictBase + "telemetry:\n  traces: { endpoint: \"http://127.0.0.1:1\", protocol: grpc, sample_ratio: 0.25 }\n", nil},
		{"telemetry settings", verdictBase + "telemetry:\n  traces: { endpoint: \"collector:4318\", protocol: thrift, sample_ratio: 2 }\n",
			[]string{`:20: telemetry.traces.endpoint: "collector:4318" needs the scheme http:// or https://`,
				`:20: telemetry.traces.protocol: "thrift" is not an OTLP protocol the gateway speaks: write http/protobuf or grpc`,
				`:20: telemetry.traces.sample_ratio: 2 is not a share from 0 to 1`}},
		{"workspace api host over plain http", sub(withAzure, `api_host: "http://127.0.0.1:1"`, `api_host: "http://westeurope.example.com"`),
			[]string{`upstreams.churn.auth.workspace.api_host`, `https`}},
	}
	dir := t.TempDir()
	for i, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			file := filepath.Join(dir, "row"+string(rune('a'+i))+".yaml")
			if err := os.WriteFile(file, []byte(row.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			checkOut, checkErr := runVerdict(t, "check", file)
			serveOut, serveErr := runVerdict(t, "serve", file)
			checkProblems, serveProblems := problemLines(checkOut, file), problemLines(serveOut, file)
			if (checkErr == nil) != (serveErr == nil) {
				t.Fatalf("check and serve disagree: check %v, serve %v\ncheck said:\n%s\nserve said:\n%s", checkErr, serveErr, checkOut, serveOut)
			}
			if !slices.Equal(checkProblems, serveProblems) {
				t.Errorf("check and serve name different problems:\ncheck: %q\nserve: %q", checkProblems, serveProblems)
			}
			if row.want == nil {
				if checkErr != nil {
					t.Fatalf("both refused a valid configuration: %v\n%s", checkErr, checkOut)
				}
				return
			}
			if checkErr == nil {
				t.Fatalf("both accepted a configuration with problems %q", row.want)
			}
			all := strings.Join(checkProblems, "\n")
			for _, w := range row.want {
				if !strings.Contains(all, w) {
					t.Errorf("problems lack %q:\n%s", w, all)
				}
			}
			for _, secret := range []string{"verdict-upstream-key-0123456789", "verdict-sp-secret"} {
				if strings.Contains(checkOut+serveOut, secret) {
					t.Errorf("a secret's value was printed")
				}
			}
		})
	}
}

// runVerdict runs one command on file. serve gets a second to start; a
// serve that is still running then has accepted the configuration, and is
// stopped.
func runVerdict(t *testing.T, cmd, file string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	var out, errb logtest.Buffer
	err := run(ctx, []string{cmd, "-config", file}, &out, &errb)
	if cmd == "serve" && err == nil && ctx.Err() == nil {
		t.Fatalf("serve returned early without an error:\n%s", errb.String())
	}
	return errb.String(), err
}

var problemLine = regexp.MustCompile(`^(\S+\.yaml)(:\d+)?: `)

// problemLines returns the lines that name file, with the file itself cut
// to its base name, sorted.
func problemLines(out, file string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if m := problemLine.FindStringSubmatch(l); m != nil && m[1] == file && !strings.HasSuffix(l, "nothing was started") {
			lines = append(lines, strings.TrimPrefix(l, file))
		}
	}
	slices.Sort(lines)
	return lines
}

// TestCheckWarns: check warns, without failing, about a rule that admits a
// whole tenant with no condition and about an upstream credential sent over
// plain http to a host that is not private (issue 10, item 18); serve logs
// the same warnings.
func TestCheckWarns(t *testing.T) {
	t.Setenv("VERDICT_KEY", "verdict-upstream-key-0123456789")
	y := strings.Replace(verdictBase, "url: http://127.0.0.1:1/score", "url: http://fraud-1234.westeurope.azurecontainer.io/score", 1)
	y = strings.Replace(y, "upstreams:\n", `identity_providers:
  corp:
    type: azure_ad
    tenant_id: 72f988bf-86f1-41af-91ab-2d7cd011db47
    audiences: [api://scoring]
upstreams:
  private:
    url: http://10.0.0.4/score
    auth: { type: key, key: "${VERDICT_KEY}" }
  cluster:
    url: http://churn.models.svc.cluster.local/score
    auth: { type: key, key: "${VERDICT_KEY}" }
`, 1)
	y = strings.Replace(y, "      - key_set: partners\n", "      - key_set: partners\n      - identity_provider: corp\n      - identity_provider: corp\n        roles: [Score.Invoke]\n", 1)
	file := filepath.Join(t.TempDir(), "warn.yaml")
	if err := os.WriteFile(file, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runVerdict(t, "check", file)
	if err != nil {
		t.Fatalf("check failed on warnings only: %v\n%s", err, out)
	}
	want := []string{
		`routes[0].allow[1]: warning: admits every caller the identity provider corp vouches for (the whole tenant), with no role, scope, group, user or app condition`,
		`upstreams.fraud.url: warning: the upstream's key is sent over plain http to fraud-1234.westeurope.azurecontainer.io, which is not a private address`,
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("check output lacks %q:\n%s", w, out)
		}
	}
	for _, not := range []string{"allow[2]", "upstreams.private", "upstreams.cluster"} {
		if strings.Contains(out, not) {
			t.Errorf("check warns about %s, which is fine:\n%s", not, out)
		}
	}
	if n := strings.Count(out, "warning:"); n != len(want) {
		t.Errorf("%d warnings, want %d:\n%s", n, len(want), out)
	}
}

// TestCheckPrintsLimits: check shows where limits are counted (the store,
// with its URL redacted, its timeout and on_error) and each route's rate
// and token limits (issue 12).
func TestCheckPrintsLimits(t *testing.T) {
	t.Setenv("VERDICT_KEY", "verdict-upstream-key-0123456789")
	t.Setenv("VERDICT_REDIS", "redis://:s3cr3t-redis-pass@127.0.0.1:1/0")
	y := strings.Replace(verdictBase, "      - key_set: partners\n",
		"      - key_set: partners\n    rate_limit: { per_identity: 60/m, burst: 10, overall: 2000/m }\n    token_limit: { per_minute: 20000, per_day: 2000000, inject_stream_usage: true }\n", 1)
	y += "limits:\n  store: { type: redis, url: \"${VERDICT_REDIS}\", timeout: 80ms, on_error: deny }\n"
	file := filepath.Join(t.TempDir(), "limits.yaml")
	if err := os.WriteFile(file, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"check", "-config", file}, &out, &errb); err != nil {
		t.Fatalf("check: %v\n%s", err, errb.String())
	}
	for _, want := range []string{
		"LIMITS",
		"store: redis 127.0.0.1:1, timeout 80ms, on_error deny",
		"fraud: rate_limit per_identity 60/m burst 10, overall 2000/m; token_limit 20000/minute, 2000000/day, inject_stream_usage",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String()+errb.String(), "s3cr3t-redis-pass") {
		t.Error("check printed the store's password")
	}
}

// TestCheckPrintsTelemetry: check says where traces go, from the section
// or the OTEL_* variables, and never an export header's value (issue 13).
func TestCheckPrintsTelemetry(t *testing.T) {
	t.Setenv("VERDICT_KEY", "verdict-upstream-key-0123456789")
	t.Setenv("VERDICT_OTLP_KEY", "otlp-header-secret-canary")
	tests := []struct {
		name, section string
		env           map[string]string
		want          string // "" for no TELEMETRY block
	}{
		{name: "off", want: ""},
		{name: "section", section: "telemetry:\n  traces: { endpoint: \"http://otel:4317\", protocol: grpc, sample_ratio: 0.2, headers: { api-key: \"${VERDICT_OTLP_KEY}\" } }\n",
			want: "traces over OTLP grpc to http://otel:4317 (from telemetry.traces.endpoint), sampler parentbased_traceidratio 0.2, headers api-key"},
		{name: "environment", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318", "OTEL_TRACES_SAMPLER": "always_on"},
			want: "traces over OTLP http/protobuf to http://otel:4318/v1/traces (from OTEL_EXPORTER_OTLP_ENDPOINT), sampler always_on"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			file := filepath.Join(t.TempDir(), "telemetry.yaml")
			if err := os.WriteFile(file, []byte(verdictBase+tt.section), 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errb bytes.Buffer
			if err := run(context.Background(), []string{"check", "-config", file}, &out, &errb); err != nil {
				t.Fatalf("check: %v\n%s", err, errb.String())
			}
			got := out.String()
			if tt.want == "" && strings.Contains(got, "TELEMETRY") || tt.want != "" && !strings.Contains(got, "TELEMETRY\n  "+tt.want+"\n") {
				t.Errorf("check output, want TELEMETRY %q:\n%s", tt.want, got)
			}
			if strings.Contains(got+errb.String(), "otlp-header-secret-canary") {
				t.Error("check printed an export header's value")
			}
		})
	}
}
