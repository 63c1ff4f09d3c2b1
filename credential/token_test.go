package credential_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/test/fakeazure"
)

// TestTokenSourceLifecycle walks each AML token source through its life:
// first fetch at Start, refresh at refreshAfter (not before), a changed
// refreshAfter honoured, the hard expiry honoured when the control plane is
// down, and recovery without a restart.
func TestTokenSourceLifecycle(t *testing.T) {
	inEachWorld(t, tokenKinds, func(t *testing.T, w *world, k tokenKind) {
		t0 := time.Now()
		src, d := start(w, k)
		w.upstream(d.Accepts)

		// Initial fetch.
		c1 := mustCredential(t, src)
		if got := d.TokenFetches(); got != 1 {
			t.Fatalf("token fetches after start = %d, want 1", got)
		}
		if st := w.call(c1); st != http.StatusOK {
			t.Fatalf("upstream answered %d to the fetched token", st)
		}
		if want := t0.Add(fakeazure.DefaultDeploymentTokenLifetime); !c1.ExpiresAt.Equal(want) {
			t.Errorf("ExpiresAt = %v, want %v", c1.ExpiresAt, want)
		}
		st := src.Status()
		if !st.Ready || st.Type != k.name || !st.NextRefresh.Equal(t0.Add(fakeazure.DefaultDeploymentRefreshAfter)) {
			t.Errorf("status = %+v, want ready, type %s, next refresh at refreshAfter", st, k.name)
		}

		// Not before refreshAfter...
		advance(fakeazure.DefaultDeploymentRefreshAfter - time.Second)
		if got := d.TokenFetches(); got != 1 {
			t.Fatalf("fetched %d times before refreshAfter, want 1", got)
		}
		if c := mustCredential(t, src); c != c1 {
			t.Fatal("credential changed before refreshAfter")
		}
		// ...but at it, in the background.
		advance(time.Second)
		if got := d.TokenFetches(); got != 2 {
			t.Fatalf("token fetches at refreshAfter = %d, want 2", got)
		}
		c2 := mustCredential(t, src)
		if c2.Value == c1.Value || c2.Generation <= c1.Generation {
			t.Fatalf("after refresh got generation %d (was %d), want a new token", c2.Generation, c1.Generation)
		}
		if st := w.call(c2); st != http.StatusOK {
			t.Fatalf("upstream answered %d to the refreshed token", st)
		}

		// A service that shortens refreshAfter is followed.
		d.SetTokenLifetime(20*time.Minute, 3*time.Minute)
		advance(fakeazure.DefaultDeploymentRefreshAfter) // third fetch, new hints
		c3 := mustCredential(t, src)
		if st := src.Status(); !st.NextRefresh.Equal(time.Now().Add(3 * time.Minute)) {
			t.Fatalf("next refresh = %v, want refreshAfter %v", st.NextRefresh, time.Now().Add(3*time.Minute))
		}
		advance(3 * time.Minute)
		if got := d.TokenFetches(); got != 4 {
			t.Fatalf("token fetches = %d, want 4", got)
		}
		c4 := mustCredential(t, src)
		if c4 == c3 {
			t.Fatal("token not refreshed at the shortened refreshAfter")
		}

		// Hard expiry: with the region down, c4 is served until just
		// before expiryOn and not after.
		w.aml.SetOutage(true)
		advanceTo(c4.ExpiresAt.Add(-11 * time.Second))
		if c := mustCredential(t, src); c != c4 {
			t.Fatal("cached token not served during the outage")
		}
		advance(time.Second)
		_, err := src.Credential(ctx(t))
		var ue *credential.UnavailableError
		if !errors.As(err, &ue) {
			t.Fatalf("past expiry: err = %v, want *UnavailableError", err)
		}
		var cpe *credential.ControlPlaneError
		if ue.Source != src.Status().Name || !ue.ExpiredAt.Equal(c4.ExpiresAt) || !errors.As(err, &cpe) || cpe.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("UnavailableError = %+v, want source, expiry and the 503 cause", ue)
		}
		if st := src.Status(); st.Ready || st.LastError == "" || st.ConsecutiveFailures == 0 {
			t.Errorf("status during outage = %+v, want not ready with the last error", st)
		}

		// Recovery without restart, at the next retry.
		w.aml.SetOutage(false)
		advanceTo(src.Status().NextRefresh)
		c5 := mustCredential(t, src)
		if st := w.call(c5); st != http.StatusOK {
			t.Fatalf("upstream answered %d after recovery", st)
		}
		if st := src.Status(); !st.Ready || st.LastError != "" || st.ConsecutiveFailures != 0 {
			t.Errorf("status after recovery = %+v", st)
		}
		w.assertNotLogged(c1.Value.Reveal(), c2.Value.Reveal(), c5.Value.Reveal())
	})
}

// TestManyRefreshesNoFailures sends a request every 30 s of fake time for
// six hours, across some 36 refreshes: every request succeeds.
func TestManyRefreshesNoFailures(t *testing.T) {
	inEachWorld(t, tokenKinds, func(t *testing.T, w *world, k tokenKind) {
		src, d := start(w, k)
		w.upstream(d.Accepts)
		for i := 0; i < 6*120; i++ {
			c := mustCredential(t, src)
			if st := w.call(c); st != http.StatusOK {
				t.Fatalf("request %d at +%v: upstream answered %d", i, time.Duration(i)*30*time.Second, st)
			}
			advance(30 * time.Second)
		}
		if got := d.TokenFetches(); got < 36 || got > 38 {
			t.Errorf("token fetches = %d, want about 36 (one per refreshAfter)", got)
		}
	})
}

// TestOutageShorterThanValidityIsInvisible takes the control plane down from
// just before the first refresh until well before expiry: callers keep
// getting the cached token, the source retries with growing backoff, and
// then refreshes before expiry.
func TestOutageShorterThanValidityIsInvisible(t *testing.T) {
	inEachWorld(t, tokenKinds, func(t *testing.T, w *world, k tokenKind) {
		t0 := time.Now()
		src, d := start(w, k)
		w.upstream(d.Accepts)
		c1 := mustCredential(t, src)

		advanceTo(t0.Add(9 * time.Minute))
		w.aml.SetOutage(true)
		var prevDelay time.Duration
		for time.Now().Before(t0.Add(15 * time.Minute)) {
			c := mustCredential(t, src)
			if c != c1 {
				t.Fatal("credential changed during the outage")
			}
			if st := w.call(c); st != http.StatusOK {
				t.Fatalf("at +%v: upstream answered %d", time.Since(t0), st)
			}
			if st := src.Status(); st.ConsecutiveFailures > 0 {
				delay := st.NextRefresh.Sub(st.LastErrorAt)
				if delay < prevDelay {
					t.Errorf("backoff shrank: %v after %v", delay, prevDelay)
				}
				if delay > 2*time.Minute {
					t.Errorf("backoff %v exceeds the 2m cap", delay)
				}
				prevDelay = delay
			}
			advance(10 * time.Second)
		}
		failed := d.TokenFetches() - 1
		t.Logf("%d fetch attempts during the outage; last backoff %v", failed, prevDelay)
		// First attempt at +10m, then 0.75s, 1.5s, 3s, … capped at 90s
		// (half-way jitter of 2m): 9 or 10 attempts in 5 minutes.
		if failed < 6 || failed > 12 {
			t.Errorf("fetch attempts during a 5-minute outage = %d, want 6..12 (bounded backoff)", failed)
		}
		if prevDelay < time.Minute {
			t.Errorf("backoff reached only %v, want it to grow towards the cap", prevDelay)
		}

		w.aml.SetOutage(false)
		for time.Now().Before(t0.Add(25 * time.Minute)) {
			c := mustCredential(t, src)
			if st := w.call(c); st != http.StatusOK {
				t.Fatalf("at +%v: upstream answered %d", time.Since(t0), st)
			}
			advance(10 * time.Second)
		}
		if c := mustCredential(t, src); c == c1 {
			t.Fatal("token was not refreshed after the outage")
		}
	})
}

// TestOutageLongerThanValidity takes the control plane down for 31 minutes,
// past the token's expiry: requests get *UnavailableError after expiry (and
// not before), fetch attempts stay bounded, and the source recovers within
// one maximum backoff once the service is back.
func TestOutageLongerThanValidity(t *testing.T) {
	inEachWorld(t, tokenKinds, func(t *testing.T, w *world, k tokenKind) {
		t0 := time.Now()
		src, d := start(w, k)
		c1 := mustCredential(t, src)

		advanceTo(t0.Add(9 * time.Minute))
		w.aml.SetOutage(true)
		sawUnavailable := false
		for time.Now().Before(t0.Add(40 * time.Minute)) {
			c, err := src.Credential(ctx(t))
			beforeExpiry := time.Now().Add(10 * time.Second).Before(c1.ExpiresAt)
			switch {
			case beforeExpiry && err != nil:
				t.Fatalf("at +%v, before expiry: %v", time.Since(t0), err)
			case beforeExpiry && c != c1:
				t.Fatal("credential changed during the outage")
			case !beforeExpiry:
				var ue *credential.UnavailableError
				if !errors.As(err, &ue) {
					t.Fatalf("at +%v, past expiry: err = %v, want *UnavailableError", time.Since(t0), err)
				}
				sawUnavailable = true
			}
			advance(30 * time.Second)
		}
		if !sawUnavailable {
			t.Fatal("never unavailable")
		}
		attempts := d.TokenFetches() - 1
		t.Logf("%d fetch attempts during the outage", attempts)
		if attempts < 15 || attempts > 32 {
			t.Errorf("fetch attempts during a 30-minute outage = %d, want 15..32", attempts)
		}

		w.aml.SetOutage(false)
		recoveredAt := time.Duration(-1)
		for i := 0; i <= 8; i++ { // 2 minutes in 15 s steps
			if _, err := src.Credential(ctx(t)); err == nil {
				recoveredAt = time.Duration(i) * 15 * time.Second
				break
			}
			advance(15 * time.Second)
		}
		if recoveredAt < 0 {
			t.Fatal("no recovery within the maximum backoff after the outage ended")
		}
		t.Logf("recovered %v after the outage ended", recoveredAt)
		c := mustCredential(t, src)
		w.upstream(d.Accepts)
		if st := w.call(c); st != http.StatusOK {
			t.Fatalf("upstream answered %d after recovery", st)
		}
	})
}

// TestConcurrentCallersAtExpiryFetchOnce lets the token expire during an
// outage, then has 200 callers pile up on the fetch that follows it: exactly
// one token request reaches the control plane and all 200 get its token.
func TestConcurrentCallersAtExpiryFetchOnce(t *testing.T) {
	inEachWorld(t, tokenKinds, func(t *testing.T, w *world, k tokenKind) {
		src, d := start(w, k)
		c1 := mustCredential(t, src)

		w.aml.SetOutage(true)
		advanceTo(c1.ExpiresAt)
		if _, err := src.Credential(ctx(t)); err == nil {
			t.Fatal("expired token still served")
		}
		w.aml.SetOutage(false)

		release := d.Hold()
		before := d.TokenFetches()
		advanceTo(src.Status().NextRefresh) // the retry timer starts the fetch
		if d.Held() != 1 {
			t.Fatalf("%d fetches reached the control plane at the retry time, want 1", d.Held())
		}

		const n = 200
		var wg sync.WaitGroup
		got := make([]credential.Credential, n)
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[i], errs[i] = src.Credential(ctx(t))
			}()
		}
		synctest.Wait()
		if got := credential.Waiters(src); got != n {
			t.Fatalf("%d callers wait for the fetch, want %d", got, n)
		}
		release()
		wg.Wait()

		if f := d.TokenFetches() - before; f != 1 {
			t.Fatalf("200 concurrent callers caused %d token fetches, want 1", f)
		}
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("caller %d: %v", i, errs[i])
			}
			if got[i] != got[0] || got[i].Value == c1.Value {
				t.Fatalf("caller %d got generation %d, caller 0 got %d", i, got[i].Generation, got[0].Generation)
			}
		}
	})
}

// TestFirstCredentialWaitsForFirstFetch checks that Credential before any
// success waits for the fetch in flight, and gives up with ctx.
func TestFirstCredentialWaitsForFirstFetch(t *testing.T) {
	inWorld(t, func(t *testing.T, w *world) {
		k := tokenKinds[0]
		d := k.add(w)
		src, err := k.build(w, testPolicy())
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		release := d.Hold()
		src.Start()
		synctest.Wait()
		if d.Held() != 1 {
			t.Fatal("Start did not begin the first fetch")
		}

		short, cancel := context.WithCancel(context.Background())
		cancel()
		_, err = src.Credential(short)
		var ue *credential.UnavailableError
		if !errors.As(err, &ue) || !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled wait: err = %v, want *UnavailableError wrapping context.Canceled", err)
		}
		if st := src.Status(); st.Ready {
			t.Fatal("ready before the first fetch")
		}

		done := make(chan credential.Credential)
		go func() { done <- mustCredential(t, src) }()
		synctest.Wait()
		if credential.Waiters(src) != 1 {
			t.Fatal("Credential did not wait for the first fetch")
		}
		release()
		c := <-done
		if !d.Accepts(c.Value.Reveal()) || d.TokenFetches() != 1 {
			t.Fatalf("first credential not the first fetch's token (fetches %d)", d.TokenFetches())
		}
	})
}

// TestTokenRejected checks the upstream-401 path for each token source: the
// deployment's tokens are revoked, 100 callers report the same stale token,
// one refetch happens and all are told to replay; Rejected-triggered
// refetches are rate-limited.
func TestTokenRejected(t *testing.T) {
	inEachWorld(t, tokenKinds, func(t *testing.T, w *world, k tokenKind) {
		src, d := start(w, k)
		w.upstream(d.Accepts)
		c1 := mustCredential(t, src)

		d.RevokeTokens()
		if st := w.call(c1); st != http.StatusUnauthorized {
			t.Fatalf("upstream answered %d to a revoked token, want 401", st)
		}
		release := d.Hold()
		before := d.TokenFetches()
		const n = 100
		results := make([]bool, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = src.Rejected(ctx(t), c1)
			}()
		}
		synctest.Wait()
		if got := credential.Waiters(src); got != n {
			t.Fatalf("%d Rejected callers wait for the refetch, want %d", got, n)
		}
		// Meanwhile Credential does not hand out the rejected token.
		credDone := make(chan credential.Credential)
		go func() { credDone <- mustCredential(t, src) }()
		synctest.Wait()
		if got := credential.Waiters(src); got != n+1 {
			t.Fatal("Credential did not wait for the refetch")
		}
		release()
		wg.Wait()
		c2 := <-credDone

		if f := d.TokenFetches() - before; f != 1 {
			t.Fatalf("100 concurrent Rejected caused %d fetches, want 1", f)
		}
		for i, r := range results {
			if !r {
				t.Fatalf("Rejected caller %d was told not to replay", i)
			}
		}
		if c2.Value == c1.Value {
			t.Fatal("Credential returned the rejected token")
		}
		if st := w.call(c2); st != http.StatusOK {
			t.Fatalf("upstream answered %d to the refetched token", st)
		}
		// A late report of the old token: no fetch, replay is worthwhile.
		if !src.Rejected(ctx(t), c1) || d.TokenFetches()-before != 1 {
			t.Fatal("a stale report caused a fetch or no replay")
		}

		// Rate limit: another rejection right away does not refetch.
		d.RevokeTokens()
		if src.Rejected(ctx(t), c2) {
			t.Fatal("Rejected within RejectInterval claimed a new token")
		}
		if f := d.TokenFetches() - before; f != 1 {
			t.Fatalf("rate-limited Rejected fetched (%d fetches)", f)
		}
		advance(5 * time.Second)
		if !src.Rejected(ctx(t), c2) || d.TokenFetches()-before != 2 {
			t.Fatal("Rejected after RejectInterval did not refetch")
		}
	})
}

// TestCloseStopsRefreshing checks that Close stops the timer (no fetch in
// the hour after it) and fails later calls with ErrClosed.
func TestCloseStopsRefreshing(t *testing.T) {
	inWorld(t, func(t *testing.T, w *world) {
		src, d := start(w, tokenKinds[0])
		mustCredential(t, src)
		if err := src.Close(); err != nil {
			t.Fatal(err)
		}
		advance(time.Hour)
		if d.TokenFetches() != 1 {
			t.Fatal("fetched after Close")
		}
		if _, err := src.Credential(ctx(t)); !errors.Is(err, credential.ErrClosed) {
			t.Fatalf("after Close: err = %v, want ErrClosed", err)
		}
	})
}
