#!/usr/bin/env bash
# bench/gateway.sh ADDR — run modelgate as a target of the side-by-side
# harness in ../shared/bench (see bench/README.md). It writes a config from
# the harness's BENCH_* variables — one route at /score that admits the
# harness's static client key and its RS256 tokens (issuer BENCH_ISSUER, keys
# from BENCH_JWKS_URL, audience BENCH_AUDIENCE, role Score.Invoke) and
# forwards to BENCH_UPSTREAM_URL/score with BENCH_UPSTREAM_KEY — and execs
# the gateway listening on ADDR, so the harness measures the gateway process.
#
#   ../shared/bench/run.sh --rounds 5 --sse \
#     --extra 'modelgate=http://127.0.0.1:18090|key|jwt' \
#     --extra-cmd "modelgate=exec $PWD/bench/gateway.sh 127.0.0.1:18090"
set -euo pipefail
addr=${1:?usage: gateway.sh ADDR (host:port on loopback)}
: "${BENCH_CLIENT_KEY:?run me from the bench harness (BENCH_* variables)}"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${BENCH_RUN_DIR:-$(mktemp -d)}/modelgate
mkdir -p "$dir"
bin=${MODELGATE_BIN:-$dir/gateway}
if [ ! -x "$bin" ]; then
  (cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$bin" ./cmd/gateway)
fi
client_sha=$(printf %s "$BENCH_CLIENT_KEY" | sha256sum | cut -d' ' -f1)

cat > "$dir/modelgate.yaml" <<YAML
server:
  listen: "$addr"
admin:
  listen: "${MODELGATE_ADMIN:-127.0.0.1:0}"
  pprof: ${MODELGATE_PPROF:-false}
log:
  level: ${MODELGATE_LOG_LEVEL:-info}   # the per-request JSON line is part of what is measured
identity_providers:
  bench:
    type: oidc
    issuer: "$BENCH_ISSUER"
    jwks_uri: "$BENCH_JWKS_URL"
    audiences: ["$BENCH_AUDIENCE"]
key_sets:
  bench:
    - id: bench-client
      sha256: "$client_sha"
upstreams:
  scorer:
    url: "$BENCH_UPSTREAM_URL/score"
    auth: { type: key, key: "\${BENCH_UPSTREAM_KEY}" }
routes:
  - name: score
    path: /score
    upstream: scorer
    allow:
      - key_set: bench
      - identity_provider: bench
        roles: [Score.Invoke]
YAML
# Optional limits, to measure their cost: MODELGATE_RATE_LIMIT is a
# rate_limit flow mapping for the route (e.g. '{ per_identity: 1000000/s }'),
# MODELGATE_STORE_URL a Redis URL that counts it (limits.store).
if [ -n "${MODELGATE_RATE_LIMIT:-}" ]; then
  echo "    rate_limit: $MODELGATE_RATE_LIMIT" >> "$dir/modelgate.yaml"
fi
if [ -n "${MODELGATE_STORE_URL:-}" ]; then
  printf 'limits:\n  store: { type: redis, url: "%s", timeout: 50ms, on_error: local }\n' "$MODELGATE_STORE_URL" >> "$dir/modelgate.yaml"
fi
# Optional traces, to measure their cost: MODELGATE_OTLP_ENDPOINT is an
# OTLP/HTTP collector (bench/otlpsink), MODELGATE_TRACE_RATIO the share of
# requests sampled (default 1: every request).
if [ -n "${MODELGATE_OTLP_ENDPOINT:-}" ]; then
  printf 'telemetry:\n  traces: { endpoint: "%s", sample_ratio: %s }\n' "$MODELGATE_OTLP_ENDPOINT" "${MODELGATE_TRACE_RATIO:-1}" >> "$dir/modelgate.yaml"
fi

exec "$bin" serve -config "$dir/modelgate.yaml" 2>>"$dir/gateway.log"
