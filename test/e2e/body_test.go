package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelgate/modelgate/test/upstream"
)

// bodyConfig fronts model with route llm (partners key) and a public route
// pub, with small body bounds so tests can cross them cheaply.
func bodyConfig(model string, server ...string) *cfgBuilder {
	return newConfig().Server(server...).Partners().
		Upstream("llm", model+"/score", upstreamKeyAuth).
		Route("llm", "/llm", "llm", allowPartners).
		PublicRoute("pub", "/pub", "llm")
}

// rawExchange is one hand-written HTTP/1.1 request: head is everything up
// to and including the blank line; parts are written one after the other,
// each after its pause; then the answer is read. It never waits longer than
// wait for the answer.
type rawExchange struct {
	head  string
	parts []rawPart
	wait  time.Duration
	// smallSendBuffer shrinks the client's socket send buffer, so the
	// kernel cannot absorb a large body the server does not read.
	smallSendBuffer bool
}

type rawPart struct {
	pause time.Duration
	data  []byte
}

// rawResult is what the client saw: the answer, or the error that stopped
// it from writing its request or reading the answer.
type rawResult struct {
	resp     response
	writeErr error
	readErr  error
	took     time.Duration
}

func (x rawExchange) run(t testing.TB, addr string) rawResult {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	if x.smallSendBuffer {
		_ = conn.(*net.TCPConn).SetWriteBuffer(64 << 10)
	}
	start := time.Now()
	var res rawResult
	_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, x.head); err != nil {
		res.writeErr = err
	}
	for _, p := range x.parts {
		if res.writeErr != nil {
			break
		}
		time.Sleep(p.pause)
		if _, err := conn.Write(p.data); err != nil {
			res.writeErr = err
		}
	}
	wait := x.wait
	if wait == 0 {
		wait = 10 * time.Second
	}
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		res.readErr, res.took = err, time.Since(start)
		return res
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	res.took = time.Since(start)
	if err != nil {
		res.readErr = err
	}
	res.resp = response{status: resp.StatusCode, header: resp.Header, body: body, close: resp.Close}
	return res
}

func postHead(path string, fields ...string) string {
	return "POST " + path + " HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer " + partnerKey +
		"\r\nContent-Type: application/json\r\n" + strings.Join(fields, "") + "\r\n"
}

func chunk(data []byte) []byte {
	return append(append([]byte(strconv.FormatInt(int64(len(data)), 16)+"\r\n"), data...), "\r\n"...)
}

// TestMalformedChunkedBodyIs400 sends chunked bodies whose framing breaks:
// a chunk size that overflows, is not hex, or is negative, either at once
// (the gateway is still buffering the body) or after more than
// buffer_body_bytes went through (the body is already streaming upstream).
// Each is the client's fault: 400 in JSON, logged as bad_request at INFO,
// never an empty 200 nor a 502 blaming the upstream.
func TestMalformedChunkedBodyIs400(t *testing.T) {
	model := upstream.New(t, upstreamKey)
	g := startGateway(t, bodyConfig(model.URL, "buffer_body_bytes: 4KiB", "max_body_bytes: 1MiB"))
	big := bytes.Repeat([]byte("x"), 8<<10)
	for _, size := range []string{"FFFFFFFFFFFFFFFFF", "ZZZ", "-5"} {
		for _, after := range []bool{false, true} {
			name := fmt.Sprintf("%s/after_buffer=%v", size, after)
			t.Run(name, func(t *testing.T) {
				id := fmt.Sprintf("malformed-%d-%v", len(size), after)
				x := rawExchange{head: postHead("/llm/score", "Transfer-Encoding: chunked\r\n", "X-Request-Id: "+id+"\r\n")}
				x.parts = append(x.parts, rawPart{data: chunk([]byte(`{"a":1}`))})
				if after {
					x.parts = append(x.parts, rawPart{data: chunk(big)})
				}
				x.parts = append(x.parts, rawPart{data: []byte(size + "\r\nhello\r\n0\r\n\r\n")})
				res := x.run(t, g.Addr)
				if res.readErr != nil {
					t.Fatalf("no answer: %v (write error %v)", res.readErr, res.writeErr)
				}
				if res.resp.status != http.StatusBadRequest {
					t.Fatalf("status %d, body %q: want 400", res.resp.status, res.resp.body)
				}
				if e := decodeError(t, res.resp.body); e.Error.Code != "bad_request" {
					t.Errorf("code %q, want bad_request", e.Error.Code)
				}
				l := g.requestLine(t, id)
				if l["status"] != float64(400) || l["error"] != "bad_request" || l["level"] != "INFO" {
					t.Errorf("audit line status %v error %v level %v, want 400 bad_request INFO", l["status"], l["error"], l["level"])
				}
				if strings.Contains(g.Logs.String(), `"msg":"upstream error"`) {
					t.Errorf("a malformed client body was logged as an upstream error:\n%s", g.Logs)
				}
			})
		}
	}
}

// TestStalledBodyTimesOut sends part of a body and then nothing: with a
// declared length that is buffered, with a declared length above
// buffer_body_bytes (streamed upstream), and chunked. The gateway must
// stop waiting after read_body_timeout of silence and answer 408 in JSON.
// A body that keeps arriving, each piece within the timeout, is not cut
// even when the whole takes several times the timeout.
func TestStalledBodyTimesOut(t *testing.T) {
	model := upstream.New(t, upstreamKey)
	g := startGateway(t, bodyConfig(model.URL, "read_body_timeout: 300ms", "buffer_body_bytes: 64KiB", "max_body_bytes: 2MiB"))
	half := bytes.Repeat([]byte("x"), 32<<10)
	for _, tc := range []struct {
		name string
		head string
		part []byte
	}{
		{"buffered", postHead("/pub/score", "Content-Length: 65536\r\n"), half},
		{"streamed", postHead("/pub/score", "Content-Length: 1048576\r\n"), append(half, half...)},
		{"chunked", postHead("/pub/score", "Transfer-Encoding: chunked\r\n"), chunk(half)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := rawExchange{head: tc.head, parts: []rawPart{{data: tc.part}}, wait: 5 * time.Second}
			res := x.run(t, g.Addr)
			if res.readErr != nil {
				t.Fatalf("no answer %v after the body stalled: %v", res.took, res.readErr)
			}
			if res.resp.status != http.StatusRequestTimeout {
				t.Fatalf("status %d, body %q: want 408", res.resp.status, res.resp.body)
			}
			if e := decodeError(t, res.resp.body); e.Error.Code != "request_timeout" {
				t.Errorf("code %q, want request_timeout", e.Error.Code)
			}
			if !res.resp.close {
				t.Error("408 without Connection: close; the rest of the body is unread")
			}
			if res.took > 2*time.Second {
				t.Errorf("answered after %v; read_body_timeout is 300ms", res.took)
			}
		})
	}
	t.Run("slow_but_steady", func(t *testing.T) {
		piece := bytes.Repeat([]byte("y"), 1000)
		x := rawExchange{head: postHead("/pub/score", "Content-Length: 8000\r\n", "Connection: close\r\n")}
		for range 8 {
			x.parts = append(x.parts, rawPart{pause: 150 * time.Millisecond, data: piece})
		}
		res := x.run(t, g.Addr)
		if res.readErr != nil || res.resp.status != http.StatusOK {
			t.Fatalf("status %d, error %v, body %q: want 200", res.resp.status, res.readErr, res.resp.body)
		}
	})
}

// TestOversizedBodyAnswered413 sends a body above max_body_bytes the way
// ordinary clients do (Python's urllib, curl without Expect): the whole
// body first, then read the answer. The gateway must let it finish (read
// and discard, within a bound) so the client reads the 413, instead of
// closing under it (the client then sees a connection reset).
func TestOversizedBodyAnswered413(t *testing.T) {
	model := upstream.New(t, upstreamKey)
	g := startGateway(t, bodyConfig(model.URL, "buffer_body_bytes: 64KiB", "max_body_bytes: 2MiB"))
	body := bytes.Repeat([]byte("z"), 3<<20)
	for _, tc := range []struct {
		name  string
		head  string
		parts []rawPart
	}{
		{"content_length", postHead("/pub/score", "Content-Length: "+strconv.Itoa(len(body))+"\r\n"), []rawPart{{data: body}}},
		{"chunked", postHead("/pub/score", "Transfer-Encoding: chunked\r\n"), []rawPart{{data: chunk(body)}, {data: []byte("0\r\n\r\n")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := rawExchange{head: tc.head, parts: tc.parts, smallSendBuffer: true}.run(t, g.Addr)
			if res.writeErr != nil || res.readErr != nil {
				t.Fatalf("the client could not send its body and read the answer: write error %v, read error %v", res.writeErr, res.readErr)
			}
			if res.resp.status != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d, body %q: want 413", res.resp.status, res.resp.body)
			}
			if e := decodeError(t, res.resp.body); e.Error.Code != "body_too_large" {
				t.Errorf("code %q, want body_too_large", e.Error.Code)
			}
		})
	}
}

// TestBufferedBodyArrivesWhole: a buffered body larger than the first
// buffer is kept in blocks as it arrives; the upstream must still get it
// byte for byte, with its Content-Length, declared or chunked.
func TestBufferedBodyArrivesWhole(t *testing.T) {
	model := upstream.New(t, upstreamKey)
	g := startGateway(t, bodyConfig(model.URL, "buffer_body_bytes: 1MiB"))
	body := randomBody(t, 700<<10+123)
	sum := sha256.Sum256(body)
	for _, chunked := range []bool{false, true} {
		resp := do(t, client(), g.URL, request{method: "POST", path: "/pub/score", body: bytes.NewReader(body), chunked: chunked})
		if resp.status != 200 {
			t.Fatalf("chunked=%v: status %d %s", chunked, resp.status, resp.body)
		}
		var echo upstream.Echo
		if err := json.Unmarshal(resp.body, &echo); err != nil {
			t.Fatal(err)
		}
		if echo.BodyBytes != int64(len(body)) || echo.BodySHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("chunked=%v: upstream got %d bytes sha256 %s, want %d %x", chunked, echo.BodyBytes, echo.BodySHA256, len(body), sum)
		}
		last, _ := model.Last()
		if last.Header.Get("Content-Length") != strconv.Itoa(len(body)) {
			t.Errorf("chunked=%v: upstream Content-Length %q, want %d (buffered bodies are sent with their length)", chunked, last.Header.Get("Content-Length"), len(body))
		}
	}
}
