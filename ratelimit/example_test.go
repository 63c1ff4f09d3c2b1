package ratelimit_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"time"

	"github.com/modelgate/modelgate/ratelimit"
)

// A route limited to 5 requests per second per identity, with bursts of up
// to 3, answering 429 with Retry-After when the limit is hit.
func ExampleLimiter() {
	perIdentity, err := ratelimit.ParseRate("5/s") // routes[].rate_limit.per_identity
	if err != nil {
		panic(err)
	}
	limiter, err := ratelimit.New(ratelimit.Options{PerIdentity: perIdentity, PerIdentityBurst: 3})
	if err != nil {
		panic(err)
	}

	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) // time.Now() in real use
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		identity := r.Header.Get("X-Identity") // in the gateway: the authenticated key id or tid/oid
		if ok, wait := limiter.Allow(identity, now); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(ratelimit.RetryAfterSeconds(wait)))
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Printf("%s: 429, retry after %v\n", identity, wait)
			return
		}
		fmt.Printf("%s: 200\n", identity)
	})

	for _, id := range []string{"alice", "alice", "alice", "alice", "bob"} {
		r := httptest.NewRequest(http.MethodPost, "/score", nil)
		r.Header.Set("X-Identity", id)
		handler.ServeHTTP(httptest.NewRecorder(), r)
	}
	// Output:
	// alice: 200
	// alice: 200
	// alice: 200
	// alice: 429, retry after 200ms
	// bob: 200
}
