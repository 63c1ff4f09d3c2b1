package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelgate/modelgate/test/upstream"
)

// streamConfig fronts model with route llm, admitting the partners key set,
// buffering request bodies up to buffer.
func streamConfig(model, buffer string) *cfgBuilder {
	return newConfig().Server("buffer_body_bytes: "+buffer).Partners().
		Upstream("llm", model+"/score", upstreamKeyAuth).
		Route("llm", "/llm", "llm", allowPartners)
}

// sseResult is what one streamed answer delivered.
type sseResult struct {
	status     int
	dataLines  int
	done       bool // the final "event: done" arrived
	first, end time.Duration
	err        error
}

// readSSE sends one request (without Content-Length if chunked) and reads
// its event stream to the end, timing the first data line and the end of
// the stream from the send.
func readSSE(ctx context.Context, c *http.Client, method, url string, h http.Header, body string, chunked bool) sseResult {
	var res sseResult
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		res.err = err
		return res
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	if chunked {
		req.ContentLength = -1
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		res.err = err
		return res
	}
	defer resp.Body.Close()
	res.status = resp.StatusCode
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "data:"):
			if res.dataLines == 0 {
				res.first = time.Since(start)
			}
			res.dataLines++
		case line == "event: done":
			res.done = true
		}
	}
	res.end = time.Since(start)
	res.err = sc.Err()
	return res
}

// TestSSETimeToFirstEvent checks that events reach the client as the
// upstream writes them: with 10 events 50 ms apart, the first must arrive
// in well under 100 ms, as it does without the gateway, long before the
// stream ends.
func TestSSETimeToFirstEvent(t *testing.T) {
	model := upstream.New(t, upstreamKey)
	model.SetSSE(10, 50*time.Millisecond)
	g := startGateway(t, streamConfig(model.URL, "1MiB"))
	c := client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	tests := []struct {
		name   string
		url    string
		header http.Header
	}{
		{name: "direct", url: model.URL + "/score/chat", header: bearer(upstreamKey)},
		{name: "through the gateway", url: g.URL + "/llm/chat", header: bearer(partnerKey)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := readSSE(ctx, c, http.MethodPost, tt.url, tt.header, `{"prompt":"hi"}`, false)
			if r.err != nil || r.status != 200 {
				t.Fatalf("status %d, error %v", r.status, r.err)
			}
			t.Logf("first event %v, end %v, data lines %d", r.first.Round(time.Millisecond), r.end.Round(time.Millisecond), r.dataLines)
			if r.dataLines != 11 || !r.done {
				t.Errorf("got %d data lines (done %v), want 10 events and the done event", r.dataLines, r.done)
			}
			if r.first >= 100*time.Millisecond {
				t.Errorf("first event after %v, want < 100ms", r.first)
			}
			if r.end < 450*time.Millisecond {
				t.Errorf("stream ended after %v: the upstream spaces 10 events 50ms apart", r.end)
			}
			if r.end-r.first < 400*time.Millisecond {
				t.Errorf("first event at %v, end at %v: the answer was buffered, not streamed", r.first, r.end)
			}
		})
	}
}

// TestShortStreamsNotTruncated sends 500 short POST streams (3 events 5 ms
// apart, a small JSON body) over keep-alive connections with bounded
// concurrency, and requires every one to deliver all its events and the
// final done event. Proxies built on httputil.ReverseProxy cut 1–7% of these
// short (golang/go#40747): when the answer's header is flushed, the server
// drains and closes a request body the Transport may still be reading, and
// the Transport then tears down the upstream connection mid-answer. The
// gateway reads bodies up to server.buffer_body_bytes first, and lets larger
// ones stream in full duplex; both are covered.
func TestShortStreamsNotTruncated(t *testing.T) {
	if testing.Short() {
		t.Skip("1500 streams")
	}
	tests := []struct {
		name    string
		buffer  string
		chunked bool
	}{
		{name: "buffered body", buffer: "1MiB"},
		{name: "streamed body", buffer: "1"},
		{name: "streamed chunked body", buffer: "1", chunked: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const streams, workers = 500, 8
			model := upstream.New(t, upstreamKey)
			model.SetSSE(3, 5*time.Millisecond)
			g := startGateway(t, streamConfig(model.URL, tt.buffer))
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
			defer c.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()

			var (
				next      atomic.Int64
				mu        sync.Mutex
				truncated []string
				wg        sync.WaitGroup
			)
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > streams || ctx.Err() != nil {
							return
						}
						body := fmt.Sprintf(`{"prompt":"stream %d","max_tokens":3}`, i)
						r := readSSE(ctx, c, http.MethodPost, g.URL+"/llm/chat", bearer(partnerKey), body, tt.chunked)
						if r.err != nil || r.status != 200 || r.dataLines != 4 || !r.done {
							mu.Lock()
							truncated = append(truncated, fmt.Sprintf("stream %d: status %d, %d data lines, done %v, error %v", i, r.status, r.dataLines, r.done, r.err))
							mu.Unlock()
						}
					}
				}()
			}
			wg.Wait()
			if ctx.Err() != nil {
				t.Fatalf("the streams did not finish within 60s")
			}
			if len(truncated) > 0 {
				t.Errorf("%d of %d streams cut short, want 0:\n%s", len(truncated), streams, strings.Join(truncated, "\n"))
			}
			if n := model.Count(); n != streams {
				t.Errorf("upstream saw %d requests, want %d", n, streams)
			}
		})
	}
}

// streamTimeoutsConfig sets every server-protecting timeout far below the
// length of the streams the tests send through it.
func streamTimeoutsConfig(model string) *cfgBuilder {
	return newConfig().Server("read_header_timeout: 200ms", "idle_timeout: 200ms", "upstream: { response_header_timeout: 200ms }").Partners().
		Upstream("llm", model+"/score", upstreamKeyAuth).
		Route("llm", "/llm", "llm", allowPartners)
}

// TestLongStreamOutlivesTimeouts streams for four times the read-header,
// idle and upstream response-header timeouts: those protect the server
// and must never cut an answer that is flowing.
func TestLongStreamOutlivesTimeouts(t *testing.T) {
	model := upstream.New(t, upstreamKey)
	model.SetSSE(8, 100*time.Millisecond)
	g := startGateway(t, streamTimeoutsConfig(model.URL))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := readSSE(ctx, client(), http.MethodPost, g.URL+"/llm/chat", bearer(partnerKey), `{}`, false)
	if r.err != nil || r.status != 200 || r.dataLines != 9 || !r.done {
		t.Fatalf("status %d, %d data lines, done %v, error %v: want all 8 events and done", r.status, r.dataLines, r.done, r.err)
	}
	if r.end < 700*time.Millisecond {
		t.Errorf("stream took %v; the upstream spaces 8 events 100ms apart", r.end)
	}
}

// TestClientDisconnectCancelsUpstream closes the client's side of a stream
// after the first event: the gateway must stop the upstream request (so a
// model stops generating for nobody) and log the request as closed by the
// client, not as an upstream failure.
func TestClientDisconnectCancelsUpstream(t *testing.T) {
	model := upstream.New(t, upstreamKey)
	model.SetSSE(100, 50*time.Millisecond)
	g := startGateway(t, streamConfig(model.URL, "1MiB"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, g.URL+"/llm/chat", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+partnerKey)
	req.Header.Set("X-Request-Id", "disconnect-1")
	c := client()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "data:") {
		t.Fatalf("first line %q, error %v", line, err)
	}
	resp.Body.Close() // the client goes away mid-stream
	c.CloseIdleConnections()

	waitFor(t, 3*time.Second, "the upstream stream to be cancelled", func() bool { return model.Cancelled() == 1 })
	waitFor(t, 3*time.Second, "the request's log line", func() bool { return len(g.Logs.RequestLines(t)) == 1 })
	l := g.Logs.RequestLines(t)[0]
	if l["request_id"] != "disconnect-1" || l["error"] != "client_closed_request" {
		t.Errorf("log line request_id %v error %v, want disconnect-1 client_closed_request", l["request_id"], l["error"])
	}
}
