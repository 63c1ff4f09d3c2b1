package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelgate/modelgate/internal/logtest"
	"github.com/modelgate/modelgate/internal/redistest"
)

// replicaKey is the one key the replicas' route admits.
const replicaKey = "mgk_replicas-partner-key-5d2e8a41c7"

// replica is one gateway process started by startReplicas.
type replica struct {
	pub, admin string // host:port
	cmd        *exec.Cmd
	logs       *logtest.Buffer
	exited     chan struct{} // closed once cmd has been waited for
}

// startReplicas runs n real gateways (`gateway serve`, the test binary
// re-executed through TestMain), each with the configuration text render
// gives for its own public and admin addresses. t.Cleanup stops them by
// PID: SIGTERM to all at once (a race-enabled process lingers about a
// second at exit, so one after the other would add up), then SIGKILL to
// any that has not exited within 5 s.
func startReplicas(t *testing.T, n int, render func(pub, admin string) string) []*replica {
	t.Helper()
	var gws []*replica
	t.Cleanup(func() {
		for _, r := range gws {
			_ = r.cmd.Process.Signal(syscall.SIGTERM)
		}
		deadline := time.After(5 * time.Second)
		for _, r := range gws {
			select {
			case <-r.exited:
			case <-deadline:
				t.Errorf("gateway %s (pid %d) did not exit 5s after SIGTERM; killing it", r.pub, r.cmd.Process.Pid)
				_ = r.cmd.Process.Kill()
				<-r.exited
			}
			if t.Failed() {
				t.Logf("gateway %s (pid %d) log:\n%s", r.pub, r.cmd.Process.Pid, r.logs.String())
			}
		}
	})
	for range n {
		r := &replica{pub: freeAddr(t), admin: freeAddr(t), logs: &logtest.Buffer{}, exited: make(chan struct{})}
		cfgPath := filepath.Join(t.TempDir(), "gw.yaml")
		if err := os.WriteFile(cfgPath, []byte(render(r.pub, r.admin)), 0o600); err != nil {
			t.Fatal(err)
		}
		r.cmd = exec.Command(os.Args[0], "serve", "-config", cfgPath)
		r.cmd.Env = append(os.Environ(), "MODELGATE_TEST_MAIN=1", "REPLICA_PARTNER_KEY="+replicaKey)
		r.cmd.Stderr = r.logs
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { _ = r.cmd.Wait(); close(r.exited) }()
		gws = append(gws, r)
	}
	return gws
}

// readyz is the part of /readyz this test reads.
type readyz struct {
	Ready       bool `json:"ready"`
	LimitsStore *struct {
		State    string `json:"state"`
		Failures uint64 `json:"failures"`
	} `json:"limits_store"`
}

// readiness reads r's /readyz; ok is false when it cannot be read.
func (r *replica) readiness(c *http.Client) (readyz, bool) {
	var body readyz
	resp, err := c.Get("http://" + r.admin + "/readyz")
	if err != nil {
		return body, false
	}
	defer resp.Body.Close()
	return body, json.NewDecoder(resp.Body).Decode(&body) == nil
}

// TestReplicasShareLimits: three real gateway processes counting one
// route's rate_limit in one real redis-server admit one identity's load,
// spread over them round robin, at the configured rate in total, not three
// times it (issue 12, "Multi-replica tests run 3 gateway processes against
// one Redis"). With Redis killed, on_error local keeps every request
// succeeding and each replica's /readyz reports the store degraded.
func TestReplicasShareLimits(t *testing.T) {
	const (
		rate, burst = 20, 5
		sendRate    = 50 // paced load, 2.5 × the limit, out of step with it
		loadFor     = 2 * time.Second
	)
	srv := redistest.Start(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}")
	}))
	t.Cleanup(up.Close)

	// A generous store timeout: on a loaded machine a slow Redis answer
	// must not switch a replica to local counting during the shared phase
	// (that would admit more than the shared limit for reasons other than
	// the one under test).
	render := func(pub, admin string) string {
		return "server: { listen: \"" + pub + "\", shutdown_timeout: 2s }\n" +
			"admin: { listen: \"" + admin + "\" }\n" +
			"key_sets:\n  partners:\n    - id: acme\n      key: ${REPLICA_PARTNER_KEY}\n" +
			"upstreams:\n  model: { url: \"" + up.URL + "\", auth: { type: none } }\n" +
			"routes:\n  - name: chat\n    path: /v1\n    upstream: model\n" +
			"    allow: [{ key_set: partners }]\n" +
			fmt.Sprintf("    rate_limit: { per_identity: \"%d/s\", burst: %d }\n", rate, burst) +
			"limits:\n  store: { type: redis, url: \"" + srv.URL() + "\", timeout: 1s, on_error: local }\n"
	}
	gws := startReplicas(t, 3, render)

	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}, Timeout: 5 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	for _, g := range gws {
		deadline := time.Now().Add(20 * time.Second)
		for {
			if st, ok := g.readiness(c); ok && st.Ready && st.LimitsStore != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("gateway %s (admin %s) not ready after 20s", g.pub, g.admin)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	send := func(g *replica) (int, time.Duration) {
		req, _ := http.NewRequest("POST", "http://"+g.pub+"/v1/chat", strings.NewReader(`{"messages":[]}`))
		req.Header.Set("Authorization", "Bearer "+replicaKey)
		t0 := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			return 0, time.Since(t0)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, time.Since(t0)
	}

	// Shared phase: one request every 1/sendRate s, each on its own
	// goroutine so a slow answer does not hold back the pace, round robin
	// over the replicas. The client timeout bounds the wait for the last.
	n := int(loadFor.Seconds() * sendRate)
	interval := time.Second / sendRate
	var (
		mu       sync.Mutex
		byStatus = map[int]int{}
		perGW    = make([]int, len(gws)) // admitted per replica
		wg       sync.WaitGroup
	)
	start := time.Now()
	for i := range n {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			code, _ := send(gws[i%len(gws)])
			mu.Lock()
			byStatus[code]++
			if code == http.StatusOK {
				perGW[i%len(gws)]++
			}
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)

	admitted, refused := byStatus[http.StatusOK], byStatus[http.StatusTooManyRequests]
	allowed := int(rate*elapsed.Seconds()) + burst
	t.Logf("3 replicas, one identity, %d/s burst %d, %d requests paced at %d/s round robin over %v: admitted %d (per replica %v), refused %d; shared limit allows %d; per-replica limits would allow %d",
		rate, burst, n, sendRate, elapsed.Round(time.Millisecond), admitted, perGW, refused, allowed, 3*allowed)
	if admitted+refused != n {
		t.Errorf("answers other than 200 and 429 (0 = transport error): %v", byStatus)
	}
	for _, g := range gws {
		if st, ok := g.readiness(c); !ok || st.LimitsStore == nil || st.LimitsStore.State != "ok" || st.LimitsStore.Failures != 0 {
			t.Errorf("gateway %s: limits store %+v during the shared phase, want ok with no failures", g.pub, st.LimitsStore)
		}
	}
	if admitted > allowed+1 {
		t.Errorf("admitted %d, more than rate × elapsed + burst = %d (+1)", admitted, allowed)
	}
	if admitted*10 < allowed*7 {
		t.Errorf("admitted %d, below 70%% of the %d the shared limit allows", admitted, allowed)
	}

	// Redis killed: on_error local counts in each replica's memory. Four
	// requests per replica, 150 ms apart on each, stay within a local
	// 20/s burst 5, so every one must succeed.
	srv.Kill()
	var slowest time.Duration
	for i := range 12 {
		if i > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		g := gws[i%len(gws)]
		code, lat := send(g)
		slowest = max(slowest, lat)
		if code != http.StatusOK {
			t.Errorf("request %d to %s with Redis killed: status %d, want 200 (on_error: local)", i, g.pub, code)
		}
	}
	t.Logf("Redis killed: 12 requests round robin, slowest %v", slowest.Round(time.Microsecond))
	for _, g := range gws {
		st, ok := g.readiness(c)
		switch {
		case !ok || st.LimitsStore == nil:
			t.Errorf("gateway %s: /readyz without limits_store", g.pub)
		case st.LimitsStore.State != "degraded":
			t.Errorf("gateway %s: /readyz limits_store state %q with Redis killed, want degraded", g.pub, st.LimitsStore.State)
		case !st.Ready:
			t.Errorf("gateway %s: not ready with the store degraded; a degraded store must not make the gateway unready", g.pub)
		}
	}
}
