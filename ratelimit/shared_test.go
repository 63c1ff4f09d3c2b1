package ratelimit_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelgate/modelgate/internal/redact"
	"github.com/modelgate/modelgate/internal/redistest"
	"github.com/modelgate/modelgate/ratelimit"
)

func newStore(t *testing.T, url string, onError string, mod ...func(*ratelimit.StoreOptions)) *ratelimit.Store {
	t.Helper()
	o := ratelimit.StoreOptions{Type: "redis", URL: redact.Secret(url), OnError: onError}
	for _, f := range mod {
		f(&o)
	}
	s, err := ratelimit.NewStore(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func shared(t *testing.T, s *ratelimit.Store, route string, o ratelimit.Options) *ratelimit.Shared {
	t.Helper()
	local, err := ratelimit.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return ratelimit.NewShared(s, route, o, local)
}

func TestNewStoreRejects(t *testing.T) {
	tests := []struct {
		name string
		o    ratelimit.StoreOptions
		want []string // substrings of the error
	}{
		{name: "no type", o: ratelimit.StoreOptions{URL: "redis://127.0.0.1:6379/0"}, want: []string{"type:", "write type: redis"}},
		{name: "memcached", o: ratelimit.StoreOptions{Type: "memcached", URL: "redis://127.0.0.1:6379/0"}, want: []string{`type: "memcached"`}},
		{name: "no url", o: ratelimit.StoreOptions{Type: "redis"}, want: []string{"url: missing"}},
		{name: "http url", o: ratelimit.StoreOptions{Type: "redis", URL: "http://u:hunter2@h/"}, want: []string{"url: http://u:xxxxx@h/ is not a redis://"}},
		{name: "bad db keeps password out", o: ratelimit.StoreOptions{Type: "redis", URL: "redis://:hunter2@h:6379/notadb"}, want: []string{"url: redis://:xxxxx@h:6379/notadb"}},
		{name: "on_error", o: ratelimit.StoreOptions{Type: "redis", URL: "redis://h/0", OnError: "retry"}, want: []string{`on_error: "retry": want local, allow or deny`}},
		{name: "timeout", o: ratelimit.StoreOptions{Type: "redis", URL: "redis://h/0", Timeout: time.Minute}, want: []string{"timeout: 1m0s: want 1ms to 10s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ratelimit.NewStore(tt.o)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ratelimit.ErrInvalidStore) {
				t.Errorf("error does not wrap ErrInvalidStore: %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}

func TestNewStoreAccepts(t *testing.T) {
	for _, u := range []string{"redis://127.0.0.1:6379/0", "rediss://:pw@cache.redis.cache.windows.net:6380/0", "redis://user:pw@h:1/3"} {
		s, err := ratelimit.NewStore(ratelimit.StoreOptions{Type: "redis", URL: redact.Secret(u)})
		if err != nil {
			t.Errorf("%s: %v", redact.Secret(u), err)
			continue
		}
		st := s.Status()
		if strings.Contains(st.Store, ":pw@") || st.OnError != "local" || st.State != "ok" {
			t.Errorf("status = %+v", st)
		}
		s.Close()
	}
}

// TestSharedAcrossReplicas: two limiters on one store (two replicas) share
// one per-identity budget; keys are prefixed, hashed and expire.
func TestSharedAcrossReplicas(t *testing.T) {
	srv := redistest.Start(t)
	o := ratelimit.Options{PerIdentity: ratelimit.Rate{Events: 5, Per: time.Minute}, PerIdentityBurst: 5}
	a := shared(t, newStore(t, srv.URL(), ""), "chat", o)
	b := shared(t, newStore(t, srv.URL(), ""), "chat", o)
	ctx := context.Background()
	admitted := 0
	var last ratelimit.Verdict
	for i := range 20 {
		l := a
		if i%2 == 1 {
			l = b
		}
		v := l.Check(ctx, "key:alice", time.Now())
		if v.OK {
			admitted++
			if v.Limit != 5 || v.Remaining != 5-admitted {
				t.Errorf("request %d: limit %d remaining %d, want 5 and %d", i, v.Limit, v.Remaining, 5-admitted)
			}
		}
		last = v
	}
	if admitted != 5 {
		t.Errorf("admitted %d across two replicas, want 5 (the burst)", admitted)
	}
	if last.OK || last.RetryAfter < 11*time.Second || last.RetryAfter > 12*time.Second {
		t.Errorf("last verdict %+v: want refused with Retry-After about 12 s (5/m)", last)
	}
	if v := a.Check(ctx, "key:bob", time.Now()); !v.OK {
		t.Errorf("another identity was refused: %+v", v)
	}

	rdb := srv.Client(t)
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 {
		t.Errorf("keys = %v, want one per identity", keys)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "modelgate:rl:{chat}:id:") || strings.Contains(k, "alice") || strings.Contains(k, "bob") {
			t.Errorf("key %q: want modelgate:rl:{chat}:id:<hash>, no identity in clear", k)
		}
		ttl, err := rdb.PTTL(ctx, k).Result()
		if err != nil || ttl <= 0 || ttl > time.Minute+time.Second {
			t.Errorf("key %q: TTL %v (%v), want (0, 1m]", k, ttl, err)
		}
	}
}

// TestSharedOverallBothOrNeither: a caller refused by its own limit takes
// nothing from the route's overall limit, in one call.
func TestSharedOverallBothOrNeither(t *testing.T) {
	srv := redistest.Start(t)
	o := ratelimit.Options{
		PerIdentity: ratelimit.Rate{Events: 2, Per: time.Hour}, PerIdentityBurst: 2,
		Overall: ratelimit.Rate{Events: 3, Per: time.Hour}, OverallBurst: 3,
	}
	l := shared(t, newStore(t, srv.URL(), ""), "r", o)
	ctx := context.Background()
	var got []bool
	for _, who := range []string{"a", "a", "a", "a", "b", "c", "b"} {
		got = append(got, l.Check(ctx, who, time.Now()).OK)
	}
	want := []bool{true, true, false, false, true, false, false}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("admitted = %v, want %v (a's refusals must not use the overall budget of 3)", got, want)
		}
	}
}

// TestStoreFailure: with Redis gone, on_error decides; failures are
// counted and logged at most once per 10 s; the store reports degraded and
// resumes shared counting once Redis is back.
func TestStoreFailure(t *testing.T) {
	for _, onError := range []string{"local", "allow", "deny"} {
		t.Run(onError, func(t *testing.T) {
			srv := redistest.Start(t)
			var logs bytes.Buffer
			var failures atomic.Int64
			now := time.Now()
			clock := func() time.Time { return now }
			s := newStore(t, srv.URL(), onError, func(o *ratelimit.StoreOptions) {
				o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
				o.OnFailure = func() { failures.Add(1) }
				o.Now = clock
			})
			o := ratelimit.Options{PerIdentity: ratelimit.Rate{Events: 1, Per: time.Hour}, PerIdentityBurst: 1}
			l := shared(t, s, "r", o)
			ctx := context.Background()
			if v := l.Check(ctx, "a", now); !v.OK {
				t.Fatalf("first request refused: %+v", v)
			}
			srv.Kill()
			want := map[string]ratelimit.Verdict{
				"local": {OK: true}, // this replica has not seen a yet
				"allow": {OK: true},
				"deny":  {Unavailable: true, RetryAfter: time.Second},
			}[onError]
			start := time.Now()
			v := l.Check(ctx, "a", now)
			if d := time.Since(start); d > s.Timeout()+50*time.Millisecond {
				t.Errorf("a check against a dead store took %v", d)
			}
			if v.OK != want.OK || v.Unavailable != want.Unavailable {
				t.Errorf("verdict %+v, want %+v", v, want)
			}
			if onError == "local" {
				if v := l.Check(ctx, "a", now); v.OK {
					t.Errorf("local fallback admitted a second request within 1/h")
				}
			}
			for range 4 {
				now = now.Add(2 * time.Second) // past the backoff: try the store each time
				l.Check(ctx, "z", now)
			}
			if st := s.Status(); st.State != "degraded" || st.Failures < 2 || st.LastError == "" {
				t.Errorf("status = %+v, want degraded with failures", st)
			}
			if n := failures.Load(); n < 2 {
				t.Errorf("OnFailure called %d times", n)
			}
			if n := strings.Count(logs.String(), "limits store unavailable"); n != 1 {
				t.Errorf("%d failure log lines within 10 s, want 1:\n%s", n, logs.String())
			}

			srv.Restart(t)
			now = now.Add(2 * time.Second)
			if v := l.Check(ctx, "a", now); !v.OK {
				t.Errorf("first request after restart (empty Redis) refused: %+v", v)
			}
			if v := l.Check(ctx, "a", now); v.OK || v.Unavailable {
				t.Errorf("shared limit did not resume after restart: %+v", v)
			}
			if st := s.Status(); st.State != "ok" {
				t.Errorf("status after restart = %+v", st)
			}
			if !strings.Contains(logs.String(), "available again") {
				t.Errorf("no recovery log line:\n%s", logs.String())
			}
		})
	}
}

// TestStorePaused: a Redis that accepts connections and never answers
// holds no request longer than the timeout (plus scheduling margin).
func TestStorePaused(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, srv.URL(), "local", func(o *ratelimit.StoreOptions) { o.Backoff = time.Nanosecond })
	l := shared(t, s, "r", ratelimit.Options{PerIdentity: ratelimit.Rate{Events: 100, Per: time.Second}})
	ctx := context.Background()
	l.Check(ctx, "warm", time.Now())
	srv.Pause()
	t.Cleanup(srv.Resume)
	var worst time.Duration
	for i := range 10 {
		start := time.Now()
		v := l.Check(ctx, "a"+letter(i), time.Now())
		worst = max(worst, time.Since(start))
		if !v.OK {
			t.Errorf("request %d refused with on_error local: %+v", i, v)
		}
	}
	if worst > s.Timeout()+50*time.Millisecond {
		t.Errorf("slowest check against a paused Redis took %v, want ≤ timeout %v + 50ms", worst, s.Timeout())
	}
	t.Logf("slowest check against a paused Redis: %v (timeout %v)", worst, s.Timeout())
}

func letter(i int) string { return string(rune('a' + i)) }

// TestSharedHighRate: a rate so high that one request's emission interval
// is below the float's precision still admits, and never errors.
func TestSharedHighRate(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, srv.URL(), "deny")
	l := shared(t, s, "r", ratelimit.Options{PerIdentity: ratelimit.Rate{Events: ratelimit.MaxEvents, Per: time.Second}, Overall: ratelimit.Rate{Events: ratelimit.MaxEvents, Per: time.Second}})
	for i := range 50 {
		if v := l.Check(context.Background(), "a", time.Now()); !v.OK {
			t.Fatalf("request %d: %+v; store %+v", i, v, s.Status())
		}
	}
	if st := s.Status(); st.Failures != 0 {
		t.Errorf("store failures: %+v", st)
	}
}

// TestLimiterCheck: the in-memory limiter reports the bucket and what is
// left in it, like Shared does.
func TestLimiterCheck(t *testing.T) {
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name string
		o    ratelimit.Options
	}{
		{"per identity", ratelimit.Options{PerIdentity: ratelimit.Rate{Events: 3, Per: time.Minute}, PerIdentityBurst: 3}},
		{"overall", ratelimit.Options{Overall: ratelimit.Rate{Events: 3, Per: time.Minute}, OverallBurst: 3}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l, err := ratelimit.New(tt.o)
			if err != nil {
				t.Fatal(err)
			}
			var got []ratelimit.Verdict
			for range 4 {
				got = append(got, l.Check(context.Background(), "a", now))
			}
			for i, want := range []int{2, 1, 0} {
				if !got[i].OK || got[i].Limit != 3 || got[i].Remaining != want {
					t.Errorf("request %d: %+v, want admitted, limit 3, remaining %d", i, got[i], want)
				}
			}
			if got[3].OK || got[3].RetryAfter != 20*time.Second || got[3].Remaining != 0 {
				t.Errorf("fourth: %+v, want refused for 20s", got[3])
			}
		})
	}
}

// TestStorePassword: a store that requires a password (as Azure Cache for
// Redis does) is used with the password in the URL; a wrong password is a
// store failure that follows on_error, and its value never appears in the
// status or the error.
func TestStorePassword(t *testing.T) {
	const pw = "s3cr3t-redis-pass"
	srv := redistest.StartWithPassword(t, pw)
	o := ratelimit.Options{PerIdentity: ratelimit.Rate{Events: 5, Per: time.Minute}, PerIdentityBurst: 5}
	ctx := context.Background()

	good := newStore(t, srv.URL(), "")
	if v := shared(t, good, "chat", o).Check(ctx, "key:alice", time.Now()); !v.OK || v.Remaining != 4 {
		t.Errorf("with the password: %+v, want admitted with 4 left (counted in Redis)", v)
	}
	if st := good.Status(); st.State != ratelimit.StoreOK || st.Failures != 0 || strings.Contains(st.Store, pw) {
		t.Errorf("with the password: status %+v", st)
	}
	if keys, err := srv.Client(t).Keys(ctx, "modelgate:*").Result(); err != nil || len(keys) != 1 {
		t.Errorf("keys in Redis: %v %v, want the one counter", keys, err)
	}

	wrong := newStore(t, strings.Replace(srv.URL(), pw, "not-the-password", 1), "deny")
	v := shared(t, wrong, "chat", o).Check(ctx, "key:alice", time.Now())
	if v.OK || !v.Unavailable {
		t.Errorf("with a wrong password and on_error deny: %+v, want refused as unavailable", v)
	}
	st := wrong.Status()
	if st.State != ratelimit.StoreDegraded || st.Failures == 0 || strings.Contains(st.Store+st.LastError, "not-the-password") {
		t.Errorf("with a wrong password: status %+v", st)
	}
}

// TestStoreTLS: a rediss:// store (TLS, as Azure Cache for Redis serves on
// port 6380) counts limits like a plain one. The server's certificate is
// trusted the way any private CA is, through SSL_CERT_FILE; this must be
// the process's first TLS verification, which it is in this package.
func TestStoreTLS(t *testing.T) {
	srv := redistest.StartTLS(t)
	t.Setenv("SSL_CERT_FILE", srv.CAFile())
	if !strings.HasPrefix(srv.URL(), "rediss://") {
		t.Fatalf("URL %s", srv.URL())
	}
	s := newStore(t, srv.URL(), "deny", func(o *ratelimit.StoreOptions) { o.Timeout = 2 * time.Second })
	o := ratelimit.Options{PerIdentity: ratelimit.Rate{Events: 5, Per: time.Minute}, PerIdentityBurst: 5}
	l := shared(t, s, "chat", o)
	for i := range 5 {
		if v := l.Check(context.Background(), "key:alice", time.Now()); !v.OK || v.Remaining != 4-i {
			t.Fatalf("request %d over TLS: %+v (status %+v)", i, v, s.Status())
		}
	}
	if v := l.Check(context.Background(), "key:alice", time.Now()); v.OK || v.Unavailable {
		t.Errorf("sixth request: %+v, want refused by the limit counted over TLS", v)
	}
	if st := s.Status(); st.State != ratelimit.StoreOK || st.Failures != 0 {
		t.Errorf("status %+v", st)
	}
}
