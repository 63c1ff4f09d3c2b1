package main

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// go-redis writes its own unstructured lines to stderr through a
// process-wide logger ("redis: connection pool: failed to dial ..."), one
// per failed dial, so an outage of limits.store would flood the log.
// ratelimit.Store already counts every failure and logs them through slog
// at most once per 10 s; the library's lines add nothing, so the gateway
// silences them once, before anything runs.
func init() { redis.SetLogger(quietRedis{}) }

// quietRedis discards go-redis's internal log lines.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}
