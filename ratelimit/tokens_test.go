package ratelimit_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/modelgate/modelgate/internal/redistest"
	"github.com/modelgate/modelgate/ratelimit"
)

func TestNewTokensRejects(t *testing.T) {
	for _, tt := range []struct {
		name string
		o    ratelimit.TokenOptions
		want string
	}{
		{"none", ratelimit.TokenOptions{}, "no limit set"},
		{"negative minute", ratelimit.TokenOptions{PerMinute: -1, PerDay: 5}, "per_minute: -1"},
		{"negative day", ratelimit.TokenOptions{PerDay: -2}, "per_day: -2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ratelimit.NewTokens(tt.o, nil, "r")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestTokens: admission checks use so far; the answer's usage is charged
// after it; the minute window frees at the next UTC minute; in memory and
// in Redis alike, and in Redis shared by two replicas.
func TestTokens(t *testing.T) {
	srv := redistest.Start(t)
	for _, mode := range []string{"memory", "redis"} {
		t.Run(mode, func(t *testing.T) {
			var a, b *ratelimit.Tokens
			o := ratelimit.TokenOptions{PerMinute: 100, PerDay: 1000}
			build := func() *ratelimit.Tokens {
				var s *ratelimit.Store
				if mode == "redis" {
					s = newStore(t, srv.URL(), "local")
				}
				l, err := ratelimit.NewTokens(o, s, "chat-"+mode)
				if err != nil {
					t.Fatal(err)
				}
				return l
			}
			a = build()
			b = a
			if mode == "redis" {
				b = build() // a second replica
			}
			ctx := context.Background()
			now := time.Date(2026, 11, 26, 10, 0, 15, 0, time.UTC)
			if mode == "redis" {
				now = time.Now() // Redis keys' windows follow the replica's clock
			}
			v := a.Check(ctx, "alice", now)
			if !v.OK || v.Limit != 100 || v.Remaining != 100 {
				t.Fatalf("fresh: %+v", v)
			}
			a.Charge(ctx, "alice", 60, now)
			if v := b.Check(ctx, "alice", now); !v.OK || v.Remaining != 40 {
				t.Errorf("after 60: %+v, want remaining 40", v)
			}
			b.Charge(ctx, "alice", 60, now) // overshoots by its own usage
			v = a.Check(ctx, "alice", now)
			if v.OK || v.Remaining != 0 || v.RetryAfter <= 0 || v.RetryAfter > time.Minute {
				t.Errorf("after 120 of 100: %+v, want refused until the minute ends", v)
			}
			if mode == "memory" && v.RetryAfter != 45*time.Second {
				t.Errorf("RetryAfter = %v, want 45s (to 10:01:00)", v.RetryAfter)
			}
			if v := a.Check(ctx, "bob", now); !v.OK {
				t.Errorf("another identity refused: %+v", v)
			}
			next := now.Truncate(time.Minute).Add(time.Minute)
			if v := a.Check(ctx, "alice", next); !v.OK || v.Remaining != 100 {
				t.Errorf("next minute: %+v", v)
			}
			if mode == "redis" {
				rdb := srv.Client(t)
				keys, _ := rdb.Keys(ctx, "modelgate:tl:*").Result()
				if len(keys) != 2 {
					t.Errorf("keys = %v, want a minute and a day counter", keys)
				}
				for _, k := range keys {
					if strings.Contains(k, "alice") {
						t.Errorf("identity in clear in %q", k)
					}
					if ttl, _ := rdb.TTL(ctx, k).Result(); ttl <= 0 {
						t.Errorf("%q has no TTL", k)
					}
				}
			}
		})
	}
}
