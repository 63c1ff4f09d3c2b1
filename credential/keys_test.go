package credential_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/test/fakeazure"
)

func TestKeySourceSwitchesAndSticks(t *testing.T) {
	const primary, secondary = "static-primary-key", "static-secondary-key"
	src, err := credential.NewKey(credential.KeyOptions{Name: "fraud-aci", Primary: primary, Secondary: secondary})
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t)
	up := w.upstream(fakeazure.StaticKeys(primary, secondary))
	c1 := mustCredential(t, src)
	if c1.Value != primary || c1.Label != "primary key" || !c1.ExpiresAt.IsZero() {
		t.Fatalf("first credential = %+v (%s), want the primary key", c1, c1.Label)
	}

	// The upstream stops taking the primary: 100 concurrent reports of it
	// cause one switch.
	up.Refuse(primary, true)
	if st := w.call(c1); st != http.StatusUnauthorized {
		t.Fatalf("upstream answered %d, want 401", st)
	}
	var wg sync.WaitGroup
	results := make([]bool, 100)
	for i := range results {
		wg.Add(1)
		go func() { defer wg.Done(); results[i] = src.Rejected(context.Background(), c1) }()
	}
	wg.Wait()
	for i, r := range results {
		if !r {
			t.Fatalf("caller %d told not to replay", i)
		}
	}
	c2 := mustCredential(t, src)
	if c2.Value != secondary || c2.Label != "secondary key" || c2.Generation != c1.Generation+1 {
		t.Fatalf("after rejection: %s generation %d, want secondary key generation %d", c2.Label, c2.Generation, c1.Generation+1)
	}
	if st := w.call(c2); st != http.StatusOK {
		t.Fatalf("upstream answered %d to the secondary key", st)
	}
	if st := src.Status(); st.Label != "secondary key" || st.Refreshes != 1 || !st.Ready {
		t.Errorf("status = %+v, want one switch to the secondary", st)
	}

	// Sticky: the primary works again, but the secondary stays in use.
	up.Refuse(primary, false)
	for range 3 {
		if c := mustCredential(t, src); c != c2 {
			t.Fatal("switched back without a rejection")
		}
	}

	// Symmetric: rejecting the secondary switches back to the primary.
	if !src.Rejected(context.Background(), c2) {
		t.Fatal("Rejected(secondary) said no replay")
	}
	if c := mustCredential(t, src); c.Value != primary {
		t.Fatalf("after rejecting the secondary got %s", c.Label)
	}
}

func TestKeySourceWithoutSecondary(t *testing.T) {
	src, err := credential.NewKey(credential.KeyOptions{Name: "only", Primary: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	c := mustCredential(t, src)
	if src.Rejected(context.Background(), c) {
		t.Fatal("Rejected claimed a new key without a secondary")
	}
	if c2 := mustCredential(t, src); c2.Value != c.Value {
		t.Fatal("key changed")
	}
	if _, err := credential.NewKey(credential.KeyOptions{Name: "none"}); err == nil {
		t.Fatal("NewKey accepted an empty key")
	}
}

// TestAMLKeysFollowRegeneration covers the aml_keys source for web services
// and online endpoints: initial fetch, periodic refetch, a regenerated
// primary followed after one 401 (one refetch for 100 callers), fallback to
// the secondary when the refetched primary is still refused, stickiness,
// and keys outliving a control plane outage.
func TestAMLKeysFollowRegeneration(t *testing.T) {
	inEachWorld(t, keysKinds, func(t *testing.T, w *world, k keysKind) {
		src, d := start(w, k)
		up := w.upstream(d.Accepts)

		c1 := mustCredential(t, src)
		p1, s1 := d.Keys()
		if c1.Value.Reveal() != p1 || c1.Label != "primary key" || d.KeyFetches() != 1 {
			t.Fatalf("first credential: %s, fetches %d; want the primary after one fetch", c1.Label, d.KeyFetches())
		}
		if st := w.call(c1); st != http.StatusOK {
			t.Fatalf("upstream answered %d to the primary", st)
		}
		// Periodic refetch.
		advance(credential.DefaultKeysInterval)
		if d.KeyFetches() != 2 {
			t.Fatalf("key fetches after one interval = %d, want 2", d.KeyFetches())
		}

		// regen_key('Primary'): the next request fails, and after one
		// refetch (for 100 concurrent reports) the new key is served.
		p2 := d.RegenerateKey("primary")
		if st := w.call(c1); st != http.StatusUnauthorized {
			t.Fatalf("upstream answered %d to a regenerated key, want 401", st)
		}
		release := d.Hold()
		before := d.KeyFetches()
		var wg sync.WaitGroup
		results := make([]bool, 100)
		for i := range results {
			wg.Add(1)
			go func() { defer wg.Done(); results[i] = src.Rejected(ctx(t), c1) }()
		}
		synctest.Wait()
		if got := credential.Waiters(src); got != 100 {
			t.Fatalf("%d Rejected callers wait for the refetch, want 100", got)
		}
		release()
		wg.Wait()
		if f := d.KeyFetches() - before; f != 1 {
			t.Fatalf("100 concurrent Rejected caused %d key fetches, want 1", f)
		}
		for i, r := range results {
			if !r {
				t.Fatalf("caller %d told not to replay", i)
			}
		}
		c2 := mustCredential(t, src)
		if c2.Value.Reveal() != p2 || c2.Label != "primary key" {
			t.Fatalf("after regeneration got %s, want the new primary", c2.Label)
		}
		if st := w.call(c2); st != http.StatusOK {
			t.Fatalf("upstream answered %d to the new primary", st)
		}

		// The upstream refuses the primary although the control plane
		// still lists it: refetch, same primary, fall back to secondary.
		advance(5 * time.Second) // past RejectInterval
		up.Refuse(p2, true)
		if !src.Rejected(ctx(t), c2) {
			t.Fatal("Rejected(primary) said no replay although a secondary exists")
		}
		if f := d.KeyFetches() - before; f != 2 {
			t.Fatalf("key fetches = %d, want a refetch", f)
		}
		c3 := mustCredential(t, src)
		if c3.Value.Reveal() != s1 || c3.Label != "secondary key" {
			t.Fatalf("got %s, want the secondary", c3.Label)
		}
		if st := w.call(c3); st != http.StatusOK {
			t.Fatalf("upstream answered %d to the secondary", st)
		}

		// Sticky across periodic refetches.
		up.Refuse(p2, false)
		advance(credential.DefaultKeysInterval)
		if c := mustCredential(t, src); c != c3 {
			t.Fatalf("periodic refetch switched to %s", c.Label)
		}
		if st := src.Status(); st.Label != "secondary key" || !st.Ready {
			t.Errorf("status = %+v", st)
		}

		// Regenerating the secondary in use: follow it, stay on the
		// secondary slot.
		advance(5 * time.Second)
		s2 := d.RegenerateKey("secondary")
		if !src.Rejected(ctx(t), c3) {
			t.Fatal("Rejected(old secondary) said no replay")
		}
		if c := mustCredential(t, src); c.Value.Reveal() != s2 || c.Label != "secondary key" {
			t.Fatalf("got %s, want the regenerated secondary", c.Label)
		}

		// Keys do not expire: an hour-long outage is invisible.
		w.aml.SetOutage(true)
		c4 := mustCredential(t, src)
		for range 12 {
			advance(5 * time.Minute)
			if c := mustCredential(t, src); c != c4 {
				t.Fatal("key changed during the outage")
			}
			if st := w.call(c4); st != http.StatusOK {
				t.Fatalf("upstream answered %d during the outage", st)
			}
		}
		if st := src.Status(); !st.Ready || st.LastError == "" {
			t.Errorf("status during outage = %+v, want ready with the last error", st)
		}
		w.assertNotLogged(p1, s1, p2, s2)
	})
}

// TestAMLKeysRateLimitSwitchesLocally checks that a rejection within
// RejectInterval of the last refetch switches keys without fetching again.
func TestAMLKeysRateLimitSwitchesLocally(t *testing.T) {
	inWorld(t, func(t *testing.T, w *world) {
		src, d := start(w, keysKinds[0])
		c1 := mustCredential(t, src)
		p2 := d.RegenerateKey("primary")
		if !src.Rejected(ctx(t), c1) {
			t.Fatal("no replay after regeneration")
		}
		c2 := mustCredential(t, src)
		if c2.Value.Reveal() != p2 {
			t.Fatal("new primary not served")
		}
		fetches := d.KeyFetches()
		// Refused again at once: no refetch (rate limit), local switch.
		if !src.Rejected(ctx(t), c2) {
			t.Fatal("no replay although the secondary was not tried")
		}
		if d.KeyFetches() != fetches {
			t.Fatal("rate-limited rejection refetched")
		}
		if c := mustCredential(t, src); c.Label != "secondary key" {
			t.Fatalf("got %s, want the secondary", c.Label)
		}
		// Both refused: nothing better to offer.
		c3 := mustCredential(t, src)
		if src.Rejected(ctx(t), c3) {
			t.Fatal("claimed a new key with both keys rejected")
		}
	})
}

func TestAMLKeysFirstFetchFailure(t *testing.T) {
	inWorld(t, func(t *testing.T, w *world) {
		d := w.aml.AddService(sub, rg, wsName, "scorer")
		d.FailNext(1, http.StatusInternalServerError)
		src, err := keysKinds[0].build(w, testPolicy())
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		src.Start()
		_, err = src.Credential(ctx(t))
		if err == nil {
			t.Fatal("got a key although the first fetch failed")
		}
		// Backing off: no fetch per call.
		_, _ = src.Credential(ctx(t))
		if d.KeyFetches() != 1 {
			t.Fatalf("Credential during backoff fetched (%d fetches)", d.KeyFetches())
		}
		advanceTo(src.Status().NextRefresh)
		if c := mustCredential(t, src); c.Label != "primary key" {
			t.Fatalf("after the retry got %s", c.Label)
		}
	})
}
