package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelgate/modelgate/test/upstream"
)

// opsConfig fronts model with route fraud, which admits the partners key
// set; the upstream has a secondary key.
func opsConfig(model string) *cfgBuilder {
	return newConfig().Server("shutdown_timeout: 5s").Partners().
		Upstream("model", model+"/score", upstreamKeysAuth).
		Route("fraud", "/fraud", "model", allowPartners)
}

// TestGracefulDrain cancels Run's context while a request to a slow
// upstream is in flight: the request still completes with 200, the public
// listener refuses new connections as soon as shutdown begins, and Run
// returns nil.
func TestGracefulDrain(t *testing.T) {
	model := upstream.New(t, upstreamKey)
	model.SetDelay(500 * time.Millisecond)
	g := startGateway(t, opsConfig(model.URL))

	type result struct {
		resp response
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, g.URL+"/fraud/x", strings.NewReader(`{"slow":true}`))
		req.Header.Set("Authorization", "Bearer "+partnerKey)
		resp, err := client().Do(req)
		if err != nil {
			inflight <- result{err: err}
			return
		}
		defer resp.Body.Close()
		var e upstream.Echo
		err = json.NewDecoder(resp.Body).Decode(&e)
		inflight <- result{resp: response{status: resp.StatusCode}, err: err}
	}()
	select {
	case <-model.Arrived():
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not reach the upstream")
	}

	stopped := make(chan error, 1)
	shutdownAt := time.Now()
	go func() { stopped <- g.Stop() }()

	// New connections are refused once shutdown has begun, while the
	// in-flight request is still waiting on the upstream.
	waitFor(t, 400*time.Millisecond, "the public listener to close", func() bool {
		c, err := net.DialTimeout("tcp", g.Addr, 100*time.Millisecond)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	select {
	case r := <-inflight:
		t.Fatalf("the in-flight request ended before the upstream answered: %+v", r)
	default:
	}

	select {
	case r := <-inflight:
		if r.err != nil || r.resp.status != 200 {
			t.Fatalf("in-flight request: status %d, error %v; want 200", r.resp.status, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the in-flight request did not finish")
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("Run returned %v, want nil", err)
		}
		if d := time.Since(shutdownAt); d > 3*time.Second {
			t.Errorf("Run took %v to return after the drain", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	// The admin listener is closed too.
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(g.Admin, "http://"), 100*time.Millisecond); err == nil {
		c.Close()
		t.Error("the admin listener still accepts connections after Run returned")
	}
}

// TestAdminEndpoints checks /healthz and /readyz on the admin listener,
// and that neither is served on the public one.
func TestAdminEndpoints(t *testing.T) {
	model := upstream.New(t, upstreamKey)
	g := startGateway(t, opsConfig(model.URL))
	c := client()
	tests := []struct {
		name   string
		base   string
		path   string
		status int
		code   string // public error code
		json   bool
	}{
		{name: "admin healthz", base: g.Admin, path: "/healthz", status: 200, json: true},
		{name: "admin readyz", base: g.Admin, path: "/readyz", status: 200, json: true},
		{name: "admin unknown path", base: g.Admin, path: "/fraud/x", status: 404},
		{name: "public healthz", base: g.URL, path: "/healthz", status: 404, code: "no_route"},
		{name: "public readyz", base: g.URL, path: "/readyz", status: 404, code: "no_route"},
		{name: "public metrics", base: g.URL, path: "/metrics", status: 404, code: "no_route"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := do(t, c, tt.base, request{path: tt.path})
			if resp.status != tt.status {
				t.Fatalf("status = %d, want %d: %s", resp.status, tt.status, resp.body)
			}
			if tt.code != "" {
				if e := decodeError(t, resp.body); e.Error.Code != tt.code {
					t.Errorf("code = %q, want %q", e.Error.Code, tt.code)
				}
			}
			if tt.json {
				if ct := resp.header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
				var v map[string]any
				if err := json.Unmarshal(resp.body, &v); err != nil {
					t.Errorf("body is not JSON: %v: %s", err, resp.body)
				}
				if tt.path == "/readyz" && v["ready"] != true {
					t.Errorf("readyz = %s, want ready true", resp.body)
				}
			}
			assertNoSecrets(t, "admin answer", string(resp.body))
		})
	}
	if n := model.Count(); n != 0 {
		t.Errorf("upstream received %d requests, want none", n)
	}
}

// TestLogCanary runs requests carrying canary credentials down every
// outcome — admitted, replayed with the secondary key, refused by the
// upstream, denied, cut mid-stream — and checks that each wrote exactly
// one JSON line with the audit fields, and that no credential appears
// anywhere in the log.
func TestLogCanary(t *testing.T) {
	model := upstream.New(t, upstreamKey)
	g := startGateway(t, opsConfig(model.URL))
	c := client()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	everywhere := func(key string) http.Header {
		return http.Header{
			"Authorization": {"Bearer " + key},
			"Cookie":        {"session=" + jwtCanary},
			"X-Api-Key":     {partnerKey},
		}
	}
	tests := []struct {
		name     string
		setup    func()
		path     string
		header   http.Header
		stream   bool
		status   int
		decision string
		identity string // "" = no identity field
		route    string // "" = no route field
		errCode  string // the line's error field; "" = none
	}{
		{name: "admitted", path: "/fraud/x", header: everywhere(partnerKey), status: 200, decision: "admit", identity: "key:partners/acme", route: "fraud"},
		{name: "replayed with the secondary key", setup: func() { model.SetKeys(upstreamKey2) }, path: "/fraud/x", header: everywhere(partnerKey),
			status: 200, decision: "admit", identity: "key:partners/acme", route: "fraud"},
		{name: "refused by the upstream", setup: func() { model.SetKeys("nobody-has-this-key-1") }, path: "/fraud/x", header: everywhere(partnerKey),
			status: 502, decision: "admit", identity: "key:partners/acme", route: "fraud", errCode: "upstream_credential_rejected"},
		{name: "wrong key", setup: func() { model.SetKeys(upstreamKey) }, path: "/fraud/x", header: everywhere(upstreamKey),
			status: 401, decision: "deny", route: "fraud", errCode: "invalid_credential"},
		{name: "jwt-shaped bearer", path: "/fraud/x", header: everywhere(jwtCanary),
			status: 401, decision: "deny", route: "fraud", errCode: "invalid_credential"},
		{name: "upstream's secondary key as bearer", path: "/fraud/x", header: everywhere(upstreamKey2),
			status: 401, decision: "deny", route: "fraud", errCode: "invalid_credential"},
		{name: "no route", path: "/nope", header: everywhere(partnerKey), status: 404, decision: "deny", errCode: "no_route"},
		{name: "stream cut by the upstream", setup: func() { model.SetSSE(5, time.Millisecond); model.AbortAfter(2) }, path: "/fraud/x", header: everywhere(partnerKey),
			stream: true, status: 200, decision: "admit", identity: "key:partners/acme", route: "fraud", errCode: "upstream_aborted"},
	}
	ids := make([]string, len(tests))
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup()
			}
			tt.header.Set("X-Request-Id", "canary-"+strings.ReplaceAll(tt.name, " ", "-"))
			if tt.stream {
				r := readSSE(ctx, c, http.MethodPost, g.URL+tt.path, tt.header, `{}`, false)
				if r.status != tt.status || r.done || r.err == nil {
					t.Fatalf("status %d, done %v, error %v: want a 200 stream cut short", r.status, r.done, r.err)
				}
				ids[i] = tt.header.Get("X-Request-Id")
				return
			}
			resp := do(t, c, g.URL, request{method: http.MethodPost, path: tt.path, header: tt.header, body: strings.NewReader(`{"canary":true}`)})
			if resp.status != tt.status {
				t.Fatalf("status = %d, want %d: %s", resp.status, tt.status, resp.body)
			}
			ids[i] = resp.header.Get("X-Request-Id")
		})
	}

	// The log line of a request is written after its answer; wait for all.
	waitFor(t, 5*time.Second, "a log line per request", func() bool { return len(g.Logs.RequestLines(t)) >= len(tests) })

	lines := g.Logs.RequestLines(t)
	if len(lines) != len(tests) {
		t.Errorf("%d request lines, want %d", len(lines), len(tests))
	}
	byID := map[string][]map[string]any{}
	for _, l := range lines {
		id, _ := l["request_id"].(string)
		byID[id] = append(byID[id], l)
	}
	for i, tt := range tests {
		t.Run("line/"+tt.name, func(t *testing.T) {
			ls := byID[ids[i]]
			if len(ls) != 1 {
				t.Fatalf("%d lines with request_id %q, want 1", len(ls), ids[i])
			}
			l := ls[0]
			if got, _ := l["status"].(float64); int(got) != tt.status {
				t.Errorf("status = %v, want %d", l["status"], tt.status)
			}
			if l["decision"] != tt.decision {
				t.Errorf("decision = %v, want %s", l["decision"], tt.decision)
			}
			if got, _ := l["identity"].(string); got != tt.identity {
				t.Errorf("identity = %q, want %q", got, tt.identity)
			}
			if got, _ := l["route"].(string); got != tt.route {
				t.Errorf("route = %q, want %q", got, tt.route)
			}
			if got, _ := l["error"].(string); got != tt.errCode {
				t.Errorf("error = %q, want %q", got, tt.errCode)
			}
			if d, ok := l["duration_ms"].(float64); !ok || d < 0 {
				t.Errorf("duration_ms = %v", l["duration_ms"])
			}
			for _, k := range []string{"time", "level", "method", "path"} {
				if _, ok := l[k]; !ok {
					t.Errorf("no %s field", k)
				}
			}
		})
	}
	assertNoSecrets(t, "log", g.Logs.String())
}

// TestReadHeaderTimeout holds a connection open with an unfinished request
// header (slowloris): the gateway closes it after read_header_timeout
// (200ms), without answering and without calling the upstream.
func TestReadHeaderTimeout(t *testing.T) {
	model := upstream.New(t, upstreamKey)
	g := startGateway(t, streamTimeoutsConfig(model.URL))
	conn, err := net.DialTimeout("tcp", g.Addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := conn.Write([]byte("POST /llm/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + partnerKey + "\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := conn.Read(make([]byte, 512))
	elapsed := time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection was still open after %v", elapsed)
	}
	if n != 0 || elapsed < 150*time.Millisecond || elapsed > 2*time.Second {
		t.Errorf("read %d bytes, error %v after %v: want the connection closed without an answer after about 200ms", n, err, elapsed)
	}
	if model.Count() != 0 {
		t.Errorf("the upstream was called")
	}
}
