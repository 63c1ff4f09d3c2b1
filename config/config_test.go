package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelgate/modelgate/internal/problem"
)

const testKey = "mgk_0123456789abcdef0123456789abcdef"

var testEnv = map[string]string{
	"UPSTREAM_KEY":  "upstream-key-0123456789",
	"UPSTREAM_KEY2": "upstream-key-2-0123456789",
	"CLIENT_KEY":    testKey,
	"SHORT_KEY":     "short",
	"PORT":          "9443",
	"SP_SECRET":     "sp-secret-value",
}

func lookup(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func hashHex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

var minimal = `
key_sets:
  partners:
    - id: acme
      sha256: "` + hashHex(testKey) + `"
upstreams:
  fraud:
    url: http://fraud.example.com/api/v1/service/fraud/
    auth: { type: key, key: "${UPSTREAM_KEY}" }
routes:
  - name: fraud
    path: /fraud
    upstream: fraud
    allow:
      - key_set: partners
`

func TestParseMinimalAppliesDefaults(t *testing.T) {
	cfg, err := Parse("gw.yaml", []byte(minimal), lookup(testEnv))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Server
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", s.Listen, DefaultListen},
		{"admin", cfg.Admin.Listen, DefaultAdminListen},
		{"max body", int64(s.MaxBodyBytes), int64(DefaultMaxBodyBytes)},
		{"buffer body", int64(s.BufferBodyBytes), int64(DefaultBufferBodyBytes)},
		{"read header timeout", s.ReadHeaderTimeout.D(), DefaultReadHeaderTimeout},
		{"response header timeout", s.Upstream.ResponseHeaderTimeout.D(), DefaultResponseHeader},
		{"log format", cfg.Log.Format, "json"},
		{"url path trimmed", cfg.Upstreams["fraud"].Parsed.Path, "/api/v1/service/fraud"},
		{"key revealed", cfg.Upstreams["fraud"].Auth.Key.Reveal(), testEnv["UPSTREAM_KEY"]},
		{"hash", hex.EncodeToString(cfg.KeySets["partners"][0].Hash[:]), hashHex(testKey)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestParseValues(t *testing.T) {
	y := strings.Replace(minimal, "key_sets:", `server:
  listen: ":${PORT}"
  max_body_bytes: 20MiB
  buffer_body_bytes: 64KiB
  read_header_timeout: 3s
  trusted_proxies: [10.0.0.0/8, 192.168.1.7, "::1"]
key_sets:`, 1)
	y = strings.Replace(y, `sha256: "`+hashHex(testKey)+`"`, `key: "${CLIENT_KEY}"
      not_after: 2027-01-01T00:00:00Z`, 1)
	cfg, err := Parse("gw.yaml", []byte(y), lookup(testEnv))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Listen != ":9443" {
		t.Errorf("listen = %q", cfg.Server.Listen)
	}
	if cfg.Server.MaxBodyBytes != 20<<20 || cfg.Server.BufferBodyBytes != 64<<10 {
		t.Errorf("sizes = %d, %d", cfg.Server.MaxBodyBytes, cfg.Server.BufferBodyBytes)
	}
	if cfg.Server.ReadHeaderTimeout.D() != 3*time.Second {
		t.Errorf("read_header_timeout = %v", cfg.Server.ReadHeaderTimeout.D())
	}
	if got := len(cfg.Server.TrustedPrefixes); got != 3 || cfg.Server.TrustedPrefixes[1].Bits() != 32 {
		t.Errorf("trusted prefixes = %v", cfg.Server.TrustedPrefixes)
	}
	k := cfg.KeySets["partners"][0]
	if k.Hash != sha256.Sum256([]byte(testKey)) {
		t.Error("key from the environment was not hashed")
	}
	if k.NotAfter == nil || !k.NotAfter.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("not_after = %v", k.NotAfter)
	}
}

// TestParseErrors shows that each problem is reported with file, line and
// field path, and that the message says what to do.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // substrings, each must appear
	}{
		{"unknown field with suggestion", `
server:
  lisen: ":80"
` + minimal[1:], []string{`gw.yaml:3: server.lisen: unknown field "lisen"; did you mean "listen"?`}},
		{"missing env var", strings.Replace(minimal, "${UPSTREAM_KEY}", "${NOPE}", 1),
			[]string{"gw.yaml:9: upstreams.fraud.auth.key: environment variable NOPE is not set"}},
		{"bad duration and size", "server:\n  read_header_timeout: 10\n  max_body_bytes: 10 MB!\n" + minimal[1:],
			[]string{`gw.yaml:2: server.read_header_timeout: "10": not a duration`, `gw.yaml:3: server.max_body_bytes: "10 MB!": not a size`}},
		{"plaintext key in file", strings.Replace(minimal, `key: "${UPSTREAM_KEY}"`, `key: "literal-secret"`, 1),
			[]string{"upstreams.fraud.auth.key: must come from the environment"}},
		{"route without allow", strings.Replace(minimal, "    allow:\n      - key_set: partners\n", "", 1),
			[]string{"gw.yaml:11: routes[0].allow: missing: list who may call this route", "public: true"}},
		{"public and allow", strings.Replace(minimal, "    allow:", "    public: true\n    allow:", 1),
			[]string{"routes[0].public: a public route admits everyone"}},
		{"unknown upstream and key set", strings.Replace(strings.Replace(minimal, "upstream: fraud", "upstream: frad", 1), "key_set: partners", "key_set: partner", 1),
			[]string{`routes[0].upstream: no upstream named "frad" (have: fraud)`, `routes[0].allow[0].key_set: no key set named "partner" (have: partners)`}},
		{"wildcard route host", strings.Replace(minimal, "    path: /fraud", "    host: \"*.models.example.com\"\n    path: /fraud", 1),
			[]string{"routes[0].host: \"*.models.example.com\": wildcard hosts are not supported"}},
		{"bad path", strings.Replace(minimal, "path: /fraud", "path: /fraud/../x/", 1),
			[]string{"routes[0].path: \"/fraud/../x/\" must be a clean path"}},
		{"bad sha256", strings.Replace(minimal, hashHex(testKey), "abc", 1),
			[]string{"gw.yaml:5: key_sets.partners[0].sha256: must be 64 hex digits"}},
		{"short key from env", strings.Replace(minimal, `sha256: "`+hashHex(testKey)+`"`, `key: "${SHORT_KEY}"`, 1),
			[]string{"key_sets.partners[0].key: the key from the environment is shorter than 16"}},
		{"secret not echoed", strings.Replace(minimal, "path: /fraud", "path: ${SP_SECRET}", 1),
			[]string{"routes[0].path: \"(value from the environment)\" must start with /"}}, // path is not a secret field but came from env: see TestSecretsNotEchoed
		{"auth type later", strings.Replace(minimal, "type: key, key: \"${UPSTREAM_KEY}\"", "type: magic", 1),
			[]string{`upstreams.fraud.auth.type: "magic" is not an auth type`}},
		{"listen port out of range", "server: { listen: \"127.0.0.1:99999\" }\n" + minimal[1:],
			[]string{`gw.yaml:1: server.listen: "127.0.0.1:99999": port 99999 is not a number from 0 to 65535`}},
		{"upstream port out of range", strings.Replace(minimal, "http://fraud.example.com", "http://fraud.example.com:181011", 1),
			[]string{`gw.yaml:8: upstreams.fraud.url: "http://fraud.example.com:181011/api/v1/service/fraud/": port 181011 is not a number from 1 to 65535`}},
		{"http_listen not host:port", "server:\n  tls: { mode: acme, http_listen: nope }\n" + minimal[1:],
			[]string{`gw.yaml:2: server.tls.http_listen: "nope" is not host:port`}},
		{"admin on public address", "server: { listen: \":9090\" }\nadmin: { listen: \":9090\" }\n" + minimal[1:],
			[]string{"admin.listen: is the same address as server.listen"}},
		{"header override of Authorization", strings.Replace(minimal, "    auth:", "    headers: { Authorization: x }\n    auth:", 1),
			[]string{"upstreams.fraud.headers.Authorization: the upstream's Authorization comes from auth"}},
		{"duplicate key across sets", strings.Replace(minimal, "upstreams:", "  other:\n    - id: dup\n      sha256: \""+hashHex(testKey)+"\"\nupstreams:", 1),
			[]string{`key_sets.partners[0]: the same key is also key_sets.other id "dup"`}},
		{"duplicate field", "server:\n  listen: \":1\"\n  listen: \":2\"\n" + minimal[1:],
			[]string{"gw.yaml:3: server.listen: field appears twice"}},
		{"wrong shape", "routes: {name: x}\n", []string{"gw.yaml:1: routes: expected a list, got a mapping"}},
		{"syntax error", "server:\n  listen: [\n", []string{"gw.yaml:2: not valid YAML"}},
		{"empty file", "", []string{"the file is empty"}},
		{"two documents", minimal + "---\nfoo: 1\n", []string{"more than one YAML document"}},
		{"claims on key rule", strings.Replace(minimal, "- key_set: partners", "- key_set: partners\n        roles: [Score.Invoke]", 1),
			[]string{"routes[0].allow[0].roles: claim conditions apply to identity_provider rules"}},
		{"bad env reference", strings.Replace(minimal, "${UPSTREAM_KEY}", "${1BAD}", 1),
			[]string{`"1BAD" is not a variable name`}},
		{"upstream url with credentials", strings.Replace(minimal, "http://fraud.example.com", "http://u:p@fraud.example.com", 1),
			[]string{"upstreams.fraud.url: must not carry credentials"}},
		{"merge keys", "x: &a {listen: ':1'}\nserver:\n  <<: *a\n" + minimal[1:],
			[]string{`unknown field "x"`, "merge keys (<<) are not supported"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("gw.yaml", []byte(tt.yaml), lookup(testEnv))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestAllErrorsAtOnce: several problems in one file are all reported.
func TestAllErrorsAtOnce(t *testing.T) {
	y := `
server:
  listen: nope
  colour: blue
upstreams:
  a:
    url: ftp://x
    auth: { type: magic }
routes:
  - name: r
    path: x
    upstream: b
`
	_, err := Parse("multi.yaml", []byte(y), lookup(testEnv))
	if err == nil {
		t.Fatal("want errors")
	}
	var fes []*FieldError
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FieldError
		if errors.As(e, &fe) {
			fes = append(fes, fe)
		}
	}
	want := map[string]int{
		"server.colour": 4, "server.listen": 3, "upstreams.a.url": 7, "upstreams.a.auth.type": 8,
		"routes[0].path": 11, "routes[0].upstream": 12, "routes[0].allow": 10,
	}
	got := map[string]int{}
	for _, fe := range fes {
		got[fe.Path] = fe.Line
		if fe.File != "multi.yaml" {
			t.Errorf("file = %q", fe.File)
		}
	}
	for p, line := range want {
		if got[p] != line {
			t.Errorf("%s: line %d, want %d (all: %v)", p, got[p], line, err)
		}
	}
}

// TestSecretsNotEchoed: a value that came from the environment is never
// quoted back in an error.
func TestSecretsNotEchoed(t *testing.T) {
	y := "server:\n  max_body_bytes: ${SP_SECRET}\n" + minimal[1:]
	_, err := Parse("gw.yaml", []byte(y), lookup(testEnv))
	if err == nil {
		t.Fatal("want error")
	}
	if strings.Contains(err.Error(), "sp-secret-value") {
		t.Fatalf("error echoes a value from the environment: %v", err)
	}
	if !strings.Contains(err.Error(), "(value from the environment)") {
		t.Fatalf("error does not say where the value came from: %v", err)
	}
}

func TestSecretRedacts(t *testing.T) {
	s := Secret("hunter2-hunter2")
	for _, out := range []string{s.String(), s.GoString()} {
		if strings.Contains(out, "hunter2") {
			t.Fatalf("secret printed: %q", out)
		}
	}
	b, _ := s.MarshalText()
	if strings.Contains(string(b), "hunter2") {
		t.Fatal("secret marshalled")
	}
}

func TestMatchForms(t *testing.T) {
	y := strings.Replace(minimal, "routes:", `identity_providers:
  aad:
    type: azure_ad
    tenant_id: 72f988bf-86f1-41af-91ab-2d7cd011db47
    audiences: [api://modelgate]
routes:`, 1)
	y = strings.Replace(y, "- key_set: partners", `- key_set: partners
      - identity_provider: aad
        roles: [Score.Invoke, Score.Admin]
        scopes: { all_of: [a, b], any_of: [c] }`, 1)
	cfg, err := Parse("gw.yaml", []byte(y), lookup(testEnv))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Routes[0].Allow[1]
	if !r.Roles.IsSet() || len(r.Roles.AnyOf) != 2 || len(r.Roles.AllOf) != 0 {
		t.Errorf("roles = %+v", r.Roles)
	}
	if len(r.Scopes.AllOf) != 2 || len(r.Scopes.AnyOf) != 1 {
		t.Errorf("scopes = %+v", r.Scopes)
	}
	if r.Groups.IsSet() {
		t.Error("groups set without being written")
	}
}

func TestLoadFileErrors(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), os.LookupEnv)
	if err == nil || !strings.Contains(err.Error(), "open config") {
		t.Fatalf("err = %v", err)
	}
	p := filepath.Join(t.TempDir(), "gw.yaml")
	if err := os.WriteFile(p, []byte("routes: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(p, os.LookupEnv)
	if err == nil || !strings.HasPrefix(err.Error(), p+":1: routes:") {
		t.Fatalf("err = %v", err)
	}
}

func TestExpandEnv(t *testing.T) {
	env := lookup(map[string]string{"A": "x", "B_2": "y"})
	tests := []struct {
		in, want string
		fromEnv  bool
		wantErr  string
	}{
		{"plain", "plain", false, ""},
		{"${A}", "x", true, ""},
		{"pre-${A}-${B_2}-post", "pre-x-y-post", true, ""},
		{"$$literal", "$literal", false, ""},
		{"cost $5", "cost $5", false, ""},
		{"${MISSING}", "", false, "MISSING is not set"},
		{"${A", "", false, "unclosed"},
		{"${}", "", false, "not a variable name"},
		{"${A-B}", "", false, "not a variable name"},
	}
	for _, tt := range tests {
		got, fromEnv, err := expandEnv(tt.in, env, func(string) (string, error) { return "", errors.New("no files here") })
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("expandEnv(%q) err = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want || fromEnv != tt.fromEnv {
			t.Errorf("expandEnv(%q) = %q, %v, %v; want %q, %v", tt.in, got, fromEnv, err, tt.want, tt.fromEnv)
		}
	}
}

func TestSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"512", 512, true}, {"10MiB", 10 << 20, true}, {"64KiB", 64 << 10, true}, {"1GiB", 1 << 30, true},
		{"10MB", 10_000_000, true}, {"7B", 7, true}, {"1 KiB", 1024, true},
		{"-1", 0, false}, {"MiB", 0, false}, {"1.5MiB", 0, false}, {"99999999999999GiB", 0, false},
	}
	for _, tt := range tests {
		var z Size
		err := z.decodeScalar(tt.in)
		if (err == nil) != tt.ok || (tt.ok && int64(z) != tt.want) {
			t.Errorf("Size(%q) = %d, %v; want %d ok=%v", tt.in, z, err, tt.want, tt.ok)
		}
	}
}

// FuzzParse: no input makes the loader panic, and every failure is an
// error that names the file.
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte("server: {listen: ':1'}\nroutes: []\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("routes:\n  - allow: [{roles: {all_of: [a]}}]\n"))
	f.Add([]byte("key_sets: {a: [{id: x, key: '${CLIENT_KEY}'}]}"))
	f.Add([]byte("server: {listen: '${UPSTREAM_KEY}'}\n\"a\\nb\": 1\n"))
	f.Add([]byte("routes: [{name: a, path: '${SP_SECRET}x', upstream: u, public: true}]\n"))
	if b, err := os.ReadFile("../config.example.yaml"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data, lookup(testEnv))
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
		if err == nil {
			return
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if !strings.HasPrefix(line, "fuzz.yaml") {
				t.Fatalf("an error line does not name the file (one error, one line): %q", line)
			}
		}
		for _, v := range testEnv {
			if len(v) >= 8 && strings.Contains(err.Error(), v) {
				t.Fatalf("an error quotes a value from the environment: %v", err)
			}
		}
	})
}

// TestLocate: a problem found after loading, at a full field path, is
// reported at the line the field (or its nearest written parent) is on.
func TestLocate(t *testing.T) {
	cfg, err := Parse("gw.yaml", []byte(minimal), lookup(testEnv))
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.Locate(errors.Join(
		problem.At("upstreams.fraud.auth.key", "refused"),
		problem.At("routes[0].allow[0].roles", "no such field written"),
		errors.New("no path"),
	))
	want := []string{
		"gw.yaml:9: upstreams.fraud.auth.key: refused",
		"gw.yaml:15: routes[0].allow[0].roles: no such field written",
		"gw.yaml: no path",
	}
	if got := strings.Split(err.Error(), "\n"); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("Locate =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if cfg.Locate(nil) != nil {
		t.Error("Locate(nil) must be nil")
	}
}

// TestAllowUnset: an offline tool loads a file whose secrets are not set;
// the placeholders are named and match no real value.
func TestAllowUnset(t *testing.T) {
	p := filepath.Join(t.TempDir(), "gw.yaml")
	if err := os.WriteFile(p, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p, lookup(nil)); err == nil {
		t.Fatal("Load accepted an unset variable")
	}
	cfg, err := LoadWith(p, LoadOptions{LookupEnv: lookup(nil), AllowUnset: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Unset(); len(got) != 1 || got["upstreams.fraud.auth.key"] != "UPSTREAM_KEY" {
		t.Errorf("Unset = %v", got)
	}
}

// TestFileSecrets: ${file:/path} reads a secret from a file (a Kubernetes
// Secret or a Key Vault CSI mount), trimmed, treated like a value from the
// environment (never echoed), and the file is listed for -watch (issue 10,
// item 17).
func TestFileSecrets(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "upstream-key")
	if err := os.WriteFile(keyFile, []byte("file-upstream-key-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	y := strings.Replace(minimal, "${UPSTREAM_KEY}", "${file:"+keyFile+"}", 1)
	cfg, err := Parse(filepath.Join(dir, "gw.yaml"), []byte(y), lookup(testEnv))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Upstreams["fraud"].Auth.Key.Reveal(); got != "file-upstream-key-0123456789" {
		t.Errorf("key = %q, want the file's content trimmed", got)
	}
	if got := cfg.SecretFiles(); len(got) != 1 || got[0] != keyFile {
		t.Errorf("SecretFiles = %q, want [%s]", got, keyFile)
	}
	bigFile := filepath.Join(dir, "big")
	if err := os.WriteFile(bigFile, make([]byte, MaxSecretFileBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	// A relative path is relative to the configuration file's directory.
	rel := strings.Replace(minimal, "${UPSTREAM_KEY}", "${file:upstream-key}", 1)
	if cfg, err := Parse(filepath.Join(dir, "gw.yaml"), []byte(rel), lookup(testEnv)); err != nil || cfg.Upstreams["fraud"].Auth.Key.Reveal() != "file-upstream-key-0123456789" {
		t.Errorf("relative path: %v", err)
	}
	for _, tt := range []struct{ name, ref, want string }{
		{"missing file", "${file:" + filepath.Join(dir, "nope") + "}", "upstreams.fraud.auth.key: secret file"},
		{"empty name", "${file:}", "upstreams.fraud.auth.key: ${file:} needs a path"},
		{"a directory", "${file:" + dir + "}", "is a directory"},
		{"too large", "${file:" + bigFile + "}", "is larger than 65536 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "gw.yaml"), []byte(strings.Replace(minimal, "${UPSTREAM_KEY}", tt.ref, 1)), lookup(testEnv))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
	// A value from a file is a secret: never quoted back in an error.
	pathFile := filepath.Join(dir, "path")
	if err := os.WriteFile(pathFile, []byte("s3cr3t-from-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Parse("gw.yaml", []byte(strings.Replace(minimal, "path: /fraud", "path: ${file:"+pathFile+"}", 1)), lookup(testEnv))
	if err == nil || strings.Contains(err.Error(), "s3cr3t-from-file") {
		t.Errorf("error %v must refuse the path without quoting the file's content", err)
	}
}
