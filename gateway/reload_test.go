package gateway

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/internal/logtest"
)

// TestReloadUnderLoad: bounded concurrent load across several reloads (good
// and bad configs alternating) sees zero failed requests, and the new
// configuration takes effect.
func TestReloadUnderLoad(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		io.WriteString(w, r.Header.Get("X-Config-Version"))
	}))
	t.Cleanup(up.Close)
	const key = "mgk_reload-load-0123456789abcdef"
	cfgFor := func(version string) string {
		return `
key_sets:
  s: [{ id: load, sha256: "` + sha(key) + `" }]
upstreams:
  u:
    url: "` + up.URL + `"
    headers: { X-Config-Version: "` + version + `" }
    auth: { type: key, key: "${K1}" }
routes:
  - name: r
    path: /
    upstream: u
    allow: [{ key_set: s }]
`
	}
	var version atomic.Value
	version.Store("v0")
	load := func() (*config.Config, error) {
		v := version.Load().(string)
		if v == "bad" {
			return nil, &config.FieldError{File: "gw.yaml", Line: 1, Msg: "broken on purpose"}
		}
		env := map[string]string{"K1": "upstream-key-0123456789"}
		return config.Parse("gw.yaml", []byte(cfgFor(v)), func(k string) (string, bool) { s, ok := env[k]; return s, ok })
	}
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	deps := Deps{}
	snap, err := Build(context.Background(), cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(snap, load, deps)
	pub, _ := net.Listen("tcp", "127.0.0.1:0")
	adm, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, pub, adm) }()
	t.Cleanup(func() { cancel(); <-done })

	url := "http://" + pub.Addr().String() + "/score"
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var sent, failed atomic.Int64
	// served counts the answers per configuration version; progress wakes
	// waitServed after each one.
	var mu sync.Mutex
	served := map[string]int{}
	progress := make(chan struct{}, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", url, strings.NewReader(`{"x":1}`))
				req.Header.Set("Authorization", "Bearer "+key)
				resp, err := client.Do(req)
				sent.Add(1)
				if err != nil {
					failed.Add(1)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					continue
				}
				mu.Lock()
				served[string(body)]++
				mu.Unlock()
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}()
	}
	// waitServed waits until configuration v has answered n more requests,
	// so that every reload happens under load and a good one is seen to
	// take effect.
	waitServed := func(v string, n int) bool {
		t.Helper()
		mu.Lock()
		want := served[v] + n
		mu.Unlock()
		timeout := time.NewTimer(10 * time.Second)
		defer timeout.Stop()
		for {
			mu.Lock()
			got := served[v]
			mu.Unlock()
			if got >= want {
				return true
			}
			select {
			case <-progress:
			case <-timeout.C:
				t.Errorf("configuration %s answered %d of %d requests within 10s (%d requests failed)", v, got, want, failed.Load())
				return false
			}
		}
	}
	reloads := []string{"v1", "bad", "v2", "bad", "v3", "v4"}
	var okReloads, badReloads int
	current := "v0"
	for _, v := range reloads {
		if !waitServed(current, 20) {
			break
		}
		version.Store(v)
		if err := srv.Reload(ctx); err != nil {
			badReloads++
		} else {
			okReloads++
			current = v
		}
	}
	waitServed(current, 20)
	close(stop)
	wg.Wait()
	t.Logf("reload under load: %d requests sent, %d failed, %d reloads applied, %d rejected", sent.Load(), failed.Load(), okReloads, badReloads)
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed across reloads", failed.Load(), sent.Load())
	}
	if okReloads != 4 || badReloads != 2 {
		t.Errorf("reloads applied %d, rejected %d; want 4 and 2", okReloads, badReloads)
	}
	if current != "v4" {
		t.Errorf("last configuration applied: %s, want v4", current)
	}
	if sent.Load() < 100 {
		t.Errorf("only %d requests sent: the load was too light to show anything", sent.Load())
	}
}

// TestReloadTelemetryChangeWaitsForRestart: the trace export lives as long
// as the process, so a reload that changes the telemetry section says the
// change waits for a restart; one that leaves it alone says nothing.
func TestReloadTelemetryChangeWaitsForRestart(t *testing.T) {
	base := `
upstreams:
  u: { url: "http://127.0.0.1:1", auth: { type: none } }
routes:
  - { name: r, path: /, upstream: u, public: true }
`
	text := base
	load := func() (*config.Config, error) {
		return config.Parse("gw.yaml", []byte(text), func(string) (string, bool) { return "", false })
	}
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	var logs logtest.Buffer
	deps := Deps{Logger: slog.New(slog.NewJSONHandler(&logs, nil)), LookupEnv: func(string) (string, bool) { return "", false }}
	snap, err := Build(context.Background(), cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(snap, load, deps)
	t.Cleanup(func() { srv.Snapshot().Close() })
	const warning = "the trace export changes on restart"
	if err := srv.Reload(context.Background()); err != nil || strings.Contains(logs.String(), warning) {
		t.Fatalf("an unchanged reload: %v\n%s", err, logs.String())
	}
	text = base + "telemetry:\n  traces: { endpoint: \"http://127.0.0.1:1\" }\n"
	if err := srv.Reload(context.Background()); err != nil || !strings.Contains(logs.String(), warning) {
		t.Fatalf("a reload that turns traces on: %v, want the warning\n%s", err, logs.String())
	}
}
