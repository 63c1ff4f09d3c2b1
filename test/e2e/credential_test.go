package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/modelgate/modelgate/config"
)

// These tests run the real gateway — config.Parse, gateway.Build with the
// real azidentity credential and credential sources — against fake Azure
// AD, fake AML control planes and fake scoring endpoints that accept only
// the currently valid credential (issue 4, "Tests"). Expiry and refresh are
// driven by a fake clock (Deps.Clock), so minutes of token lifetime pass in
// milliseconds.

// TestCredentialRefreshThroughGateway: for every upstream auth type, client
// requests keep succeeding while the fake clock runs through several
// credential lifetimes, each upstream receives exactly the credential that
// is valid at that moment (refreshed ahead of expiry, never replayed after
// a 401), and no credential reaches a log line.
func TestCredentialRefreshThroughGateway(t *testing.T) {
	t.Parallel()
	w := newAzureWorld(t)
	ups := []*azureUpstream{
		w.add(config.AuthAMLServiceToken, "churn", false),
		w.add(config.AuthAMLEndpointToken, "summarizer", true),
		w.add(config.AuthAADToken, "llm", true),
		w.add(config.AuthAMLKeys, "scorer", false),
		w.add(config.AuthKey, "fraud", false),
	}
	g := w.start("")
	w.waitReady(g)
	start := map[string]int{}
	for _, u := range ups {
		start[u.name] = w.fetches(u)
	}

	const steps, step = 12, 30 * time.Second // six minutes: three token lifetimes
	failures := 0
	creds := map[string]map[string]bool{}
	for i := range steps {
		for _, u := range ups {
			body := fmt.Appendf(nil, `{"step":%d,"upstream":%q}`, i, u.name)
			resp := w.call(g, u, body)
			if resp.status != http.StatusOK {
				failures++
				t.Errorf("step %d (%v): %s answered %d: %s", i, time.Duration(i)*step, u.name, resp.status, resp.body)
				continue
			}
			if !bytes.Equal(resp.body, body) {
				t.Errorf("step %d: %s echoed %q, want %q", i, u.name, resp.body, body)
			}
			b, _ := u.lastBearer(t)
			if why := w.checkCredential(u, b); why != "" {
				t.Errorf("step %d: %s received the wrong credential: %s", i, u.name, why)
			}
			if creds[u.name] == nil {
				creds[u.name] = map[string]bool{}
			}
			creds[u.name][b] = true
		}
		w.clock.Advance(step)
	}
	if failures > 0 {
		t.Fatalf("%d client requests failed across the refreshes", failures)
	}

	_, rep, raw := readyz(t, g)
	for _, u := range ups {
		acc, rej := u.up.Counts()
		if acc != steps || rej != 0 {
			t.Errorf("%s: upstream accepted %d and refused %d requests, want %d and 0 (refresh ahead of expiry, no replays)", u.name, acc, rej, steps)
		}
		st := credentialStatus(t, rep, u.name)
		fetched := w.fetches(u) - start[u.name]
		switch u.typ {
		case config.AuthKey:
			if len(creds[u.name]) != 1 || st.Refreshes != 0 {
				t.Errorf("%s: %d distinct keys, %d refreshes; want the one static key", u.name, len(creds[u.name]), st.Refreshes)
			}
		case config.AuthAMLKeys:
			// Keys do not expire: refetched every refresh_interval (1m).
			if fetched < 5 || st.Refreshes < 6 {
				t.Errorf("%s: %d key fetches (status refreshes %d) in 6m, want ≥5 (refresh_interval 1m)", u.name, fetched, st.Refreshes)
			}
		default:
			// A new token every minute (refreshAfter, or half of a
			// two-minute lifetime without a hint).
			if fetched < 5 || len(creds[u.name]) < 5 {
				t.Errorf("%s: %d token fetches, %d distinct tokens in 6m; want ≥5 of each", u.name, fetched, len(creds[u.name]))
			}
			if st.ValidUntil.IsZero() || !st.ValidUntil.After(w.clock.Now()) {
				t.Errorf("%s: valid_until %v is not after now %v", u.name, st.ValidUntil, w.clock.Now())
			}
		}
	}
	secrets := w.seen()
	assertNotIn(t, "the gateway's logs", g.Logs.String(), secrets)
	assertNotIn(t, "/readyz", raw, secrets)
}
