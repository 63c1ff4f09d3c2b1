package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelgate/modelgate/internal/logtest"
)

// TestWatchRotatesFileSecrets: with -watch, a secret read with
// ${file:/path} (a Kubernetes Secret or Key Vault CSI mount) is re-read when
// the file changes, so the upstream key rotates without a restart or a
// SIGHUP (issue 10, item 17).
func TestWatchRotatesFileSecrets(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
	}))
	defer up.Close()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "upstream-key")
	if err := os.WriteFile(keyFile, []byte("first-upstream-key-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pub := freeAddr(t)
	cfg := filepath.Join(dir, "gw.yaml")
	if err := os.WriteFile(cfg, []byte(`
server: { listen: "`+pub+`" }
admin: { listen: "127.0.0.1:0" }
upstreams:
  m: { url: "`+up.URL+`", auth: { type: key, key: "${file:upstream-key}" } }
routes:
  - { name: m, path: /m, upstream: m, public: true }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs logtest.Buffer
	go func() { done <- run(ctx, []string{"serve", "-config", cfg, "-watch", "50ms"}, &logs, &logs) }()
	defer func() {
		cancel()
		<-done
	}()
	call := func() string {
		resp, err := http.Get("http://" + pub + "/m/x")
		if err != nil {
			return ""
		}
		resp.Body.Close()
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 {
			return ""
		}
		return seen[len(seen)-1]
	}
	waitUntil := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if ok() {
				return
			}
		}
		t.Fatalf("timed out waiting for %s\n%s", what, logs.String())
	}
	waitUntil("the first key upstream", func() bool { return call() == "Bearer first-upstream-key-0123456789" })
	if err := os.WriteFile(keyFile, []byte("second-upstream-key-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil("the rotated key upstream", func() bool { return call() == "Bearer second-upstream-key-0123456789" })
	if strings.Contains(logs.String(), "upstream-key-0123456789") {
		t.Error("a key's value was logged")
	}
}
