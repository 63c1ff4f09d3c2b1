package e2e

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/gateway"
	"github.com/modelgate/modelgate/test/fakeazure"
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
// a 401), each refresh is logged with its outcome and next refresh time,
// and no credential reaches a log line.
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
	g := w.start()
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
	// One log line per refresh: source, outcome and next refresh time.
	refreshLines := map[string]int{}
	for _, m := range g.Logs.Lines(t) {
		if m["msg"] == "upstream credential refreshed" && m["outcome"] == "ok" && m["next_refresh"] != nil {
			name, _ := m["source"].(string)
			refreshLines[name]++
		}
	}
	for _, u := range ups {
		if u.typ != config.AuthKey && refreshLines[u.name] < 5 {
			t.Errorf("%s: %d refresh log lines with outcome and next_refresh, want one per refresh (≥5)", u.name, refreshLines[u.name])
		}
	}
	secrets := w.seen()
	assertNotIn(t, "the gateway's logs", g.Logs.String(), secrets)
	assertNotIn(t, "/readyz", raw, secrets)
}

// tokenService is the fault knob set of the service that issues an
// upstream's credential: its deployment on the fake control plane, or the
// fake Azure AD for aad_token.
type tokenService interface {
	FailNext(n, status int)
	SetOutage(on bool)
	Hold() (release func())
	Held() int
}

func (w *azureWorld) tokenService(u *azureUpstream) tokenService {
	if u.typ == config.AuthAADToken {
		return w.aad
	}
	return u.dep
}

// TestCredentialOneFetchAtExpiry: 200 client requests that arrive while
// the upstream token has expired and its refetch is in flight all wait for
// that one fetch, get 200, and present the one new token: exactly one
// request reaches the token service.
func TestCredentialOneFetchAtExpiry(t *testing.T) {
	t.Parallel()
	const n = 200
	for _, typ := range []string{config.AuthAMLServiceToken, config.AuthAMLEndpointToken, config.AuthAADToken} {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			w := newAzureWorld(t)
			// A failed refresh is retried after 1.5 minutes (backoff 2m,
			// jitter one half): after the token has expired.
			w.refresh.MinBackoff, w.refresh.MaxBackoff = 2*time.Minute, 2*time.Minute
			w.plainUpstreams = true
			u := w.add(typ, "model", false)
			g := w.start()
			w.waitReady(g)
			if resp := w.call(g, u, []byte("warm-up")); resp.status != http.StatusOK {
				t.Fatalf("warm-up: %d %s", resp.status, resp.body)
			}
			t1, _ := u.lastBearer(t)
			svc := w.tokenService(u)

			// The refresh due at refresh-after fails; the token stays in
			// use until it expires, a minute later, before the retry.
			svc.FailNext(1, http.StatusServiceUnavailable)
			w.clock.Advance(upRefreshAfter)
			if _, rep, _ := readyz(t, g); credentialStatus(t, rep, u.name).LastError == "" {
				t.Fatal("the failed refresh is not reported in /readyz")
			}

			// The retry reaches the token service and is held there, with
			// the clock past the token's expiry.
			release := svc.Hold()
			defer release()
			before := w.fetches(u)
			advanced := make(chan struct{})
			go func() { defer close(advanced); w.clock.Advance(upTokenLifetime) }()
			waitFor(t, 5*time.Second, "the retry to reach the token service", func() bool { return svc.Held() == 1 })
			if _, rep, _ := readyz(t, g); credentialStatus(t, rep, u.name).Ready {
				t.Fatal("the expired token is reported ready")
			}

			results, wrote, answered := callMany(t, g, "/model/score", n)
			wrote()
			// Every request is on the wire; give the gateway a moment to
			// take them all in (a scheduling margin only: any request that
			// arrives after the release finds the new token and fetches
			// nothing, so the assertions below hold either way).
			time.Sleep(50 * time.Millisecond)
			if a := answered.Load(); a != 0 {
				t.Fatalf("%d requests were answered while no valid credential existed", a)
			}
			release()
			<-advanced
			for range n {
				if r := <-results; r.err != nil || r.status != http.StatusOK {
					t.Errorf("request: status %d, error %v: %s", r.status, r.err, r.body)
				}
			}
			if got := w.fetches(u) - before; got != 1 {
				t.Errorf("%d requests reached the token service for %d concurrent client requests, want exactly 1", got, n)
			}
			reqs := u.up.Requests()[1:] // after the warm-up
			if len(reqs) != n {
				t.Fatalf("upstream received %d requests, want %d (no replays)", len(reqs), n)
			}
			t2 := strings.TrimPrefix(reqs[0].Header.Get("Authorization"), "Bearer ")
			if t2 == t1 {
				t.Fatal("the expired token was presented")
			}
			for _, r := range reqs {
				if b := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "); b != t2 || !r.Accepted {
					t.Fatalf("upstream received two different tokens (or refused one) among the %d requests", n)
				}
			}
			assertNotIn(t, "the gateway's logs", g.Logs.String(), w.seen())
		})
	}
}

// TestCredentialOutage: the token service goes down 30s into a two-minute
// token's life. An outage that ends while the cached token is still valid
// is invisible to clients; a longer one yields 503
// upstream_credential_unavailable from the token's hard expiry until the
// first retry after the service is back, and then the gateway recovers by
// itself. Fetched keys do not expire, so no control plane outage is
// visible to their clients.
func TestCredentialOutage(t *testing.T) {
	t.Parallel()
	const (
		from   = 30 * time.Second
		step   = 10 * time.Second
		until  = 6 * time.Minute
		usable = upTokenLifetime - 10*time.Second // a token is not handed out in its last 10s
	)
	tests := []struct {
		name   string
		typ    string
		outage time.Duration
	}{
		{"aml_service_token: shorter than the validity left", config.AuthAMLServiceToken, time.Minute},
		{"aml_service_token: longer than the validity left", config.AuthAMLServiceToken, 3 * time.Minute},
		{"aad_token: shorter than the validity left", config.AuthAADToken, time.Minute},
		{"aad_token: longer than the validity left", config.AuthAADToken, 3 * time.Minute},
		// Fetched keys do not expire: no outage is visible.
		{"aml_keys: longer than a token's validity", config.AuthAMLKeys, 3 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := newAzureWorld(t)
			u := w.add(tt.typ, "model", false)
			g := w.start()
			w.waitReady(g)
			// The first token was fetched at start: "at" is its age.
			// The whole region's control plane is down for service tokens,
			// Azure AD for aad_token.
			setOutage := w.aml.SetOutage
			if tt.typ == config.AuthAADToken {
				setOutage = w.aad.SetOutage
			}
			end := from + tt.outage
			longer := end > usable && tt.typ != config.AuthAMLKeys
			var failedAt []time.Duration
			for at := time.Duration(0); at <= until; at += step {
				switch at {
				case from:
					setOutage(true)
				case end:
					setOutage(false)
				}
				resp := w.call(g, u, []byte("score me"))
				if resp.status == http.StatusOK {
					if b, _ := u.lastBearer(t); w.checkCredential(u, b) != "" {
						t.Errorf("at %v: the upstream received an invalid credential", at)
					}
				} else {
					if len(failedAt) == 0 {
						st, rep, raw := readyz(t, g)
						if cs := credentialStatus(t, rep, u.name); st != http.StatusServiceUnavailable || cs.Ready || cs.LastError == "" {
							t.Errorf("/readyz during the failure: %d %+v, want 503 with the source not ready and its last error", st, cs)
						}
						assertNotIn(t, "/readyz", raw, w.seen())
					}
					failedAt = append(failedAt, at)
					assertRefused(t, g, resp, http.StatusServiceUnavailable, credential.CodeUnavailable, "", "")
				}
				w.clock.Advance(step)
			}
			if !longer {
				if len(failedAt) > 0 {
					t.Fatalf("an outage shorter than the token's validity failed client requests at %v", failedAt)
				}
			} else {
				if len(failedAt) == 0 {
					t.Fatal("an outage past the token's expiry failed no request")
				}
				t.Logf("token age when requests failed: %v", failedAt)
				for _, at := range failedAt {
					if at < usable || at > end+2*time.Minute {
						t.Errorf("request failed at %v; failures belong between the token's expiry (%v) and the first retry after the outage (≤ %v)", at, usable, end+2*time.Minute)
					}
				}
			}
			if u.typ == config.AuthAMLKeys {
				// The keys were refetched during the outage (and failed)
				// and after it.
				if n := u.dep.KeyFetches(); n < 4 {
					t.Errorf("key fetches = %d, want the interval's refetches (≥4)", n)
				}
			}
			st, rep, _ := readyz(t, g)
			if cs := credentialStatus(t, rep, u.name); st != http.StatusOK || !cs.Ready || cs.LastError != "" {
				t.Errorf("after the outage: /readyz %d %+v, want ready without an error (recovered without a restart)", st, cs)
			}
			assertNotIn(t, "the gateway's logs", g.Logs.String(), w.seen())
		})
	}
}

// randomBody returns n random bytes: a binary body that must arrive
// upstream byte for byte.
func randomBody(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCredentialKeyRegeneration: after a key is regenerated
// (regen_key('Primary')), the next client request still gets 200: the
// upstream's 401 makes the aml_keys source fetch the keys again, and the
// gateway replays the request once with the new key, with the original
// body byte for byte. When the upstream refuses a key the control plane
// still lists, the source falls back to the secondary key and keeps it.
func TestCredentialKeyRegeneration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		endpoint bool
		// breakKey makes the upstream refuse the key in use and returns
		// the key the replay must carry.
		breakKey func(u *azureUpstream) string
	}{
		{"web service: primary regenerated", false, func(u *azureUpstream) string { return u.dep.RegenerateKey("primary") }},
		{"online endpoint: primary regenerated", true, func(u *azureUpstream) string { return u.dep.RegenerateKey("primary") }},
		{"web service: listed primary refused, secondary used", false, func(u *azureUpstream) string {
			p, s := u.dep.Keys()
			u.up.Refuse(p, true)
			return s
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := newAzureWorld(t)
			u := w.add(config.AuthAMLKeys, "scorer", tt.endpoint)
			g := w.start()
			w.waitReady(g)
			if resp := w.call(g, u, []byte("warm-up")); resp.status != http.StatusOK {
				t.Fatalf("warm-up: %d %s", resp.status, resp.body)
			}
			old, _ := u.dep.Keys()
			fetches := u.dep.KeyFetches()

			want := tt.breakKey(u)
			body := randomBody(t, 700)
			resp := w.call(g, u, body)
			if resp.status != http.StatusOK || !bytes.Equal(resp.body, body) {
				t.Fatalf("after the key broke: status %d, body intact %v", resp.status, bytes.Equal(resp.body, body))
			}
			reqs := u.up.Requests()[1:]
			if len(reqs) != 2 {
				t.Fatalf("upstream received %d requests, want the refused one and its replay", len(reqs))
			}
			first, replay := reqs[0], reqs[1]
			if first.Accepted || first.Header.Get("Authorization") != "Bearer "+old {
				t.Error("the first attempt did not carry the old primary key (or was accepted)")
			}
			if !replay.Accepted || replay.Header.Get("Authorization") != "Bearer "+want {
				t.Error("the replay did not carry the working key")
			}
			for i, r := range reqs {
				if !bytes.Equal(r.Body, body) {
					t.Errorf("attempt %d: upstream received %d bytes that differ from the client's %d", i, len(r.Body), len(body))
				}
			}
			if got := u.dep.KeyFetches() - fetches; got != 1 {
				t.Errorf("key fetches after the 401 = %d, want 1", got)
			}
			line := g.requestLine(t, resp.header.Get("X-Request-Id"))
			if line["replayed"] != true || line["status"] != float64(200) {
				t.Errorf("audit line %v, want replayed=true status 200", line)
			}
			// Later requests use the working key at once, also after the
			// periodic refetch (which lists the refused key again).
			for i := range 3 {
				if resp := w.call(g, u, []byte("next")); resp.status != http.StatusOK {
					t.Fatalf("next request: %d", resp.status)
				}
				if b, r := u.lastBearer(t); b != want || !r.Accepted {
					t.Errorf("request %d after the fix did not use the working key", i)
				}
				w.clock.Advance(time.Minute)
			}
			if _, rej := u.up.Counts(); rej != 1 {
				t.Errorf("upstream refused %d requests, want only the first attempt", rej)
			}
			assertNotIn(t, "the gateway's logs", g.Logs.String(), append(w.seen(), old))
		})
	}
}

// TestCredentialRejectedTokenReplay: an upstream that stops accepting the
// gateway's token (revoked) answers 401; the gateway refreshes the token
// and replays the request once, so the client sees 200 and the upstream
// the original body. A body larger than server.buffer_body_bytes cannot be
// replayed: the client gets 502 upstream_credential_rejected, and the next
// request uses the refreshed token.
func TestCredentialRejectedTokenReplay(t *testing.T) {
	t.Parallel()
	for _, typ := range []string{config.AuthAMLServiceToken, config.AuthAMLEndpointToken, config.AuthAADToken} {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			w := newAzureWorld(t)
			u := w.add(typ, "model", false)
			revoke := func() {
				if u.dep != nil {
					u.dep.RevokeTokens()
				} else {
					w.aad.RevokeAll()
				}
			}
			g := w.start("max_body_bytes: 64KiB", "buffer_body_bytes: 1KiB")
			w.waitReady(g)
			if resp := w.call(g, u, []byte("warm-up")); resp.status != http.StatusOK {
				t.Fatalf("warm-up: %d %s", resp.status, resp.body)
			}
			t1, _ := u.lastBearer(t)

			revoke()
			small := randomBody(t, 900)
			resp := w.call(g, u, small)
			if resp.status != http.StatusOK || !bytes.Equal(resp.body, small) {
				t.Fatalf("after the revocation: status %d (%s), body intact %v", resp.status, resp.body, bytes.Equal(resp.body, small))
			}
			reqs := u.up.Requests()[1:]
			if len(reqs) != 2 || reqs[0].Accepted || !reqs[1].Accepted {
				t.Fatalf("upstream saw %d requests, want a refused one and an accepted replay", len(reqs))
			}
			if reqs[0].Header.Get("Authorization") != "Bearer "+t1 || reqs[1].Header.Get("Authorization") == "Bearer "+t1 {
				t.Error("the replay did not carry a new token")
			}
			for i, r := range reqs {
				if !bytes.Equal(r.Body, small) {
					t.Errorf("attempt %d: upstream body differs from the client's", i)
				}
			}
			line := g.requestLine(t, resp.header.Get("X-Request-Id"))
			if line["replayed"] != true || line["upstream_status"] != float64(200) {
				t.Errorf("audit line %v, want replayed=true upstream_status 200", line)
			}

			// Past the refetch rate limit (5s), revoke again and send a
			// body too large to buffer.
			w.clock.Advance(10 * time.Second)
			t2, _ := u.lastBearer(t)
			revoke()
			large := randomBody(t, 8<<10)
			before := len(u.up.Requests())
			resp = w.call(g, u, large)
			assertRefused(t, g, resp, http.StatusBadGateway, "upstream_credential_rejected", "", "")
			if strings.Contains(resp.header.Get("WWW-Authenticate"), "Bearer") {
				t.Error("the upstream's challenge reached the client (the client's own credential was fine)")
			}
			reqs = u.up.Requests()[before:]
			if len(reqs) != 1 || reqs[0].Accepted || !bytes.Equal(reqs[0].Body, large) {
				t.Fatalf("upstream saw %d attempts of the large request, want exactly one, refused, with the whole body", len(reqs))
			}
			line = g.requestLine(t, resp.header.Get("X-Request-Id"))
			if line["replayed"] != nil || line["error"] != "upstream_credential_rejected" {
				t.Errorf("audit line %v, want no replay and error upstream_credential_rejected", line)
			}
			// The refusal refreshed the token: the next request needs no
			// replay.
			before = len(u.up.Requests())
			if resp := w.call(g, u, small); resp.status != http.StatusOK {
				t.Fatalf("next request: %d %s", resp.status, resp.body)
			}
			if reqs := u.up.Requests()[before:]; len(reqs) != 1 || !reqs[0].Accepted || reqs[0].Header.Get("Authorization") == "Bearer "+t2 {
				t.Error("the next request was not sent once with the refreshed token")
			}
			assertNotIn(t, "the gateway's logs", g.Logs.String(), w.seen())
		})
	}
}

// TestCredentialReadiness: with the control plane and Azure AD down at
// start, the gateway starts anyway; /readyz is 503 and lists every source
// (name, type, ready, last error), requests to Azure-backed upstreams get
// 503 upstream_credential_unavailable, and a static key upstream works.
// Once Azure is back, the next retry obtains every credential without a
// restart: /readyz is 200 with each token's valid_until. The report never
// contains a secret.
func TestCredentialReadiness(t *testing.T) {
	t.Parallel()
	w := newAzureWorld(t)
	ups := []*azureUpstream{
		w.add(config.AuthAMLServiceToken, "churn", false),
		w.add(config.AuthAMLEndpointToken, "summarizer", true),
		w.add(config.AuthAADToken, "llm", true),
		w.add(config.AuthAMLKeys, "scorer", true),
		w.add(config.AuthKey, "fraud", false),
	}
	w.aml.SetOutage(true)
	w.aad.SetOutage(true)
	g := w.start()
	// The first fetches run in the background at start and fail.
	waitFor(t, 5*time.Second, "every first fetch to fail", func() bool {
		_, rep, _ := readyz(t, g)
		for _, u := range ups[:4] {
			if credentialStatus(t, rep, u.name).LastError == "" {
				return false
			}
		}
		return true
	})
	// The static key route still serves, so the gateway is ready (one broken
	// upstream must not take every route out of service); the four routes
	// whose credential cannot be had are down, with the reason, and a probe
	// that follows one of them gets 503.
	st, rep, raw := readyz(t, g)
	if st != http.StatusOK || !rep.Ready {
		t.Fatalf("/readyz = %d ready=%v while the static key route can serve, want 200:\n%s", st, rep.Ready, raw)
	}
	for _, u := range ups {
		want := gateway.RouteDown
		if u.typ == config.AuthKey {
			want = gateway.RouteOK
		}
		if rs := rep.Routes[u.name]; rs.State != want || (want == gateway.RouteDown && !strings.Contains(strings.Join(rs.Reasons, " "), "credential unavailable")) {
			t.Errorf("route %s: %+v, want %s", u.name, rs, want)
		}
		code := do(t, client(), g.Admin, request{path: "/readyz?route=" + u.name}).status
		if (want == gateway.RouteDown) != (code == http.StatusServiceUnavailable) {
			t.Errorf("/readyz?route=%s = %d with the route %s", u.name, code, want)
		}
	}
	if len(rep.Credentials) != len(ups) {
		t.Errorf("/readyz lists %d sources, want %d", len(rep.Credentials), len(ups))
	}
	for _, u := range ups {
		cs := credentialStatus(t, rep, u.name)
		if cs.Type != u.typ {
			t.Errorf("%s: type %q, want %q", u.name, cs.Type, u.typ)
		}
		if u.typ == config.AuthKey {
			if !cs.Ready || cs.LastError != "" {
				t.Errorf("%s: static key source %+v, want ready", u.name, cs)
			}
			continue
		}
		if cs.Ready || !cs.ValidUntil.IsZero() || cs.LastError == "" || cs.NextRefresh.IsZero() {
			t.Errorf("%s: %+v, want not ready, no valid_until, the last error and the next attempt", u.name, cs)
		}
		resp := w.call(g, u, []byte("x"))
		assertRefused(t, g, resp, http.StatusServiceUnavailable, credential.CodeUnavailable, "", "")
	}
	if resp := w.call(g, ups[4], []byte("x")); resp.status != http.StatusOK {
		t.Errorf("static key upstream: %d, want 200 while Azure is down", resp.status)
	}
	for _, field := range []string{`"name"`, `"type"`, `"ready"`, `"last_error"`, `"next_refresh"`} {
		if !strings.Contains(raw, field) {
			t.Errorf("/readyz JSON has no %s field:\n%s", field, raw)
		}
	}
	assertNotIn(t, "/readyz", raw, w.seen())

	w.aml.SetOutage(false)
	w.aad.SetOutage(false)
	w.clock.Advance(2 * time.Second) // the first retry is due after 0.5–1s
	st, rep, raw = readyz(t, g)
	if st != http.StatusOK || !rep.Ready {
		t.Fatalf("/readyz = %d after Azure came back, want 200:\n%s", st, raw)
	}
	for _, u := range ups {
		cs := credentialStatus(t, rep, u.name)
		if !cs.Ready || cs.LastError != "" {
			t.Errorf("%s: %+v, want ready without error", u.name, cs)
		}
		switch u.typ {
		case config.AuthKey, config.AuthAMLKeys:
			if !cs.ValidUntil.IsZero() {
				t.Errorf("%s: valid_until %v for keys, which do not expire", u.name, cs.ValidUntil)
			}
		default:
			if cs.ValidUntil.IsZero() || !cs.ValidUntil.After(w.clock.Now()) {
				t.Errorf("%s: valid_until %v, want a time after now", u.name, cs.ValidUntil)
			}
		}
		if resp := w.call(g, u, []byte("x")); resp.status != http.StatusOK {
			t.Errorf("%s: %d after recovery, want 200", u.name, resp.status)
		}
	}
	if !strings.Contains(raw, `"valid_until"`) {
		t.Errorf("/readyz JSON has no valid_until:\n%s", raw)
	}
	secrets := w.seen()
	assertNotIn(t, "/readyz", raw, secrets)
	assertNotIn(t, "the gateway's logs", g.Logs.String(), secrets)
}

// TestCredentialManagedIdentity: the gateway's own identity is a managed
// identity (IDENTITY_ENDPOINT and IDENTITY_HEADER, as on App Service),
// feeding an aml_endpoint_token upstream through azidentity: requests
// succeed, the control plane got the managed identity's token, and later
// refreshes ask the managed identity again. It sets environment variables,
// so it is not parallel.
func TestCredentialManagedIdentity(t *testing.T) {
	w := newAzureWorld(t)
	mi := fakeazure.NewManagedIdentity(t, w.aad)
	mi.SetTokenLifetime(upTokenLifetime)
	mi.Setenv(t)
	w.credYAML = `{ type: managed_identity }`
	u := w.add(config.AuthAMLEndpointToken, "summarizer", true)
	g := w.start()
	w.waitReady(g)
	for i := range 4 {
		resp := w.call(g, u, []byte("x"))
		if resp.status != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, resp.status, resp.body)
		}
		if b, _ := u.lastBearer(t); w.checkCredential(u, b) != "" {
			t.Fatalf("request %d: upstream received %s", i, w.checkCredential(u, b))
		}
		w.clock.Advance(upRefreshAfter)
	}
	if n := mi.Requests(credential.ScopeARM); n < 4 {
		t.Errorf("managed identity token requests for ARM = %d, want one per refresh (≥4)", n)
	}
	if n := w.aad.TokenRequests(credential.ScopeARM); n != 0 {
		t.Errorf("the client-secret token endpoint was asked %d times; the managed identity must be used", n)
	}
	if n := u.dep.TokenFetches(); n < 4 {
		t.Errorf("endpoint token fetches = %d, want ≥4", n)
	}
	assertNotIn(t, "the gateway's logs", g.Logs.String(), append(w.seen(), mi.Header()))
}

// TestCredentialRejectedConcurrently: the upstream stops accepting the
// credential in use (tokens revoked, primary key regenerated) while many
// requests are in flight. Every client still gets 200, and however many of
// them were refused upstream, the credential is fetched exactly once.
func TestCredentialRejectedConcurrently(t *testing.T) {
	t.Parallel()
	const n = 50
	tests := []struct {
		typ   string
		spoil func(w *azureWorld, u *azureUpstream)
	}{
		{config.AuthAMLServiceToken, func(_ *azureWorld, u *azureUpstream) { u.dep.RevokeTokens() }},
		{config.AuthAADToken, func(w *azureWorld, _ *azureUpstream) { w.aad.RevokeAll() }},
		{config.AuthAMLKeys, func(_ *azureWorld, u *azureUpstream) { u.dep.RegenerateKey("primary") }},
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			t.Parallel()
			w := newAzureWorld(t)
			w.plainUpstreams = true
			u := w.add(tt.typ, "model", false)
			g := w.start()
			w.waitReady(g)
			if resp := w.call(g, u, []byte("warm-up")); resp.status != http.StatusOK {
				t.Fatalf("warm-up: %d %s", resp.status, resp.body)
			}
			before := w.fetches(u)
			tt.spoil(w, u)
			results, _, _ := callMany(t, g, "/model/score", n)
			for range n {
				if r := <-results; r.err != nil || r.status != http.StatusOK {
					t.Errorf("request: status %d, error %v: %s", r.status, r.err, r.body)
				}
			}
			if got := w.fetches(u) - before; got != 1 {
				t.Errorf("%d credential fetches for %d concurrent requests refused upstream, want exactly 1", got, n)
			}
			acc, rej := u.up.Counts()
			if acc != n+1 || rej > n {
				t.Errorf("upstream accepted %d and refused %d, want %d accepted (each request once, after at most one refusal)", acc, rej, n+1)
			}
			t.Logf("%d of %d requests were refused upstream and replayed", rej, n)
			assertNotIn(t, "the gateway's logs", g.Logs.String(), w.seen())
		})
	}
}
