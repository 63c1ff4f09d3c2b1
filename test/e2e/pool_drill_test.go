package e2e

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	azpolicy "github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/modelgate/modelgate/gateway"
	"github.com/modelgate/modelgate/test/fakeazure"
)

// Drills: a pool under the failures it exists for, through the real
// gateway. The region-outage drill takes one region's token service down
// for longer than its credential lives; the chaos drill kills, restarts and
// throttles backends at random under paced traffic.

// TestPoolDrillRegionOutage: two regions, each a workspace with its own
// AML token API (separate fake control planes) and its own scoring
// endpoint, serve one model as an aml_service_token pool, westeurope
// preferred. Westeurope's token API goes down and stays down past its
// token's expiry on the fake clock: traffic fails over to northeurope with
// no failed request, /readyz keeps the route in service as degraded, and
// traffic returns to westeurope once its token API is back.
func TestPoolDrillRegionOutage(t *testing.T) {
	t.Parallel()
	const (
		step    = 10 * time.Second
		down    = 30 * time.Second // the outage starts
		up      = 5 * time.Minute  // and ends: well past the token's life
		horizon = up + 4*time.Minute
	)
	w := newAzureWorld(t)
	type region struct {
		name, ws string
		aml      *fakeazure.AML
		dep      *fakeazure.Deployment
		up       *fakeazure.Upstream
	}
	regions := []*region{{name: "weu", ws: "ws-weu"}, {name: "neu", ws: "ws-neu"}}
	lines := []string{"backends:"}
	for i, r := range regions {
		r.aml = fakeazure.NewAML(t, w.aad)
		r.dep = r.aml.AddService(wsSub, wsRG, r.ws, "churn")
		r.dep.SetTokenLifetime(upTokenLifetime, upRefreshAfter)
		r.up = fakeazure.NewUpstream(t, r.dep.Accepts)
		ws := fmt.Sprintf(`{ subscription_id: %q, resource_group: %q, name: %q, api_host: %q, management_host: %q }`,
			wsSub, wsRG, r.ws, r.aml.URL(), r.aml.URL())
		lines = append(lines, fmt.Sprintf(`  - { name: %s, url: %q, priority: %d, auth: { type: aml_service_token, credential: ml-sp, service: churn, workspace: %s } }`,
			r.name, r.up.URL()+"/score", i+1, ws))
	}
	weu, neu := regions[0], regions[1]
	cfg := newConfig().Server("shutdown_timeout: 2s").Partners().Credential("ml-sp", w.credYAML).
		PoolUpstream("churn", lines...).Route("churn", "/churn", "churn", allowPartners)
	g := startGatewayWith(t, cfg, azureEnv, gateway.Deps{
		HTTPClient: w.http, Transport: w.transport, Clock: w.clock, Refresh: w.refresh,
		AzureRetry: azpolicy.RetryOptions{MaxRetries: -1},
	})
	w.waitReady(g)

	served := func(r *region) int { n, _ := r.up.Counts(); return n }
	var sent, failed int
	var failedAt []string
	servedBy := map[string][]time.Duration{}
	degradedSeen := false
	for at := time.Duration(0); at <= horizon; at += step {
		switch at {
		case down:
			weu.aml.SetOutage(true)
		case up:
			weu.aml.SetOutage(false)
		}
		// A few requests at each instant, as steady traffic would send.
		for i := range 3 {
			before := [2]int{served(weu), served(neu)}
			body := []byte(fmt.Sprintf(`{"at":%q,"i":%d}`, at, i))
			resp := do(t, client(), g.URL, request{method: http.MethodPost, path: "/churn/score",
				header: bearer(partnerKey), body: bytes.NewReader(body)})
			sent++
			if resp.status != http.StatusOK || !bytes.Equal(resp.body, body) {
				failed++
				failedAt = append(failedAt, fmt.Sprintf("%v: %d %s", at, resp.status, resp.body))
				continue
			}
			switch {
			case served(weu) > before[0]:
				servedBy["weu"] = append(servedBy["weu"], at)
			case served(neu) > before[1]:
				servedBy["neu"] = append(servedBy["neu"], at)
			}
		}
		if at > up-time.Minute && at < up {
			// Deep in the outage: weu's token has expired.
			st, rep, raw := readyz(t, g)
			rs := rep.Routes["churn"]
			if st != http.StatusOK || rs.State != gateway.RouteDegraded || !strings.Contains(strings.Join(rs.Reasons, " "), "backend weu") {
				t.Errorf("at %v: /readyz %d churn %+v, want 200 with churn degraded naming weu", at, st, rs)
			} else {
				degradedSeen = true
			}
			if s := credentialStatus(t, rep, "churn/weu"); s.Ready {
				t.Errorf("at %v: churn/weu credential ready during the outage", at)
			}
			if rr := do(t, client(), g.Admin, request{path: "/readyz?route=churn"}); rr.status != http.StatusOK {
				t.Errorf("at %v: /readyz?route=churn %d, want 200 (degraded still serves)", at, rr.status)
			}
			assertNotIn(t, "/readyz", raw, []string{spSecret, partnerKey})
		}
		w.clock.Advance(step)
		// Let the refreshes the advance triggered reach the fakes.
		time.Sleep(20 * time.Millisecond)
	}
	first := func(name string, after time.Duration) time.Duration {
		for _, at := range servedBy[name] {
			if at >= after {
				return at
			}
		}
		return -1
	}
	failover := first("neu", 0)
	back := first("weu", up)
	t.Logf("region-outage drill: %d requests, %d failed; weu served %d, neu served %d; failover to neu at %v (token API down at %v, token life %v); back to weu at %v (token API up at %v)",
		sent, failed, len(servedBy["weu"]), len(servedBy["neu"]), failover, down, upTokenLifetime, back, up)
	if failed > 0 {
		t.Errorf("%d of %d requests failed during the region outage, want 0:\n%s", failed, sent, strings.Join(failedAt, "\n"))
	}
	if failover < down || failover > down+upTokenLifetime {
		t.Errorf("failover to neu at %v, want after the outage began (%v) and by the token's expiry (%v)", failover, down, down+upTokenLifetime)
	}
	if back < 0 || back > up+2*time.Minute {
		t.Errorf("traffic back on weu at %v, want within 2m of its token API's recovery at %v", back, up)
	}
	if n := len(servedBy["weu"]); n == 0 || servedBy["weu"][n-1] != horizon {
		t.Errorf("the last requests did not go to weu: weu served at %v", servedBy["weu"])
	}
	if !degradedSeen {
		t.Error("/readyz never reported churn degraded during the outage")
	}
}

// chaosDuration is how long TestPoolDrillChaos runs:
// MODELGATE_CHAOS_DURATION (a Go duration), default 10s (or 3s with
// -short).
func chaosDuration(t *testing.T) time.Duration {
	if s := os.Getenv("MODELGATE_CHAOS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("MODELGATE_CHAOS_DURATION=%q: want a positive Go duration such as 2m", s)
		}
		return d
	}
	if testing.Short() {
		return 3 * time.Second
	}
	return 10 * time.Second
}

// TestPoolDrillChaos sends paced traffic through a three-backend pool
// while a seeded chaos loop kills (closes the listener and every
// connection), restarts and throttles (429 with Retry-After) backends at
// random, always keeping at least one backend that has been up and
// unthrottled for longer than the breaker's open_for. The target is no
// failed request. MODELGATE_CHAOS_DURATION sets the length,
// MODELGATE_CHAOS_SEED the seed (default 1).
func TestPoolDrillChaos(t *testing.T) {
	t.Parallel()
	duration := chaosDuration(t)
	crash := os.Getenv("MODELGATE_CHAOS_KILL") == "crash"
	seed := uint64(1)
	if s := os.Getenv("MODELGATE_CHAOS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("MODELGATE_CHAOS_SEED=%q: want an unsigned integer", s)
		}
		seed = n
	}
	const (
		openFor = 500 * time.Millisecond
		settle  = openFor + 300*time.Millisecond // up this long counts as available
		clients = 4
		pace    = 10 * time.Millisecond // per client, between requests
	)
	names := []string{"a", "b", "c"}
	backends := make([]*poolBackend, len(names))
	lines := []string{"backends:"}
	for i, n := range names {
		backends[i] = newPoolBackend(t, n)
		lines = append(lines, backendLine(n, backends[i].URL))
	}
	lines = append(lines, "retry: { attempts: 3 }",
		fmt.Sprintf("circuit_breaker: { consecutive_failures: 2, open_for: %v }", openFor))
	g := startPool(t, lines)

	// Chaos state, owned by the chaos loop.
	type state struct {
		killed         bool
		throttledUntil time.Time
		stableSince    time.Time // up and unthrottled since
	}
	st := make([]state, len(names))
	now := time.Now()
	for i := range st {
		st[i].stableSince = now
	}
	var kills, restarts, throttles int
	killedAt := make([][]time.Time, len(names)) // by backend
	stableOthers := func(i int, at time.Time) bool {
		for j := range st {
			if j != i && !st[j].killed && at.After(st[j].throttledUntil) && at.Sub(st[j].stableSince) >= settle {
				return true
			}
		}
		return false
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	stop := make(chan struct{})
	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(100+rng.IntN(300)) * time.Millisecond):
			}
			at := time.Now()
			for i := range st {
				if !st[i].killed && !st[i].throttledUntil.IsZero() && at.After(st[i].throttledUntil) {
					st[i].throttledUntil = time.Time{}
					st[i].stableSince = at
				}
			}
			i := rng.IntN(len(st))
			switch action := rng.IntN(3); {
			case st[i].killed:
				backends[i].start(t)
				st[i].killed, st[i].stableSince = false, time.Now()
				restarts++
			case action == 0 && stableOthers(i, at):
				if crash {
					backends[i].stop()
				} else {
					backends[i].shutdown()
				}
				st[i].killed = true
				killedAt[i] = append(killedAt[i], time.Now())
				kills++
			case action == 1 && stableOthers(i, at) && st[i].throttledUntil.IsZero():
				wait := time.Duration(200+rng.IntN(1300)) * time.Millisecond
				st[i].throttledUntil = at.Add(wait)
				var hdr http.Header
				if rng.IntN(2) == 0 {
					hdr = http.Header{"Retry-After-Ms": {strconv.Itoa(int(wait / time.Millisecond))}}
				} else {
					hdr = http.Header{"Retry-After": {strconv.Itoa(int((wait + time.Second - 1) / time.Second))}}
					st[i].throttledUntil = at.Add((wait + time.Second - 1) / time.Second * time.Second)
				}
				until := st[i].throttledUntil
				name := names[i]
				backends[i].set(func(w http.ResponseWriter, r *http.Request, body []byte) {
					if time.Now().Before(until) {
						answer(http.StatusTooManyRequests, func() http.Header { return hdr }, "throttled")(w, r, body)
						return
					}
					answerOK(name)(w, r, body)
				})
				throttles++
			}
		}
	}()

	type failure struct {
		at     time.Duration
		status int
		body   string
		id     string // X-Request-Id
	}
	var sent, retried atomic.Int64
	var mu sync.Mutex
	var failures []failure
	perBackend := map[string]int{}
	start := time.Now()
	deadline := start.Add(duration)
	var wg sync.WaitGroup
	c := client()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				req, _ := http.NewRequest(http.MethodPost, g.URL+"/churn/score", strings.NewReader(`{"chaos":true}`))
				req.Header = bearer(partnerKey)
				resp, err := c.Do(req)
				sent.Add(1)
				var r response
				if err == nil {
					r = response{status: resp.StatusCode, header: resp.Header, body: readBody(resp)}
				}
				mu.Lock()
				switch by := servedBy(r); {
				case err != nil:
					failures = append(failures, failure{time.Since(start), 0, err.Error(), ""})
				case by == "":
					failures = append(failures, failure{time.Since(start), r.status, string(r.body), r.header.Get("X-Request-Id")})
				default:
					perBackend[by]++
				}
				mu.Unlock()
				time.Sleep(pace)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-chaosDone
	elapsed := time.Since(start)

	for _, l := range g.Logs.RequestLines(t) {
		if n, _ := l["tries"].(float64); n > 1 {
			retried.Add(1)
		}
	}
	dist := make([]string, 0, len(names))
	for _, n := range names {
		dist = append(dist, fmt.Sprintf("%s %d", n, perBackend[n]))
	}
	// Classify each failure by what the gateway logged for it: a
	// connection the backend closed under a request that had been sent
	// (EOF, reset, broken pipe, a closed connection, or net/http's "server closed idle
	// connection" on a reused connection), on a backend the chaos loop
	// had just stopped, is a kill race. The pool retries most of these as
	// connect_error; those it does not are reported apart. Anything else
	// is a failure while a backend was available.
	upErr := map[string]string{}
	for _, l := range g.Logs.Lines(t) {
		if l["msg"] == "upstream error" {
			id, _ := l["request_id"].(string)
			upErr[id], _ = l["error"].(string)
		}
	}
	backendOf := map[string]string{}
	for _, l := range g.Logs.RequestLines(t) {
		id, _ := l["request_id"].(string)
		backendOf[id], _ = l["backend"].(string)
	}
	closedUnder := func(e string) bool {
		for _, s := range []string{"EOF", "connection reset by peer", "broken pipe", "server closed idle connection", "use of closed network connection"} {
			if strings.Contains(e, s) {
				return true
			}
		}
		return false
	}
	justKilled := func(name string, at time.Duration) bool {
		for i, n := range names {
			if n != name {
				continue
			}
			for _, k := range killedAt[i] {
				if d := start.Add(at).Sub(k); d >= 0 && d < time.Second {
					return true
				}
			}
		}
		return false
	}
	var races []string
	var others []failure
	for _, f := range failures {
		if e := upErr[f.id]; f.status == http.StatusBadGateway && closedUnder(e) && justKilled(backendOf[f.id], f.at) {
			races = append(races, backendOf[f.id]+": "+e)
			continue
		}
		others = append(others, f)
	}
	t.Logf("chaos drill (seed %d, kill %s, %v, %d clients every %v): %d sent, %d failed (%d while a backend was available, %d kill races), %d retried; served: %s; chaos: %d kills, %d restarts, %d throttles",
		seed, map[bool]string{true: "crash", false: "shutdown"}[crash], elapsed.Round(time.Millisecond), clients, pace,
		sent.Load(), len(failures), len(others), len(races), retried.Load(), strings.Join(dist, ", "), kills, restarts, throttles)
	if len(races) > 0 {
		t.Logf("kill races (502, not retried: a connection closed under a sent request): %s", strings.Join(races, "; "))
	}
	if len(others) > 0 {
		show := others
		if len(show) > 10 {
			show = show[:10]
		}
		t.Errorf("%d of %d requests failed while a backend was available; first: %+v", len(others), sent.Load(), show)
		for _, f := range show {
			t.Logf("gateway on %s: backend %q: %s", f.id, backendOf[f.id], upErr[f.id])
		}
	}
	for _, n := range names {
		if perBackend[n] == 0 {
			t.Errorf("backend %s served nothing: the pool did not spread the traffic", n)
		}
	}
}
