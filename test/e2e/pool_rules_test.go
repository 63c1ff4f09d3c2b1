package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelgate/modelgate/gateway"
	"github.com/modelgate/modelgate/metrics"
	"github.com/modelgate/modelgate/test/upstream"
)

// The rules of DESIGN.md "Backend pools" ("Rules users rely on" and
// "Details that are easy to get subtly wrong"), each checked through the
// real gateway (config.Parse, gateway.Build, Server.Run) against real
// backends on loopback: servers that refuse connections, throttle, hang,
// cut a stream, or answer an error of their own.

// poolBackend is a fake scoring backend on a fixed loopback port that a
// test programs (behave), stops (the port then refuses connections, as a
// crashed process's would) and restarts on the same port. It records every
// request it read.
type poolBackend struct {
	name string
	addr string
	// URL is the base URL, http://127.0.0.1:port.
	URL string

	hits   atomic.Int64
	behave atomic.Pointer[behaviour]

	mu   sync.Mutex
	srv  *http.Server
	reqs []seenRequest
}

// behaviour answers a request whose body has been read.
type behaviour func(w http.ResponseWriter, r *http.Request, body []byte)

// seenRequest is what a backend received.
type seenRequest struct {
	body             []byte
	contentLength    int64
	transferEncoding []string
	header           http.Header
}

// newPoolBackend starts a backend answering 200 {"backend":"NAME"}.
func newPoolBackend(t testing.TB, name string) *poolBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	b := &poolBackend{name: name, addr: ln.Addr().String()}
	b.URL = "http://" + b.addr
	b.set(answerOK(name))
	b.serve(ln)
	t.Cleanup(b.stop)
	return b
}

func (b *poolBackend) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(b.handle), ReadHeaderTimeout: 5 * time.Second}
	b.mu.Lock()
	b.srv = srv
	b.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

func (b *poolBackend) handle(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	b.mu.Lock()
	b.reqs = append(b.reqs, seenRequest{body: body, contentLength: r.ContentLength,
		transferEncoding: r.TransferEncoding, header: r.Header.Clone()})
	b.mu.Unlock()
	b.hits.Add(1)
	(*b.behave.Load())(w, r, body)
}

// set makes the backend answer with f from now on.
func (b *poolBackend) set(f behaviour) { b.behave.Store(&f) }

// stop closes the listener and every connection: the port refuses
// connections until start.
func (b *poolBackend) stop() {
	b.mu.Lock()
	srv := b.srv
	b.srv = nil
	b.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// shutdown stops the backend as a process that is being stopped does:
// the port refuses new connections at once, idle connections close, and
// requests in flight get their answers (then their connections close).
func (b *poolBackend) shutdown() {
	b.mu.Lock()
	srv := b.srv
	b.srv = nil
	b.mu.Unlock()
	if srv != nil {
		srv.SetKeepAlivesEnabled(false)
		go func() { _ = srv.Shutdown(context.Background()) }()
	}
}

// start listens on the backend's port again.
func (b *poolBackend) start(t testing.TB) {
	t.Helper()
	var ln net.Listener
	var err error
	for range 100 {
		if ln, err = net.Listen("tcp", b.addr); err == nil {
			b.serve(ln)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("restart %s on %s: %v", b.name, b.addr, err)
}

// requests returns what the backend received so far.
func (b *poolBackend) requests() []seenRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]seenRequest(nil), b.reqs...)
}

// answerOK answers 200 {"backend":"NAME"}.
func answerOK(name string) behaviour {
	return func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"backend":"`+name+`"}`)
	}
}

// answer answers status with header h (evaluated per request, so an HTTP
// date can be relative to the answer) and body.
func answer(status int, h func() http.Header, body string) behaviour {
	return func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		if h != nil {
			for k, v := range h() {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// once answers the first request with first and every later one with rest.
func once(first, rest behaviour) behaviour {
	var done atomic.Bool
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		if done.CompareAndSwap(false, true) {
			first(w, r, body)
			return
		}
		rest(w, r, body)
	}
}

// hang never answers: it waits until the gateway gives up on the request.
func hang(w http.ResponseWriter, r *http.Request, _ []byte) { <-r.Context().Done() }

// backendLine is one backends: entry.
func backendLine(name, url string, fields ...string) string {
	extra := ""
	if len(fields) > 0 {
		extra = ", " + strings.Join(fields, ", ")
	}
	return fmt.Sprintf("  - { name: %s, url: %q, auth: %s%s }", name, url, upstreamKeyAuth, extra)
}

// startPool runs a gateway (with metrics) whose route /churn is served by
// pool churn; lines are the pool's YAML. server adds server fields.
func startPool(t testing.TB, lines []string, server ...string) *testGateway {
	t.Helper()
	cfg := newConfig().Server(server...).Partners().PoolUpstream("churn", lines...).
		Route("churn", "/churn", "churn", allowPartners)
	return startGatewayWith(t, cfg, nil, gateway.Deps{Metrics: metrics.New("test")})
}

// score POSTs body to /churn/score with the partner key.
func score(t testing.TB, g *testGateway, body string) response {
	t.Helper()
	return do(t, client(), g.URL, request{method: http.MethodPost, path: "/churn/score", header: bearer(partnerKey), body: strings.NewReader(body)})
}

// servedBy reports which backend's 200 answerOK body r carries ("" if
// none).
func servedBy(r response) string {
	if r.status != http.StatusOK {
		return ""
	}
	if m := regexp.MustCompile(`"backend":"([^"]+)"`).FindSubmatch(r.body); m != nil {
		return string(m[1])
	}
	return ""
}

// audit returns the audit line of answer r.
func (g *testGateway) audit(t testing.TB, r response) map[string]any {
	t.Helper()
	return g.requestLine(t, r.header.Get("X-Request-Id"))
}

// tries returns an audit line's tries as an int.
func tries(line map[string]any) int {
	f, _ := line["tries"].(float64)
	return int(f)
}

// TestPoolRules checks each rule of DESIGN.md "Backend pools" once; the
// subtest names quote the rule.
func TestPoolRules(t *testing.T) {
	t.Parallel()

	t.Run("selection: smooth weighted round robin inside a priority; weight 0 takes no normal traffic", func(t *testing.T) {
		t.Parallel()
		a, b, c := newPoolBackend(t, "a"), newPoolBackend(t, "b"), newPoolBackend(t, "c")
		g := startPool(t, []string{"backends:",
			backendLine("a", a.URL, "weight: 3"),
			backendLine("b", b.URL, "weight: 1"),
			backendLine("c", c.URL, "weight: 0"),
		})
		var order strings.Builder
		for range 40 {
			r := score(t, g, `{}`)
			if r.status != http.StatusOK {
				t.Fatalf("healthy pool: %d %s", r.status, r.body)
			}
			order.WriteString(servedBy(r))
		}
		if a.hits.Load() != 30 || b.hits.Load() != 10 || c.hits.Load() != 0 {
			t.Errorf("hits a=%d b=%d c=%d, want 30 10 0 (weights 3, 1, 0)", a.hits.Load(), b.hits.Load(), c.hits.Load())
		}
		// Smooth: never more than three a's in a row.
		if strings.Contains(order.String(), "aaaa") {
			t.Errorf("order %s has a burst: smooth weighted round robin interleaves", order.String())
		}
	})

	t.Run("selection: the lowest priority with an available backend; failover and return", func(t *testing.T) {
		t.Parallel()
		a, b := newPoolBackend(t, "a"), newPoolBackend(t, "b")
		g := startPool(t, []string{"backends:",
			backendLine("a", a.URL, "priority: 1"),
			backendLine("b", b.URL, "priority: 2"),
			"circuit_breaker: { consecutive_failures: 1, open_for: 1s }",
		})
		for range 3 {
			if r := score(t, g, `{}`); servedBy(r) != "a" {
				t.Fatalf("priority 1 healthy: served by %q (%d), want a", servedBy(r), r.status)
			}
		}
		a.stop()
		r := score(t, g, `{}`)
		if servedBy(r) != "b" || tries(g.audit(t, r)) != 2 {
			t.Fatalf("priority 1 refusing: served by %q (%d %s), tries %v; want b after 2 tries", servedBy(r), r.status, r.body, g.audit(t, r)["tries"])
		}
		r = score(t, g, `{}`)
		if servedBy(r) != "b" || tries(g.audit(t, r)) != 1 {
			t.Fatalf("priority 1 open: served by %q, tries %v; want b at once", servedBy(r), g.audit(t, r)["tries"])
		}
		a.start(t)
		start := time.Now()
		waitFor(t, 4*time.Second, "traffic to return to priority 1", func() bool { return servedBy(score(t, g, `{}`)) == "a" })
		t.Logf("returned to priority 1 %v after its restart (open_for 1s)", time.Since(start).Round(10*time.Millisecond))
	})

	t.Run("a 429 or 503 with Retry-After opens the backend for that long, capped by max_open_for, and no longer", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name     string
			status   int
			header   func() http.Header
			breaker  string
			min, max time.Duration
		}{
			{name: "429 Retry-After seconds", status: 429, header: func() http.Header { return http.Header{"Retry-After": {"1"}} }, min: time.Second, max: 2 * time.Second},
			{name: "429 Retry-After HTTP date", status: 429, header: func() http.Header {
				return http.Header{"Retry-After": {time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat)}}
			}, min: time.Second, max: 3 * time.Second},
			{name: "429 retry-after-ms", status: 429, header: func() http.Header { return http.Header{"Retry-After-Ms": {"700"}} }, min: 700 * time.Millisecond, max: 1700 * time.Millisecond},
			{name: "429 x-ms-retry-after-ms", status: 429, header: func() http.Header { return http.Header{"X-Ms-Retry-After-Ms": {"700"}} }, min: 700 * time.Millisecond, max: 1700 * time.Millisecond},
			{name: "503 Retry-After seconds", status: 503, header: func() http.Header { return http.Header{"Retry-After": {"1"}} }, min: time.Second, max: 2 * time.Second},
			{name: "429 Retry-After of an hour capped by max_open_for", status: 429, header: func() http.Header { return http.Header{"Retry-After": {"3600"}} },
				breaker: "circuit_breaker: { consecutive_failures: 1, open_for: 1s, max_open_for: 1s }", min: time.Second, max: 2 * time.Second},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				a, b := newPoolBackend(t, "a"), newPoolBackend(t, "b")
				a.set(once(answer(tt.status, tt.header, `{"error":"busy"}`), answerOK("a")))
				// One counted failure would open a for a minute: the
				// throttle must not count as one.
				breaker := "circuit_breaker: { consecutive_failures: 1, open_for: 1m }"
				if tt.breaker != "" {
					breaker = tt.breaker
				}
				g := startPool(t, []string{"backends:",
					backendLine("a", a.URL, "priority: 1"),
					backendLine("b", b.URL, "priority: 2"),
					breaker,
				})
				before := time.Now()
				if r := score(t, g, `{}`); servedBy(r) != "b" {
					t.Fatalf("throttled a: %d %s, want b's 200 (the caller never sees a's %d)", r.status, r.body, tt.status)
				}
				after := time.Now()
				var back time.Time
				for time.Since(after) < tt.max+time.Second {
					r := score(t, g, `{}`)
					if s := servedBy(r); s == "a" {
						back = time.Now()
						break
					} else if s != "b" {
						t.Fatalf("while a is throttled: %d %s", r.status, r.body)
					}
					time.Sleep(20 * time.Millisecond)
				}
				switch {
				case back.IsZero():
					t.Fatalf("a still skipped %v after its Retry-After (want back within %v)", time.Since(after), tt.max)
				case back.Sub(before) < tt.min:
					t.Errorf("a back after %v, before its Retry-After %v", back.Sub(before), tt.min)
				case back.Sub(after) > tt.max+700*time.Millisecond: // polling and a loaded machine
					t.Errorf("a back after %v, want at most %v", back.Sub(after), tt.max)
				}
			})
		}
	})

	t.Run("a streamed answer is never retried once started: the client sees the stream cut", func(t *testing.T) {
		t.Parallel()
		a, b := newPoolBackend(t, "a"), newPoolBackend(t, "b")
		a.set(func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, "data: first\n\n")
			w.(http.Flusher).Flush()
			time.Sleep(50 * time.Millisecond)
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		})
		g := startPool(t, []string{"backends:",
			backendLine("a", a.URL, "priority: 1"),
			backendLine("b", b.URL, "priority: 2"),
			"retry: { attempts: 2, on: [connect_error, timeout, 429, 500, 502, 503, 504] }",
		})
		req, _ := http.NewRequest(http.MethodPost, g.URL+"/churn/score", strings.NewReader(`{}`))
		req.Header = bearer(partnerKey)
		resp, err := client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		rd := bufio.NewReader(resp.Body)
		first, err := rd.ReadString('\n')
		if resp.StatusCode != 200 || first != "data: first\n" || err != nil {
			t.Fatalf("stream start: %d %q %v", resp.StatusCode, first, err)
		}
		rest, err := io.ReadAll(rd)
		if err == nil {
			t.Fatalf("the stream ended cleanly (%q): the client must see it cut", rest)
		}
		if strings.Contains(string(rest), "backend") {
			t.Errorf("the stream went on with another backend's answer: %q", rest)
		}
		if b.hits.Load() != 0 {
			t.Errorf("b got %d tries after a's answer started", b.hits.Load())
		}
		line := g.requestLine(t, resp.Header.Get("X-Request-Id"))
		if tries(line) != 1 || line["backend"] != "a" {
			t.Errorf("audit backend=%v tries=%v, want a, 1", line["backend"], line["tries"])
		}
	})

	t.Run("per_try_timeout: a hung backend is retried only when timeout is listed", func(t *testing.T) {
		t.Parallel()
		for _, listed := range []bool{true, false} {
			t.Run(fmt.Sprintf("listed=%v", listed), func(t *testing.T) {
				t.Parallel()
				a, b := newPoolBackend(t, "a"), newPoolBackend(t, "b")
				a.set(hang)
				on := "[connect_error, 429, 503]"
				if listed {
					on = "[connect_error, timeout, 429, 503]"
				}
				g := startPool(t, []string{"backends:",
					backendLine("a", a.URL, "priority: 1"),
					backendLine("b", b.URL, "priority: 2"),
					"retry: { attempts: 2, on: " + on + ", per_try_timeout: 500ms }",
				})
				start := time.Now()
				r := score(t, g, `{}`)
				took := time.Since(start)
				if took > 3*time.Second {
					t.Errorf("answer took %v with per_try_timeout 500ms", took)
				}
				if listed {
					if servedBy(r) != "b" || tries(g.audit(t, r)) != 2 {
						t.Errorf("timeout listed: %d %s tries %v, want b after 2 tries", r.status, r.body, g.audit(t, r)["tries"])
					}
					return
				}
				if r.status != http.StatusGatewayTimeout || decodeError(t, r.body).Error.Code != "upstream_timeout" || b.hits.Load() != 0 {
					t.Errorf("timeout not listed: %d %s, b hits %d; want 504 upstream_timeout and no retry", r.status, r.body, b.hits.Load())
				}
			})
		}
	})

	t.Run("500/502/504 are not retried unless listed, and reach the client with status and body unchanged", func(t *testing.T) {
		t.Parallel()
		for _, status := range []int{500, 502, 504} {
			for _, listed := range []bool{false, true} {
				t.Run(fmt.Sprintf("%d listed=%v", status, listed), func(t *testing.T) {
					t.Parallel()
					a, b := newPoolBackend(t, "a"), newPoolBackend(t, "b")
					body := fmt.Sprintf(`{"model_error":"failed with %d","detail":"the model's own words"}`, status)
					a.set(answer(status, func() http.Header {
						return http.Header{"Content-Type": {"application/json"}, "X-Model-Error": {"kept"}}
					}, body))
					lines := []string{"backends:",
						backendLine("a", a.URL, "priority: 1"),
						backendLine("b", b.URL, "priority: 2"),
					}
					if listed {
						lines = append(lines, fmt.Sprintf(`retry: { on: [connect_error, "%d"] }`, status))
					}
					g := startPool(t, lines)
					r := score(t, g, `{}`)
					if listed {
						if servedBy(r) != "b" {
							t.Errorf("%d listed: %d %s, want b's 200", status, r.status, r.body)
						}
						return
					}
					if r.status != status || string(r.body) != body || r.header.Get("X-Model-Error") != "kept" {
						t.Errorf("got %d %q X-Model-Error=%q, want a's %d %q unchanged", r.status, r.body, r.header.Get("X-Model-Error"), status, body)
					}
					if b.hits.Load() != 0 {
						t.Errorf("b got %d tries: %d is not retried unless listed", b.hits.Load(), status)
					}
				})
			}
		}
	})

	t.Run(`retry.on accepts statuses written as numbers or strings (429 or "429")`, func(t *testing.T) {
		t.Parallel()
		a, b := newPoolBackend(t, "a"), newPoolBackend(t, "b")
		g := startPool(t, []string{"backends:",
			backendLine("a", a.URL, "priority: 1"),
			backendLine("b", b.URL, "priority: 2"),
			`retry: { on: [429, "503"] }`,
			"circuit_breaker: { consecutive_failures: 10 }",
		})
		for _, status := range []int{429, 503} {
			a.set(answer(status, nil, "busy"))
			if r := score(t, g, `{}`); servedBy(r) != "b" {
				t.Errorf("a answers %d: client got %d %s, want b's 200", status, r.status, r.body)
			}
		}
	})

	t.Run("a retry goes to another backend of the same priority first, a lower one only when none is left", func(t *testing.T) {
		t.Parallel()
		b, c := newPoolBackend(t, "b"), newPoolBackend(t, "c")
		g := startPool(t, []string{"backends:",
			backendLine("a", upstream.ClosedURL(t), "priority: 1"),
			backendLine("b", b.URL, "priority: 1"),
			backendLine("c", c.URL, "priority: 2"),
			"circuit_breaker: { consecutive_failures: 100 }",
		})
		for range 10 {
			if r := score(t, g, `{}`); servedBy(r) != "b" {
				t.Fatalf("a refusing: %d %s, want b (same priority)", r.status, r.body)
			}
		}
		if c.hits.Load() != 0 {
			t.Errorf("c (priority 2) got %d tries while b (priority 1) was left", c.hits.Load())
		}
		// Three tries: both of priority 1 fail, then priority 2.
		a2, b2, c2 := newPoolBackend(t, "a"), newPoolBackend(t, "b"), newPoolBackend(t, "c")
		a2.set(answer(503, nil, "down"))
		b2.set(answer(503, nil, "down"))
		g2 := startPool(t, []string{"backends:",
			backendLine("a", a2.URL, "priority: 1"),
			backendLine("b", b2.URL, "priority: 1"),
			backendLine("c", c2.URL, "priority: 2"),
			"retry: { attempts: 3 }",
			"circuit_breaker: { consecutive_failures: 100 }",
		})
		r := score(t, g2, `{}`)
		if servedBy(r) != "c" || a2.hits.Load() != 1 || b2.hits.Load() != 1 || tries(g2.audit(t, r)) != 3 {
			t.Errorf("got %d %s after a=%d b=%d tries=%v, want c after a and b once each (3 tries)", r.status, r.body, a2.hits.Load(), b2.hits.Load(), g2.audit(t, r)["tries"])
		}
	})

	t.Run("a replayed body is byte for byte the original, with the same Content-Length (not re-chunked)", func(t *testing.T) {
		t.Parallel()
		body := make([]byte, 200<<10)
		_, _ = rand.Read(body)
		for _, chunked := range []bool{false, true} {
			t.Run(fmt.Sprintf("client chunked=%v", chunked), func(t *testing.T) {
				t.Parallel()
				a, b := newPoolBackend(t, "a"), newPoolBackend(t, "b")
				a.set(answer(503, nil, "down"))
				g := startPool(t, []string{"backends:",
					backendLine("a", a.URL, "priority: 1"),
					backendLine("b", b.URL, "priority: 2"),
				})
				r := do(t, client(), g.URL, request{method: http.MethodPost, path: "/churn/score", header: bearer(partnerKey),
					body: bytes.NewReader(body), chunked: chunked})
				if servedBy(r) != "b" {
					t.Fatalf("got %d %s, want b's 200", r.status, r.body)
				}
				for _, be := range []*poolBackend{a, b} {
					reqs := be.requests()
					if len(reqs) != 1 {
						t.Fatalf("%s got %d requests, want 1", be.name, len(reqs))
					}
					got := reqs[0]
					if !bytes.Equal(got.body, body) {
						t.Errorf("%s got a body of %d bytes that differs from the %d sent", be.name, len(got.body), len(body))
					}
					if got.contentLength != int64(len(body)) || len(got.transferEncoding) != 0 {
						t.Errorf("%s got Content-Length %d Transfer-Encoding %v, want %d and none", be.name, got.contentLength, got.transferEncoding, len(body))
					}
				}
			})
		}
	})

	t.Run("a streamed (unbuffered) request body is never retried", func(t *testing.T) {
		t.Parallel()
		a, b := newPoolBackend(t, "a"), newPoolBackend(t, "b")
		a.set(answer(503, nil, "a is down"))
		g := startPool(t, []string{"backends:",
			backendLine("a", a.URL, "priority: 1"),
			backendLine("b", b.URL, "priority: 2"),
		}, "buffer_body_bytes: 1KiB")
		big := strings.Repeat("x", 64<<10)
		r := score(t, g, big)
		if r.status != 503 || string(r.body) != "a is down" || b.hits.Load() != 0 {
			t.Errorf("got %d %q, b hits %d; want a's 503 unchanged and no retry of an unbuffered body", r.status, r.body, b.hits.Load())
		}
		if reqs := a.requests(); len(reqs) != 1 || len(reqs[0].body) != len(big) {
			t.Errorf("a did not get the streamed body whole")
		}
		// A small (buffered) body on the same route is retried.
		if r := score(t, g, `{}`); servedBy(r) != "b" {
			t.Errorf("buffered body: %d %s, want b's 200", r.status, r.body)
		}
	})

	t.Run("every backend 429: the smallest Retry-After; every backend known unavailable: 503 upstream_unavailable without trying", func(t *testing.T) {
		t.Parallel()
		a, b := newPoolBackend(t, "a"), newPoolBackend(t, "b")
		a.set(answer(429, func() http.Header { return http.Header{"Retry-After": {"9"}} }, "slow down a"))
		b.set(answer(429, func() http.Header { return http.Header{"Retry-After-Ms": {"4000"}} }, "slow down b"))
		g := startPool(t, []string{"backends:",
			backendLine("a", a.URL),
			backendLine("b", b.URL),
		})
		r := score(t, g, `{}`)
		if r.status != 429 || r.header.Get("Retry-After") != "4" {
			t.Fatalf("both 429: %d Retry-After %q, want 429 with the smallest, 4", r.status, r.header.Get("Retry-After"))
		}
		if r.header.Get("Retry-After-Ms") != "" {
			t.Errorf("Retry-After-Ms %q passed on beside the rewritten Retry-After", r.header.Get("Retry-After-Ms"))
		}
		hits := a.hits.Load() + b.hits.Load()
		r = score(t, g, `{}`)
		if r.status != 503 || decodeError(t, r.body).Error.Code != "upstream_unavailable" {
			t.Fatalf("both open: %d %s, want 503 upstream_unavailable", r.status, r.body)
		}
		if ra, _ := strconv.Atoi(r.header.Get("Retry-After")); ra < 3 || ra > 4 {
			t.Errorf("Retry-After %q, want the soonest backend's (4 s from its 429)", r.header.Get("Retry-After"))
		}
		if a.hits.Load()+b.hits.Load() != hits {
			t.Errorf("a known-unavailable pool was tried")
		}
		if line := g.audit(t, r); tries(line) != 0 {
			t.Errorf("audit tries %v, want 0", line["tries"])
		}
	})

	t.Run("a request during which every backend fails gets 502 or 503; then 503 upstream_unavailable without trying", func(t *testing.T) {
		t.Parallel()
		a, b := newPoolBackend(t, "a"), newPoolBackend(t, "b")
		g := startPool(t, []string{"backends:",
			backendLine("a", upstream.ClosedURL(t)),
			backendLine("b", b.URL),
			"circuit_breaker: { consecutive_failures: 1, open_for: 1m }",
		})
		_ = a
		b.set(answer(503, nil, "b is down"))
		r := score(t, g, `{}`)
		if (r.status != 502 && r.status != 503) || tries(g.audit(t, r)) != 2 {
			t.Fatalf("every backend failing: %d %s tries %v, want 502 or 503 after 2 tries", r.status, r.body, g.audit(t, r)["tries"])
		}
		before := b.hits.Load()
		r = score(t, g, `{}`)
		if r.status != 503 || decodeError(t, r.body).Error.Code != "upstream_unavailable" || b.hits.Load() != before {
			t.Fatalf("every backend open: %d %s (b tried %d more), want 503 upstream_unavailable untried", r.status, r.body, b.hits.Load()-before)
		}
		if ra, _ := strconv.Atoi(r.header.Get("Retry-After")); ra < 59 || ra > 60 {
			t.Errorf("Retry-After %q, want open_for's 60", r.header.Get("Retry-After"))
		}
	})

	t.Run("mirror: copies go out, bounded in flight, never delay or fail the main request; only buffered bodies", func(t *testing.T) {
		t.Parallel()
		a, m := newPoolBackend(t, "a"), newPoolBackend(t, "shadow")
		release := make(chan struct{})
		m.set(func(w http.ResponseWriter, r *http.Request, _ []byte) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			w.WriteHeader(500)
		})
		g := startPool(t, []string{"backends:",
			backendLine("a", a.URL),
			backendLine("shadow", m.URL, "weight: 0"),
			"mirror: { backend: shadow, percent: 100 }",
		}, "buffer_body_bytes: 4KiB")
		for i := range 30 {
			start := time.Now()
			r := score(t, g, fmt.Sprintf(`{"n":%d}`, i))
			if servedBy(r) != "a" {
				t.Fatalf("request %d: %d %s, want a's 200 whatever the mirror does", i, r.status, r.body)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("request %d took %v behind a hung mirror", i, d)
			}
		}
		// The default bound is 16 copies in flight; the rest are dropped.
		waitFor(t, 2*time.Second, "16 mirror copies", func() bool { return m.hits.Load() == 16 })
		time.Sleep(100 * time.Millisecond)
		if n := m.hits.Load(); n != 16 {
			t.Errorf("mirror got %d copies with 16 in flight allowed", n)
		}
		close(release)
		reqs := m.requests()
		for _, q := range reqs {
			if !bytes.HasPrefix(q.body, []byte(`{"n":`)) || q.header.Get("Authorization") != "Bearer "+upstreamKey {
				t.Errorf("mirror copy body %q auth %q, want the request's body with the backend's credential", q.body, q.header.Get("Authorization"))
			}
		}
		// Slots free again: the next buffered request is mirrored, a
		// streamed one is not.
		waitFor(t, 2*time.Second, "a copy after slots freed", func() bool {
			score(t, g, `{"again":true}`)
			return m.hits.Load() > 16
		})
		n := m.hits.Load()
		if r := score(t, g, strings.Repeat("y", 64<<10)); servedBy(r) != "a" {
			t.Fatalf("streamed body: %d", r.status)
		}
		time.Sleep(200 * time.Millisecond)
		if m.hits.Load() != n {
			t.Errorf("a streamed (unbuffered) body was mirrored")
		}
	})

	t.Run("mirror: the target may be another upstream", func(t *testing.T) {
		t.Parallel()
		a, other := newPoolBackend(t, "a"), newPoolBackend(t, "other")
		cfg := newConfig().Partners().
			PoolUpstream("churn", "backends:", backendLine("a", a.URL), "mirror: { backend: shadow, percent: 100 }").
			Upstream("shadow", other.URL, upstreamKeyAuth).
			Route("churn", "/churn", "churn", allowPartners)
		g := startGatewayWith(t, cfg, nil, gateway.Deps{})
		for range 3 {
			if r := score(t, g, `{}`); servedBy(r) != "a" {
				t.Fatalf("%d %s", r.status, r.body)
			}
		}
		deadline := time.Now().Add(time.Second)
		for other.hits.Load() < 3 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if other.hits.Load() != 3 {
			t.Errorf("the other upstream got %d of 3 copies", other.hits.Load())
		}
		for _, q := range other.requests() {
			if string(q.body) != `{}` || q.header.Get("Authorization") != "Bearer "+upstreamKey {
				t.Errorf("copy body %q auth %q, want the request's body with the other upstream's credential", q.body, q.header.Get("Authorization"))
			}
		}
	})

	t.Run("readiness: ok, degraded (some backends unavailable), down (none); /readyz?route= follows one route", func(t *testing.T) {
		t.Parallel()
		a, b, f := newPoolBackend(t, "a"), newPoolBackend(t, "b"), newPoolBackend(t, "fraud")
		cfg := newConfig().Partners().
			PoolUpstream("churn", "backends:", backendLine("a", a.URL), backendLine("b", b.URL)).
			Upstream("fraud", f.URL, upstreamKeyAuth).
			Route("churn", "/churn", "churn", allowPartners).
			Route("fraud", "/fraud", "fraud", allowPartners)
		g := startGatewayWith(t, cfg, nil, gateway.Deps{})
		routeStatus := func(name string) int { return do(t, client(), g.Admin, request{path: "/readyz?route=" + name}).status }
		check := func(what, state string, reason string, status, churnStatus int) {
			t.Helper()
			st, rep, raw := readyz(t, g)
			rs := rep.Routes["churn"]
			if st != status || rs.State != state || rep.Routes["fraud"].State != "ok" {
				t.Errorf("%s: /readyz %d churn %+v, want %d with churn %s and fraud ok: %s", what, st, rs, status, state, raw)
			}
			if reason != "" && !strings.Contains(strings.Join(rs.Reasons, "\n"), reason) {
				t.Errorf("%s: churn reasons %q lack %q", what, rs.Reasons, reason)
			}
			if got := routeStatus("churn"); got != churnStatus {
				t.Errorf("%s: /readyz?route=churn %d, want %d", what, got, churnStatus)
			}
			if got := routeStatus("fraud"); got != 200 {
				t.Errorf("%s: /readyz?route=fraud %d, want 200", what, got)
			}
		}
		waitFor(t, 5*time.Second, "ready", func() bool { st, _, _ := readyz(t, g); return st == 200 })
		check("healthy", "ok", "", 200, 200)
		a.set(answer(429, func() http.Header { return http.Header{"Retry-After": {"30"}} }, "busy"))
		if r := score(t, g, `{}`); servedBy(r) != "b" {
			// The first pick may have been b: one more makes a answer.
			if r = score(t, g, `{}`); servedBy(r) != "b" {
				t.Fatalf("a throttled: %d %s", r.status, r.body)
			}
		}
		for a.hits.Load() == 0 {
			score(t, g, `{}`)
		}
		check("a throttled", "degraded", "backend a: unavailable", 200, 200)
		b.set(answer(429, func() http.Header { return http.Header{"Retry-After": {"30"}} }, "busy"))
		score(t, g, `{}`)
		check("both throttled", "down", "backend b: unavailable", 200, 503)
		if got := routeStatus("nope"); got != 404 {
			t.Errorf("/readyz?route=nope %d, want 404", got)
		}
	})

	t.Run("health_check: a backend failing its probe takes no traffic until it passes again", func(t *testing.T) {
		t.Parallel()
		a, b := newPoolBackend(t, "a"), newPoolBackend(t, "b")
		var aDown atomic.Bool
		aDown.Store(true)
		a.set(func(w http.ResponseWriter, r *http.Request, body []byte) {
			if r.URL.Path == "/health" && aDown.Load() {
				w.WriteHeader(500)
				return
			}
			answerOK("a")(w, r, body)
		})
		g := startPool(t, []string{"backends:",
			backendLine("a", a.URL, "priority: 1"),
			backendLine("b", b.URL, "priority: 2"),
			"health_check: { path: /health, interval: 300ms, timeout: 300ms }",
			"circuit_breaker: { open_for: 1s }",
		})
		waitFor(t, 3*time.Second, "a's failed probe to open it", func() bool {
			_, rep, _ := readyz(t, g)
			return rep.Routes["churn"].State == "degraded"
		})
		for range 5 {
			if r := score(t, g, `{}`); servedBy(r) != "b" {
				t.Fatalf("a failing its probe: served by %q", servedBy(r))
			}
		}
		aDown.Store(false)
		waitFor(t, 5*time.Second, "a back after a passing probe", func() bool { return servedBy(score(t, g, `{}`)) == "a" })
		m := scrapeMetrics(t, g)
		if !regexp.MustCompile(`modelgate_backend_health_checks_total\{backend="a",result="down",upstream="churn"\} [1-9]`).MatchString(m) {
			t.Errorf("no failed probe of a counted:\n%s", grepLines(m, "health_checks"))
		}
	})

	t.Run("logs and audit name the backend and tries; metrics carry backend labels bounded by configuration", func(t *testing.T) {
		t.Parallel()
		b := newPoolBackend(t, "b")
		g := startPool(t, []string{"backends:",
			backendLine("a", upstream.ClosedURL(t), "priority: 1"),
			backendLine("b", b.URL, "priority: 2"),
			"circuit_breaker: { consecutive_failures: 2, open_for: 1m }",
		})
		var last response
		for range 5 {
			last = score(t, g, `{}`)
		}
		first := g.RequestLinesFor(t, "/churn/score")[0]
		if first["backend"] != "b" || tries(first) != 2 {
			t.Errorf("first request's audit backend=%v tries=%v, want b after 2", first["backend"], first["tries"])
		}
		if line := g.audit(t, last); line["backend"] != "b" || tries(line) != 1 {
			t.Errorf("last request's audit backend=%v tries=%v, want b, 1 (a is open)", line["backend"], line["tries"])
		}
		m := scrapeMetrics(t, g)
		for _, want := range []string{
			`modelgate_backend_requests_total{backend="a",outcome="failure",upstream="churn"} 2`,
			`modelgate_backend_requests_total{backend="b",outcome="ok",upstream="churn"} 5`,
			`modelgate_backend_retries_total{backend="b",upstream="churn"} 2`,
			`modelgate_backend_breaker_state{backend="a",state="open",upstream="churn"} 1`,
			`modelgate_backend_breaker_state{backend="b",state="closed",upstream="churn"} 1`,
			`modelgate_backend_available{backend="a",upstream="churn"} 0`,
			`modelgate_backend_available{backend="b",upstream="churn"} 1`,
		} {
			if !strings.Contains(m, want) {
				t.Errorf("metrics lack %s:\n%s", want, grepLines(m, "modelgate_backend_"))
			}
		}
		for _, l := range regexp.MustCompile(`backend="([^"]*)"`).FindAllStringSubmatch(m, -1) {
			if l[1] != "a" && l[1] != "b" {
				t.Errorf("metric label backend=%q is not a configured backend", l[1])
			}
		}
	})
}

// RequestLinesFor returns the audit lines of requests to path, oldest
// first.
func (g *testGateway) RequestLinesFor(t testing.TB, path string) []map[string]any {
	t.Helper()
	var out []map[string]any
	waitFor(t, 2*time.Second, "audit lines of "+path, func() bool {
		out = out[:0]
		for _, l := range g.Logs.RequestLines(t) {
			if l["path"] == path {
				out = append(out, l)
			}
		}
		return len(out) > 0
	})
	return out
}

// scrapeMetrics returns the admin listener's /metrics text.
func scrapeMetrics(t testing.TB, g *testGateway) string {
	t.Helper()
	r := do(t, client(), g.Admin, request{path: "/metrics"})
	if r.status != 200 {
		t.Fatalf("/metrics: %d", r.status)
	}
	return string(r.body)
}

// grepLines returns the lines of s containing sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
