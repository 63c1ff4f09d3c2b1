package main

import (
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/gateway"
	"github.com/modelgate/modelgate/pool"
	"github.com/modelgate/modelgate/ratelimit"
)

func cmdCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", stderr)
	path := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" && fs.NArg() == 1 {
		*path = fs.Arg(0)
	}
	if *path == "" {
		fmt.Fprintln(stderr, "gateway check: -config FILE is required")
		return exitError(2)
	}
	// The same load and compile as serve, so check cannot pass a
	// configuration serve refuses; nothing is started.
	cfg, err := config.Load(*path, os.LookupEnv)
	var snap *gateway.Snapshot
	if err == nil {
		snap, err = gateway.Compile(cfg, gateway.Deps{}, gateway.CompileOptions{})
	}
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		n := strings.Count(err.Error(), "\n") + 1
		fmt.Fprintf(stderr, "%s: %d problem(s); nothing was started\n", *path, n)
		return exitError(1)
	}
	defer snap.Close()
	for _, w := range snap.Warnings {
		fmt.Fprintln(stderr, w)
	}
	fmt.Fprintf(stdout, "%s: OK (listen %s, admin %s)\n\n", *path, cfg.Server.Listen, cfg.Admin.Listen)
	printRoutes(stdout, cfg)
	printPools(stdout, cfg, snap)
	printLimits(stdout, cfg)
	if snap.Telemetry != nil {
		fmt.Fprintf(stdout, "\nTELEMETRY\n  %s\n", snap.Telemetry)
	}
	return nil
}

// printLimits writes where request limits are counted (the store, its URL
// without credentials) and each limited route's rate and token limits.
func printLimits(w io.Writer, cfg *config.Config) {
	var lines []string
	for _, r := range cfg.Routes {
		var parts []string
		if rl := r.RateLimit; rl != nil {
			var p []string
			if rl.PerIdentity != "" {
				p = append(p, "per_identity "+rl.PerIdentity+burst(rl.Burst))
			}
			if rl.Overall != "" {
				p = append(p, "overall "+rl.Overall+burst(rl.OverallBurst))
			}
			parts = append(parts, "rate_limit "+strings.Join(p, ", "))
		}
		if tl := r.TokenLimit; tl != nil {
			var p []string
			if tl.PerMinute > 0 {
				p = append(p, fmt.Sprintf("%d/minute", tl.PerMinute))
			}
			if tl.PerDay > 0 {
				p = append(p, fmt.Sprintf("%d/day", tl.PerDay))
			}
			if tl.InjectStreamUsage {
				p = append(p, "inject_stream_usage")
			}
			parts = append(parts, "token_limit "+strings.Join(p, ", "))
		}
		if len(parts) > 0 {
			lines = append(lines, "  "+r.Name+": "+strings.Join(parts, "; "))
		}
	}
	st := cfg.Limits.Store
	if st == nil && len(lines) == 0 {
		return
	}
	fmt.Fprintln(w, "\nLIMITS")
	if st == nil {
		fmt.Fprintln(w, "  store: none (each replica counts in its own memory)")
	} else {
		host := "(url not parsable)"
		if u, err := url.Parse(st.URL.Reveal()); err == nil {
			host = u.Host
		}
		timeout := cmp.Or(st.Timeout.D(), ratelimit.DefaultStoreTimeout)
		fmt.Fprintf(w, "  store: %s %s, timeout %s, on_error %s\n", st.Type, host, timeout, cmp.Or(st.OnError, ratelimit.OnErrorLocal))
	}
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}

func burst(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" burst %d", n)
}

// printRoutes writes the route table: where each route goes and who may
// call it.
func printRoutes(w io.Writer, cfg *config.Config) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUTE\tHOST\tPATH\tUPSTREAM\tUPSTREAM AUTH\tALLOW")
	for _, r := range cfg.Routes {
		u := cfg.Upstreams[r.Upstream]
		host := r.Host
		if host == "" {
			host = "*"
		}
		target, auth := u.Parsed.Redacted(), u.Auth.Type
		if len(u.Backends) > 0 {
			target, auth = fmt.Sprintf("pool of %d, see POOLS", len(u.Backends)), backendAuthTypes(u)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s (%s)\t%s\t%s\n", r.Name, host, r.Path, r.Upstream, target, auth, describeAllow(r))
	}
	tw.Flush()
}

// backendAuthTypes lists the distinct auth types of a pool's backends, in
// the order they first appear.
func backendAuthTypes(u *config.Upstream) string {
	var types []string
	for _, b := range u.Backends {
		if !slices.Contains(types, b.Auth.Type) {
			types = append(types, b.Auth.Type)
		}
	}
	return strings.Join(types, ",")
}

// printPools writes, for each upstream that is a pool, its backends (with
// the defaults of priority and weight applied by package pool), and the
// retry, breaker, health-check and mirror settings in force. Only
// configuration is shown: breaker state lives in a running gateway's
// /readyz and metrics.
func printPools(w io.Writer, cfg *config.Config, snap *gateway.Snapshot) {
	compiled := map[string]*pool.Pool{}
	for _, r := range snap.Routes {
		if r.Upstream != nil && r.Upstream.Pool != nil {
			compiled[r.Upstream.Name] = r.Upstream.Pool
		}
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Upstreams)) {
		u := cfg.Upstreams[name]
		if len(u.Backends) == 0 {
			continue
		}
		pl := compiled[name]
		if pl == nil {
			fmt.Fprintf(w, "\nPOOL %s: not used by any route\n", name)
			continue
		}
		fmt.Fprintf(w, "\nPOOL %s\n", name)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  BACKEND\tPRIORITY\tWEIGHT\tURL\tAUTH")
		for i := range pl.Len() {
			weight := strconv.Itoa(pl.Weight(i))
			if pl.Weight(i) == 0 {
				weight += " (no normal traffic)"
			}
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\n", pl.Name(i), pl.Priority(i), weight, pl.URL(i).Redacted(), u.Backends[i].Auth.Type)
		}
		tw.Flush()
		for _, line := range poolSettings(u, pl) {
			fmt.Fprintf(w, "  %-16s %s\n", line[0]+":", line[1])
		}
	}
}

// poolSettings describes a compiled pool's retry, circuit breaker, health
// check and mirror as label, text pairs, with every default applied.
func poolSettings(u *config.Upstream, pl *pool.Pool) [][2]string {
	retry := "1 try per request (no retry)"
	if n := pl.MaxAttempts(); n > 1 {
		retry = fmt.Sprintf("up to %d tries per request, retried on %s", n, strings.ReplaceAll(pl.RetryOn().String(), "|", ", "))
	}
	if d := pl.PerTryTimeout(); d > 0 {
		retry += ", per try " + shortDuration(d)
	}

	cb := config.CircuitBreaker{}
	if u.CircuitBreaker != nil {
		cb = *u.CircuitBreaker
	}
	failures := cmp.Or(cb.ConsecutiveFailures, pool.DefaultConsecutiveFailures)
	breaker := fmt.Sprintf("open after %d consecutive %s for %s; a backend's Retry-After kept at most %s",
		failures, plural(failures, "failure", "failures"),
		shortDuration(cmp.Or(cb.OpenFor.D(), pool.DefaultOpenFor)), shortDuration(cmp.Or(cb.MaxOpenFor.D(), pool.DefaultMaxOpenFor)))

	health := "none (the breaker learns from requests only)"
	if hc := u.HealthCheck; hc != nil {
		interval := cmp.Or(hc.Interval.D(), pool.DefaultHealthInterval)
		healthy := hc.HealthyStatus
		if len(healthy) == 0 {
			healthy = []int{200}
		}
		health = fmt.Sprintf("GET %s every %s, timeout %s, healthy %v", cmp.Or(hc.Path, pool.DefaultHealthPath),
			shortDuration(interval), shortDuration(cmp.Or(hc.Timeout.D(), min(pool.DefaultHealthTimeout, interval))), healthy)
	}

	mirror := "none"
	if m := pl.Mirror(); m != nil && u.Mirror != nil {
		mirror = fmt.Sprintf("%d%% of buffered requests to %s, at most %d in flight", u.Mirror.Percent, mirrorTarget(m), pool.DefaultMirrorMaxInFlight)
	}
	return [][2]string{{"retry", retry}, {"circuit breaker", breaker}, {"health check", health}, {"mirror", mirror}}
}

// mirrorTarget names a pool's mirror target: a backend of the pool, or
// another upstream.
func mirrorTarget(m *pool.Mirror) string {
	name, i := m.Target()
	if i < 0 {
		return "upstream " + name
	}
	return name
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// shortDuration prints d the way configurations write it: 10m, not 10m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func describeAllow(r *config.Route) string {
	if r.Public {
		return "everyone (public)"
	}
	var parts []string
	for _, a := range r.Allow {
		if a.KeySet != "" {
			parts = append(parts, "key_set "+a.KeySet)
			continue
		}
		s := "identity_provider " + a.IdentityProvider
		for _, c := range []struct {
			name string
			m    config.Match
		}{{"roles", a.Roles}, {"scopes", a.Scopes}, {"groups", a.Groups}, {"users", a.Users}, {"apps", a.Apps}, {"tenants", a.Tenants}} {
			if c.m.IsSet() {
				s += " " + c.name + " " + c.m.String()
			}
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " | ")
}

// keyPrefix makes modelgate keys recognisable (for secret scanners, and
// for people).
const keyPrefix = "mgk_"

// newKey returns a fresh API key with 256 bits of entropy.
func newKey() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return keyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

func keyHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

func cmdKeys(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "new" {
		fmt.Fprintln(stderr, "usage: gateway keys new [-id NAME]")
		return exitError(2)
	}
	fs := newFlagSet("keys new", stderr)
	id := fs.String("id", "client", "the key holder's `name`, as it will appear in logs")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	key := newKey()
	fmt.Fprintf(stdout, "key (give it to the caller; it is not stored anywhere):\n  %s\n\n", key)
	fmt.Fprintf(stdout, "for key_sets in the configuration:\n  - id: %s\n    sha256: %q\n", *id, keyHash(key))
	return nil
}
