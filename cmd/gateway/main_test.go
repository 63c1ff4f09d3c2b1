package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/modelgate/modelgate/internal/logtest"
)

// exampleEnv is what config.example.yaml references.
var exampleEnv = map[string]string{
	"BATCH_JOB_KEY":         "mgk_batch-job-0123456789abcdef0123",
	"AZURE_TENANT_ID":       "72f988bf-86f1-41af-91ab-2d7cd011db47",
	"GATEWAY_APP_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
	"AML_TENANT_ID":         "72f988bf-86f1-41af-91ab-2d7cd011db47",
	"AML_PRINCIPAL_ID":      "66666666-7777-8888-9999-000000000000",
	"AML_PRINCIPAL_PASS":    "sp-secret-for-tests",
	"FRAUD_KEY":             "fraud-primary-key-0123456789",
	"FRAUD_KEY_2":           "fraud-secondary-key-0123456789",
	"LLM_KEY":               "llm-key-0123456789abcdef",
}

func TestCheckExampleConfig(t *testing.T) {
	for k, v := range exampleEnv {
		t.Setenv(k, v)
	}
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"check", "-config", "../../config.example.yaml"}, &out, &errb)
	if err != nil {
		t.Fatalf("check failed: %v\n%s", err, errb.String())
	}
	for _, want := range []string{"OK", "ROUTE", "fraud", "/fraud", "key_set partners", "everyone (public)",
		"forecast (pool of 3, see POOLS)", "POOL forecast", "moe-canary", "mirror:          10% of buffered requests to moe-canary"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("route table lacks %q:\n%s", want, out.String())
		}
	}
	for _, k := range []string{"FRAUD_KEY", "FRAUD_KEY_2", "LLM_KEY", "AML_PRINCIPAL_PASS", "BATCH_JOB_KEY"} {
		if strings.Contains(out.String()+errb.String(), exampleEnv[k]) {
			t.Errorf("check printed the value of %s", k)
		}
	}
}

func TestCheckReportsErrors(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(p, []byte("server:\n  lisen: x\nroutes: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"check", "-config", p}, &out, &errb)
	if err == nil {
		t.Fatal("check passed a bad config")
	}
	if !strings.Contains(errb.String(), p+":2: server.lisen: unknown field") {
		t.Errorf("stderr: %s", errb.String())
	}
}

func TestKeysNew(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"keys", "new", "-id", "acme"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	key := regexp.MustCompile(`mgk_[A-Za-z0-9_-]{43}`).FindString(out.String())
	sum := regexp.MustCompile(`sha256: "([0-9a-f]{64})"`).FindStringSubmatch(out.String())
	if key == "" || sum == nil || !strings.Contains(out.String(), "- id: acme") {
		t.Fatalf("output:\n%s", out.String())
	}
	h := sha256.Sum256([]byte(key))
	if hex.EncodeToString(h[:]) != sum[1] {
		t.Error("printed sha256 is not the key's")
	}
}

func TestUnknownCommand(t *testing.T) {
	var errb bytes.Buffer
	if err := run(context.Background(), []string{"frobnicate"}, io.Discard, &errb); err == nil {
		t.Fatal("unknown command accepted")
	}
}

// TestDemo runs `gateway demo` and the first curl it prints (as an HTTP
// request): it must succeed. The second printed outcome (no credential)
// must be a 401.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := filepath.Join(t.TempDir(), "ready")
	var out logtest.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"demo", "-listen", "127.0.0.1:0", "-quiet", "-ready-file", ready}, &out, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo: %v", err)
		}
	})
	var base string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(ready); err == nil && len(b) > 0 {
			base = strings.TrimSpace(string(b))
			break
		}
	}
	if base == "" {
		t.Fatal("demo did not start")
	}
	m := regexp.MustCompile(`curl -s (\S+) -H 'Authorization: Bearer (\S+)' -d '(.*)'`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no curl command in:\n%s", out.String())
	}
	req, _ := http.NewRequest("POST", m[1], strings.NewReader(m[3]))
	req.Header.Set("Authorization", "Bearer "+m[2])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"caller":"demo-partner"`) {
		t.Fatalf("first demo command: %d %s", resp.StatusCode, body)
	}
	resp, err = http.Post(base+"/fraud/score", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("no credential: %d", resp.StatusCode)
	}
	// The configuration written for explain is the demo's own, in a private
	// directory, never a fixed shared path another run overwrites.
	cm := regexp.MustCompile(`explain -config (\S+)`).FindStringSubmatch(out.String())
	if cm == nil {
		t.Fatalf("no explain command in:\n%s", out.String())
	}
	if cm[1] == filepath.Join(os.TempDir(), "modelgate-demo.yaml") {
		t.Errorf("the demo writes its configuration to the fixed path %s", cm[1])
	}
	if fi, err := os.Stat(filepath.Dir(cm[1])); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("the demo's configuration directory is not private: %v %v", fi.Mode(), err)
	}
}
