package e2e

import (
	"bytes"
	"crypto/rand"
	"net/http"
	"testing"

	"github.com/modelgate/modelgate/test/upstream"
)

// TestSecondaryKey regenerates the upstream's keys under a running gateway
// and checks "retry once with the other key and keep using whichever
// works": the first request after a change succeeds through one replay
// with the body intact byte for byte, and later requests go straight to the
// working key.
func TestSecondaryKey(t *testing.T) {
	model := upstream.New(t, upstreamKey2) // only the secondary works
	g := startGateway(t, newConfig().Server("max_body_bytes: 64KiB", "buffer_body_bytes: 8KiB").Partners().
		Upstream("model", model.URL+"/score", upstreamKeysAuth).
		Route("fraud", "/fraud", "model", allowPartners))
	c := client()

	body := make([]byte, 4<<10) // binary, under buffer_body_bytes: replayable
	_, _ = rand.Read(body)
	big := make([]byte, 16<<10) // over buffer_body_bytes: streams, cannot be replayed
	_, _ = rand.Read(big)

	type attempt struct{ key string } // the key of each upstream attempt, in order
	steps := []struct {
		name     string
		accept   []string // upstream keys from this step on; nil keeps them
		body     []byte
		status   int
		attempts []attempt
	}{
		{name: "first request replays with the secondary", body: body, status: 200,
			attempts: []attempt{{upstreamKey}, {upstreamKey2}}},
		{name: "later requests use the secondary directly", body: body, status: 200,
			attempts: []attempt{{upstreamKey2}}},
		{name: "and again", body: []byte(`{"x":1}`), status: 200,
			attempts: []attempt{{upstreamKey2}}},
		{name: "bodiless request too", status: 200,
			attempts: []attempt{{upstreamKey2}}},
		{name: "secondary regenerated: back to the primary by one replay", accept: []string{upstreamKey}, body: body, status: 200,
			attempts: []attempt{{upstreamKey2}, {upstreamKey}}},
		{name: "primary sticks", body: body, status: 200,
			attempts: []attempt{{upstreamKey}}},
		{name: "primary regenerated, body too large to replay: 502, and the switch is made", accept: []string{upstreamKey2}, body: big, status: 502,
			attempts: []attempt{{upstreamKey}}},
		{name: "the next request uses the secondary", body: big, status: 200,
			attempts: []attempt{{upstreamKey2}}},
		{name: "both regenerated: 502 after one replay", accept: []string{"someone-else-entirely-1"}, body: body, status: 502,
			attempts: []attempt{{upstreamKey2}, {upstreamKey}}},
		{name: "still both refused: one replay per request, never more", body: body, status: 502,
			attempts: []attempt{{upstreamKey2}, {upstreamKey}}},
		{name: "recovered", accept: []string{upstreamKey, upstreamKey2}, body: body, status: 200,
			attempts: []attempt{{upstreamKey2}}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.accept != nil {
				model.SetKeys(st.accept...)
			}
			model.Reset()
			method := http.MethodPost
			if st.body == nil {
				method = http.MethodGet
			}
			resp := do(t, c, g.URL, request{method: method, path: "/fraud/x?q=1", header: bearer(partnerKey), body: bytes.NewReader(st.body)})
			if resp.status != st.status {
				t.Fatalf("status = %d, want %d: %s", resp.status, st.status, resp.body)
			}
			reqs := model.Requests()
			if len(reqs) != len(st.attempts) {
				t.Fatalf("upstream saw %d attempts, want %d", len(reqs), len(st.attempts))
			}
			for i, a := range st.attempts {
				r := reqs[i]
				if got := r.Header.Get("Authorization"); got != "Bearer "+a.key {
					t.Errorf("attempt %d used %q, want the key %q", i, got, a.key)
				}
				if !bytes.Equal(r.Body, st.body) {
					t.Errorf("attempt %d carried %d body bytes, want the %d sent, byte for byte", i, len(r.Body), len(st.body))
				}
				if r.RequestURI != "/score/x?q=1" || r.Method != method {
					t.Errorf("attempt %d was %s %s", i, r.Method, r.RequestURI)
				}
			}
			if st.status != 200 {
				if e := decodeError(t, resp.body); e.Error.Code != "upstream_credential_rejected" {
					t.Errorf("code = %q", e.Error.Code)
				}
			}
		})
	}
	assertNoSecrets(t, "log", g.Logs.String())
}
