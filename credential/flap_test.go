package credential_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/modelgate/modelgate/credential"
)

// flapUpstream answers 401 to /bad whatever the key, and elsewhere 200 to
// the keys set with setKeys and 401 to others. send serves it in-process.
type flapUpstream struct {
	mu   sync.Mutex
	keys map[string]bool
}

func newFlapUpstream(keys ...string) *flapUpstream {
	u := &flapUpstream{}
	u.setKeys(keys...)
	return u
}

func (u *flapUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	ok := u.keys[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")] && r.URL.Path != "/bad"
	u.mu.Unlock()
	if !ok {
		w.WriteHeader(http.StatusUnauthorized)
	}
}

func (u *flapUpstream) setKeys(keys ...string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.keys = map[string]bool{}
	for _, k := range keys {
		u.keys[k] = true
	}
}

// send does what the proxy's transport does: present the credential,
// report a 401 and replay once if the source has another credential, and
// report an accepted credential to a source that wants to know.
func (u *flapUpstream) send(t *testing.T, src credential.Source, path string) (status int, keys []string) {
	t.Helper()
	try := func(c credential.Credential) int {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("Authorization", c.Header())
		rec := httptest.NewRecorder()
		u.ServeHTTP(rec, req)
		keys = append(keys, c.Value.Reveal())
		if rec.Code == http.StatusUnauthorized {
			return rec.Code
		}
		if a, ok := src.(interface{ Accepted(credential.Credential) }); ok {
			a.Accepted(c)
		}
		return rec.Code
	}
	c := mustCredential(t, src)
	if st := try(c); st != http.StatusUnauthorized || !src.Rejected(context.Background(), c) {
		return st, keys
	}
	c = mustCredential(t, src)
	st := try(c)
	if st == http.StatusUnauthorized {
		src.Rejected(context.Background(), c)
	}
	return st, keys
}

// TestKeySourceFlapBounded is issue "Harden the edge" item 8 at the source:
// a path that answers 401 to both keys causes at most 4 switches at once
// and then at most 2 per RetryInterval, other paths keep the key in use,
// there is one WARN line per switch, and a revoked primary is still left
// for the secondary.
func TestKeySourceFlapBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const primary, secondary = "flap-primary-key", "flap-secondary-key"
		var logs bytes.Buffer
		src, err := credential.NewKey(credential.KeyOptions{
			Name: "model", Primary: primary, Secondary: secondary,
			RetryInterval: time.Minute,
			Logger:        slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		if err != nil {
			t.Fatal(err)
		}
		up := newFlapUpstream(primary, secondary)
		switches := func() uint64 { return src.Status().Refreshes }
		okWith := func(t *testing.T, want string) {
			t.Helper()
			st, keys := up.send(t, src, "/ok")
			if st != http.StatusOK || len(keys) != 1 || keys[0] != want {
				t.Fatalf("/ok: status %d after %d attempts, want 200 at once with the %s", st, len(keys), want)
			}
		}

		okWith(t, primary)
		for range 100 {
			if st, _ := up.send(t, src, "/bad"); st != http.StatusUnauthorized {
				t.Fatalf("/bad answered %d", st)
			}
		}
		if n := switches(); n > 4 {
			t.Fatalf("100 calls to /bad made %d switches, want at most 4", n)
		}
		okWith(t, primary)

		// Ten minutes of mixed traffic: at most 2 more switches a minute, and
		// /ok always goes out once, with the primary.
		before := switches()
		for range 60 {
			advance(10 * time.Second)
			for range 3 {
				up.send(t, src, "/bad")
			}
			okWith(t, primary)
		}
		if n := switches() - before; n > 20 {
			t.Fatalf("ten minutes of /bad calls made %d switches, want at most 20", n)
		}
		if w, n := strings.Count(logs.String(), `"level":"WARN"`), switches(); uint64(w) != n {
			t.Errorf("%d WARN lines for %d switches, want one per switch", w, n)
		}
		if strings.Contains(logs.String(), primary) || strings.Contains(logs.String(), secondary) {
			t.Error("a key was logged")
		}

		// The primary is revoked: the secondary is in use within
		// RetryInterval, and stays.
		up.setKeys(secondary)
		advance(time.Minute)
		for range 2 {
			up.send(t, src, "/ok")
		}
		okWith(t, secondary)
		up.send(t, src, "/bad")
		okWith(t, secondary)
		up.send(t, src, "/bad")
		up.send(t, src, "/bad")
		okWith(t, secondary)
	})
}
