package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestNetHTTPErrorsAreJSON: answers Go's net/http writes itself, before any
// handler runs (a malformed request line or header, a missing Host, headers
// over the limit, an unknown HTTP version or transfer coding), follow the
// gateway's JSON error contract on the plain-HTTP listener (issue 10, item
// 11). With TLS they stay net/http's own: see README, "Errors net/http
// writes itself".
func TestNetHTTPErrorsAreJSON(t *testing.T) {
	up := newBackend(t, "m")
	g := startGateway(t, newConfig().Upstream("m", up.URL, `{ type: none }`).PublicRoute("m", "/m", "m"))
	rows := []struct {
		name, raw string
		status    int
		code      string
	}{
		{"malformed request line", "GET /m/x HTTP/1.1 extra\r\nHost: a\r\n\r\n", 400, "bad_request"},
		{"malformed header", "GET /m/x HTTP/1.1\r\nHost: a\r\nNo colon here\r\n\r\n", 400, "bad_request"},
		{"missing Host", "GET /m/x HTTP/1.1\r\n\r\n", 400, "bad_request"},
		{"headers too large", "GET /m/x HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("a", 80<<10) + "\r\n\r\n", 431, "headers_too_large"},
		{"unknown HTTP version", "GET /m/x HTTP/2.5\r\nHost: a\r\n\r\n", 505, "http_version_not_supported"},
		{"unknown transfer coding", "POST /m/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "not_implemented"},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			c, err := net.Dial("tcp", g.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(c, row.raw); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			var e struct {
				Error struct{ Code, Message string }
			}
			if resp.StatusCode != row.status || resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &e) != nil || e.Error.Code != row.code || e.Error.Message == "" {
				t.Errorf("%d %s %q, want %d application/json with code %s", resp.StatusCode, resp.Header.Get("Content-Type"), body, row.status, row.code)
			}
		})
	}
	// An upstream's own plain-text 400 passes through untouched.
	up.answer(400, http.Header{"Content-Type": {"text/plain; charset=utf-8"}, "Connection": {"close"}})
	r := do(t, client(), g.URL, request{path: "/m/x"})
	if r.status != 400 || r.header.Get("Content-Type") != "text/plain; charset=utf-8" || !strings.Contains(string(r.body), `"backend":"m"`) {
		t.Errorf("upstream's own 400 was changed: %d %s %q", r.status, r.header.Get("Content-Type"), r.body)
	}
}
