package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelgate/modelgate/internal/logtest"
)

// TestMain lets the tests run the real program as a child process (the
// test binary re-executes itself as `gateway`), so signals are tested on the
// real main, not a stand-in.
func TestMain(m *testing.M) {
	if os.Getenv("MODELGATE_TEST_MAIN") == "1" {
		os.Args = append([]string{"gateway"}, os.Args[1:]...)
		main()
		return
	}
	os.Exit(m.Run())
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServeSignals: the real process reloads on SIGHUP (a new route
// appears; a broken file is refused and the old config keeps serving), and
// on SIGTERM stops accepting, finishes the request in flight and exits 0.
func TestServeSignals(t *testing.T) {
	slow, arrived := make(chan struct{}), make(chan struct{}, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-slow
		}
		io.WriteString(w, "ok "+r.URL.Path)
	}))
	t.Cleanup(up.Close)
	pub, adm := freeAddr(t), freeAddr(t)
	cfgPath := filepath.Join(t.TempDir(), "gw.yaml")
	write := func(extra string) {
		y := "server: { listen: \"" + pub + "\", shutdown_timeout: 10s }\nadmin: { listen: \"" + adm + "\" }\n" +
			"upstreams:\n  u: { url: \"" + up.URL + "\", auth: { type: none } }\n" +
			"routes:\n  - { name: a, path: /a, upstream: u, public: true }\n" + extra
		if err := os.WriteFile(cfgPath, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	cmd := exec.Command(os.Args[0], "serve", "-config", cfgPath)
	cmd.Env = append(os.Environ(), "MODELGATE_TEST_MAIN=1")
	var logs logtest.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("gateway log:\n%s", logs.String())
		}
	})

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + pub + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if ok() {
				return
			}
		}
		t.Fatalf("timed out waiting for %s", what)
	}
	waitFor("the gateway to serve", func() bool { c, _ := get("/a"); return c == 200 })
	if c, _ := get("/b"); c != 404 {
		t.Fatalf("/b before reload: %d", c)
	}

	write("  - { name: b, path: /b, upstream: u, public: true }\n")
	_ = cmd.Process.Signal(syscall.SIGHUP)
	waitFor("SIGHUP to add route b", func() bool { c, _ := get("/b"); return c == 200 })

	if err := os.WriteFile(cfgPath, []byte("server: { lisen: oops }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Signal(syscall.SIGHUP)
	waitFor("the failed reload to be logged", func() bool { return strings.Contains(logs.String(), "reload failed") })
	if !strings.Contains(logs.String(), "server.lisen: unknown field") {
		t.Error("the failed reload's log does not name the problem")
	}
	if c, _ := get("/b"); c != 200 {
		t.Fatalf("after a broken reload the old config must keep serving: /b = %d", c)
	}

	inflight := make(chan string, 1)
	go func() { c, body := get("/a/slow"); inflight <- strings.TrimSpace(body) + " " + http.StatusText(c) }()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request never reached the upstream")
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	waitFor("the listener to close", func() bool {
		conn, err := net.DialTimeout("tcp", pub, 100*time.Millisecond)
		if err == nil {
			conn.Close()
		}
		return err != nil
	})
	close(slow)
	if got := <-inflight; got != "ok /slow OK" {
		t.Errorf("in-flight request during SIGTERM: %q", got)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the gateway did not exit after SIGTERM")
	}
	// Durations in logs read as durations, not nanoseconds (issue 10, item 20).
	if !regexp.MustCompile(`"msg":"shutting down[^\n]*"timeout":"\d+(\.\d+)?(s|ms|m0s)`).MatchString(logs.String()) {
		t.Errorf("the shutdown line does not give its timeout as a duration:\n%s", logs.String())
	}
}
