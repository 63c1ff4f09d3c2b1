package proxy

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRequestID: a sane client-sent X-Request-Id is kept; anything else is
// replaced by a fresh one. Either way the upstream gets the id the client
// is answered with, and the upstream's own never reaches the client.
func TestRequestID(t *testing.T) {
	tests := []struct {
		name string
		sent string
		keep bool
	}{
		{name: "none", sent: ""},
		{name: "sane", sent: "client-id_1.2:3", keep: true},
		{name: "space", sent: "a b"},
		{name: "control character", sent: "a\x01b"},
		{name: "too long", sent: strings.Repeat("a", 129)},
		{name: "longest kept", sent: strings.Repeat("a", 128), keep: true},
	}
	rt := &recordingRT{accept: func(*http.Request) int { return 200 }}
	h := newTestHandler(t, echoRequestID{rt}, "http://up/api", nil, nil, "/fraud")
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://gw.example/fraud/x", nil)
			r.Header.Set("Authorization", "Bearer "+testKey)
			if tt.sent != "" {
				r.Header[headerRequestID] = []string{tt.sent}
			}
			w := serve(h, r)
			got := w.Header().Values(headerRequestID)
			if len(got) != 1 {
				t.Fatalf("answer carries X-Request-Id %q, want one", got)
			}
			if tt.keep != (got[0] == tt.sent) || got[0] == "" || seen[got[0]] {
				t.Errorf("X-Request-Id %q for %q sent (keep %v, seen before %v)", got[0], tt.sent, tt.keep, seen[got[0]])
			}
			seen[got[0]] = true
			if out, _ := rt.last(t); out.Header.Get(headerRequestID) != got[0] {
				t.Errorf("upstream got %q, client %q", out.Header.Get(headerRequestID), got[0])
			}
		})
	}
}

// echoRequestID answers with an X-Request-Id of its own, as Azure ML
// endpoints do.
type echoRequestID struct{ rt http.RoundTripper }

func (e echoRequestID) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := e.rt.RoundTrip(r)
	if err == nil {
		resp.Header.Set(headerRequestID, "upstream-"+r.Header.Get(headerRequestID))
	}
	return resp, err
}
