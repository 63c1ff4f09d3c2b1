package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelgate/modelgate/internal/jsonline"
	"github.com/modelgate/modelgate/internal/redistest"
)

// BenchmarkLimits runs the key route of BenchmarkGatewayKeyRoute with a
// rate limit that always admits, counted in memory or in a redis-server on
// loopback, and with a token limit in the store as well. Besides ns/op
// (the latency a request sees, Redis round trips included) it reports
// cpu-µs/op: this process's user+system CPU per request, which leaves out
// Redis's own.
func BenchmarkLimits(b *testing.B) { benchLimits(b, false) }

// BenchmarkLimitsParallel is BenchmarkLimits with GOMAXPROCS goroutines
// sending at once, so Redis round trips overlap as they do under load.
func BenchmarkLimitsParallel(b *testing.B) { benchLimits(b, true) }

func benchLimits(b *testing.B, parallel bool) {
	srv := redistest.Start(b)
	const key = "mgk_bench-client-0123456789abcdef"
	for _, bc := range []struct{ name, extra, store string }{
		{"none", "", ""},
		{"memory", "    rate_limit: { per_identity: 1000000000/s, overall: 1000000000/s }\n", ""},
		{"redis", "    rate_limit: { per_identity: 1000000000/s, overall: 1000000000/s }\n", srv.URL()},
		{"redis+tokens", "    rate_limit: { per_identity: 1000000000/s, overall: 1000000000/s }\n    token_limit: { per_minute: 2000000000 }\n", srv.URL()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			y := strings.Replace(benchKeyRoute, "KEYSHA", sha(key), 1) + "\n" + bc.extra
			if bc.store != "" {
				y += "limits:\n  store: { type: redis, url: \"" + bc.store + "\" }\n"
			}
			snap, err := Build(context.Background(), parse(b, y), Deps{Transport: memTransport{}, Audit: jsonline.New(io.Discard, slog.LevelInfo)})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(snap.Close)
			before := cpuTime()
			if parallel {
				benchParallel(b, snap.Handler, "Bearer "+key)
			} else {
				benchRoute(b, snap.Handler, "Bearer "+key)
			}
			b.ReportMetric(float64(cpuTime()-before)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
			if st := snap.Readiness().LimitsStore; st != nil && st.Failures > 0 {
				b.Errorf("%d store failures during the benchmark, last: %s", st.Failures, st.LastError)
			}
		})
	}
}

// benchParallel is benchRoute from several goroutines, each with its own
// request and sink.
func benchParallel(b *testing.B, h http.Handler, authz string) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		send := benchSender(h, authz)
		for pb.Next() {
			if st := send(); st != 200 {
				b.Errorf("status %d", st)
				return
			}
		}
	})
}

// cpuTime is this process's user + system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
