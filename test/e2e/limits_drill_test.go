package e2e

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/gateway"
	"github.com/modelgate/modelgate/internal/redistest"
)

// Drills for limits.store (DESIGN.md, "Limits and quotas that hold across
// replicas"; issue 12): three gateways on their own loopback listeners
// share one real redis-server, and one identity's load is spread over them
// round-robin. Shortened for CI; each logs its figures.

// storeTimeout is limits.store.timeout in the drills. A drill that bounds
// latency allows timeout + 50 ms on top of what a loaded CI machine adds on
// its own: the slowest request of the same load with a healthy store,
// measured first.
const storeTimeout = 50 * time.Millisecond

// startReplicas runs n gateways built from the same configuration: a
// partners key set, a route /v1 to a fake model answering {} at once, with
// rateLimit, and limits.store at redisURL with onError.
func startReplicas(t *testing.T, n int, redisURL, onError, rateLimit string) []*testGateway {
	return startReplicasTimeout(t, n, redisURL, onError, rateLimit, storeTimeout)
}

func startReplicasTimeout(t *testing.T, n int, redisURL, onError, rateLimit string, timeout time.Duration) []*testGateway {
	t.Helper()
	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("{}"))
	}))
	t.Cleanup(model.Close)
	b := newConfig().Partners().Upstream("model", model.URL, "{ type: none }").Route("chat", "/v1", "model", "key_set: partners")
	b.routes[len(b.routes)-1] += "    rate_limit: " + rateLimit + "\n"
	var out []*testGateway
	for range n {
		out = append(out, startWithText(t, func(listen, admin string) string {
			return b.YAML(listen, admin) + "limits:\n  store: { type: redis, url: \"" + redisURL +
				"\", timeout: " + timeout.String() + ", on_error: " + onError + " }\n"
		}))
	}
	return out
}

// startWithText is startGatewayWith for a configuration text the test
// renders itself.
func startWithText(t *testing.T, render func(listen, admin string) string) *testGateway {
	t.Helper()
	pub, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adm, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	text := render(pub.Addr().String(), adm.Addr().String())
	lookup := func(k string) (string, bool) { s, ok := baseEnv[k]; return s, ok }
	cfg, err := config.Parse("e2e.yaml", []byte(text), lookup)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, text)
	}
	logs := &logBuffer{}
	deps := gateway.Deps{Logger: slog.New(slog.NewJSONHandler(logs, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	snap, err := gateway.Build(ctx, cfg, deps)
	if err != nil {
		cancel()
		t.Fatalf("build: %v", err)
	}
	srv := gateway.NewServer(snap, func() (*config.Config, error) { return config.Parse("e2e.yaml", []byte(text), lookup) }, deps)
	g := &testGateway{URL: "http://" + pub.Addr().String(), Admin: "http://" + adm.Addr().String(), Addr: pub.Addr().String(),
		Logs: logs, Server: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { g.done <- srv.Run(ctx, pub, adm) }()
	t.Cleanup(func() {
		if err := g.Stop(); err != nil {
			t.Errorf("Run returned %v", err)
		}
	})
	return g
}

// loadResult is what a load run saw.
type loadResult struct {
	byStatus map[int]int
	errors   int // transport errors
	latency  []time.Duration
	elapsed  time.Duration
}

func (r loadResult) max() time.Duration {
	if len(r.latency) == 0 {
		return 0
	}
	return r.latency[len(r.latency)-1]
}

func (r loadResult) pct(p float64) time.Duration {
	if len(r.latency) == 0 {
		return 0
	}
	return r.latency[int(float64(len(r.latency)-1)*p)]
}

// load sends POST /v1/chat with partnerKey from workers goroutines, round
// robin over gws, for d; during is called (if not nil) in its own goroutine
// at the start.
func load(t *testing.T, gws []*testGateway, workers int, d time.Duration, during func()) loadResult {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}, Timeout: 5 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	var (
		mu   sync.Mutex
		res  = loadResult{byStatus: map[int]int{}}
		next atomic.Uint64
		wg   sync.WaitGroup
	)
	start := time.Now()
	stop := start.Add(d)
	if during != nil {
		go during()
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				g := gws[next.Add(1)%uint64(len(gws))]
				req, _ := http.NewRequest("POST", g.URL+"/v1/chat", strings.NewReader(`{"messages":[]}`))
				req.Header.Set("Authorization", "Bearer "+partnerKey)
				t0 := time.Now()
				resp, err := c.Do(req)
				lat := time.Since(t0)
				code := 0
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				mu.Lock()
				res.latency = append(res.latency, lat)
				if err != nil {
					res.errors++
				} else {
					res.byStatus[code]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	sort.Slice(res.latency, func(i, j int) bool { return res.latency[i] < res.latency[j] })
	return res
}

// storeState reads limits_store.state from g's /readyz.
func storeState(t *testing.T, g *testGateway) string {
	t.Helper()
	st, _ := storeStatus(t, g)
	return st
}

// storeStatus reads limits_store's state and failure count from g's
// /readyz.
func storeStatus(t *testing.T, g *testGateway) (string, int) {
	t.Helper()
	resp, err := http.Get(g.Admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		LimitsStore struct {
			State    string
			Failures int
		} `json:"limits_store"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.LimitsStore.State, body.LimitsStore.Failures
}

// TestDrillSharedLimitAcrossReplicas: one identity's load spread over three
// replicas is admitted at the configured rate in total, not three times it.
func TestDrillSharedLimitAcrossReplicas(t *testing.T) {
	srv := redistest.Start(t)
	const rate, burst = 50, 10
	// A generous timeout: this drill checks the counting, not the
	// fallback, and a loaded CI machine must not trip on_error.
	gws := startReplicasTimeout(t, 3, srv.URL(), "local", "{ per_identity: 50/s, burst: 10 }", time.Second)
	res := load(t, gws, 6, 2*time.Second, nil)
	for _, g := range gws {
		if st, n := storeStatus(t, g); st != "ok" || n != 0 {
			t.Errorf("%s: store %s with %d failures during the drill", g.Addr, st, n)
		}
	}
	admitted, limited := res.byStatus[200], res.byStatus[429]
	allowed := int(float64(rate)*res.elapsed.Seconds()) + burst
	perReplica := 3 * allowed
	t.Logf("3 replicas, 50/s burst 10, %v: admitted %d, refused %d, transport errors %d; shared limit allows %d; per-replica limits would allow %d; p50 %v p99 %v max %v",
		res.elapsed.Round(time.Millisecond), admitted, limited, res.errors, allowed, perReplica, res.pct(.5), res.pct(.99), res.max())
	if res.errors > 0 || admitted+limited != len(res.latency) {
		t.Errorf("unexpected answers: %v, %d transport errors", res.byStatus, res.errors)
	}
	if admitted > allowed+1 {
		t.Errorf("admitted %d, more than rate × elapsed + burst = %d", admitted, allowed)
	}
	if admitted < allowed*7/10 {
		t.Errorf("admitted %d, far below the %d the limit allows", admitted, allowed)
	}
	if limited == 0 {
		t.Error("no request was refused: the load did not reach the limit")
	}
}

// TestDrillStoreKilledLocal: Redis killed under load with on_error local:
// no request fails, none waits longer than the store timeout + 50 ms; once
// Redis is back, the shared limit holds again.
func TestDrillStoreKilledLocal(t *testing.T) {
	srv := redistest.Start(t)
	gws := startReplicas(t, 3, srv.URL(), "local", "{ per_identity: 100000/s, burst: 100000 }")
	base := load(t, gws, 6, 500*time.Millisecond, nil)
	res := load(t, gws, 6, 1500*time.Millisecond, func() {
		time.Sleep(300 * time.Millisecond)
		srv.Kill()
	})
	checkOutage(t, "Redis killed after 300ms of 1.5s load, on_error local", base, res)
	for _, g := range gws {
		if s := storeState(t, g); s != "degraded" {
			t.Errorf("%s /readyz limits_store = %q, want degraded", g.Addr, s)
		}
	}

	srv.Restart(t)
	restarted := time.Now()
	waitFor(t, 10*time.Second, "every replica's store to be ok again", func() bool {
		for _, g := range gws {
			if storeState(t, g) != "ok" {
				return false
			}
		}
		return true
	})
	t.Logf("shared limiting resumed %v after Redis restarted", time.Since(restarted).Round(time.Millisecond))
}

// TestDrillStoreResumes: after a restart the budget is shared again: a
// burst of 5 across three replicas admits 5, not 15.
func TestDrillStoreResumes(t *testing.T) {
	srv := redistest.Start(t)
	gws := startReplicas(t, 3, srv.URL(), "local", "{ per_identity: 5/m, burst: 5 }")
	srv.Kill()
	load(t, gws, 1, 100*time.Millisecond, nil) // fail over to local counting
	srv.Restart(t)
	waitFor(t, 10*time.Second, "every replica's store to be ok again", func() bool {
		for _, g := range gws {
			if storeState(t, g) != "ok" {
				return false
			}
		}
		return true
	})
	res := load(t, gws, 3, 300*time.Millisecond, nil)
	t.Logf("after restart, 5/m burst 5 over 3 replicas: %v", res.byStatus)
	if res.byStatus[200] != 5 {
		t.Errorf("admitted %d after Redis came back, want 5 (one shared budget)", res.byStatus[200])
	}
}

// TestDrillStoreKilledDeny: on_error deny answers quick 503s, no hangs.
func TestDrillStoreKilledDeny(t *testing.T) {
	srv := redistest.Start(t)
	gws := startReplicas(t, 3, srv.URL(), "deny", "{ per_identity: 100000/s, burst: 100000 }")
	base := load(t, gws, 6, 500*time.Millisecond, nil)
	srv.Kill()
	res := load(t, gws, 6, 1000*time.Millisecond, nil)
	t.Logf("healthy store: %d requests, p50 %v p99 %v max %v", len(base.latency), base.pct(.5), base.pct(.99), base.max())
	t.Logf("Redis down, on_error deny: %v, p50 %v p99 %v max %v", res.byStatus, res.pct(.5), res.pct(.99), res.max())
	if res.errors > 0 || res.byStatus[503] != len(res.latency) {
		t.Errorf("want only 503s: %v, %d transport errors", res.byStatus, res.errors)
	}
	if bound := storeTimeout + 50*time.Millisecond + base.max(); res.max() > bound {
		t.Errorf("slowest 503 took %v, want ≤ timeout %v + 50ms + the healthy run's slowest %v", res.max(), storeTimeout, base.max())
	}
}

// TestDrillStorePaused: a Redis that accepts connections and never answers
// (SIGSTOP) holds no request longer than the timeout + 50 ms.
func TestDrillStorePaused(t *testing.T) {
	srv := redistest.Start(t)
	gws := startReplicas(t, 3, srv.URL(), "local", "{ per_identity: 100000/s, burst: 100000 }")
	base := load(t, gws, 6, 500*time.Millisecond, nil)
	srv.Pause()
	t.Cleanup(srv.Resume)
	res := load(t, gws, 6, 2500*time.Millisecond, nil)
	checkOutage(t, "Redis paused (SIGSTOP), on_error local", base, res)
	slow := 0
	for _, d := range res.latency {
		if d > storeTimeout {
			slow++
		}
	}
	t.Logf("requests slower than the timeout %v: %d of %d", storeTimeout, slow, len(res.latency))
}

// TestDrillTokensAcrossReplicas: a token limit counted in the store holds
// across three replicas: answers of 30 tokens against 100 a minute admit
// four requests (the fourth overshoots by its own usage), then 429s with
// Retry-After, whichever replica is asked.
func TestDrillTokensAcrossReplicas(t *testing.T) {
	srv := redistest.Start(t)
	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":10,"total_tokens":30}}`))
	}))
	t.Cleanup(model.Close)
	b := newConfig().Partners().Upstream("model", model.URL, "{ type: none }").Route("chat", "/v1", "model", "key_set: partners")
	b.routes[len(b.routes)-1] += "    token_limit: { per_minute: 100 }\n"
	var gws []*testGateway
	for range 3 {
		gws = append(gws, startWithText(t, func(listen, admin string) string {
			return b.YAML(listen, admin) + "limits:\n  store: { type: redis, url: \"" + srv.URL() + "\" }\n"
		}))
	}
	// Start early in a minute, so the requests share one window.
	if s := time.Now().Second(); s > 50 {
		time.Sleep(time.Duration(61-s) * time.Second)
	}
	var codes []int
	var remaining []string
	for i := range 7 {
		req, _ := http.NewRequest("POST", gws[i%3].URL+"/v1/chat", strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer "+partnerKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
		remaining = append(remaining, resp.Header.Get("X-Ratelimit-Remaining-Tokens"))
		if resp.StatusCode == 429 && resp.Header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
	}
	t.Logf("100 tokens/min, 30 per answer, round robin over 3 replicas: statuses %v, remaining %v", codes, remaining)
	want := []int{200, 200, 200, 200, 429, 429, 429}
	for i := range want {
		if codes[i] != want[i] {
			t.Fatalf("statuses %v, want %v (one shared budget)", codes, want)
		}
	}
	if lines := gws[0].Logs.String(); !strings.Contains(lines, `"total_tokens":30`) {
		t.Errorf("audit lines lack usage:\n%s", lines)
	}
}

// checkOutage: during a store outage with on_error local every request
// succeeds, and none waits longer than the store timeout + 50 ms beyond the
// slowest request of the healthy run before it (base).
func checkOutage(t *testing.T, what string, base, res loadResult) {
	t.Helper()
	t.Logf("healthy store: %d requests, p50 %v p99 %v max %v", len(base.latency), base.pct(.5), base.pct(.99), base.max())
	t.Logf("%s: %v, %d transport errors, p50 %v p99 %v max %v", what, res.byStatus, res.errors, res.pct(.5), res.pct(.99), res.max())
	if res.errors > 0 || res.byStatus[200] != len(res.latency) {
		t.Errorf("failed requests: %v, %d transport errors", res.byStatus, res.errors)
	}
	if bound := storeTimeout + 50*time.Millisecond + base.max(); res.max() > bound {
		t.Errorf("slowest request %v, want ≤ timeout %v + 50ms + the healthy run's slowest %v", res.max(), storeTimeout, base.max())
	}
}
