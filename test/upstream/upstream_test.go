package upstream

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func do(t *testing.T, method, url, authz, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestKeys(t *testing.T) {
	s := New(t, "primary-key-0001")
	tests := []struct {
		name   string
		keys   []string // nil: leave as is
		authz  string
		status int
	}{
		{name: "right key", authz: "Bearer primary-key-0001", status: 200},
		{name: "no header", authz: "", status: 401},
		{name: "wrong key", authz: "Bearer nope", status: 401},
		{name: "scheme case matters", authz: "bearer primary-key-0001", status: 401},
		{name: "regenerated: old key refused", keys: []string{"secondary-key-02"}, authz: "Bearer primary-key-0001", status: 401},
		{name: "regenerated: new key admitted", authz: "Bearer secondary-key-02", status: 200},
		{name: "no keys admits all", keys: []string{}, authz: "", status: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.keys != nil {
				s.SetKeys(tt.keys...)
			}
			resp := do(t, "POST", s.URL+"/score?a=1", tt.authz, `{"x":1}`)
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.status)
			}
			last, _ := s.Last()
			if string(last.Body) != `{"x":1}` || last.RawQuery != "a=1" || last.Admitted != (tt.status == 200) {
				t.Fatalf("recorded %+v", last)
			}
		})
	}
}

func TestEcho(t *testing.T) {
	s := New(t)
	resp := do(t, "POST", s.URL+"/a%2Fb?q=%20", "", "hello")
	var e Echo
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatal(err)
	}
	if e.BodyBytes != 5 || e.RawQuery != "q=%20" || e.Path != "/a/b" {
		t.Fatalf("echo = %+v", e)
	}
	last, _ := s.Last()
	if last.EscapedPath() != "/a%2Fb" {
		t.Fatalf("escaped path = %q", last.EscapedPath())
	}
}

func TestSSE(t *testing.T) {
	tests := []struct {
		name  string
		abort int
		want  []string
		err   bool
	}{
		{name: "complete", abort: -1, want: []string{`data: {"i":0}`, `data: {"i":1}`, `data: {"i":2}`, "event: done", "data: {}"}},
		{name: "aborted", abort: 2, want: []string{`data: {"i":0}`, `data: {"i":1}`}, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(t)
			s.SetSSE(3, time.Millisecond)
			s.AbortAfter(tt.abort)
			resp := do(t, "GET", s.URL+"/", "", "")
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Fatalf("content type %q", ct)
			}
			var got []string
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if sc.Text() != "" {
					got = append(got, sc.Text())
				}
			}
			if (sc.Err() != nil) != tt.err {
				t.Fatalf("scan error = %v, want error %v", sc.Err(), tt.err)
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Fatalf("events = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDelayAndStatus(t *testing.T) {
	s := New(t)
	s.SetDelay(50 * time.Millisecond)
	s.SetStatus(http.StatusTeapot)
	start := time.Now()
	resp := do(t, "GET", s.URL+"/", "", "")
	if resp.StatusCode != http.StatusTeapot {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("answered after %v, want at least 50ms", d)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
}
