package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelgate/modelgate/credential"
)

// TestAuthTransport checks the upstream credential and the one replay on
// 401: which keys are tried, in what order, with what body, and what the
// client gets.
func TestAuthTransport(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 100)
	big := bytes.Repeat([]byte("x"), 100<<10) // over BufferBodyBytes: not replayable
	tests := []struct {
		name    string
		auth    UpstreamAuth
		accept  string // the key the upstream accepts
		body    []byte
		chunked bool
		status  int
		code    string
		tried   []string
		refused []string // the credentials reported to Rejected
	}{
		{name: "primary works", auth: &twoKeys{keys: []string{"k1", "k2"}}, accept: "k1", body: body, status: 200, tried: []string{"k1"}},
		{name: "secondary after one replay", auth: &twoKeys{keys: []string{"k1", "k2"}}, accept: "k2", body: body, status: 200, tried: []string{"k1", "k2"}, refused: []string{"k1"}},
		{name: "secondary after replay, chunked body", auth: &twoKeys{keys: []string{"k1", "k2"}}, accept: "k2", body: body, chunked: true, status: 200, tried: []string{"k1", "k2"}, refused: []string{"k1"}},
		{name: "secondary after replay, no body", auth: &twoKeys{keys: []string{"k1", "k2"}}, accept: "k2", status: 200, tried: []string{"k1", "k2"}, refused: []string{"k1"}},
		{name: "both refused", auth: &twoKeys{keys: []string{"k1", "k2"}}, accept: "k3", body: body, status: 502, code: CodeUpstreamRejectedCred, tried: []string{"k1", "k2"}, refused: []string{"k1", "k2"}},
		{name: "single key refused", auth: &twoKeys{keys: []string{"k1"}}, accept: "k3", body: body, status: 502, code: CodeUpstreamRejectedCred, tried: []string{"k1"}, refused: []string{"k1"}},
		{name: "body too large to replay", auth: &twoKeys{keys: []string{"k1", "k2"}}, accept: "k2", body: big, status: 502, code: CodeUpstreamRejectedCred, tried: []string{"k1"}, refused: []string{"k1"}},
		{name: "no credential", auth: failingAuth{}, body: body, status: 503, code: credential.CodeUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &recordingRT{accept: func(r *http.Request) int {
				if r.Header.Get("Authorization") == "Bearer "+tt.accept {
					return 200
				}
				return 401
			}}
			h := newTestHandler(t, rt, "http://up/api", tt.auth, nil, "/fraud")
			var rb io.Reader = http.NoBody
			if tt.body != nil {
				rb = bytes.NewReader(tt.body)
			}
			r := httptest.NewRequest("POST", "http://gw.example/fraud/x", rb)
			if tt.chunked {
				r.ContentLength = -1
			}
			r.Header.Set("Authorization", "Bearer "+testKey)
			w := serve(h, r)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			if tt.code != "" && !strings.Contains(w.Body.String(), `"code":"`+tt.code+`"`) {
				t.Errorf("body %s, want code %s", w.Body, tt.code)
			}
			if tt.name == "single key refused" && strings.Contains(w.Body.String(), "too large") {
				t.Errorf("message blames the body size: %s", w.Body)
			}
			rt.mu.Lock()
			defer rt.mu.Unlock()
			var tried []string
			for i, req := range rt.reqs {
				tried = append(tried, strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer "))
				if !bytes.Equal(rt.bodies[i], tt.body) {
					t.Errorf("attempt %d carried %d body bytes, want %d", i, len(rt.bodies[i]), len(tt.body))
				}
			}
			if fmt.Sprint(tried) != fmt.Sprint(tt.tried) {
				t.Errorf("keys tried %v, want %v", tried, tt.tried)
			}
			if tk, ok := tt.auth.(*twoKeys); ok {
				tk.mu.Lock()
				defer tk.mu.Unlock()
				if fmt.Sprint(tk.rejected) != fmt.Sprint(tt.refused) {
					t.Errorf("keys reported rejected %v, want %v", tk.rejected, tt.refused)
				}
			}
		})
	}
}
