package pool_test

import (
	"errors"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/modelgate/modelgate/pool"
)

// answer is one backend's answer in an attempts script.
type answer struct {
	status int    // 0: a connect error
	wait   string // Retry-After seconds, "" for none
}

func (a answer) outcome() pool.Outcome {
	if a.status == 0 {
		return pool.Failure(pool.ConnectError, errors.New("connection refused"))
	}
	h := http.Header{}
	if a.wait != "" {
		h.Set("Retry-After", a.wait)
	}
	return pool.Response(a.status, h, time.Now())
}

func TestAttempts(t *testing.T) {
	three := []pool.BackendOptions{be("a", 1, 1), be("b", 1, 1), be("c", 2, 1)}
	tests := []struct {
		name       string
		backends   []pool.BackendOptions
		retry      pool.RetryOptions
		answers    map[string]answer // by backend; default 200
		replayable bool
		written    bool
		wantTried  string // backends in order of trying
		wantLast   int    // status passed on, 0: connect error
		wantWait   time.Duration
		wantAll429 bool
	}{
		{name: "success first time", backends: three, replayable: true, wantTried: "a", wantLast: 200},
		{name: "503 retried on the same priority", backends: three, replayable: true,
			answers: map[string]answer{"a": {503, ""}}, wantTried: "ab", wantLast: 200},
		{name: "connect error retried", backends: three, replayable: true,
			answers: map[string]answer{"a": {0, ""}}, wantTried: "ab", wantLast: 200},
		{name: "attempts bound the tries", backends: three, replayable: true,
			answers: map[string]answer{"a": {503, ""}, "b": {503, ""}}, wantTried: "ab", wantLast: 503},
		{name: "three attempts reach the lower priority", backends: three, replayable: true, retry: pool.RetryOptions{Attempts: 3},
			answers: map[string]answer{"a": {503, ""}, "b": {0, ""}}, wantTried: "abc", wantLast: 200},
		{name: "500 not in retry.on is passed on", backends: three, replayable: true,
			answers: map[string]answer{"a": {500, ""}}, wantTried: "a", wantLast: 500},
		{name: "500 listed is retried", backends: three, replayable: true, retry: pool.RetryOptions{On: []string{"500"}},
			answers: map[string]answer{"a": {500, ""}}, wantTried: "ab", wantLast: 200},
		{name: "streamed body is not retried", backends: three, replayable: false,
			answers: map[string]answer{"a": {503, ""}}, wantTried: "a", wantLast: 503},
		{name: "nothing retried once written", backends: three, replayable: true, written: true,
			answers: map[string]answer{"a": {0, ""}}, wantTried: "a", wantLast: 0},
		{name: "every backend 429: smallest wait", backends: three, replayable: true, retry: pool.RetryOptions{Attempts: 3},
			answers:   map[string]answer{"a": {429, "40"}, "b": {429, "20"}, "c": {429, "30"}},
			wantTried: "abc", wantLast: 429, wantWait: 20 * time.Second, wantAll429: true},
		{name: "429 then 503 is not all throttled", backends: three, replayable: true, retry: pool.RetryOptions{Attempts: 3},
			answers:   map[string]answer{"a": {429, "40"}, "b": {503, ""}, "c": {503, ""}},
			wantTried: "abc", wantLast: 503},
		{name: "one backend, two attempts: the retry reuses it", backends: three[:1], replayable: true, retry: pool.RetryOptions{Attempts: 2},
			answers: map[string]answer{"a": {0, ""}}, wantTried: "aa", wantLast: 0},
		{name: "a throttled lone backend is not retried", backends: three[:1], replayable: true, retry: pool.RetryOptions{Attempts: 2},
			answers: map[string]answer{"a": {429, "5"}}, wantTried: "a", wantLast: 429, wantWait: 5 * time.Second, wantAll429: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := mustNew(t, pool.Options{Backends: tt.backends, Retry: tt.retry})
				a := p.Attempts()
				tried, last := "", -1
				for {
					i, ok := a.Next()
					if !ok {
						t.Fatalf("Next found no backend after %q", tried)
					}
					tried += p.Name(i)
					ans, ok := tt.answers[p.Name(i)]
					if !ok {
						ans = answer{status: 200}
					}
					a.Record(i, ans.outcome())
					last = ans.status
					if !a.Retry(tt.replayable, tt.written) {
						break
					}
				}
				if tried != tt.wantTried || last != tt.wantLast || a.Tries() != len(tt.wantTried) {
					t.Errorf("tried %q (%d) and passed on %d, want %q and %d", tried, a.Tries(), last, tt.wantTried, tt.wantLast)
				}
				wait, all := a.AllThrottled()
				if wait != tt.wantWait || all != tt.wantAll429 {
					t.Errorf("AllThrottled = %v, %v; want %v, %v", wait, all, tt.wantWait, tt.wantAll429)
				}
			})
		})
	}
}

func TestAttemptsKnownUnavailable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := mustNew(t, pool.Options{
			Backends:       []pool.BackendOptions{be("a", 1, 1), be("b", 2, 1)},
			CircuitBreaker: pool.BreakerOptions{ConsecutiveFailures: 1},
		})
		p.Report(0, pool.Response(503, http.Header{"Retry-After": {"20"}}, time.Now()))
		fail(p, 1, 1)
		a := p.Attempts()
		if i, ok := a.Next(); ok || a.Tries() != 0 {
			t.Fatalf("Next = %d, %v with every backend open; want none without trying", i, ok)
		}
		if got, want := p.SoonestAvailable(), time.Now().Add(20*time.Second); !got.Equal(want) {
			t.Errorf("SoonestAvailable = %v, want %v", got, want)
		}
	})
}

func TestAttemptsHappyPathDoesNotAllocate(t *testing.T) {
	p := mustNew(t, pool.Options{Backends: []pool.BackendOptions{be("a", 1, 3), be("b", 1, 1), be("c", 2, 1)}})
	ok := pool.Response(200, nil, now)
	n := testing.AllocsPerRun(1000, func() {
		a := p.Attempts()
		i, _ := a.Next()
		a.Record(i, ok)
		if a.Retry(true, false) {
			t.Fatal("retry after a success")
		}
	})
	if n != 0 {
		t.Errorf("one successful attempt allocates %v times, want 0", n)
	}
}
