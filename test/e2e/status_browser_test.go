package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/modelgate/modelgate/gateway"
	"github.com/modelgate/modelgate/metrics"
)

// findBrowser returns the path of a Chromium or Chrome: $CHROMIUM, else the
// first of the usual names on PATH. Without one the test is skipped, unless
// MODELGATE_REQUIRE_BROWSER=1 (CI), where it fails.
func findBrowser(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("MODELGATE_REQUIRE_BROWSER") == "1" {
		t.Fatal("no chromium, chromium-browser or google-chrome on PATH (and $CHROMIUM unset), but MODELGATE_REQUIRE_BROWSER=1")
	}
	t.Skip("no browser: install Debian's chromium or set $CHROMIUM to run the status page in a real browser")
	return ""
}

// syncLog collects the browser's output and chromedp's errors, shown when
// the test fails; safe for concurrent use, and never written to the test
// log from chromedp's goroutines.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *syncLog) logf(format string, args ...any) {
	_, _ = fmt.Fprintf(l, format+"\n", args...)
}
func (l *syncLog) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// artifactPath is where the screenshot goes: $MODELGATE_ARTIFACTS, else the
// repository's artifacts/ (ignored by git).
func artifactPath(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("MODELGATE_ARTIFACTS")
	if dir == "" {
		var err error
		if dir, err = filepath.Abs(filepath.Join("..", "..", "artifacts")); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts directory: %v", err)
	}
	return filepath.Join(dir, name)
}

// TestStatusPageInBrowser opens the admin listener's status page in a
// headless Chromium: a pool route whose only backend is up shows ok; once
// that backend is gone, its active health check fails and the page (polled
// by reloading it in the browser) shows the route down with a reason naming
// the backend, while the key route stays ok. It saves a full-page
// screenshot as a test artifact.
func TestStatusPageInBrowser(t *testing.T) {
	browser := findBrowser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	fraud, churn := newBackend(t, "fraud"), newBackend(t, "weu")
	g := startGatewayWith(t, newConfig().Partners().
		Upstream("fraud", fraud.URL+"/score", upstreamKeyAuth).
		PoolUpstream("churn",
			"backends:",
			"  - { name: weu, url: \""+churn.URL+"\", auth: "+upstreamKeysAuth+" }",
			"health_check: { path: /health, interval: 300ms, timeout: 300ms }",
		).
		Route("fraud", "/fraud", "fraud", allowPartners).
		Route("churn", "/churn", "churn", allowPartners),
		nil, gateway.Deps{Metrics: metrics.New("e2e")})
	c := client()
	for _, r := range []struct {
		path, key string
		want      int
	}{
		{"/fraud/score", partnerKey, 200}, {"/fraud/score", partnerKey, 200}, {"/fraud/score", partnerKey, 200},
		{"/fraud/score", "", 401}, {"/churn/score", partnerKey, 200}, {"/churn/score", partnerKey, 200},
	} {
		req := request{method: http.MethodPost, path: r.path, body: strings.NewReader(`{}`)}
		if r.key != "" {
			req.header = bearer(r.key)
		}
		if got := do(t, c, g.URL, req); got.status != r.want {
			t.Fatalf("%s: %d, want %d: %s", r.path, got.status, r.want, got.body)
		}
	}

	logs := &syncLog{}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(browser),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests may run as root, where the sandbox refuses to start
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.CombinedOutput(logs),
	)
	bctx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithErrorf(logs.logf))
	// chromedp makes the browser's profile directory itself and removes it
	// once the browser has exited, when the allocator is cancelled.
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		if t.Failed() {
			t.Logf("browser output:\n%s", logs.String())
		}
	})
	if err := chromedp.Do(bctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", browser, err)
	}

	page := g.Admin + "/status"
	// load navigates to the page afresh and reads a route's state and
	// reasons as the browser shows them.
	load := func(route string) (state, reasons string, err error) {
		lctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		defer cancel()
		row := `tr[data-route="` + route + `"]`
		if err := chromedp.Do(lctx, chromedp.Navigate(page), chromedp.WaitReady(chromedp.CSS(row))); err != nil {
			return "", "", err
		}
		if state, err = chromedp.Run(lctx, chromedp.Text(chromedp.CSS(row+` [data-state]`))); err != nil {
			return "", "", err
		}
		reasons, err = chromedp.Run(lctx, chromedp.Text(chromedp.CSS(row+` td:last-child`)))
		return strings.TrimSpace(state), strings.TrimSpace(reasons), err
	}
	// await loads the page until route shows as want says, for up to
	// 20 s: a load can fail on its own (the page's 5 s refresh may replace
	// the document while it is read, detaching the node), so an error is
	// retried like a state not shown yet.
	await := func(route, what string, want func(state, reasons string) bool) (state, reasons string, ok bool) {
		var err error
		for deadline := time.Now().Add(20 * time.Second); ; {
			state, reasons, err = load(route)
			if err == nil && want(state, reasons) {
				return state, reasons, true
			}
			if time.Now().After(deadline) {
				t.Errorf("the browser did not show route %s %s within 20s: state %q, reasons %q, last error %v", route, what, state, reasons, err)
				return state, reasons, false
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	isOK := func(state, _ string) bool { return state == "ok" }
	for _, route := range []string{"churn", "fraud"} {
		if _, _, ok := await(route, "ok", isOK); !ok {
			t.FailNow()
		}
	}

	churn.CloseClientConnections()
	churn.Close()
	state, reasons, ok := await("churn", "down with a reason naming backend weu", func(state, reasons string) bool {
		return state == "down" && strings.Contains(reasons, "backend weu")
	})
	if !ok {
		t.FailNow()
	}
	t.Logf("churn in the browser: %s: %s", state, reasons)
	await("fraud", "ok after churn's backend went away", isOK)
	// A request on the dead pool, so the last hour shows an error code.
	if got := do(t, c, g.URL, request{method: http.MethodPost, path: "/churn/score", header: bearer(partnerKey), body: strings.NewReader(`{}`)}); got.status != http.StatusServiceUnavailable {
		t.Errorf("churn with its only backend down: %d %s, want 503", got.status, got.body)
	}

	sctx, cancelShot := context.WithTimeout(bctx, 15*time.Second)
	defer cancelShot()
	if err := chromedp.Do(sctx, chromedp.Navigate(page), chromedp.WaitReady(chromedp.CSS(`#usage`))); err != nil {
		t.Fatalf("reload for the screenshot: %v", err)
	}
	html, err := chromedp.Run(sctx, chromedp.OuterHTML(chromedp.CSS(`html`)))
	if err != nil {
		t.Fatalf("read the page: %v", err)
	}
	assertNoSecrets(t, "the status page in the browser", html)
	if !strings.Contains(html, "upstream_unavailable") {
		t.Errorf("the page's last hour lacks churn's upstream_unavailable")
	}
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("the screenshot is not a PNG (%d bytes)", len(png))
	}
	path := artifactPath(t, "status-page.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("write the screenshot: %v", err)
	}
	t.Logf("status page screenshot: %s (%d bytes)", path, len(png))
}
