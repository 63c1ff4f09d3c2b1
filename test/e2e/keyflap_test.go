package e2e

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// pathUpstream is a loopback upstream that answers 401 to every request for
// /score/bad whatever the key (a path with its own idea of authorization)
// and, elsewhere, 200 to the keys set with setKeys and 401 to others. It
// records the key of each attempt per path.
type pathUpstream struct {
	URL string

	mu       sync.Mutex
	keys     map[string]bool
	attempts map[string][]string // path -> keys presented, in order
}

func newPathUpstream(t *testing.T, keys ...string) *pathUpstream {
	t.Helper()
	u := &pathUpstream{attempts: map[string][]string{}}
	u.setKeys(keys...)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		u.mu.Lock()
		u.attempts[r.URL.Path] = append(u.attempts[r.URL.Path], key)
		ok := u.keys[key] && r.URL.Path != "/score/bad"
		u.mu.Unlock()
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	u.URL = srv.URL
	return u
}

func (u *pathUpstream) setKeys(keys ...string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.keys = map[string]bool{}
	for _, k := range keys {
		u.keys[k] = true
	}
}

// take returns and forgets the attempts on path.
func (u *pathUpstream) take(path string) []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	a := u.attempts[path]
	delete(u.attempts, path)
	return a
}

// TestKeyFlapBounded is issue "Harden the edge" item 8: an upstream path
// that answers 401 to both keys for its own reasons must not make the
// gateway flip between its keys on every call. Many calls to that path
// cause at most 4 switches (one both-refused episode, plus one retry of the
// other key, which is rate-limited to one per credential.DefaultKeyRetry),
// calls to other paths keep the key in use, and a real revocation of the
// primary still moves to the secondary.
func TestKeyFlapBounded(t *testing.T) {
	model := newPathUpstream(t, upstreamKey, upstreamKey2)
	g := startGateway(t, newConfig().Partners().
		Upstream("model", model.URL+"/score", upstreamKeysAuth).
		Route("fraud", "/fraud", "model", allowPartners))
	c := client()
	call := func(t *testing.T, path string) int {
		t.Helper()
		return do(t, c, g.URL, request{method: http.MethodPost, path: "/fraud" + path, header: bearer(partnerKey), body: strings.NewReader(`{"x":1}`)}).status
	}
	switches := func() int { return strings.Count(g.Logs.String(), "switched") }
	only := func(t *testing.T, got []string, want string) {
		t.Helper()
		for i, k := range got {
			if k != want {
				t.Fatalf("attempt %d used %s, want %s", i, keyName(k), keyName(want))
			}
		}
	}

	t.Run("interleaved with working calls: one episode", func(t *testing.T) {
		for range 20 {
			if st := call(t, "/ok"); st != http.StatusOK {
				t.Fatalf("/ok answered %d", st)
			}
			if st := call(t, "/bad"); st != http.StatusBadGateway {
				t.Fatalf("/bad answered %d, want 502", st)
			}
		}
		only(t, model.take("/score/ok"), upstreamKey)
		if bad := model.take("/score/bad"); len(bad) > 21 {
			t.Errorf("/bad got %d attempts for 20 calls, want at most one replay in all", len(bad))
		}
		if n := switches(); n > 2 {
			t.Errorf("%d key switches, want at most 2 (one episode)", n)
		}
	})

	t.Run("many calls in a row: bounded", func(t *testing.T) {
		for range 50 {
			if st := call(t, "/bad"); st != http.StatusBadGateway {
				t.Fatalf("/bad answered %d, want 502", st)
			}
		}
		if n := switches(); n > 4 {
			t.Errorf("%d key switches, want at most 4", n)
		}
		if bad := model.take("/score/bad"); len(bad) > 52 {
			t.Errorf("/bad got %d attempts for 50 calls, want at most 2 replays", len(bad))
		}
		for range 5 {
			if st := call(t, "/ok"); st != http.StatusOK {
				t.Fatalf("/ok answered %d", st)
			}
		}
		only(t, model.take("/score/ok"), upstreamKey)
	})

	t.Run("warnings name keys by label only", func(t *testing.T) {
		assertNoSecrets(t, "log", g.Logs.String())
		warns := 0
		for _, l := range strings.Split(g.Logs.String(), "\n") {
			if strings.Contains(l, `"level":"WARN"`) && strings.Contains(l, `"type":"key"`) {
				warns++
			}
		}
		if warns > switches() {
			t.Errorf("the key source logged %d WARN lines for %d switches, want at most one per switch", warns, switches())
		}
	})
}

// TestKeyFlapRevocation checks that after a path's own 401s have taught the
// gateway to keep its key, a real revocation of the primary still moves to
// the secondary: the first call after the revocation may fail (it looks
// like the path's 401s), the next is replayed with the secondary, which
// then sticks.
func TestKeyFlapRevocation(t *testing.T) {
	model := newPathUpstream(t, upstreamKey, upstreamKey2)
	g := startGateway(t, newConfig().Partners().
		Upstream("model", model.URL+"/score", upstreamKeysAuth).
		Route("fraud", "/fraud", "model", allowPartners))
	c := client()
	call := func(t *testing.T, path string) int {
		t.Helper()
		return do(t, c, g.URL, request{method: http.MethodPost, path: "/fraud" + path, header: bearer(partnerKey), body: strings.NewReader(`{"x":1}`)}).status
	}
	for range 5 {
		call(t, "/ok")
		call(t, "/bad")
	}
	model.take("/score/ok")
	model.setKeys(upstreamKey2) // the primary is revoked
	ok := 0
	for range 3 {
		if call(t, "/ok") == http.StatusOK {
			ok++
		}
	}
	if ok < 2 {
		t.Fatalf("%d of 3 calls succeeded after revoking the primary, want at least 2", ok)
	}
	got := model.take("/score/ok")
	if last := got[len(got)-1]; last != upstreamKey2 {
		t.Fatalf("last attempt used %s, want the secondary", keyName(last))
	}
	for range 5 {
		call(t, "/bad")
		if st := call(t, "/ok"); st != http.StatusOK {
			t.Fatalf("/ok answered %d after the switch", st)
		}
	}
	for i, k := range model.take("/score/ok") {
		if k != upstreamKey2 {
			t.Fatalf("/ok attempt %d used %s after the switch, want the secondary", i, keyName(k))
		}
	}
}

func keyName(k string) string {
	switch k {
	case upstreamKey:
		return "the primary"
	case upstreamKey2:
		return "the secondary"
	}
	return "an unknown key"
}
